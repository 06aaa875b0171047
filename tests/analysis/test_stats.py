"""The statistics behind the report, against hand-computed values and against scipy."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sp

from toolkit.analysis import stats
from toolkit.errors import ToolkitError

values = st.lists(st.floats(0.5, 10, allow_nan=False), min_size=2, max_size=8)


def test_describe_by_hand():
    d = stats.describe([1.0, 2.0, 3.0, 4.0])
    assert d.n == 4 and d.mean == 2.5
    assert d.std == pytest.approx(math.sqrt(5 / 3))
    # t(0.975, 3) = 3.182446 (any t table); half-width = t * s / sqrt(n)
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert (d.ci_low, d.ci_high) == pytest.approx((2.5 - half, 2.5 + half))


def test_describe_small_samples_have_no_spread_or_interval():
    one = stats.describe([2.0])
    assert one.n == 1 and one.mean == 2.0
    assert math.isnan(one.std) and math.isnan(one.ci_low) and math.isnan(one.ci_high)
    assert stats.t_interval([2.0]) == (2.0, 2.0)  # what a plotting error-bar function expects
    none = stats.describe([])
    assert none.n == 0 and math.isnan(none.mean)
    assert stats.describe([1.0, float("nan"), 3.0]).n == 2  # non-finite values are left out


@settings(max_examples=40, deadline=None)
@given(values, st.sampled_from([0.9, 0.95, 0.99]))
def test_describe_matches_scipy_t_interval(x, confidence):
    d = stats.describe(x, confidence)
    sem = np.std(x, ddof=1) / math.sqrt(len(x))
    if sem == 0:
        assert d.ci_low == d.ci_high == pytest.approx(np.mean(x))
        return
    lo, hi = sp.t.interval(confidence, len(x) - 1, loc=np.mean(x), scale=sem)
    assert (d.ci_low, d.ci_high) == pytest.approx((lo, hi), rel=1e-9, abs=1e-12)


def test_paired_t_by_hand():
    # d = [0.1, 0.2, 0.3]: mean 0.2, s_d 0.1, t = 0.2 / (0.1 / sqrt 3) = 2 sqrt 3, df 2.
    # With 2 df, P(T > t) = (1 - t / sqrt(t^2 + 2)) / 2 exactly.
    r = stats.paired_t([2.0, 2.2, 2.4], [1.9, 2.0, 2.1])
    t = 2 * math.sqrt(3)
    assert r.test == stats.PAIRED and r.n == 3 and r.df == 2
    assert r.delta == pytest.approx(0.2)
    assert r.statistic == pytest.approx(t)
    assert r.p_value == pytest.approx(1 - t / math.sqrt(t * t + 2))  # two-sided: twice the tail


def test_welch_t_by_hand():
    # a: mean 2, var 1, n 3; b: mean 5, var 20/3, n 4. s_a^2/n_a = 1/3, s_b^2/n_b = 5/3.
    r = stats.welch_t([1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0])
    assert r.test == stats.WELCH and r.delta == pytest.approx(-3.0)
    assert r.statistic == pytest.approx(-3 / math.sqrt(2))
    assert r.df == pytest.approx(4 / ((1 / 9) / 2 + (25 / 9) / 3))
    p = 2 * sp.t.sf(3 / math.sqrt(2), r.df)
    assert r.p_value == pytest.approx(p)


@settings(max_examples=40, deadline=None)
@given(values, st.data())
def test_paired_t_matches_scipy_ttest_rel(a, data):
    b = data.draw(st.lists(st.floats(0.5, 10), min_size=len(a), max_size=len(a)))
    ours = stats.paired_t(a, b)
    d = np.subtract(a, b)
    if np.std(d, ddof=1) < 1e-9 * max(1.0, float(np.abs(d).max())):
        return  # no spread: scipy divides by ~0, ours says no p-value (tested below)
    with warnings.catch_warnings():  # scipy warns on nearly equal data; the values still hold
        warnings.simplefilter("ignore", RuntimeWarning)
        theirs = sp.ttest_rel(a, b)
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-7)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-7, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(values, values)
def test_welch_t_matches_scipy_ttest_ind(a, b):
    ours = stats.welch_t(a, b)
    if np.var(a, ddof=1) + np.var(b, ddof=1) < 1e-12:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        theirs = sp.ttest_ind(a, b, equal_var=False)
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-7)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-7, abs=1e-12)
    assert ours.df == pytest.approx(theirs.df, rel=1e-9)


def test_no_spread_or_one_seed_gives_no_p_value():
    assert math.isnan(stats.paired_t([1.0, 2.0], [0.5, 1.5]).p_value)  # every d equal
    assert math.isnan(stats.paired_t([1.0], [0.5]).p_value)
    assert math.isnan(stats.welch_t([1.0], [0.5, 0.7]).p_value)
    assert math.isnan(stats.welch_t([1.0, 1.0], [2.0, 2.0]).p_value)
    # Differences of 0.03 in decimal differ in their 17th digit as floats: still no spread,
    # where an sd of 1e-17 made t = 2e14 and p = 2e-29.
    a, b = [2.03, 2.04, 2.05], [2.0, 2.01, 2.02]
    assert np.std(np.subtract(a, b), ddof=1) > 0
    assert math.isnan(stats.paired_t(a, b).p_value)
    assert stats.paired_t(a, b).note == "no spread in the differences"
    assert math.isnan(stats.welch_t([0.1 + 0.2, 0.3], [0.3, 0.3]).p_value)
    assert math.isnan(stats.student_t([0.1 + 0.2, 0.3], [0.3, 0.3]).p_value)


def test_compare_to_baseline_pairs_by_seed_else_welch_else_nothing():
    base = {0: 2.0, 1: 2.2, 2: 2.1}
    paired = stats.compare_to_baseline({2: 2.0, 0: 1.9, 1: 2.15}, base)
    assert paired.test == stats.PAIRED and paired.n == 3
    ref = sp.ttest_rel([1.9, 2.15, 2.0], [2.0, 2.2, 2.1])
    assert paired.p_value == pytest.approx(ref.pvalue)  # paired seed with seed, not by order

    partly = stats.compare_to_baseline({0: 1.9, 1: 2.15, 7: 2.5}, base)  # 2 shared seeds
    assert partly.test == stats.PAIRED and partly.n == 2

    welch = stats.compare_to_baseline({10: 1.9, 11: 2.0}, base)
    assert welch.test == stats.WELCH
    assert welch.p_value == pytest.approx(
        sp.ttest_ind([1.9, 2.0], [2.0, 2.2, 2.1], equal_var=False).pvalue
    )

    one = stats.compare_to_baseline({0: 1.9}, base)
    assert one.test == "" and math.isnan(one.p_value) and one.delta == pytest.approx(1.9 - 2.1)
    assert math.isnan(stats.compare_to_baseline({0: 1.9, 1: 2.0}, {0: 2.0}).p_value)


def test_pooled_std_by_hand():
    # [1, 3]: SS 2, df 1; [2, 4, 6]: SS 8, df 2; [5]: no df.
    sd, df = stats.pooled_std([[1.0, 3.0], [2.0, 4.0, 6.0], [5.0]])
    assert df == 3 and sd == pytest.approx(math.sqrt(10 / 3))
    assert math.isnan(stats.pooled_std([[1.0], [2.0]])[0])


def power_by_scipy(delta: float, sd: float, df: int, k: float) -> float:
    """A two-sided t-test's power at a true difference delta, from the noncentral t's two tails
    as scipy states them: P(T' > c) + P(T' < -c), λ = delta / (sd · k)."""
    c, lam = sp.t.ppf(0.975, df), delta / (sd * k)
    return float(sp.nct.sf(c, df, lam) + sp.nct.cdf(-c, df, lam))


def test_min_detectable_difference_formula():
    # paired, n = 2 (1 df): the difference at which the test has exactly 80% power
    mde = stats.min_detectable_difference(0.01, 2, paired=True)
    assert power_by_scipy(mde, 0.01, 1, 1 / math.sqrt(2)) == pytest.approx(0.8, abs=1e-9)
    # the normal-approximation shortcut (t(0.975, 1) + t(0.8, 1)) · s / √n gives less power
    shortcut = (12.706204736 + 1.376381920) * 0.01 / math.sqrt(2)
    assert shortcut < mde and power_by_scipy(shortcut, 0.01, 1, 1 / math.sqrt(2)) < 0.75
    two = stats.min_detectable_difference(0.01, 4, paired=False, n_other=6)
    k = math.sqrt(1 / 4 + 1 / 6)
    assert power_by_scipy(two, 0.01, 8, k) == pytest.approx(0.8, abs=1e-9)
    assert math.isnan(stats.min_detectable_difference(0.01, 1, paired=True))
    assert math.isnan(stats.min_detectable_difference(float("nan"), 5))
    # more seeds resolve smaller differences
    sizes = [stats.min_detectable_difference(1.0, n) for n in (2, 3, 5, 10)]
    assert sizes == sorted(sizes, reverse=True)
    # other levels and powers: still exact
    for alpha, power in ((0.01, 0.9), (0.1, 0.5)):
        lam = stats.noncentrality(6, alpha, power)
        c = sp.t.ppf(1 - alpha / 2, 6)
        assert sp.nct.sf(c, 6, lam) + sp.nct.cdf(-c, 6, lam) == pytest.approx(power, abs=1e-9)
    with pytest.raises(ValueError, match="alpha < power"):
        stats.min_detectable_difference(1.0, 5, power=0.01)


def test_min_detectable_difference_has_about_the_stated_power():
    # Simulate paired experiments whose true difference is the MDE: about 80% reject at 0.05.
    rng = np.random.default_rng(0)
    n, sd = 10, 1.0
    mde = stats.min_detectable_difference(sd, n, paired=True)
    d = rng.normal(mde, sd, size=(4000, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    power = float((2 * sp.t.sf(np.abs(t), n - 1) < 0.05).mean())
    assert 0.75 < power < 0.85


def test_no_spread_has_no_detectable_difference():
    assert math.isnan(stats.min_detectable_difference(0.0, 5))


# -- Holm-Bonferroni ------------------------------------------------------------------------------


def test_holm_by_hand():
    # sorted: 4 · 0.01 = 0.04; 3 · 0.02 = 0.06; 2 · 0.03 = 0.06; 1 · 0.04 = 0.04 -> running max 0.06
    assert stats.holm([0.01, 0.02, 0.03, 0.04]) == pytest.approx([0.04, 0.06, 0.06, 0.06])
    # in the order given, not sorted
    assert stats.holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    assert stats.holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert stats.holm([0.2]) == [0.2]  # a family of one is not adjusted
    assert stats.holm([]) == []


def test_holm_leaves_nan_out_of_the_family():
    nan = float("nan")
    adjusted = stats.holm([nan, 0.01, 0.04, nan, 0.03])
    assert math.isnan(adjusted[0]) and math.isnan(adjusted[3])
    assert adjusted[1:3] + adjusted[4:] == pytest.approx([0.03, 0.06, 0.06])  # m = 3, not 5
    assert all(math.isnan(x) for x in stats.holm([nan, nan]))


def test_adjust_by_correction():
    p = [0.01, 0.04, 0.03]
    assert stats.adjust(p, "holm") == stats.holm(p)
    assert stats.adjust(p, "none") == p
    with pytest.raises(ToolkitError, match=r"unknown correction 'bh': use 'holm'"):
        stats.adjust(p, "bh")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 1), st.just(float("nan"))), max_size=10))
def test_holm_is_monotone_and_between_p_and_bonferroni(p):
    adjusted = stats.holm(p)
    m = sum(math.isfinite(x) for x in p)
    pairs = sorted((x, a) for x, a in zip(p, adjusted, strict=True) if math.isfinite(x))
    for x, a in pairs:
        assert x <= a <= min(1.0, m * x) + 1e-12
    assert [a for _, a in pairs] == sorted(a for _, a in pairs)  # same order as p


# -- Student's t, the A/A check, outlier seeds ---------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(values, values)
def test_student_t_matches_scipy_ttest_ind(a, b):
    ours = stats.student_t(a, b)
    if np.var(a, ddof=1) + np.var(b, ddof=1) < 1e-12:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        theirs = sp.ttest_ind(a, b, equal_var=True)
    assert ours.test == stats.STUDENT and ours.df == len(a) + len(b) - 2
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-7)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-7, abs=1e-12)


def test_aa_check_splits_sorted_seeds_in_halves():
    check = stats.aa_check({4: 5.0, 0: 1.0, 3: 4.0, 1: 2.0, 2: 3.0})
    assert (check.first, check.second) == ((0, 1), (2, 3, 4))  # the second half takes the odd one
    ref = sp.ttest_ind([1.0, 2.0], [3.0, 4.0, 5.0], equal_var=True)
    assert check.result.p_value == pytest.approx(ref.pvalue)
    assert check.result.delta == pytest.approx(1.5 - 4.0)
    assert stats.aa_check({0: 1.0, 1: 2.0, 2: 3.0}) is None  # needs 4 seeds
    assert stats.aa_check({0: 1.0, 1: 2.0, 2: 3.0, 3: float("nan")}) is None  # 3 finite
    flat = stats.aa_check({s: 2.0 for s in range(4)})
    assert math.isnan(flat.result.p_value)  # no spread: no p-value, no alarm


def test_outliers_by_hand():
    # a: seeds 0-2 at 0, seed 3 at 10; b: 1, -1, 1, -1 (squares 4, 3 df).
    # Seed 3 of a: others' mean 0 and squares 0, pooled with b: s² = 4 / 5 (df 3 + 3 - 1 = 5);
    # t = 10 / (√(4/5) · √(1 + 1/3)) = 10 · √(15/16).
    groups = {"a": {0: 0.0, 1: 0.0, 2: 0.0, 3: 10.0}, "b": {0: 1.0, 1: -1.0, 2: 1.0, 3: -1.0}}
    [o] = stats.outliers(groups)
    assert (o.group, o.seed, o.value, o.others_mean, o.df) == ("a", 3, 10.0, 0.0, 5)
    assert o.t == pytest.approx(10 * math.sqrt(15 / 16))
    assert o.p_value == pytest.approx(2 * sp.t.sf(10 * math.sqrt(15 / 16), 5))
    assert o.p_value < stats.OUTLIER_ALPHA / 4


def test_outliers_need_three_seeds_and_some_spread():
    assert stats.outliers({"a": {0: 1.0, 1: 100.0}}) == []  # two seeds: which one is odd?
    assert stats.outliers({"a": {0: 1.0, 1: 1.0, 2: 1.0}}) == []  # no spread at all
    # the other seeds agree exactly, but another variant gives the noise: flagged
    found = stats.outliers({"a": {0: 1.0, 1: 1.0, 2: 1.0, 3: 9.0}, "b": {0: 0.9, 1: 1.1, 2: 1.0}})
    assert [(o.group, o.seed) for o in found] == [("a", 3)]
    assert stats.outliers({"a": {0: 1.0, 1: 1.1, 2: float("nan"), 3: 0.9}}) == []  # NaN left out
