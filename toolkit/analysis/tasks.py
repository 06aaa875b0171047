"""lm-evaluation-harness scores in the comparison table (`ablate eval-tasks` records them; a
run's "task:<task>/<metric>" columns of the results table hold them).

For each task score column, summarize() adds, per variant over its finished runs that have
the score: _mean, _std, _ci_low, _ci_high (the t-interval) and _n (how many), and against the
baseline's: _delta (the difference the test estimates: of the scores on the shared seeds when
it pairs them, else of the means), _p (the losses' own test: paired t on the shared seeds,
else Welch) and _p_holm (Holm over every task comparison in the table: a family of its
own, apart from the losses'). A metric that is another metric of its task times one constant
in every run (a window score's bits per byte is its loss times tokens / bytes / ln 2, for one
corpus and tokenizer) repeats that metric's test, so the family counts it once. No
better/worse verdict: whether higher is better depends on the metric (accuracy up, perplexity
down), which the reader knows and the table does not.

A task whose runs were scored in different ways (few-shot examples, limit, lm-eval version)
is named by `settings_differ`, since its means mix them. Not here: scoring (toolkit/inference/
harness.py) and the text of the task table (toolkit/analysis/sections.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from toolkit.analysis import stats
from toolkit.sweep.results import TASK_SETTINGS

STATS = ("mean", "std", "ci_low", "ci_high", "n", "delta", "p", "p_holm")


def described(column: str, by_seed: Mapping[Any, float], confidence: float) -> dict[str, float]:
    """One variant's _mean, _std, _ci_low, _ci_high and _n of a task score column, from its
    seed -> score."""
    d = stats.describe(by_seed.values(), confidence)
    return {
        f"{column}_mean": d.mean,
        f"{column}_std": d.std,
        f"{column}_ci_low": d.ci_low,
        f"{column}_ci_high": d.ci_high,
        f"{column}_n": d.n,
    }


def compared(
    variants: Sequence[str],
    baseline: str | None,
    values: Mapping[str, Mapping[str, Mapping[Any, float]]],
    scored: Sequence[str],
) -> pd.DataFrame:
    """_delta, _p and _p_holm of every task score column, one row per variant in the order
    given (NaN for the baseline, and where either side has no score); values: variant ->
    column -> seed -> score."""
    base = values.get(baseline, {}) if baseline is not None else {}
    columns: dict[str, list[float]] = {}
    for column in scored:
        deltas, ps = [], []
        for variant in variants:
            mine = values[variant].get(column, {})
            if variant == baseline or not mine or not base.get(column):
                deltas.append(math.nan)
                ps.append(math.nan)
                continue
            test = stats.compare_to_baseline(mine, base[column])
            deltas.append(test.delta)  # over the seeds the test compares
            ps.append(test.p_value)
        columns[f"{column}_delta"], columns[f"{column}_p"] = deltas, ps
    leader = _same_tests(scored, values)
    tested = [column for column in scored if leader[column] == column]
    adjusted = iter(stats.holm(p for column in tested for p in columns[f"{column}_p"]))
    holm = {column: [next(adjusted) for _ in variants] for column in tested}
    for column in scored:
        columns[f"{column}_p_holm"] = holm[leader[column]]
    return pd.DataFrame(columns)


def _same_tests(
    scored: Sequence[str], values: Mapping[str, Mapping[str, Mapping[Any, float]]]
) -> dict[str, str]:
    """column -> the first column of the same task whose scores are its scores times one
    constant in every run (itself when there is none): the test on such a column is the same
    test (the same t statistic, the same p), so the Holm family counts it once."""
    leader: dict[str, str] = {}
    for i, column in enumerate(scored):
        task = column.rsplit("/", 1)[0]
        leader[column] = next(
            (
                other
                for other in scored[:i]
                if leader[other] == other
                and other.rsplit("/", 1)[0] == task
                and _proportional(values, column, other)
            ),
            column,
        )
    return leader


def _proportional(values: Mapping[str, Mapping[str, Mapping[Any, float]]], a: str, b: str) -> bool:
    """Whether column a is column b times one positive constant in every run that has either
    (to 1e-9 relative), over at least two runs."""
    ratios = []
    for by_column in values.values():
        xs, ys = by_column.get(a, {}), by_column.get(b, {})
        if xs.keys() != ys.keys():
            return False
        for seed, x in xs.items():
            y = ys[seed]
            if not (math.isfinite(x) and math.isfinite(y)) or x * y <= 0:
                return False
            ratios.append(x / y)
    return len(ratios) >= 2 and max(ratios) - min(ratios) <= 1e-9 * min(ratios)


def settings_differ(table: pd.DataFrame) -> dict[str, list[str]]:
    """task -> the distinct ways it was scored, for the tasks scored in more than one way
    across the table's runs (few-shot examples, limit, lm-eval version)."""
    found: dict[str, set[str]] = {}
    held = table[TASK_SETTINGS].dropna() if TASK_SETTINGS in table else []
    for text in held:
        for task, how in json.loads(text).items():
            found.setdefault(task, set()).add(how)
    return {task: sorted(ways) for task, ways in sorted(found.items()) if len(ways) > 1}


def _mean(by_seed: Mapping[Any, float]) -> float:
    return stats.describe(by_seed.values()).mean
