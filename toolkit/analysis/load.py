"""Reading experiment folders for a report: the runs they recorded, the runs they still miss, and
the evaluation curves of each run.

`load(dirs)` reads one or several folders `ablate run` wrote (finished, running or interrupted)
into one `Experiments`: the runs table of `toolkit.sweep.results.collect` plus each run's folder
(`run_dir`), the baseline, how many runs the spec asks of each variant, and the runs
experiment.json lists that have no summary.json yet. Several folders must share a baseline
(the same config hash, or the same training config under any name): their baseline runs are
pooled by seed and their other variants are named '<experiment>/<variant>'. `load_curves(runs)`
reads every run's metrics.jsonl. A folder whose variants build on one another (a spec's `after`)
gets two more columns from their config.json: after and changes (toolkit.analysis.steps).

Not here: statistics (table.py), text (text.py), report files (render.py). Nothing is computed
from a run's config: what a run measured (losses, throughput, FLOPs per token) is read as the run
recorded it, so the report and results.csv never disagree.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.analysis.steps import describe_keys
from toolkit.api.registry import suggest
from toolkit.errors import ToolkitError
from toolkit.files import read_json
from toolkit.names import run_folder
from toolkit.spec.schema import with_legacy_values
from toolkit.sweep.results import collect
from toolkit.sweep.tuning import TUNE_DIR

# Config keys that do not change what a run computes (where and how fast it ran, what it saved).
_NOT_TRAINING = ("device", "threads", "checkpoint")


@dataclass
class Part:
    """One experiment folder."""

    folder: Path
    name: str
    experiment: dict[str, Any]
    table: pd.DataFrame  # collect() plus run_dir
    baseline: str | None
    expected: list[dict[str, Any]]  # experiment.json's runs (variant, seed, folder, hash)
    # variant -> its name among several folders' runs ('<experiment>/<variant>', the shared
    # baseline's name); empty for a folder read alone, whose names stay.
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def axes(self) -> list[str]:
        return [a for a in self.experiment.get("axes", []) if a in self.table]

    def compared(self, baseline: str | None) -> pd.DataFrame:
        """This folder's runs named as the combined runs name them, `baseline` marked: the
        variant every other is compared with (the spec's, or one --baseline chose)."""
        table = self.table.copy()
        table["variant"] = table["variant"].map(lambda v: self.labels.get(v, v))
        table["baseline"] = table["variant"] == baseline
        return table


@dataclass
class Experiments:
    """One or several experiment folders, their runs combined under one baseline. (Not
    toolkit.sweep.jobs.Sweep, which is the work of running one spec.)"""

    parts: list[Part]
    runs: pd.DataFrame
    baseline: str | None
    asked: dict[str, int]
    missing: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return " + ".join(p.name for p in self.parts)

    @property
    def expected(self) -> int:
        return len(self.runs) + len(self.missing)


def _as_list(dirs: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(dirs, str | Path):
        return [Path(dirs)]
    return [Path(d) for d in dirs]


def _load_part(folder: Path) -> Part:
    if not folder.is_dir():
        raise ToolkitError(f"{folder} is not a folder; give the output folder of `ablate run`")
    experiment = read_json(folder / "experiment.json")
    table = collect(folder)
    if experiment is None and table.empty and (folder / TUNE_DIR / "experiment.json").is_file():
        raise ToolkitError(
            f"{folder} holds a tuned sweep stopped in its tuning phase: its final runs have not "
            f"started. Run the same `ablate run` again to finish it; `ablate report "
            f"{folder / TUNE_DIR}` reports the tuning runs"
        )
    if experiment is None and table.empty:
        raise ToolkitError(
            f"{folder} holds no experiment (no experiment.json or run folders); "
            f"give the folder `ablate run` wrote, e.g. runs/quickstart"
        )
    if not isinstance(experiment, dict):
        # It says which runs are the spec's: without it, runs of an earlier spec would join.
        what = "no" if not (folder / "experiment.json").exists() else "a damaged"
        raise ToolkitError(
            f"{folder} holds run folders but {what} experiment.json, which says which of them "
            f"belong to the experiment; run its spec again into it (ablate run SPEC --out "
            f"{folder}: finished runs are kept) to write it again"
        )
    experiment = experiment if isinstance(experiment, dict) else {}
    expected = [r for r in experiment.get("runs", []) if isinstance(r, dict)]
    folders = {(r.get("variant"), r.get("seed")): r.get("folder") for r in expected}
    table = table.copy()
    # Older experiment.json files list no folder: rebuild it the way the runner names it.
    table["run_dir"] = [
        str(folder / (folders.get((v, s)) or run_folder(v, s)))
        for v, s in zip(table["variant"], table["seed"], strict=True)
    ]
    table = _with_steps(table)
    baseline = experiment.get("baseline")
    if baseline is None and not table.empty and table["baseline"].fillna(False).astype(bool).any():
        baseline = table.loc[table["baseline"].fillna(False).astype(bool), "variant"].iloc[0]
    if baseline is None and experiment.get("variants"):
        baseline = experiment["variants"][0]
    name = str(experiment.get("name") or folder.name)
    return Part(folder, name, experiment, table, baseline, expected)


def _with_steps(table: pd.DataFrame) -> pd.DataFrame:
    """The runs with after (the variant each run's variant builds on; '' for none) and changes
    (the keys it sets itself, or for one that builds on none what it sets over the base), from
    the config.json of a run of each variant; the table as it is when no variant builds on
    another, so the reports of other folders do not change."""
    configs: dict[str, dict[str, Any]] = {}
    for variant, run_dir in zip(table["variant"], table["run_dir"], strict=True):
        if variant not in configs:
            config = read_json(Path(run_dir) / "config.json")
            if isinstance(config, dict):
                configs[variant] = config
    if not any(isinstance(c.get("after"), str) for c in configs.values()):
        return table
    link = {
        v: (c["after"], describe_keys(c.get("own_overrides")))
        if isinstance(c.get("after"), str)
        else ("", describe_keys(c.get("overrides")))
        for v, c in configs.items()
    }
    table = table.copy()
    table["after"] = [link.get(v, ("", ""))[0] for v in table["variant"]]
    table["changes"] = [link.get(v, ("", ""))[1] for v in table["variant"]]
    return table


def _baseline_identity(part: Part) -> tuple[str | None, set[str]]:
    """(what the baseline trains: its config without name, seed and where it ran; the config
    hashes of its runs). The key is None when no baseline run has a config.json yet."""
    hashes = {str(r.get("config_hash")) for r in part.expected if r.get("variant") == part.baseline}
    candidates = [
        part.folder / str(r.get("folder"))
        for r in part.expected
        if r.get("variant") == part.baseline and r.get("folder")
    ]
    if not part.table.empty:
        mine = part.table[part.table["variant"] == part.baseline]
        hashes |= set(mine["config_hash"].dropna().astype(str))
        candidates = [Path(p) for p in mine["run_dir"]] + candidates
    for run_dir in candidates:
        config = read_json(run_dir / "config.json")
        if isinstance(config, dict):
            config = with_legacy_values(config)  # an older run reads as what it trained
            train = {k: v for k, v in (config.get("train") or {}).items() if k not in _NOT_TRAINING}
            body = {
                "data": config.get("data"),
                "model": config.get("model_resolved") or config.get("model"),
                "train": train,
            }
            return json.dumps(body, sort_keys=True, default=str), hashes
    return None, hashes


def load(dirs: str | Path | Iterable[str | Path], baseline: str | None = None) -> Experiments:
    """Read one or several experiment folders. Several must share a baseline (same config
    hash, or the same training config under any name); their baseline runs are pooled by seed
    (a finished run of a seed wins over one that failed, then the first folder's) and their
    other variants are named '<experiment>/<variant>'. baseline: compare against this variant instead of the spec's
    (ToolkitError when no run has that name)."""
    experiments = _load(dirs)
    return experiments if baseline is None else _rebased(experiments, baseline)


def _rebased(experiments: Experiments, baseline: str) -> Experiments:
    """The same runs, compared against `baseline`."""
    variants = sorted(set(experiments.runs["variant"].dropna())) if len(experiments.runs) else []
    if baseline not in variants:
        raise ToolkitError(
            f"baseline {baseline!r} is not a variant of {experiments.name}"
            f"{suggest(baseline, variants)}; variants: {', '.join(variants) or '(no runs yet)'}"
        )
    runs = experiments.runs.assign(baseline=experiments.runs["variant"] == baseline)
    return replace(experiments, runs=runs, baseline=baseline)


def _load(dirs: str | Path | Iterable[str | Path]) -> Experiments:
    """load() with each experiment's own baseline."""
    folders = []
    for d in _as_list(dirs):
        if all(d.resolve() != f.resolve() for f in folders):
            folders.append(d)
    if not folders:
        raise ToolkitError("give at least one experiment folder")
    parts = [_load_part(d) for d in folders]
    if len(parts) == 1:
        part = parts[0]
        table = part.table.copy()
        table["baseline"] = table["variant"] == part.baseline
        asked = dict(Counter(r.get("variant") for r in part.expected))
        missing = _missing(part, table, {})
        return Experiments(parts, table, part.baseline, asked, missing)

    _check_shared_baseline(parts)
    names = [p.name for p in parts]
    if len(set(names)) < len(names):
        names = [p.folder.name for p in parts]
    if len(set(names)) < len(names):
        names = [str(p.folder) for p in parts]
    for part, name in zip(parts, names, strict=True):
        part.name = name
    baseline = parts[0].baseline
    frames, bases, asked = [], [], {}
    base_seeds: set[Any] = set()
    relabel: dict[tuple[str, str], str] = {}
    for part in parts:
        table = part.table.copy()
        is_base = table["variant"] == part.baseline
        labels = {
            v: (baseline if v == part.baseline else f"{part.name}/{v}")
            for v in [*part.experiment.get("variants", []), *table["variant"].unique()]
        }
        relabel |= {(part.name, v): label for v, label in labels.items()}
        part.labels = labels
        table["variant"] = table["variant"].map(labels)
        if "after" in table:
            table["after"] = [labels.get(a, a) if a else a for a in table["after"]]
        bases.append(table[is_base])
        frames.append(table[~is_base])
        for r in part.expected:
            label = labels.get(r.get("variant"), f"{part.name}/{r.get('variant')}")
            if label == baseline:
                base_seeds.add(r.get("seed"))
            else:
                asked[label] = asked.get(label, 0) + 1
    if base_seeds:
        asked[baseline] = len(base_seeds)
    # One baseline run per seed: a finished one over one that failed, then the first folder's.
    pooled = [b for b in bases if not b.empty]
    if pooled:
        base = pd.concat(pooled, ignore_index=True)
        unfinished = (base["status"] != "ok").to_numpy()
        base = base.iloc[np.argsort(unfinished, kind="stable")].drop_duplicates("seed")
        frames.insert(0, base)
    runs = pd.concat([f for f in frames if not f.empty] or [parts[0].table], ignore_index=True)
    runs["baseline"] = runs["variant"] == baseline
    missing = []
    for part in parts:
        missing += _missing(part, runs, relabel)
    return Experiments(parts, runs, baseline, asked, missing)


def _check_shared_baseline(parts: list[Part]) -> None:
    first = parts[0]
    key0, hashes0 = _baseline_identity(first)
    for part in parts[1:]:
        key, hashes = _baseline_identity(part)
        if hashes & hashes0 - {"None"} or (key is not None and key == key0):
            continue
        if first.baseline is None or part.baseline is None:
            why = "one of them has no baseline"
        elif key is None or key0 is None:
            why = "no run of the baseline has started in one of them, so its config is unknown"
        else:
            why = (
                f"baseline {part.baseline!r} of {part.folder} and {first.baseline!r} of "
                f"{first.folder} train different configs"
            )
        raise ToolkitError(
            f"{part.folder} and {first.folder} do not share a baseline ({why}); "
            f"report them one at a time, or give folders whose baseline variant has the same config"
        )


def _missing(
    part: Part, runs: pd.DataFrame, relabel: dict[tuple[str, str], str]
) -> list[dict[str, Any]]:
    """Expected runs (experiment.json) without a recorded summary.json."""
    recorded = set(zip(part.table["variant"], part.table["seed"], strict=True))
    have = set(zip(runs["variant"], runs["seed"], strict=True))
    out = []
    for r in part.expected:
        variant, seed = r.get("variant"), r.get("seed")
        if (variant, seed) in recorded:
            continue
        label = relabel.get((part.name, variant), variant)
        if (label, seed) in have:  # a pooled baseline run from another folder covers it
            continue
        run_dir = part.folder / str(r.get("folder") or run_folder(variant, seed))
        started = (run_dir / "metrics.jsonl").exists()
        out.append(
            {
                "experiment": part.name,
                "variant": label,
                "seed": seed,
                "folder": str(run_dir),
                "state": "started, no summary yet" if started else "not started",
            }
        )
    return out


def load_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluation of every recorded run (its metrics.jsonl): experiment, variant,
    seed, status, step, tokens, train_loss, val_loss, val_perplexity, val_bpb, lr, elapsed_s."""
    rows = []
    if "run_dir" not in runs:
        return pd.DataFrame()
    for run in runs.to_dict("records"):
        path = Path(run["run_dir"]) / "metrics.jsonl"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                point = json.loads(line)
            except ValueError:
                continue  # a line cut by a killed process
            if isinstance(point, dict):
                rows.append(
                    {
                        "experiment": run.get("experiment"),
                        "variant": run["variant"],
                        "seed": run["seed"],
                        "status": run.get("status"),
                        **point,
                    }
                )
    return pd.DataFrame(rows)
