"""What a rerun may do with the runs a folder already holds: skip the finished ones that are
intact (`finished`), train again the ones asked for by name (`rerun_indices`), and refuse to
replace runs of other settings (`check_unchanged`), naming what changed. Not here: training
(jobs.py) or the order of a sweep (runner.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from toolkit.api.registry import suggest
from toolkit.errors import SpecError
from toolkit.files import read_json
from toolkit.names import label
from toolkit.spec.schema import LEGACY_VALUES, SECTIONS, Spec, with_legacy_values
from toolkit.sweep import verify
from toolkit.training.resume import RESUME_FILE


def finished(folder: Path, config_hash: str) -> bool:
    """Whether this folder holds a finished (or diverged) run of exactly this config, intact:
    one whose files no longer match its summary (toolkit.sweep.verify) is said so in one line
    and trained again. An intact one loses the resume state its finish did not get to remove
    (a kill between writing summary.json and removing resume.pt): nothing would resume from
    it."""
    done = read_json(folder / "summary.json")
    if done is None and (folder / "summary.json").exists():
        print(f"{folder}: summary.json is not JSON (corrupt?); training it again", file=sys.stderr)
        return False
    if not (
        isinstance(done, dict)
        # A diverged run is a result too: training is deterministic, so it would diverge again.
        and done.get("status") in ("ok", "diverged")
        and done.get("config_hash") == config_hash
    ):
        return False
    found = verify.problems(folder)
    if found:
        print(f"{folder}: {'; '.join(found)}; training it again", file=sys.stderr)
        return False
    (folder / RESUME_FILE).unlink(missing_ok=True)
    return True


def run_names(spec: Spec) -> dict[str, int]:
    """Every name a run answers to ("VARIANT/seed-N", and its folder "VARIANT_SLUG/seed-N")
    -> its position in the sweep."""
    by_name = {}
    for i, r in enumerate(spec.runs):
        by_name[f"{r.variant}/seed-{r.seed}"] = i
        by_name[r.folder] = i
    return by_name


def rerun_indices(spec: Spec, names: list[str] | tuple[str, ...]) -> set[int]:
    """The positions of the runs `names` ask to train again ("VARIANT/seed-N" or the run's
    folder, "VARIANT_SLUG/seed-N"); an unknown name is an error listing some that exist."""
    by_name = run_names(spec)
    unknown = [n for n in names if n.rstrip("/") not in by_name]
    if unknown:
        some = ", ".join(f"{r.variant}/seed-{r.seed}" for r in spec.runs[:3])
        raise SpecError(
            f"--rerun {unknown[0]!r}: no such run in {spec.path}{suggest(unknown[0], by_name)}; "
            f"name one as VARIANT/seed-N, e.g. {some}"
        )
    return {by_name[n.rstrip("/")] for n in names}


def check_same_experiment(spec: Spec, out: Path) -> None:
    """Refuse to train into a folder whose experiment.json is another experiment's (another
    name): its table and experiment.json would be replaced by this one's, and its runs left
    out of every report."""
    held = read_json(out / "experiment.json")
    name = held.get("name") if isinstance(held, dict) else None
    if isinstance(name, str) and name != spec.name:
        runs = held.get("runs")
        count = f"{len(runs)} run(s)" if isinstance(runs, list) else "its runs"
        raise SpecError(
            f"{out} holds experiment {name!r} ({count}), not {spec.name!r}, whose table would "
            f"replace its own; train into another --out (by default runs/<spec name>)"
        )


def check_tunable_folder(spec: Spec, out: Path) -> None:
    """Before a tuned sweep trains anything: refuse a folder that holds this experiment's runs
    from a sweep without [tune]. Tuning would choose other settings and train those runs again
    over them, losing them (a tuned folder's final runs may change with a new choice: that is
    what tuning is for)."""
    held = read_json(out / "experiment.json")
    if not isinstance(held, dict) or held.get("tune"):
        return
    trained = [r for r in spec.runs if (out / r.folder / "config.json").is_file()]
    if trained:
        first = trained[0]
        raise SpecError(
            f"{out} holds {len(trained)} run(s) of this experiment trained without [tune] (e.g. "
            f"{first.variant}/seed-{first.seed}), which tuned settings would replace; train into "
            f"another --out, or pass --restart to discard this spec's runs there"
        )


def check_unchanged(
    spec: Spec,
    out: Path,
    skip: set[int] = frozenset(),
    free: tuple[str, ...] = (),
    data_keys: dict[int, str] | None = None,
) -> None:
    """Refuse to train over runs of another config: a run folder of this spec that holds a run
    (finished or interrupted) trained with other settings would be replaced. The error names
    what changed and the two ways on. Runs asked to be retrained (`skip`) are not checked, nor
    runs that differ only in the dotted keys `free` (what tuning chose: a new choice retrains).
    data_keys (run index -> its token data's cache key): a run of this config trained on other
    tokens (a data.path file edited since) is refused too, as it would join the table."""
    stale = []
    for i, r in enumerate(spec.runs):
        if i in skip:
            continue
        recorded = read_json(out / r.folder / "config.json")
        if not isinstance(recorded, dict):
            continue
        if recorded.get("config_hash") in (None, r.config_hash()):
            held = recorded.get("data_key")
            if data_keys is not None and held and held != data_keys.get(i, held):
                stale.append(f"{r.variant}/seed-{r.seed}")
            continue
        changes = config_changes(recorded, r.config())
        if changes and all(c.split(":", 1)[0] in free for c in changes):
            continue
        # A key added since that run was recorded, now at another value than it ran with:
        # setting the old value back continues those runs as they were trained and measured.
        before = _flat(with_legacy_values(recorded))
        keep = [
            f"--set {key}={before[key]}"
            for key in LEGACY_VALUES
            if any(c.startswith(f"{key}:") for c in changes)
        ]
        raise SpecError(
            f"{out / r.folder} holds a run trained with other settings "
            f"({'; '.join(changes[:4]) or 'its config hash differs'}"
            f"{f'; {len(changes) - 4} more' if len(changes) > 4 else ''}); "
            f"train into another --out, or pass --restart to discard this spec's runs there"
            + (
                f", or {' '.join(keep)} to continue them as they were"
                if keep and len(keep) == len(changes)
                else ""
            )
        )
    if stale:
        raise SpecError(
            f"{out} holds {len(stale)} run(s) of this spec trained on other data than it "
            f"reads now ({', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''}: the corpus "
            f"or its files changed since, so the token arrays differ); restore the data, train "
            f"into another --out, or pass --restart to train this spec's runs there again"
        )


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """{'seed': ..., 'train.lr': ..., ...}: a run config's sections as dotted keys."""
    out = {"seed": config.get("seed")}
    for section in SECTIONS:
        for key, value in (config.get(section) or {}).items():
            out[f"{section}.{key}"] = value
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two run configs (config.json's sections and seed), as
    'train.max_steps: 40 -> 20' lines."""

    before, after = _flat(with_legacy_values(old)), _flat(with_legacy_values(new))
    return [
        f"{key}: {label(before.get(key))} -> {label(after.get(key))}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]
