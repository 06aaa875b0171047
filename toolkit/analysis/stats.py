"""Statistics for comparing variants over seeds: intervals, tests, and what a sweep can resolve.

Every function takes plain sequences of floats (one value per seed) and returns plain numbers, so
the formulas can be checked by hand. Quantiles and tail probabilities of Student's t (central and
noncentral) come from scipy.stats; the statistics themselves are written out here.

- `describe(x)`: n, mean, sample std (n - 1), and the t-interval for the mean,
  mean ± t(1 - α/2, n - 1) · s / √n. NaN where n is too small (std and interval need n ≥ 2).
- `paired_t(a, b)`: differences d = a - b of the same seeds; t = mean(d) / (s_d / √n),
  df = n - 1, two-sided p = 2 · P(T_df > |t|). Equal to scipy.stats.ttest_rel.
- `welch_t(a, b)`: t = (mean(a) - mean(b)) / √(s_a²/n_a + s_b²/n_b), Welch-Satterthwaite
  df = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a - 1) + (s_b²/n_b)²/(n_b - 1)).
  Equal to scipy.stats.ttest_ind(equal_var=False).
- `student_t(a, b)`: two groups with one variance, pooled: t = (mean(a) - mean(b)) /
  (s_p · √(1/n_a + 1/n_b)), s_p² = ((n_a - 1) s_a² + (n_b - 1) s_b²) / (n_a + n_b - 2),
  df = n_a + n_b - 2. Equal to scipy.stats.ttest_ind(equal_var=True).
- `compare_to_baseline(variant, baseline)`: seed -> value mappings. Paired t-test on the seeds
  both have (seeds fix the initialisation and the data order, so runs with the same seed are
  paired) when they share at least two; else Welch's t-test when each has at least two; else no
  test (p is NaN: one seed says nothing about seed-to-seed noise).
- `difference(variant, baseline)`: the Δ that test estimates (the mean of the paired
  differences, or the difference of the means) and the baseline's mean over the same seeds.
- `holm(p)`: Holm-Bonferroni adjusted p-values of one family of tests. Sort the m finite p
  ascending, p_(1) ≤ ... ≤ p_(m); adjusted p_(i) = max_{j ≤ i} min(1, (m - j + 1) · p_(j)).
  NaN p-values (no test) are not counted in m and stay NaN. Rejecting where the adjusted p < α
  keeps the chance of any false rejection in the family at or below α, whatever the
  dependence between the tests. `adjust(p, correction)` applies "holm" or "none".
- `aa_check(baseline)`: an A/A test of the noise estimate. A configuration's seeds, in sorted
  seed order, split into a first half (⌊n/2⌋ seeds) and the rest, compared with `student_t`.
  Both halves are independent runs of one configuration, so a p < α is a false alarm, and
  happens in a fraction α of sweeps when the seeds behave as the t-tests assume (independent,
  normal, one variance); more often when they do not. Student's rather than Welch's test: the
  two halves share their variance by construction, so the pooled test is exact, where Welch's
  raises fewer alarms than α with 2 or 3 seeds a side. None below 4 finite seeds.
- `outliers(groups)`: seeds far from the other seeds of their group (variant), by a deleted
  residual against the noise pooled over every group. For seed i of a group with n ≥ 3 seeds:
  t_i = (x_i - m_-i) / (s_-i · √(1 + 1/(n - 1))), m_-i the mean of the group's other seeds,
  s_-i² the pooled variance of every group with seed i left out (Σ squared deviations from
  each group's own mean / Σ (n_g - 1), the group's other n - 1 seeds counted as a group), df
  = Σ (n_g - 1) - 1. A normal seed gives t_i ~ t(df) exactly, so seed i is flagged when
  2 · P(T_df > |t_i|) < α_out / n (Bonferroni over the group's seeds, α_out = 0.01): a clean
  group is flagged with probability at most 1%. No spread (s_-i = 0) flags nothing. Not the
  median/MAD modified z-score |0.6745 (x - median) / MAD| > 3.5 (Iglewicz-Hoaglin): with 3 to
  20 seeds per variant its MAD is so rough that it flags 10-30% of clean normal variants.
- `pooled_std(groups)`: √(Σ (n_i - 1) s_i² / Σ (n_i - 1)) over groups with n_i ≥ 2.
- `min_detectable_difference(sd, n)`: the smallest true difference δ a two-sided t-test at level
  α detects with the given power, from the noncentral t distribution T'(df, λ):
  power(δ) = P(T'(df, λ) > c) + P(T'(df, -λ) > c), c = t(1 - α/2, df), λ = δ / (sd · k),
  solved for δ; paired, n pairs: df = n - 1, k = 1/√n, sd the std of the differences;
  two independent groups of n_a and n_b: df = n_a + n_b - 2, k = √(1/n_a + 1/n_b) (Student's
  test; Welch's has less power than that with few seeds a side). The textbook shortcut
  (t(1 - α/2, df) + t(power, df)) · sd · k gives less than the stated power with few seeds
  (about 0.73 for 2 pairs, 0.77 for 3).

A test with no spread at all (every difference equal, up to float rounding: a spread of at
most 1e-12 times the largest value) has no p-value (NaN) rather than 0 or 1, and no minimum
detectable difference either.

Not here: which runs are compared with which, and by which metric (table.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize as _scipy_optimize
from scipy import stats as _scipy_stats

from toolkit.errors import ToolkitError

NAN = float("nan")
PAIRED = "paired t"
WELCH = "Welch t"
STUDENT = "Student t"
HOLM, NO_CORRECTION = "holm", "none"
CORRECTIONS = (HOLM, NO_CORRECTION)
# Per group: the chance that outliers() flags a seed of a clean group is at most this.
OUTLIER_ALPHA = 0.01
# A spread this small relative to the values is float rounding, not seed-to-seed noise.
ROUNDING = 1e-12


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
    if _no_spread(sd, x[keep], y[keep]):
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
    if _no_spread(math.sqrt(se2), x, y):
        return TestResult(WELCH, na + nb, delta, NAN, NAN, NAN, "no spread in either group")
    t = delta / math.sqrt(se2)
    df = se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    return TestResult(WELCH, na + nb, delta, t, df, two_sided_p(t, df))


def student_t(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Student's two-sample t-test of a against b, one variance pooled from both groups."""
    x, y = _clean(a), _clean(b)
    na, nb = len(x), len(y)
    delta = float(x.mean() - y.mean()) if na and nb else NAN
    if na < 2 or nb < 2:
        return TestResult(STUDENT, na + nb, delta, NAN, NAN, NAN, "a group has fewer than 2 seeds")
    sd, df = pooled_std([x, y])
    if _no_spread(sd, x, y):
        return TestResult(STUDENT, na + nb, delta, NAN, df, NAN, "no spread in either group")
    t = delta / (sd * math.sqrt(1 / na + 1 / nb))
    return TestResult(STUDENT, na + nb, delta, t, df, two_sided_p(t, df))


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


def difference(variant: Mapping[Any, float], baseline: Mapping[Any, float]) -> tuple[float, float]:
    """(Δ, the baseline's mean) over the values compare_to_baseline tests: the mean of the
    per-seed differences and the baseline's mean on the shared seeds when it pairs them, else
    the difference of the two means and the baseline's mean over all its seeds. So Δ, its
    interval and p describe one comparison even when a side lost seeds (a failed run)."""
    test = compare_to_baseline(variant, baseline)
    b = {s: float(x) for s, x in baseline.items() if math.isfinite(float(x))}
    if test.test == PAIRED:
        v = {s for s, x in variant.items() if math.isfinite(float(x))}
        b = {s: x for s, x in b.items() if s in v}
    return test.delta, float(np.mean(list(b.values()))) if b else NAN


def check_correction(correction: str) -> str:
    """correction itself when it is one the report knows ("holm" or "none")."""
    if correction not in CORRECTIONS:
        raise ToolkitError(
            f"unknown correction {correction!r}: use 'holm' (Holm-Bonferroni, the default) or "
            f"'none' (p-values as they are)"
        )
    return correction


def holm(p_values: Iterable[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given; NaN stays NaN and is not counted.
    [0.01, 0.04, 0.03] -> [0.03, 0.06, 0.06] (sorted: 3 · 0.01, max(0.03, 2 · 0.03),
    max(0.06, 1 · 0.04))."""
    p = np.asarray([float(v) for v in p_values], dtype=float)
    out = np.full(p.shape, NAN)
    tested = np.flatnonzero(np.isfinite(p))
    m = len(tested)
    running = 0.0
    for j, i in enumerate(tested[np.argsort(p[tested], kind="stable")], start=1):
        running = max(running, min(1.0, (m - j + 1) * float(p[i])))
        out[i] = running
    return out.tolist()


def adjust(p_values: Iterable[float], correction: str = HOLM) -> list[float]:
    """The p-values a verdict reads: Holm-adjusted ("holm") or as they are ("none")."""
    if check_correction(correction) == HOLM:
        return holm(p_values)
    return [float(v) for v in p_values]


@dataclass(frozen=True)
class AACheck:
    """The baseline's own seeds in two halves (sorted seed order), first against second."""

    first: tuple
    second: tuple
    result: TestResult


def aa_check(baseline: Mapping[Any, float], min_seeds: int = 4) -> AACheck | None:
    """Student's t-test of the first half of the seeds (sorted) against the second half; None
    with fewer than min_seeds (at least 4) finite values.
    {0: a, 1: b, 2: c, 3: d, 4: e} -> [a, b] against [c, d, e]."""
    values = {s: float(x) for s, x in baseline.items() if math.isfinite(float(x))}
    seeds = sorted(values)
    if len(seeds) < max(4, min_seeds):
        return None
    first, second = seeds[: len(seeds) // 2], seeds[len(seeds) // 2 :]
    result = student_t([values[s] for s in first], [values[s] for s in second])
    return AACheck(tuple(first), tuple(second), result)


@dataclass(frozen=True)
class Outlier:
    """One flagged seed: its value, the mean of its group's other seeds, and the deleted
    residual t (df degrees of freedom) with its two-sided p-value."""

    group: str
    seed: Any
    value: float
    others_mean: float
    t: float
    df: int
    p_value: float


def outliers(
    groups: Mapping[str, Mapping[Any, float]], alpha: float = OUTLIER_ALPHA
) -> list[Outlier]:
    """The seeds whose deleted residual t has 2 · P(T_df > |t|) < alpha / n in a group of n ≥ 3
    seeds (see the module docstring), by group then seed. groups: name -> seed -> value;
    non-finite values are left out."""
    clean = {
        g: {s: float(x) for s, x in by_seed.items() if math.isfinite(float(x))}
        for g, by_seed in groups.items()
    }
    squares = {g: _squares(list(v.values())) for g, v in clean.items()}
    df_all = sum(len(v) - 1 for v in clean.values() if len(v) >= 2)
    found = []
    for g, by_seed in clean.items():
        n = len(by_seed)
        if n < 3:
            continue
        rest = sum(ss for h, ss in squares.items() if h != g)
        df = df_all - 1
        critical = t_quantile(1 - alpha / (2 * n), df)  # |t| above it <=> p < alpha / n
        for seed in sorted(by_seed):
            others = [x for s, x in by_seed.items() if s != seed]
            sd = math.sqrt((rest + _squares(others)) / df)
            if _no_spread(sd, list(by_seed.values())):
                continue
            mean = float(np.mean(others))
            t = (by_seed[seed] - mean) / (sd * math.sqrt(1 + 1 / (n - 1)))
            if abs(t) > critical:
                found.append(Outlier(g, seed, by_seed[seed], mean, t, df, two_sided_p(t, df)))
    return found


def _no_spread(sd: float, *samples: Any) -> bool:
    """Whether a spread is nothing but rounding: at most ROUNDING times the largest value
    (differences of exactly 0.03 in decimal differ in the 17th digit as floats, and such an sd
    of 1e-17 made t = 2e14)."""
    scale = max((float(np.max(np.abs(s))) for s in samples if len(s)), default=0.0)
    return sd <= ROUNDING * scale


def _squares(values: Sequence[float]) -> float:
    """Σ (x - mean)² (0 for fewer than 2 values)."""
    x = np.asarray(values, dtype=float)
    return float(((x - x.mean()) ** 2).sum()) if len(x) >= 2 else 0.0


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
    given power, solved exactly from the noncentral t (see the module docstring). paired: n
    pairs with std of the differences sd. Not paired: groups of n and n_other (default n) with
    common std sd. NaN when the test has no degrees of freedom, or no spread (sd 0: a t-test
    then has no p-value at all)."""
    if not 0 < alpha < power < 1:
        raise ValueError("need 0 < alpha < power < 1")
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
    return noncentrality(df, alpha, power) * sd * scale


def t_test_power(lam: float, df: float, alpha: float = 0.05) -> float:
    """Power of a two-sided t-test at level alpha and noncentrality λ = lam:
    P(T'(df, λ) > c) + P(T'(df, -λ) > c), c = t(1 - α/2, df). (The second term is
    P(T'(df, λ) < -c), written as an upper tail, which scipy evaluates where the far lower tail
    comes out NaN.)"""
    c = t_quantile(1 - alpha / 2, df)
    nct = _scipy_stats.nct
    return float(nct.sf(c, df, lam) + nct.sf(c, df, -lam))


def noncentrality(df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The λ ≥ 0 at which t_test_power(λ, df, alpha) = power (power rises with λ, from alpha
    at λ = 0)."""
    high = t_quantile(1 - alpha / 2, df) + max(t_quantile(power, df), 0.0) + 1.0
    while t_test_power(high, df, alpha) < power:
        high *= 2
    return float(
        _scipy_optimize.brentq(
            lambda lam: t_test_power(lam, df, alpha) - power, 0.0, high, xtol=1e-12
        )
    )
