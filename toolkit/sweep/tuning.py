"""Choosing each variant's training settings from its tuning runs ([tune]: toolkit/spec/tune.py).

    choose(spec, table)   -> Choice: per variant the point with the lowest mean validation
                             metric over the tuning seeds, the table of every point, and the
                             warnings (a choice at the edge of its range)

A point where any tuning seed failed or diverged scores +inf: a learning rate that blows up
on one seed is not a safe choice. Ties go to the first point in the grid's order, so the
choice is the same on every rerun. Not here: the grid (spec/tune.py) or running the phases
(runner.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import ToolkitError
from toolkit.files import write_atomic
from toolkit.names import label
from toolkit.spec.schema import Spec
from toolkit.spec.tune import point_label, tune_variant

TUNE_DIR = "tune"  # the tuning runs' folder inside the experiment's
TUNING_FILE = "tuning.csv"


@dataclass
class Choice:
    chosen: dict[str, dict[str, Any]]  # variant -> {dotted key: value}
    table: pd.DataFrame  # one row per variant x point
    warnings: list[str] = field(default_factory=list)


def choose(spec: Spec, table: pd.DataFrame) -> Choice:
    """Each variant's best point from the tuning phase's results table."""
    tune = spec.tune
    assert tune is not None
    metric = tune.metric
    rows = []
    chosen: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for v in spec.variants:
        scores, per_seed = [], []
        for point in tune.points(v.name):
            runs = table[table["variant"] == tune_variant(v.name, point)]
            # A seed with no run at all (the phase did not finish) counts as failed too.
            by_seed = {seed: math.inf for seed in tune.seeds}
            for _, row in runs[runs["seed"].isin(tune.seeds)].iterrows():
                ok = row["status"] == "ok" and math.isfinite(float(row[metric]))
                by_seed[row["seed"]] = float(row[metric]) if ok else math.inf
            values = list(by_seed.values())
            score = float(np.mean(values))
            scores.append(score)
            per_seed.append(by_seed)
            rows.append({
                "variant": v.name, "point": point_label(point),
                **{key: label(value) for key, value in point.items()},
                metric: score if math.isfinite(score) else None,
                "seeds": sum(math.isfinite(x) for x in values),
                "chosen": False,
            })  # fmt: skip
        best = int(np.argmin(scores))
        if not math.isfinite(scores[best]):
            raise ToolkitError(
                f"every tuning run of variant {v.name!r} failed or diverged; see the error.txt "
                f"files under {TUNE_DIR}/ and widen or move the [tune] range"
            )
        point = tune.points(v.name)[best]
        chosen[v.name] = point
        rows[len(rows) - len(scores) + best]["chosen"] = True
        warnings += _edges(v.name, point, tune.values_for(v.name))
        labels = [point_label(p) for p in tune.points(v.name)]
        warnings += near_tie(v.name, labels, scores, per_seed, metric)
    return Choice(chosen, pd.DataFrame(rows), warnings)


def near_tie(
    variant: str,
    labels: list[str],
    scores: list[float],
    per_seed: list[dict[Any, float]],
    metric: str,
) -> list[str]:
    """A warning when the runner-up's mean metric is closer to the best's than the two points'
    difference spreads across the tuning seeds (its sample sd; two seeds or more, both
    finite on each): the choice between them may be the seeds' luck. With one tuning seed
    there is no spread to judge by, and no warning. labels: the points' point_label(), scores
    their mean metric (inf for a failed point), per_seed their seed -> metric."""
    order = [i for i in np.argsort(scores, kind="stable") if math.isfinite(scores[i])]
    if len(order) < 2:
        return []
    best, second = order[0], order[1]
    diffs = [
        per_seed[second][seed] - per_seed[best][seed]
        for seed in per_seed[best]
        if math.isfinite(per_seed[best][seed]) and math.isfinite(per_seed[second][seed])
    ]
    if len(diffs) < 2:
        return []
    gap, spread = float(np.mean(diffs)), float(np.std(diffs, ddof=1))
    if gap >= spread:
        return []
    return [
        f"variant {variant!r}: {labels[best]} won by {gap:.4f} in mean {metric} "
        f"over {labels[second]}, less than that difference varies across the "
        f"{len(diffs)} tuning seeds (sd {spread:.4f}): the choice may be the seeds' luck; more "
        f"tuning seeds ([tune] seeds) would settle it"
    ]


def _edges(variant: str, point: dict[str, Any], values: dict[str, list[Any]]) -> list[str]:
    """A warning per numeric key whose chosen value is the smallest or largest tried."""
    out = []
    for key, candidates in values.items():
        numbers = [c for c in candidates if isinstance(c, int | float) and not isinstance(c, bool)]
        if len(numbers) != len(candidates):
            continue  # betas, weight_decay_on: no order to speak of
        value = point[key]
        end = "smallest" if value == min(numbers) else "largest" if value == max(numbers) else ""
        if end:
            out.append(edge_text(variant, key, label(value), end))
    return out


def edge_text(variant: str, key: str, shown: str, end: str) -> str:
    """The warning for a choice at an end ("smallest" or "largest") of the values tried: the
    same words at the choice and in the report's Tuning section."""
    return (
        f"variant {variant!r}: the chosen {key} ({shown}) is the {end} tried; widen the [tune] "
        f"range past it, or the best may lie outside"
    )


def changed_choices(before: dict[str, Any], now: dict[str, dict[str, Any]]) -> list[str]:
    """A line per variant whose chosen point differs from the one experiment.json recorded
    (`before`: variant -> point, as JSON holds it), whose final runs therefore train again."""
    lines = []
    for variant, point in now.items():
        old = before.get(variant)
        if isinstance(old, dict) and old != json.loads(json.dumps(point)):
            lines.append(
                f"tuning now chooses {point_label(point)} for {variant}, whose final runs "
                f"trained at {point_label(old)}: they train again"
            )
    return lines


def write_choice(out: Path, choice: Choice) -> None:
    """tuning.csv: every variant x point with its mean metric and which was chosen."""
    write_atomic(out / TUNING_FILE, choice.table.to_csv(index=False))
