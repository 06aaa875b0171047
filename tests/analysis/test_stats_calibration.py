"""The report's statistics are calibrated: simulated sweeps with a known truth come out as often
as the stated error rates say.

Every simulation draws normal seed-to-seed noise from a fixed numpy seed, so each test is
deterministic; the bands are about three binomial standard errors wide around the rate the
theory gives (√(r(1 - r) / N) is about 0.0035 for r = 0.05 and N = 4,000). Each test runs in a
few seconds at most.
"""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.analysis import stats

ALPHA = 0.05


def rejects(results: list[stats.TestResult], alpha: float = ALPHA) -> float:
    """The fraction of tests with p < alpha (no p-value counts as no rejection)."""
    return float(np.mean([r.p_value < alpha for r in results]))


def by_seed(values: np.ndarray, first_seed: int = 0) -> dict[int, float]:
    return {first_seed + i: float(x) for i, x in enumerate(values)}


# -- no true difference: the t-tests reject in a fraction alpha --------------------------------


@pytest.mark.slow
def test_paired_t_false_positive_rate_is_alpha():
    rng = np.random.default_rng(101)
    n, sims = 5, 4000
    # A seed shifts both runs alike (same initialisation and data order): that shared part is
    # what pairing removes; the variant itself changes nothing.
    shared = rng.normal(0.0, 0.05, size=(sims, n))
    variant = 2.0 + shared + rng.normal(0.0, 0.01, size=(sims, n))
    baseline = 2.0 + shared + rng.normal(0.0, 0.01, size=(sims, n))
    results = [
        stats.compare_to_baseline(by_seed(v), by_seed(b))
        for v, b in zip(variant, baseline, strict=True)
    ]
    assert {r.test for r in results} == {stats.PAIRED}
    assert 0.04 <= rejects(results) <= 0.06


@pytest.mark.slow
def test_welch_t_false_positive_rate_is_alpha():
    rng = np.random.default_rng(102)
    n, sims = 5, 4000
    variant = rng.normal(2.0, 0.01, size=(sims, n))
    baseline = rng.normal(2.0, 0.01, size=(sims, n))
    results = [
        stats.compare_to_baseline(by_seed(v, first_seed=10), by_seed(b))  # no shared seed
        for v, b in zip(variant, baseline, strict=True)
    ]
    assert {r.test for r in results} == {stats.WELCH}
    assert 0.04 <= rejects(results) <= 0.06


@pytest.mark.slow
def test_t_interval_covers_the_true_mean_95_percent_of_the_time():
    rng = np.random.default_rng(103)
    true_mean, sims = 2.0, 4000
    for n in (3, 5):
        draws = rng.normal(true_mean, 0.02, size=(sims, n))
        covered = [
            (d := stats.describe(x)).ci_low <= true_mean <= d.ci_high for x in draws
        ]  # fmt: skip
        assert 0.94 <= np.mean(covered) <= 0.96, n


# -- a true difference of the printed minimum detectable difference: rejected 80% of the time --


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.slow
def test_paired_power_at_the_minimum_detectable_difference(n):
    rng = np.random.default_rng(104 + n)
    sd, sims = 0.01, 4000  # sd: the std of the per-seed differences
    mde = stats.min_detectable_difference(sd, n, paired=True)
    d = rng.normal(mde, sd, size=(sims, n))
    results = [stats.paired_t(x, np.zeros(n)) for x in d]
    assert 0.75 <= rejects(results) <= 0.85


def test_welch_power_at_the_minimum_detectable_difference():
    # With 5 seeds a side the report's Welch test has about the power the (Student) formula
    # states; with 2 or 3 it has less (the module docstring of stats.py says so).
    rng = np.random.default_rng(110)
    n, sd, sims = 5, 0.01, 4000
    mde = stats.min_detectable_difference(sd, n, paired=False)
    variant = rng.normal(2.0 + mde, sd, size=(sims, n))
    baseline = rng.normal(2.0, sd, size=(sims, n))
    results = [stats.welch_t(v, b) for v, b in zip(variant, baseline, strict=True)]
    assert 0.75 <= rejects(results) <= 0.85


# -- Holm keeps the family-wise error rate; unadjusted p-values do not -------------------------


@pytest.mark.slow
def test_holm_keeps_the_family_wise_error_rate_at_alpha():
    # A report of 6 variants that all equal the baseline, paired by seed against one shared
    # baseline (so the 6 tests are correlated, as in a real report).
    rng = np.random.default_rng(111)
    families, variants, n = 4000, 6, 5
    any_holm, any_raw = [], []
    for _ in range(families):
        baseline = rng.normal(2.0, 0.01, size=n)
        p = [
            stats.paired_t(rng.normal(2.0, 0.01, size=n), baseline).p_value for _ in range(variants)
        ]
        any_holm.append(min(stats.holm(p)) < ALPHA)
        any_raw.append(min(p) < ALPHA)
    fwer_holm, fwer_raw = float(np.mean(any_holm)), float(np.mean(any_raw))
    assert 0.03 <= fwer_holm <= 0.06
    assert fwer_raw > 0.15  # about 1 - 0.95^6 = 0.26 for independent tests; less when shared


def test_holm_rejects_no_more_than_unadjusted_and_no_less_than_bonferroni():
    rng = np.random.default_rng(112)
    for _ in range(200):
        p = list(rng.uniform(0, 0.2, size=6))
        adjusted = stats.holm(p)
        assert all(a >= x for a, x in zip(adjusted, p, strict=True))
        assert all(a <= min(1.0, 6 * x) for a, x in zip(adjusted, p, strict=True))


# -- outlier seeds ------------------------------------------------------------------------------


def simulated_report(rng: np.random.Generator, variants: int, n: int) -> dict[str, dict]:
    """variant -> seed -> final metric: each variant its own mean, one seed-to-seed spread."""
    return {f"v{k}": by_seed(rng.normal(2.0 + 0.05 * k, 0.01, size=n)) for k in range(variants)}


@pytest.mark.slow
def test_outlier_flag_is_rare_on_clean_normal_seeds():
    rng = np.random.default_rng(113)
    reports, variants = 1000, 4
    flagged = 0
    for _ in range(reports):
        flagged += len({o.group for o in stats.outliers(simulated_report(rng, variants, 5))})
    assert flagged / (reports * variants) < 0.02  # at most 1% in theory (Bonferroni)


def test_outlier_flag_is_rare_on_a_lone_variant_of_three_seeds():
    rng = np.random.default_rng(114)
    flagged = sum(bool(stats.outliers(simulated_report(rng, 1, 3))) for _ in range(2000))
    assert flagged / 2000 < 0.02


@pytest.mark.slow
def test_outlier_flag_fires_on_an_injected_outlier():
    rng = np.random.default_rng(115)
    reports, hits, wrong = 500, 0, 0
    for _ in range(reports):
        report = simulated_report(rng, 4, 5)
        report["v2"][3] += 10 * 0.01  # ten seed-to-seed standard deviations
        found = {(o.group, o.seed) for o in stats.outliers(report)}
        hits += ("v2", 3) in found
        wrong += len(found - {("v2", 3)})
    assert hits / reports >= 0.95
    assert wrong / (reports * 4 * 5) < 0.01


# -- the A/A check ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [4, 6])
@pytest.mark.slow
def test_aa_check_false_alarm_rate_is_alpha(n):
    rng = np.random.default_rng(116 + n)
    sims = 4000
    checks = [stats.aa_check(by_seed(x)) for x in rng.normal(2.0, 0.01, size=(sims, n))]
    assert all(c is not None and c.result.test == stats.STUDENT for c in checks)
    alarms = float(np.mean([c.result.p_value < ALPHA for c in checks]))
    assert 0.04 <= alarms <= 0.06


def test_aa_check_catches_seeds_that_drift():
    # The later seeds of a baseline ran on something that shifts the metric by 4 seed-to-seed
    # standard deviations (another machine, another code version): the A/A check says so.
    rng = np.random.default_rng(118)
    sims, n = 1000, 6
    x = rng.normal(2.0, 0.01, size=(sims, n))
    x[:, n // 2 :] += 0.04
    alarms = np.mean([stats.aa_check(by_seed(row)).result.p_value < ALPHA for row in x])
    assert alarms > 0.8
