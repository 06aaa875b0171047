"""Statistics for comparing variants over seeds: intervals, tests, and what a sweep can resolve.

Every function takes plain sequences of floats (one value per seed) and returns plain numbers, so
the formulas can be checked by hand. Quantiles and tail probabilities of Student's t come from
scipy.stats.t; the statistics themselves are written out here.

- `describe(x)`: n, mean, sample std (n - 1), and the t-interval for the mean,
  mean ± t(1 - α/2, n - 1) · s / √n. NaN where n is too small (std and interval need n ≥ 2).
- `paired_t(a, b)`: differences d = a - b of the same seeds; t = mean(d) / (s_d / √n),
  df = n - 1, two-sided p = 2 · P(T_df > |t|). Equal to scipy.stats.ttest_rel.
- `welch_t(a, b)`: t = (mean(a) - mean(b)) / √(s_a²/n_a + s_b²/n_b), Welch-Satterthwaite
  df = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a - 1) + (s_b²/n_b)²/(n_b - 1)).
  Equal to scipy.stats.ttest_ind(equal_var=False).
- `compare_to_baseline(variant, baseline)`: seed -> value mappings. Paired t-test on the seeds
  both have (seeds fix the initialisation and the data order, so runs with the same seed are
  paired) when they share at least two; else Welch's t-test when each has at least two; else no
  test (p is NaN: one seed says nothing about seed-to-seed noise).
- `pooled_std(groups)`: √(Σ (n_i - 1) s_i² / Σ (n_i - 1)) over groups with n_i ≥ 2.
- `min_detectable_difference(sd, n)`: the smallest true difference a two-sided test at level α
  detects with the given power (normal-approximation formula with t quantiles):
  paired, n pairs: (t(1 - α/2, n - 1) + t(power, n - 1)) · s_diff / √n;
  two independent groups of n_a and n_b: (t(1 - α/2, df) + t(power, df)) · s · √(1/n_a + 1/n_b),
  df = n_a + n_b - 2.

A test with no spread at all (every difference equal) has no p-value (NaN) rather than 0 or 1,
and no minimum detectable difference either.

Not here: which runs are compared with which, and by which metric (table.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

NAN = float("nan")
PAIRED = "paired t"
WELCH = "Welch t"


@dataclass(frozen=True)
class Description:
    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class TestResult:
    """One variant against the baseline. test is PAIRED, WELCH or "" (no test); n is the number
    of pairs (paired) or the two sample sizes added (Welch); delta is the difference of the means
    of the values the test used; note says why there is no p-value."""

    test: str
    n: int
    delta: float
    statistic: float
    df: float
    p_value: float
    note: str = ""


def _clean(values: Iterable[float]) -> np.ndarray:
    x = np.asarray([float(v) for v in values], dtype=float)
    return x[np.isfinite(x)]


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t with df degrees of freedom (NaN for df < 1)."""
    if not df >= 1:
        return NAN
    return float(_scipy_stats.t.ppf(q, df))


def two_sided_p(t: float, df: float) -> float:
    """2 · P(T_df > |t|)."""
    if not (math.isfinite(t) and df > 0):
        return NAN
    return float(min(1.0, 2.0 * _scipy_stats.t.sf(abs(t), df)))


def describe(values: Iterable[float], confidence: float = 0.95) -> Description:
    """n, mean, sample std and the t-interval of the mean of the finite values."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return Description(0, NAN, NAN, NAN, NAN)
    mean = float(x.mean())
    if n < 2:
        return Description(1, mean, NAN, NAN, NAN)
    std = float(x.std(ddof=1))
    half = t_quantile(1 - (1 - confidence) / 2, n - 1) * std / math.sqrt(n)
    return Description(n, mean, std, mean - half, mean + half)


def t_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float]:
    """(low, high) of the t-interval of the mean; (mean, mean) for one value, as a plotting
    library expects of an error-bar function."""
    d = describe(values, confidence)
    if d.n == 1:
        return d.mean, d.mean
    return d.ci_low, d.ci_high


def paired_t(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Paired t-test of a against b (same order: a[i] and b[i] share a seed)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError("paired samples must have the same length")
    keep = np.isfinite(x) & np.isfinite(y)
    d = x[keep] - y[keep]
    n = len(d)
    delta = float(d.mean()) if n else NAN
    if n < 2:
        return TestResult(PAIRED, n, delta, NAN, NAN, NAN, "fewer than 2 pairs")
    sd = float(d.std(ddof=1))
    if sd == 0:
        return TestResult(PAIRED, n, delta, NAN, n - 1, NAN, "no spread in the differences")
    t = delta / (sd / math.sqrt(n))
    return TestResult(PAIRED, n, delta, t, n - 1, two_sided_p(t, n - 1))


def welch_t(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Welch's unequal-variance t-test of a against b."""
    x, y = _clean(a), _clean(b)
    na, nb = len(x), len(y)
    delta = float(x.mean() - y.mean()) if na and nb else NAN
    if na < 2 or nb < 2:
        return TestResult(WELCH, na + nb, delta, NAN, NAN, NAN, "a group has fewer than 2 seeds")
    va, vb = float(x.var(ddof=1)) / na, float(y.var(ddof=1)) / nb
    se2 = va + vb
    if se2 == 0:
        return TestResult(WELCH, na + nb, delta, NAN, NAN, NAN, "no spread in either group")
    t = delta / math.sqrt(se2)
    df = se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    return TestResult(WELCH, na + nb, delta, t, df, two_sided_p(t, df))


def compare_to_baseline(variant: Mapping[int, float], baseline: Mapping[int, float]) -> TestResult:
    """Paired t-test on the shared seeds when there are at least two, else Welch's t-test, else
    no test. Values are seed -> final metric; non-finite values are left out."""
    v = {s: float(x) for s, x in variant.items() if math.isfinite(float(x))}
    b = {s: float(x) for s, x in baseline.items() if math.isfinite(float(x))}
    shared = sorted(set(v) & set(b))
    if len(shared) >= 2:
        return paired_t([v[s] for s in shared], [b[s] for s in shared])
    if len(v) >= 2 and len(b) >= 2:
        return welch_t(list(v.values()), list(b.values()))
    delta = float(np.mean(list(v.values())) - np.mean(list(b.values()))) if v and b else NAN
    return TestResult("", len(v) + len(b), delta, NAN, NAN, NAN, "one seed: no test")


def pooled_std(groups: Iterable[Sequence[float]]) -> tuple[float, int]:
    """(pooled sample std, its degrees of freedom) over the groups with at least two values."""
    ss, df = 0.0, 0
    for g in groups:
        x = _clean(g)
        if len(x) >= 2:
            ss += float(((x - x.mean()) ** 2).sum())
            df += len(x) - 1
    return (math.sqrt(ss / df) if df else NAN), df


def min_detectable_difference(
    sd: float,
    n: int,
    *,
    paired: bool = True,
    n_other: int | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """The smallest true difference that a two-sided t-test at level alpha detects with the
    given power. paired: n pairs with std of the differences sd. Not paired: groups of n and
    n_other (default n) with common std sd. NaN when the test has no degrees of freedom, or
    no spread (sd 0: a t-test then has no p-value at all)."""
    if not (math.isfinite(sd) and sd > 0) or n < 1:
        return NAN
    if paired:
        df, scale = n - 1, 1 / math.sqrt(n)
    else:
        m = n if n_other is None else n_other
        if m < 1:
            return NAN
        df, scale = n + m - 2, math.sqrt(1 / n + 1 / m)
    if df < 1:
        return NAN
    return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * sd * scale
