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


def test_min_detectable_difference_formula():
    # paired, n = 2: (t(0.975, 1) + t(0.8, 1)) * s / sqrt 2 = (12.7062 + 1.3764) * s / sqrt 2
    mde = stats.min_detectable_difference(0.01, 2, paired=True)
    assert mde == pytest.approx((12.706204736 + 1.376381920) * 0.01 / math.sqrt(2))
    two = stats.min_detectable_difference(0.01, 4, paired=False, n_other=6)
    df = 8
    expected = (sp.t.ppf(0.975, df) + sp.t.ppf(0.8, df)) * 0.01 * math.sqrt(1 / 4 + 1 / 6)
    assert two == pytest.approx(expected)
    assert math.isnan(stats.min_detectable_difference(0.01, 1, paired=True))
    assert math.isnan(stats.min_detectable_difference(float("nan"), 5))
    # more seeds resolve smaller differences
    sizes = [stats.min_detectable_difference(1.0, n) for n in (2, 3, 5, 10)]
    assert sizes == sorted(sizes, reverse=True)


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
