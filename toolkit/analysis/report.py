"""The comparison of an experiment: a table per variant, the statistics, figures, and report files.

Python API:

    from toolkit.analysis.report import compare, summarize, write_report

    table = compare("runs/quickstart")           # pandas.DataFrame, one row per variant
    table = compare(["runs/norms", "runs/acts"])   # several folders that share a baseline
    result = write_report("runs/quickstart", out="reports/qs")   # report.md, report.html, ...
    print(result.text)                             # the terminal table

`compare(dirs)` reads experiment folders (what `ablate run` wrote; finished, running or
interrupted) and returns the same table `ablate report` prints, sorted by the comparison metric
(mean final validation loss; bits per byte when the variants use different tokenizers; ties by
name), the baseline marked. `summarize(runs)` builds it from a tidy runs table
(`toolkit.sweep.results.collect`). Columns:

- variant, experiment, baseline (bool), seeds_asked (runs the spec lists), runs (recorded),
  ok (finished runs: the n of every statistic)
- for m in val_loss, val_perplexity, val_bpb, gap (val_loss - train_loss at the end):
  m_mean, m_std (sample std, n - 1), m_ci_low, m_ci_high (95% t-interval of the mean);
  train_loss_mean
- delta_val_loss, delta_val_bpb: mean minus the baseline's mean; delta, delta_pct: the same for
  the comparison metric (delta_pct in % of the baseline's mean)
- test ("paired t" on the seeds shared with the baseline, "Welch t", or "" when a side has a
  single seed), pairs (seeds the test paired), statistic, df, p_value (two-sided; NaN without
  a test), mde (minimum detectable difference of this comparison, see below)
- params, params_non_embedding, flops_per_token, tokens_per_s, train_s, wall_s (means per run)
- causal, diverged, failed (counts), flags (text: non-causal, diverged or failed runs, fewer
  finished seeds than asked)

`summary.attrs` holds "metric" (the comparison metric), "baseline" and "resolution" (what the
sweep could resolve: sd, df, n, paired, mde, mde_pct, alpha, power).

Formulas (toolkit.analysis.stats has them written out):

- 95% CI: mean ± t(0.975, n - 1) · s / √n.
- Paired t-test (variant and baseline share ≥ 2 seeds; a seed fixes the initialisation and the
  data order, so runs with the same seed are paired): d = variant - baseline per shared seed,
  t = mean(d) / (s_d / √n), df = n - 1. Else Welch's t-test (each side ≥ 2 seeds). Else none.
- Minimum detectable difference (α = 0.05, power 0.8), with s the seed-to-seed spread pooled
  across variants (of the per-seed differences to the baseline when the design is paired):
  paired: (t(1 - α/2, n - 1) + t(power, n - 1)) · s_diff / √n;
  unpaired: (t(1 - α/2, 2n - 2) + t(power, 2n - 2)) · s · √(2/n).
- FLOPs per token (training, forward + backward; Kaplan et al. 2020):
  6 · N + 12 · n_layers · emb_dim · context_length, where N = the non-embedding parameters plus
  the LM head when it is tied to the token embedding (so the head is always counted once); N
  includes norm gains and biases, which are not matrix products (under 1% at these sizes).
  n_layers, emb_dim, context_length and vocab_size come from each run's config.json
  (model_resolved).

`write_report(dirs, out=None)` writes report.md, a self-contained report.html (figures embedded
as PNG), figures/*.png, and the data behind them: report_runs.csv (one row per run),
report_summary.csv (the table above) and report_curves.csv (one row per evaluation). `report(dir)`
returns (table, terminal text) without writing anything.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.analysis import stats
from toolkit.errors import ToolkitError
from toolkit.files import read_json, write_atomic
from toolkit.sweep.results import collect

METRICS = ("val_loss", "val_perplexity", "val_bpb")
UNITS = {
    "val_loss": "nats/token",
    "train_loss": "nats/token",
    "val_perplexity": "exp(nats)",
    "val_bpb": "bits/byte",
    "gap": "nats/token",
}
NAMES = {
    "val_loss": "validation loss",
    "val_perplexity": "validation perplexity",
    "val_bpb": "validation bits per byte",
}
ALPHA, POWER, CONFIDENCE = 0.05, 0.8, 0.95
# Config keys that do not change what a run computes (where and how fast it ran, what it saved).
_NOT_TRAINING = ("device", "threads", "checkpoint")


def comparison_metric(table: pd.DataFrame) -> str:
    """'val_loss', or 'val_bpb' when the runs use different tokenizers: loss is per token and
    only bits per byte compares across vocabularies."""
    if "tokenizer" in table and table["tokenizer"].dropna().nunique() > 1:
        return "val_bpb"
    return "val_loss"


def flops_per_token(config: dict[str, Any] | None, params_non_embedding: Any) -> float:
    """Training FLOPs per token, 6 · N + 12 · n_layers · emb_dim · context_length, with N the
    non-embedding parameters plus a tied LM head (see the module docstring); NaN without a
    config."""
    model = (config or {}).get("model_resolved")
    if not isinstance(model, dict) or not _finite(params_non_embedding):
        return math.nan
    try:
        n_layers, emb = int(model["n_layers"]), int(model["emb_dim"])
        ctx = int(model["context_length"])
        head = int(model["vocab_size"]) * emb if model.get("tie_embeddings") else 0
    except (KeyError, TypeError, ValueError):
        return math.nan
    return 6.0 * (float(params_non_embedding) + head) + 12.0 * n_layers * emb * ctx


# -- the table ------------------------------------------------------------------------------


def summarize(
    table: pd.DataFrame,
    baseline: str | None = None,
    *,
    asked: dict[str, int] | None = None,
    alpha: float = ALPHA,
    power: float = POWER,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """One row per variant over its finished (status ok) runs, sorted by the comparison metric
    (mean final validation loss; bits per byte when tokenizers differ), ties by name. See the
    module docstring for the columns. baseline defaults to the variant whose runs are marked
    baseline; asked maps variant -> runs the spec lists (default: runs recorded)."""
    if table.empty:
        return pd.DataFrame()
    table = table.reset_index(drop=True)
    if baseline is None and "baseline" in table:
        marked = table.loc[table["baseline"].fillna(False).astype(bool), "variant"]
        baseline = marked.iloc[0] if len(marked) else None
    metric = comparison_metric(table)
    asked = asked or {}

    values: dict[str, dict[str, dict[Any, float]]] = {}  # variant -> column -> seed -> value
    rows = []
    for variant, group in table.groupby("variant", sort=True):
        group = group.sort_values("seed", kind="stable")
        ok = group[group["status"] == "ok"]
        per_seed = {c: _by_seed(ok, c) for c in (*METRICS, "train_loss")}
        per_seed["gap"] = {
            s: v - per_seed["train_loss"][s]
            for s, v in per_seed["val_loss"].items()
            if s in per_seed["train_loss"]
        }
        values[variant] = per_seed
        status = group["status"].fillna("missing")
        causal = _column(group, "causal").dropna()
        row: dict[str, Any] = {
            "variant": variant,
            "experiment": _first(group, "experiment"),
            "baseline": variant == baseline,
            "seeds_asked": int(asked.get(variant, len(group))),
            "runs": len(group),
            "ok": len(ok),
        }
        for column in (*METRICS, "gap"):
            d = stats.describe(per_seed[column].values(), confidence)
            row |= {
                f"{column}_mean": d.mean,
                f"{column}_std": d.std,
                f"{column}_ci_low": d.ci_low,
                f"{column}_ci_high": d.ci_high,
            }
        row["train_loss_mean"] = _mean(per_seed["train_loss"].values())
        row |= {
            "params": _first(group, "params"),
            "params_non_embedding": _first(group, "params_non_embedding"),
            "flops_per_token": _first(group, "flops_per_token"),
            "tokens_per_s": _mean(_column(ok, "tokens_per_s")),
            "train_s": _mean(_column(ok, "train_s")),
            "wall_s": _mean(_column(group, "wall_s")),
            "causal": bool(causal.astype(bool).all()) if len(causal) else True,
            "diverged": int((status == "diverged").sum()),
            "failed": int((status == "failed").sum()),
            "other": int((~status.isin(["ok", "diverged", "failed"])).sum()),
        }
        rows.append(row)

    summary = pd.DataFrame(rows)
    base = values.get(baseline) if baseline is not None else None
    resolution = _resolution(values, baseline, metric, alpha, power)
    extra = []
    for row in rows:
        mine = values[row["variant"]]
        out: dict[str, Any] = {}
        for m in ("val_loss", "val_bpb"):
            out[f"delta_{m}"] = (
                row[f"{m}_mean"] - _mean(base[m].values()) if base is not None else math.nan
            )
        out["delta"] = out[f"delta_{metric}"]
        base_mean = _mean(base[metric].values()) if base is not None else math.nan
        out["delta_pct"] = 100 * out["delta"] / base_mean if base_mean else math.nan
        if base is None or row["baseline"]:
            test = stats.TestResult("", 0, math.nan, math.nan, math.nan, math.nan)
        else:
            test = stats.compare_to_baseline(mine[metric], base[metric])
        out |= {
            "test": test.test,
            "pairs": test.n if test.test == stats.PAIRED else 0,
            "statistic": test.statistic,
            "df": test.df,
            "p_value": test.p_value,
            "mde": _row_mde(test, mine[metric], base, metric, resolution, alpha, power),
        }
        extra.append(out)
    summary = pd.concat([summary, pd.DataFrame(extra)], axis=1)
    summary["flags"] = [_flags(r) for r in summary.to_dict("records")]
    summary = summary.drop(columns="other")
    order = [
        "variant", "experiment", "baseline", "seeds_asked", "runs", "ok",
        *[f"{m}_{s}" for m in METRICS for s in ("mean", "std", "ci_low", "ci_high")],
        "train_loss_mean", "gap_mean", "gap_std", "gap_ci_low", "gap_ci_high",
        "delta_val_loss", "delta_val_bpb", "delta", "delta_pct",
        "test", "pairs", "statistic", "df", "p_value", "mde",
        "params", "params_non_embedding", "flops_per_token", "tokens_per_s", "train_s", "wall_s",
        "causal", "diverged", "failed", "flags",
    ]  # fmt: skip
    summary = summary[order]
    summary["_key"] = summary[f"{metric}_mean"]
    summary = summary.sort_values(["_key", "variant"], na_position="last", kind="stable")
    summary = summary.drop(columns="_key").reset_index(drop=True)
    summary.attrs["metric"] = metric
    summary.attrs["baseline"] = baseline
    summary.attrs["resolution"] = resolution
    return summary


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame:
        return pd.Series([], dtype=float)
    return frame[name]


def _first(frame: pd.DataFrame, name: str) -> Any:
    column = _column(frame, name).dropna()
    return column.iloc[0] if len(column) else None


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _mean(values: Iterable[Any]) -> float:
    x = [float(v) for v in values if _finite(v)]
    return float(np.mean(x)) if x else math.nan


def _by_seed(ok: pd.DataFrame, column: str) -> dict[Any, float]:
    """seed -> value of the finished runs (the mean if a seed appears twice)."""
    if column not in ok or ok.empty:
        return {}
    values = pd.to_numeric(ok[column], errors="coerce")
    frame = pd.DataFrame({"seed": ok["seed"].to_numpy(), "v": values.to_numpy()}).dropna()
    means = frame.groupby("seed", sort=True)["v"].mean()
    return {s: float(v) for s, v in means.items() if math.isfinite(v)}


def _resolution(
    values: dict[str, dict[str, dict[Any, float]]],
    baseline: str | None,
    metric: str,
    alpha: float,
    power: float,
) -> dict[str, Any]:
    """What the sweep could resolve: the seed-to-seed spread pooled across variants and the
    minimum detectable difference for the typical number of seeds."""
    base = values.get(baseline, {}).get(metric, {}) if baseline is not None else {}
    diffs, pair_counts = [], []
    for variant, per in values.items():
        if variant == baseline:
            continue
        shared = sorted(set(per[metric]) & set(base))
        if len(shared) >= 2:
            diffs.append([per[metric][s] - base[s] for s in shared])
            pair_counts.append(len(shared))
    sd_within, df_within = stats.pooled_std(list(v[metric].values()) for v in values.values())
    counts = [len(v[metric]) for v in values.values() if v[metric]]
    if diffs:
        sd, df = stats.pooled_std(diffs)
        n = _typical(pair_counts)
        mde = stats.min_detectable_difference(sd, n, paired=True, alpha=alpha, power=power)
        paired = True
    else:
        sd, df, paired = sd_within, df_within, False
        n = _typical(counts) if counts else 0
        mde = stats.min_detectable_difference(sd, n, paired=False, alpha=alpha, power=power)
    base_mean = _mean(base.values())
    return {
        "metric": metric,
        "paired": paired,
        "sd": sd,
        "df": df,
        "n": n,
        "mde": mde,
        "mde_pct": 100 * mde / base_mean if base_mean and math.isfinite(base_mean) else math.nan,
        "sd_within": sd_within,
        "df_within": df_within,
        "alpha": alpha,
        "power": power,
    }


def _typical(counts: Sequence[int]) -> int:
    """The most common count (the smaller one on a tie)."""
    tally = Counter(counts)
    return min(tally, key=lambda c: (-tally[c], c))


def _row_mde(
    test: stats.TestResult,
    mine: dict[Any, float],
    base: dict[str, dict[Any, float]] | None,
    metric: str,
    resolution: dict[str, Any],
    alpha: float,
    power: float,
) -> float:
    if test.test == stats.PAIRED and resolution["paired"]:
        return stats.min_detectable_difference(
            resolution["sd"], test.n, paired=True, alpha=alpha, power=power
        )
    if test.test == stats.WELCH and base is not None:
        return stats.min_detectable_difference(
            resolution["sd_within"],
            len(mine),
            paired=False,
            n_other=len(base[metric]),
            alpha=alpha,
            power=power,
        )
    return math.nan


def _flags(row: dict[str, Any]) -> str:
    flags = []
    if not row["causal"]:
        flags.append("non-causal")
    if row["diverged"]:
        flags.append(f"{row['diverged']} diverged")
    if row["failed"]:
        flags.append(f"{row['failed']} failed")
    if row["other"]:
        flags.append(f"{row['other']} other status")
    if row["ok"] < row["seeds_asked"]:
        flags.append(f"{row['ok']}/{row['seeds_asked']} seeds")
    return ", ".join(flags)


# -- loading experiment folders ---------------------------------------------------------------


@dataclass
class Part:
    """One experiment folder."""

    folder: Path
    name: str
    experiment: dict[str, Any]
    table: pd.DataFrame  # collect() plus run_dir and flops_per_token
    baseline: str | None
    expected: list[dict[str, Any]]  # experiment.json's runs (variant, seed, folder, hash)

    @property
    def axes(self) -> list[str]:
        return [a for a in self.experiment.get("axes", []) if a in self.table]


@dataclass
class Sweep:
    """One or several experiment folders, their runs combined under one baseline."""

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
    if experiment is None and table.empty:
        raise ToolkitError(
            f"{folder} holds no experiment (no experiment.json or run folders); "
            f"give the folder `ablate run` wrote, e.g. runs/quickstart"
        )
    experiment = experiment if isinstance(experiment, dict) else {}
    expected = [r for r in experiment.get("runs", []) if isinstance(r, dict)]
    folders = {(r.get("variant"), r.get("seed")): r.get("folder") for r in expected}
    table = table.copy()
    run_dirs, flops = [], []
    for row in table.to_dict("records"):
        sub = folders.get((row["variant"], row["seed"])) or f"{row['variant']}/seed-{row['seed']}"
        run_dirs.append(str(folder / sub))
        config = read_json(folder / sub / "config.json")
        flops.append(
            flops_per_token(
                config if isinstance(config, dict) else None, row["params_non_embedding"]
            )
        )
    table["run_dir"] = run_dirs
    table["flops_per_token"] = flops
    baseline = experiment.get("baseline")
    if baseline is None and not table.empty and table["baseline"].fillna(False).astype(bool).any():
        baseline = table.loc[table["baseline"].fillna(False).astype(bool), "variant"].iloc[0]
    if baseline is None and experiment.get("variants"):
        baseline = experiment["variants"][0]
    name = str(experiment.get("name") or folder.name)
    return Part(folder, name, experiment, table, baseline, expected)


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
            train = {k: v for k, v in (config.get("train") or {}).items() if k not in _NOT_TRAINING}
            body = {
                "data": config.get("data"),
                "model": config.get("model_resolved") or config.get("model"),
                "train": train,
            }
            return json.dumps(body, sort_keys=True, default=str), hashes
    return None, hashes


def load(dirs: str | Path | Iterable[str | Path]) -> Sweep:
    """Read one or several experiment folders. Several must share a baseline (same config
    hash, or the same training config under any name); their baseline runs are pooled by seed
    (the first folder's run of a seed wins) and their other variants are named
    '<experiment>/<variant>'."""
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
        return Sweep(parts, table, part.baseline, asked, missing)

    _check_shared_baseline(parts)
    names = [p.name for p in parts]
    if len(set(names)) < len(names):
        names = [p.folder.name for p in parts]
    if len(set(names)) < len(names):
        names = [str(p.folder) for p in parts]
    for part, name in zip(parts, names, strict=True):
        part.name = name
    baseline = parts[0].baseline
    frames, seen, asked = [], set(), {}
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
        table["variant"] = table["variant"].map(labels)
        base = table[is_base & ~table["seed"].isin(seen)]
        seen |= set(base["seed"])
        frames += [base, table[~is_base]]
        for r in part.expected:
            label = labels.get(r.get("variant"), f"{part.name}/{r.get('variant')}")
            if label == baseline:
                base_seeds.add(r.get("seed"))
            else:
                asked[label] = asked.get(label, 0) + 1
    if base_seeds:
        asked[baseline] = len(base_seeds)
    runs = pd.concat([f for f in frames if not f.empty] or [parts[0].table], ignore_index=True)
    runs["baseline"] = runs["variant"] == baseline
    missing = []
    for part in parts:
        missing += _missing(part, runs, relabel)
    return Sweep(parts, runs, baseline, asked, missing)


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
        run_dir = part.folder / str(r.get("folder") or f"{variant}/seed-{seed}")
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


def compare(dirs: str | Path | Iterable[str | Path], baseline: str | None = None) -> pd.DataFrame:
    """The comparison table (one row per variant, see the module docstring) of one or several
    experiment folders sharing a baseline."""
    sweep = load(dirs)
    return summarize(sweep.runs, baseline or sweep.baseline, asked=sweep.asked)


# -- the terminal table -------------------------------------------------------------------------


def _num(x: Any, spec: str) -> str:
    return format(float(x), spec) if _finite(x) else "-"


def _p(x: Any) -> str:
    if not _finite(x):
        return "-"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def _si(x: Any) -> str:
    if not _finite(x):
        return "-"
    x = float(x)
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g}{suffix}"
    return f"{x:.3g}"


def _seconds(x: Any) -> str:
    if not _finite(x):
        return "-"
    x = float(x)
    return f"{x:.1f}s" if x < 120 else f"{int(x // 60)}m{int(x % 60):02d}s"


def _resolution_text(summary: pd.DataFrame, markdown: bool = False) -> str:
    """The minimum detectable difference in words (markdown: for the report, under its own
    heading; else for the terminal)."""
    res = summary.attrs.get("resolution")
    if not res:
        return ""
    metric, unit = res["metric"], UNITS[res["metric"]]
    code = (lambda s: f"`{s}`") if markdown else (lambda s: s)
    lead = "" if markdown else "What the sweep could resolve: "
    if not _finite(res["sd"]):
        body = (
            "nothing yet. With one finished seed per variant there is no estimate of the "
            "seed-to-seed noise, so no difference can be called significant; run at least 2 "
            "seeds (3 or more to resolve small effects)."
        )
    elif res["sd"] == 0:
        which = (
            "the differences to the baseline are the same on every seed"
            if res["paired"]
            else "every seed of a variant gives the same value"
        )
        body = (
            f"nothing: {which} ({metric} spread 0), so a t-test has no noise estimate and "
            f"gives no p-value; check that the seeds reach the runs."
        )
    else:
        how = (
            f"the pooled std of the per-seed differences to the baseline, {res['df']} df"
            if res["paired"]
            else f"the pooled within-variant std, {res['df']} df"
        )
        spread = (
            f"with {res['n']} seeds per variant and a seed-to-seed spread of {res['sd']:.4f} "
            f"{unit} in {metric} ({how})"
        )
        if not _finite(res["mde"]):
            body = (
                f"{spread}, too few variants have 2 or more seeds for a test; no difference "
                f"can be called significant."
            )
        else:
            test = "a paired t-test" if res["paired"] else "a two-sample t-test"
            formula = (
                "(t(1-α/2, n-1) + t(power, n-1)) · s_diff / √n"
                if res["paired"]
                else "(t(1-α/2, 2n-2) + t(power, 2n-2)) · s · √(2/n)"
            )
            pct = f" ({res['mde_pct']:.2f}% of the baseline)" if _finite(res["mde_pct"]) else ""
            body = (
                f"{spread}, {test} at α = {res['alpha']:g} detects a true difference with "
                f"{res['power']:.0%} power when it is at least about {res['mde']:.4f} {unit}"
                f"{pct}. 'No significant difference' here means none larger than that, not none "
                f"at all. Formula: MDE ≈ {code(formula)}."
            )
    return lead + body if lead else body[0].upper() + body[1:]


def format_summary(summary: pd.DataFrame, title: str = "") -> str:
    """A fixed-width table for the terminal; the baseline is marked with '*'."""
    if summary.empty:
        return f"{title}\n(no finished runs yet)" if title else "(no finished runs yet)"
    metric = summary.attrs.get("metric", "val_loss")
    second = "val_loss" if metric == "val_bpb" else "val_bpb"
    records = summary.to_dict("records")
    columns: dict[str, list[str]] = {
        "": ["*" if r["baseline"] else "" for r in records],
        "variant": [r["variant"] + ("" if r["causal"] else " [non-causal]") for r in records],
        "seeds": [f"{r['ok']}/{r.get('seeds_asked', r['runs'])}" for r in records],
        metric: [f"{_num(r[f'{metric}_mean'], '.4f')} ± {_num(r[f'{metric}_std'], '.4f')}"
                 for r in records],
        "95% CI": [
            f"[{_num(r.get(f'{metric}_ci_low'), '.4f')}, {_num(r.get(f'{metric}_ci_high'), '.4f')}]"
            if _finite(r.get(f"{metric}_ci_low"))
            else "-"
            for r in records
        ],
        "Δ vs base": [_num(r.get(f"delta_{metric}"), "+.4f") for r in records],
        "Δ %": [_num(r.get("delta_pct"), "+.2f") for r in records],
        "p": [_p(r.get("p_value")) for r in records],
        "test": [(r.get("test") or "-") if _finite(r.get("p_value")) else "-" for r in records],
        "ppl": [_num(r["val_perplexity_mean"], ".2f") for r in records],
        second: [_num(r[f"{second}_mean"], ".4f") for r in records],
        "params": [_num(r["params"], ",.0f") for r in records],
        "FLOP/token": [_si(r.get("flops_per_token")) for r in records],
        "tokens/s": [_num(r["tokens_per_s"], ",.0f") for r in records],
        "wall": [_seconds(r.get("wall_s")) for r in records],
        "flags": [_flags_without_causal(r.get("flags", "")) for r in records],
    }  # fmt: skip
    body = _fixed_width(pd.DataFrame(columns), left=("", "variant", "test", "flags"))
    notes = [
        f"* baseline. mean ± sample std over seeds; 95% CI: t-interval of the mean. Δ: mean minus "
        f"the baseline's; p: two-sided t-test of {metric} against the baseline (paired by seed "
        f"when they share seeds, else Welch), '-' with one seed. val_loss: nats/token; "
        f"ppl = exp(loss); val_bpb: bits per UTF-8 byte; FLOP/token: training FLOPs, "
        f"6 x (matrix params, head included) + 12 x layers x emb_dim x context; wall: per run."
    ]
    resolution = _resolution_text(summary)
    if resolution and summary["ok"].max() > 0:
        notes.append(resolution)
    if metric == "val_bpb":
        notes.append(
            "The variants use different tokenizers, so they are compared by val_bpb: loss and "
            "perplexity are per token and do not compare across vocabularies."
        )
    if not summary["causal"].all():
        notes.append(
            "[non-causal]: the attention sees the tokens it predicts; its loss is not a language "
            "model's loss."
        )
    return "\n".join(filter(None, [title, body, *notes]))


def _flags_without_causal(flags: Any) -> str:
    parts = [f for f in str(flags or "").split(", ") if f and f != "non-causal"]
    return ", ".join(parts)


def _fixed_width(view: pd.DataFrame, left: tuple[str, ...]) -> str:
    """Columns padded to their widest cell: text columns left-aligned, numbers right-aligned."""
    cells = [list(map(str, view.columns)), *view.astype(str).values.tolist()]
    widths = [max(len(row[i]) for row in cells) for i in range(len(view.columns))]
    lines = []
    for row in cells:
        parts = [
            cell.ljust(w) if col in left else cell.rjust(w)
            for cell, w, col in zip(row, widths, view.columns, strict=True)
        ]
        lines.append(" ".join(parts).rstrip())
    return "\n".join(lines)


def _title(sweep: Sweep) -> str:
    failed = int((sweep.runs["status"] != "ok").sum()) if not sweep.runs.empty else 0
    kind = "experiment" if len(sweep.parts) == 1 else "experiments"
    return f"{kind} {sweep.name}: {len(sweep.runs)} of {sweep.expected} runs recorded" + (
        f", {failed} not ok" if failed else ""
    )


def _missing_text(sweep: Sweep, limit: int = 20) -> str:
    if not sweep.missing:
        return ""
    lines = [
        f"missing {len(sweep.missing)} of {sweep.expected} runs (still running or interrupted; "
        f"run the same `ablate run` command to continue):"
    ]
    for m in sweep.missing[:limit]:
        lines.append(f"  {m['variant']} seed={m['seed']}: {m['state']}")
    if len(sweep.missing) > limit:
        lines.append(f"  ... and {len(sweep.missing) - limit} more (report.md lists all)")
    return "\n".join(lines)


def _text(sweep: Sweep, summary: pd.DataFrame) -> str:
    return "\n".join(filter(None, [format_summary(summary, _title(sweep)), _missing_text(sweep)]))


def report(out_dir: str | Path) -> tuple[pd.DataFrame, str]:
    """Summarize an experiment folder; returns (summary table, printable text). Writes
    nothing (write_report writes the files)."""
    sweep = load(out_dir)
    summary = summarize(sweep.runs, sweep.baseline, asked=sweep.asked)
    return summary, _text(sweep, summary)


# -- report files -----------------------------------------------------------------------------


@dataclass
class Report:
    folder: Path
    markdown: Path
    html: Path
    figures: list[Path]
    summary: pd.DataFrame
    text: str


def default_out(dirs: Sequence[Path]) -> Path:
    """One folder: the folder itself. Several: report-<a>+<b> next to the first."""
    if len(dirs) == 1:
        return dirs[0]
    return dirs[0].parent / ("report-" + "+".join(d.name for d in dirs))


def write_report(
    dirs: str | Path | Iterable[str | Path],
    out: str | Path | None = None,
    *,
    figures: bool = True,
) -> Report:
    """Write report.md, report.html, figures/*.png, report_runs.csv, report_summary.csv and
    report_curves.csv into out (default: the experiment folder; for several folders,
    report-<a>+<b> next to the first). Everything is checked before anything is written."""
    sweep = load(dirs)
    summary = summarize(sweep.runs, sweep.baseline, asked=sweep.asked)
    curves = load_curves(sweep.runs)
    folder = Path(out) if out is not None else default_out([p.folder for p in sweep.parts])
    if folder.exists() and not folder.is_dir():
        raise ToolkitError(f"report folder {folder} is a file; choose another with --out")
    try:
        (folder / "figures").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolkitError(f"cannot write the report to {folder} ({exc.strerror})") from None

    made: list[Any] = []
    if figures and not summary.empty:
        from toolkit.analysis.figures import make_figures

        made = make_figures(
            sweep.runs,
            summary,
            curves,
            [(p.name, p.axes, p.table) for p in sweep.parts],
            folder / "figures",
        )
    write_atomic(folder / "report_runs.csv", sweep.runs.to_csv(index=False))
    write_atomic(folder / "report_summary.csv", summary.to_csv(index=False))
    write_atomic(folder / "report_curves.csv", curves.to_csv(index=False))
    doc = _document(sweep, summary, made)
    md, page = folder / "report.md", folder / "report.html"
    write_atomic(md, render_markdown(doc))
    write_atomic(page, render_html(doc, folder, title=f"Ablation report: {sweep.name}"))
    return Report(folder, md, page, [f.path for f in made], summary, _text(sweep, summary))


# A report is a list of blocks rendered twice, to Markdown and to HTML:
# ("h1"|"h2"|"h3", text), ("p", text), ("ul", [text]), ("table", header, rows, align, bold rows),
# ("img", path relative to the report, alt text). Text may hold `code` and **bold**; a table
# cell may hold line breaks.


def _document(sweep: Sweep, summary: pd.DataFrame, figures: list[Any]) -> list[tuple]:
    metric = summary.attrs.get("metric", "val_loss")
    doc: list[tuple] = [("h1", f"Ablation report: {sweep.name}")]
    for part in sweep.parts:
        if part.experiment.get("description"):
            doc.append(("p", f"**{part.name}**: {part.experiment['description']}"))
    sources = ", ".join(f"`{p.folder}`" for p in sweep.parts)
    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    doc.append(
        ("p", f"{len(sweep.runs)} of {sweep.expected} runs recorded, from {sources}. "
              f"Generated {when}.")
    )  # fmt: skip
    if len(sweep.parts) > 1:
        doc.append(
            (
                "p",
                f"The experiments share the baseline `{sweep.baseline}` (the same training "
                f"config): its runs are pooled by seed and every other variant is named "
                f"`experiment/variant`.",
            )
        )
    if summary.empty:
        doc.append(("p", "No finished runs yet."))
    else:
        why = (
            " The variants use different tokenizers, so they are compared by bits per byte: "
            "loss and perplexity are per token and do not compare across vocabularies."
            if metric == "val_bpb"
            else ""
        )
        doc.append(
            (
                "p",
                f"Variants are sorted by mean final {NAMES[metric]} ({UNITS[metric]}), lower "
                f"is better; the baseline is in bold.{why}",
            )
        )
        doc.append(("h2", "Results"))
        doc.append(_results_table(summary))
        doc.append(("ul", _table_notes(summary)))
        doc.append(("h2", "What the sweep could resolve"))
        doc.append(("p", _resolution_text(summary, markdown=True)))
    if sweep.missing:
        doc.append(("h2", "Missing runs"))
        doc.append(
            (
                "p",
                f"{len(sweep.missing)} of the {sweep.expected} runs that experiment.json lists "
                f"have no summary.json yet: the sweep is still running or was interrupted (the "
                f"same `ablate run` command continues it). The table uses the runs that "
                f"finished.",
            )
        )
        doc.append(
            (
                "ul",
                [f"`{m['variant']}` seed {m['seed']}: {m['state']} (`{m['folder']}`)"
                 for m in sweep.missing],
            )
        )  # fmt: skip
    if figures:
        doc.append(("h2", "Figures"))
        for fig in figures:
            doc.append(("h3", fig.title))
            doc.append(("img", f"figures/{fig.path.name}", fig.title))
            doc.append(("p", fig.caption))
    doc.append(("h2", "Method"))
    doc.append(("ul", _method_notes()))
    doc.append(("h2", "Data"))
    doc.append(
        (
            "ul",
            [
                "`report_runs.csv`: one row per recorded run (the columns of results.csv, plus "
                "`run_dir` and `flops_per_token`).",
                "`report_summary.csv`: the table above, one row per variant, every statistic "
                "unrounded.",
                "`report_curves.csv`: one row per evaluation of every run (step, tokens, train "
                "and validation loss, perplexity, bits per byte, learning rate, elapsed time).",
                "`figures/`: the figures as PNG files.",
            ],
        )
    )
    return doc


def _results_table(summary: pd.DataFrame) -> tuple:
    metric = summary.attrs.get("metric", "val_loss")
    others = [m for m in ("val_loss", "val_perplexity", "val_bpb") if m != metric]
    labels = {"val_loss": "val loss", "val_perplexity": "perplexity", "val_bpb": "bits/byte"}
    spec = {"val_loss": ".4f", "val_perplexity": ".3f", "val_bpb": ".4f"}

    def stat(r: dict[str, Any], m: str) -> str:
        text = f"{_num(r[f'{m}_mean'], spec[m])} ± {_num(r[f'{m}_std'], spec[m])}"
        if _finite(r[f"{m}_ci_low"]):
            text += f"\n[{_num(r[f'{m}_ci_low'], spec[m])}, {_num(r[f'{m}_ci_high'], spec[m])}]"
        return text

    header = [
        "variant", "seeds", f"{labels[metric]} ({UNITS[metric]})", "Δ vs baseline", "p (test)",
        "detectable Δ", *[labels[m] for m in others], "params", "FLOP/token", "tokens/s",
        "wall time", "flags",
    ]  # fmt: skip
    align = ["l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "l"]
    rows, bold = [], set()
    for i, r in enumerate(summary.to_dict("records")):
        if r["baseline"]:
            bold.add(i)
        delta = (
            f"{_num(r['delta'], '+.4f')}\n({_num(r['delta_pct'], '+.2f')}%)"
            if _finite(r["delta"])
            else "-"
        )
        p = f"{_p(r['p_value'])}\n{r['test']}" if _finite(r["p_value"]) else "-"
        params = f"{_num(r['params'], ',.0f')}\n{_num(r['params_non_embedding'], ',.0f')} non-emb."
        rows.append(
            [
                r["variant"] + (" (baseline)" if r["baseline"] else ""),
                f"{r['ok']}/{r['seeds_asked']}",
                stat(r, metric),
                delta,
                p,
                _num(r["mde"], ".4f"),
                *[stat(r, m) for m in others],
                params,
                _si(r["flops_per_token"]),
                _num(r["tokens_per_s"], ",.0f"),
                _seconds(r["wall_s"]),
                r["flags"] or "",
            ]
        )
    return ("table", header, rows, align, bold)


def _table_notes(summary: pd.DataFrame) -> list[str]:
    metric = summary.attrs.get("metric", "val_loss")
    k = int((summary["test"] != "").sum())
    notes = [
        "Each statistic is over the finished seeds of a variant: mean ± sample std (n - 1), "
        "and below it the 95% confidence interval of the mean (t-interval, "
        "`mean ± t(0.975, n-1) · s / √n`). **seeds** is finished / asked.",
        f"**Δ vs baseline**: mean {metric} minus the baseline's, and in % of the baseline's. "
        "**p**: two-sided t-test against the baseline: `paired t` on the seeds both have "
        "(a seed fixes the initialisation and the data order), `Welch t` when they share "
        "fewer than two seeds, `-` when either side has one seed (no estimate of the noise).",
        f"p-values are not corrected for multiple comparisons: with {k} comparisons, about "
        f"{0.05 * k:.2g} would fall under 0.05 by chance if no variant differed.",
        "**detectable Δ**: the smallest true difference this comparison detects with 80% power "
        "at α = 0.05 (see below).",
        "**params**: unique parameters (a tied head counted once), and without the token and "
        "positional embeddings. **FLOP/token**: training FLOPs per token, "
        "`6 · N + 12 · n_layers · emb_dim · context_length`, N = non-embedding parameters plus "
        "a tied head. **tokens/s**: training throughput (evaluation and the first step left "
        "out), mean over seeds. **wall time**: per run, mean.",
    ]
    if not summary["causal"].all():
        notes.append(
            "**non-causal**: the attention sees the tokens it predicts; its loss is not a "
            "language model's loss."
        )
    if (summary["flags"] != "").any():
        notes.append(
            "**flags**: diverged runs (non-finite loss) and failed runs (error.txt in the run "
            "folder) are left out of the statistics; `k/n seeds` means fewer finished seeds "
            "than the spec asks."
        )
    return notes


def _method_notes() -> list[str]:
    return [
        "Final metrics are those of the last evaluation of each run, on the same fixed "
        "validation batches for every run. Loss: mean token cross-entropy (nats). Perplexity: "
        "exp(loss). Bits per byte: total cross-entropy / (ln 2 · UTF-8 bytes of the targets).",
        "Paired t-test: `d = variant - baseline` per shared seed, "
        "`t = mean(d) / (s_d / √n)`, `df = n - 1`.",
        "Welch's t-test: `t = (m_a - m_b) / √(s_a²/n_a + s_b²/n_b)`, Welch-Satterthwaite "
        "`df = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1))`.",
        "Minimum detectable difference (α = 0.05 two-sided, power 0.8): paired "
        "`(t(1-α/2, n-1) + t(power, n-1)) · s_diff / √n`, unpaired "
        "`(t(1-α/2, n_a+n_b-2) + t(power, n_a+n_b-2)) · s · √(1/n_a + 1/n_b)`; s is pooled "
        "across variants: `√(Σ(n_i-1)s_i² / Σ(n_i-1))`.",
        "FLOPs per token (Kaplan et al. 2020): `6 · N + 12 · n_layers · emb_dim · "
        "context_length` (forward and backward), from each run's config.json.",
    ]


_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")


def _inline_html(text: str) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos : m.start()]))
        if m.group(1) is not None:
            out.append(f"<code>{html.escape(m.group(1))}</code>")
        else:
            out.append(f"<strong>{html.escape(m.group(2))}</strong>")
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("\n", "<br>")


def render_markdown(doc: list[tuple]) -> str:
    out: list[str] = []
    for block in doc:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + block[1])
        elif kind == "p":
            out.append(block[1])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1]})")
        elif kind == "table":
            _, header, rows, align, bold = block
            lines = [
                "| " + " | ".join(_md_cell(h) for h in header) + " |",
                "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|",
            ]
            for i, row in enumerate(rows):
                cells = [_md_cell(c) for c in row]
                if i in bold:
                    cells[0] = f"**{cells[0]}**"
                lines.append("| " + " | ".join(cells) + " |")
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
  max-width: 1200px; padding: 0 1em; color: #1f2328; line-height: 1.5; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; vertical-align: top; }
th { background: #f6f8fa; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
tr.baseline td { font-weight: bold; background: #fff8c5; }
code { background: #f6f8fa; padding: 0 3px; border-radius: 3px; font-size: 0.9em; }
img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
h1, h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; }
""".strip()


def render_html(doc: list[tuple], folder: Path, title: str) -> str:
    """A self-contained page: inline CSS, figures as base64 PNG data URIs, no scripts."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
    ]
    for block in doc:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{_inline_html(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline_html(block[1])}</p>")
        elif kind == "ul":
            items = "".join(f"<li>{_inline_html(item)}</li>" for item in block[1])
            out.append(f"<ul>{items}</ul>")
        elif kind == "img":
            data = base64.b64encode((folder / block[1]).read_bytes()).decode("ascii")
            out.append(
                f'<p><img src="data:image/png;base64,{data}" alt="{html.escape(block[2])}"></p>'
            )
        elif kind == "table":
            _, header, rows, align, bold = block
            cls = ["" if a == "l" else ' class="r"' for a in align]
            head = "".join(
                f"<th{c}>{html.escape(h)}</th>" for h, c in zip(header, cls, strict=True)
            )
            body = []
            for i, row in enumerate(rows):
                cells = "".join(
                    f"<td{c}>{'<br>'.join(html.escape(x) for x in cell.split(chr(10)))}</td>"
                    for cell, c in zip(row, cls, strict=True)
                )
                body.append(f"<tr{' class=baseline' if i in bold else ''}>{cells}</tr>")
            out.append(
                f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
                + "\n".join(body)
                + "\n</tbody>\n</table>"
            )
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
