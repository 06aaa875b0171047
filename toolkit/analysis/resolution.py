"""What a sweep could resolve: the minimum detectable difference (MDE) of its comparisons with
the baseline, at α and power (0.05 and 0.8 by default), from the seed-to-seed spread pooled
across variants.

    sweep_resolution(values, baseline, metric, alpha, power)   spread, n, mde, mde_pct
    row_mde(test, mine, base, metric, resolution, ...)         one comparison's, by its design

With seeds shared with the baseline the spread is that of the per-seed differences (paired);
otherwise the within-variant spread (unpaired). The maths (noncentral t) is
stats.min_detectable_difference; the table that carries these is table.py, the note that
explains them text.py (resolution_text).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from toolkit.analysis import stats


def sweep_resolution(
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
        n = typical(pair_counts)
        mde = stats.min_detectable_difference(sd, n, paired=True, alpha=alpha, power=power)
        paired = True
    else:
        sd, df, paired = sd_within, df_within, False
        n = typical(counts) if counts else 0
        mde = stats.min_detectable_difference(sd, n, paired=False, alpha=alpha, power=power)
    base_mean = float(np.mean(list(base.values()))) if base else math.nan
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


def typical(counts: Sequence[int]) -> int:
    """The most common count (the smaller one on a tie)."""
    tally = Counter(counts)
    return min(tally, key=lambda c: (-tally[c], c))


def row_mde(
    test: stats.TestResult,
    mine: dict[Any, float],
    base: dict[str, dict[Any, float]] | None,
    metric: str,
    resolution: dict[str, Any],
    alpha: float,
    power: float,
) -> float:
    """The minimum detectable difference of one variant's comparison with the baseline: its
    own test's design (paired on the seeds it shares, or Welch with its and the baseline's
    seed counts) at the spread sweep_resolution() pooled; NaN without a test."""
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
