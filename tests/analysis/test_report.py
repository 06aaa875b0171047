from __future__ import annotations

import copy
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sp

from tests.conftest import TINY
from toolkit.analysis import stats
from toolkit.analysis.comparison import compare
from toolkit.analysis.load import load, load_curves
from toolkit.analysis.render import write_report
from toolkit.analysis.table import summarize
from toolkit.analysis.text import format_summary, report
from toolkit.cli import main
from toolkit.errors import ToolkitError
from toolkit.files import read_json, write_json
from toolkit.names import run_folder
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run as run_experiment


def table(rows):
    base = {
        "status": "ok",
        "params": 10,
        "params_non_embedding": 5,
        "tokens_per_s": 100.0,
        "train_loss": 1.0,
        "val_bpb": 1.0,
        "causal": True,
        "baseline": False,
    }
    out = pd.DataFrame([{**base, **r} for r in rows])
    out["val_perplexity"] = out["val_loss"].map(math.exp)
    return out


def test_mean_std_delta_sorted_and_baseline_marked():
    t = table(
        [
            {"variant": "a", "seed": 0, "val_loss": 2.0, "baseline": True},
            {"variant": "a", "seed": 1, "val_loss": 2.2, "baseline": True},
            {"variant": "b", "seed": 0, "val_loss": 1.5},
            {"variant": "b", "seed": 1, "val_loss": 1.9},
            {"variant": "c", "seed": 0, "val_loss": 9.0, "status": "diverged"},
        ]
    )
    s = summarize(t)
    assert s["variant"].tolist() == ["b", "a", "c"]  # sorted by mean val loss, no result last
    b = s.iloc[0]
    assert b["val_loss_mean"] == pytest.approx(1.7)
    assert b["val_loss_std"] == pytest.approx(statistics.stdev([1.5, 1.9]))
    assert b["delta_val_loss"] == pytest.approx(1.7 - 2.1)
    assert s.set_index("variant").loc["a", "baseline"]
    assert s.set_index("variant").loc["c", "ok"] == 0
    text = format_summary(s)
    assert "* a" in text and "-0.4000" in text


def test_one_seed_has_no_std():
    s = summarize(table([{"variant": "a", "seed": 0, "val_loss": 2.0, "baseline": True}]))
    assert math.isnan(s["val_loss_std"].iloc[0])
    assert "2.0000 ± -" in format_summary(s)


def test_non_causal_rows_are_flagged():
    s = summarize(table([{"variant": "peek", "seed": 0, "val_loss": 0.1, "causal": False}]))
    assert "peek [non-causal]" in format_summary(s)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.floats(0.5, 5)), min_size=1, max_size=12),
    st.randoms(),
)
@pytest.mark.slow
def test_permuting_runs_does_not_change_the_summary(rows, rnd):
    t = table([{"variant": v, "seed": i, "val_loss": loss} for i, (v, loss) in enumerate(rows)])
    shuffled = t.sample(frac=1, random_state=rnd.randint(0, 1000))
    a = summarize(t).sort_values("variant").reset_index(drop=True)
    b = summarize(shuffled).sort_values("variant").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)
    assert a["runs"].sum() == len(rows)


def test_mixed_tokenizers_compare_by_bits_per_byte():
    t = table(
        [
            {
                "variant": "bytes",
                "seed": 0,
                "val_loss": 1.0,
                "val_bpb": 1.44,
                "tokenizer": "bytes",
                "baseline": True,
            },
            {"variant": "gpt2", "seed": 0, "val_loss": 3.0, "val_bpb": 1.20, "tokenizer": "gpt2"},
        ]
    )
    s = summarize(t)
    assert s.attrs["metric"] == "val_bpb"
    assert s["variant"].tolist() == ["gpt2", "bytes"]  # lower bpb first despite higher loss
    assert s.iloc[0]["delta_val_bpb"] == pytest.approx(-0.24)
    text = format_summary(s)
    assert "compared by val_bpb" in text and text.index("val_bpb") < text.index("val_loss")
    same = summarize(table([{"variant": "a", "seed": 0, "val_loss": 1.0, "tokenizer": "bytes"}]))
    assert same.attrs["metric"] == "val_loss"


def test_a_tuned_and_an_untuned_folder_compare_on_the_test_split_when_every_run_has_one():
    # base (tuned on validation) is flattered there: 1.0 against 1.1; on test they are even.
    rows = [
        {"variant": "base", "seed": 0, "val_loss": 1.0, "test_loss": 1.2, "tuned": True,
         "baseline": True},
        {"variant": "plain", "seed": 0, "val_loss": 1.1, "test_loss": 1.1, "tuned": False},
    ]  # fmt: skip
    s = summarize(table(rows))
    assert (s.attrs["metric"], s.attrs["tuned"]) == ("test_loss", "some")
    assert s["variant"].tolist() == ["plain", "base"]
    assert "some variants trained at settings chosen on the validation split" in format_summary(s)
    # An untuned folder without a test split: validation it is, and the table says what
    # that means for the tuned variants.
    rows[1]["test_loss"] = math.nan
    s = summarize(table(rows))
    assert (s.attrs["metric"], s.attrs["tuned"]) == ("val_loss", "some")
    assert s["variant"].tolist() == ["base", "plain"]
    text = format_summary(s)
    assert "where some variants' settings were chosen (tuning.csv), which flatters them" in text
    assert "tuned: every variant" not in text
    # Every run tuned: the test split, and the tuned note.
    rows[1].update(test_loss=1.1, tuned=True)
    s = summarize(table(rows))
    assert (s.attrs["metric"], s.attrs["tuned"]) == ("test_loss", "all")
    assert "tuned: every variant trained at its own settings" in format_summary(s)


def test_a_metric_the_experiment_names_is_the_one_compared():
    rows = [
        {"variant": "base", "seed": 0, "val_loss": 1.0, "test_loss": 1.2, "baseline": True},
        {"variant": "b", "seed": 0, "val_loss": 1.1, "test_loss": 1.1},
    ]
    assert summarize(table(rows)).attrs["metric"] == "val_loss"
    s = summarize(table(rows), metric="test_loss")
    assert (s.attrs["metric"], s["variant"].tolist()) == ("test_loss", ["b", "base"])
    text = format_summary(s)
    assert "test_loss: the metric the spec's [ladder] names, on the held-out test split" in text
    assert "tuned" not in text
    # bits per byte named by a ladder is not a tokenizer mismatch
    assert "different tokenizers" not in format_summary(summarize(table(rows), metric="val_bpb"))


# -- statistics in the table ---------------------------------------------------------------------


def seeded(values: dict[str, list[float]], baseline: str = "base", **extra) -> pd.DataFrame:
    """A runs table: variant -> final val_loss per seed (seed = position)."""
    return table(
        [
            {"variant": v, "seed": s, "val_loss": x, "baseline": v == baseline, **extra}
            for v, xs in values.items()
            for s, x in enumerate(xs)
        ]
    )


def test_paired_by_seed_when_seeds_are_shared():
    s = summarize(seeded({"base": [2.0, 2.2, 2.1], "b": [1.9, 2.15, 2.0]}))
    b = s.set_index("variant").loc["b"]
    ref = sp.ttest_rel([1.9, 2.15, 2.0], [2.0, 2.2, 2.1])
    assert b["test"] == "paired t" and b["pairs"] == 3
    assert b["p_value"] == pytest.approx(ref.pvalue)
    assert b["statistic"] == pytest.approx(ref.statistic)
    assert b["delta"] == pytest.approx(2.0166666 - 2.1, abs=1e-6)
    assert b["delta_pct"] == pytest.approx(100 * (2.0166666 - 2.1) / 2.1, abs=1e-4)
    lo, hi = sp.t.interval(0.95, 2, loc=np.mean([1.9, 2.15, 2.0]), scale=sp.sem([1.9, 2.15, 2.0]))
    assert (b["val_loss_ci_low"], b["val_loss_ci_high"]) == pytest.approx((lo, hi))
    base = s.set_index("variant").loc["base"]
    assert base["test"] == "" and math.isnan(base["p_value"]) and base["delta"] == 0


def test_delta_is_over_the_seeds_the_test_pairs_when_a_side_lost_some():
    """The baseline's seeds 3 and 4 failed; the variant is 0.03 worse on each seed both
    finished. Δ, Δ % and the verdict describe that one paired comparison (before, Δ was the
    variant's five-seed mean minus the baseline's three-seed mean: -0.0416 beside 'worse')."""
    t = seeded({"base": [2.00, 2.02, 2.04, 9.0, 9.0], "v": [2.03, 2.052, 2.07, 1.90, 1.90]})
    failed = (t["variant"] == "base") & (t["seed"] >= 3)
    t.loc[failed, "status"] = "failed"
    v = summarize(t).set_index("variant").loc["v"]
    d = np.subtract([2.03, 2.052, 2.07], [2.00, 2.02, 2.04])
    assert v["test"] == "paired t" and v["pairs"] == 3
    assert v["delta"] == pytest.approx(d.mean()) and v["delta_val_loss"] == v["delta"]
    assert v["delta_pct"] == pytest.approx(100 * d.mean() / 2.02)
    assert v["verdict"] == "worse" and v["delta"] > 0 and v["statistic"] > 0
    assert v["val_loss_mean"] == pytest.approx(np.mean([2.03, 2.052, 2.07, 1.90, 1.90]))


def test_perplexity_is_exp_of_the_loss_and_its_interval():
    """Two seeds of losses 2.00 and 2.25: a t-interval of their perplexities (7.39, 9.49) is
    [-4.89, 21.77], below the least perplexity there is (1); exp of the loss's is not."""
    row = summarize(seeded({"base": [2.00, 2.25]})).iloc[0]
    lo, hi = sp.t.interval(0.95, 1, loc=2.125, scale=sp.sem([2.00, 2.25]))
    assert row["val_perplexity_mean"] == pytest.approx(math.exp(2.125))
    assert row["val_perplexity_ci_low"] == pytest.approx(math.exp(lo)) and math.exp(lo) > 1
    assert row["val_perplexity_ci_high"] == pytest.approx(math.exp(hi))
    assert row["val_perplexity_std"] == pytest.approx(np.std(np.exp([2.0, 2.25]), ddof=1))
    one = summarize(seeded({"base": [2.0]})).iloc[0]
    assert one["val_perplexity_mean"] == pytest.approx(math.exp(2.0))
    assert math.isnan(one["val_perplexity_ci_low"]) and math.isnan(one["val_perplexity_std"])


def test_a_finished_run_without_a_finite_score_is_flagged_not_dropped_silently():
    """status ok but val_loss NaN or inf (the last step left NaN weights): the mean and the
    test use the two seeds that scored, and the row says why it has 2 of its 4."""
    t = seeded({"base": [2.0, 2.01, 2.02, 2.03], "v": [2.0, math.inf, 2.02, math.nan]})
    v = summarize(t).set_index("variant").loc["v"]
    assert v["ok"] == 4 and v["pairs"] == 2
    assert v["flags"] == "2 finished without a finite score"
    assert summarize(t).set_index("variant").loc["base", "flags"] == ""


def test_welch_when_seeds_are_not_shared():
    t = table(
        [
            *[{"variant": "base", "seed": i, "val_loss": x, "baseline": True}
              for i, x in enumerate([2.0, 2.2, 2.1])],
            *[{"variant": "b", "seed": 10 + i, "val_loss": x} for i, x in enumerate([1.9, 2.0])],
        ]
    )  # fmt: skip
    b = summarize(t).set_index("variant").loc["b"]
    ref = sp.ttest_ind([1.9, 2.0], [2.0, 2.2, 2.1], equal_var=False)
    assert b["test"] == "Welch t" and b["p_value"] == pytest.approx(ref.pvalue)


def test_one_seed_variant_or_baseline_gets_no_p_value():
    s = summarize(seeded({"base": [2.0, 2.2], "one": [1.0], "two": [1.5, 1.7]}))
    by = s.set_index("variant")
    assert math.isnan(by.loc["one", "p_value"]) and by.loc["one", "test"] == ""
    assert by.loc["two", "test"] == "paired t"
    line = next(x for x in format_summary(s).splitlines() if " one " in f" {x} ")
    assert " - " in line  # shown as '-', not a number
    s = summarize(seeded({"base": [2.0], "b": [1.5, 1.7]}))
    assert s["p_value"].isna().all()


def test_flags_and_seeds_asked():
    t = seeded({"base": [2.0, 2.1], "b": [1.9]})
    t = pd.concat(
        [
            t,
            table(
                [
                    {"variant": "b", "seed": 1, "val_loss": float("nan"), "status": "diverged"},
                    {"variant": "peek", "seed": 0, "val_loss": 0.1, "causal": False},
                    {"variant": "bad", "seed": 0, "val_loss": float("nan"), "status": "failed"},
                ]
            ),
        ]
    )
    s = summarize(t, asked={"base": 2, "b": 2, "peek": 3, "bad": 1}).set_index("variant")
    assert s.loc["b", "flags"] == "1 diverged, 1/2 seeds" and s.loc["b", "ok"] == 1
    assert s.loc["peek", "flags"] == "non-causal, 1/3 seeds"
    assert s.loc["bad", "flags"] == "1 failed, 0/1 seeds"
    assert s.loc["base", "flags"] == ""


def test_a_precision_other_than_the_baselines_or_mixed_across_seeds_is_flagged(tmp_path):
    t = seeded({"base": [2.0, 2.1], "bf": [1.9, 2.0], "same": [2.0, 2.0], "mix": [2.0, 2.1]})
    t["precision"] = ["fp32", "fp32", "bf16-mixed", "bf16-mixed", "fp32", "fp32",
                      "fp32", "bf16-mixed"]  # fmt: skip
    s = summarize(t).set_index("variant")
    assert s["flags"].to_dict() == {
        "base": "", "bf": "precision: bf16-mixed", "same": "", "mix": "precision: bf16-mixed+fp32"
    }  # fmt: skip
    assert s.loc["mix", "precision"] == "bf16-mixed+fp32"
    assert "precision: the variant's runs trained in another precision" in format_summary(
        summarize(t)
    )
    # Runs recorded before the precision was (no column, or no value) raise no flag.
    older = seeded({"base": [2.0, 2.1], "b": [1.9, 2.0]})
    assert summarize(older)["flags"].tolist() == ["", ""]
    older["precision"] = [None, None, "fp32", "fp32"]
    assert summarize(older)["flags"].tolist() == ["", ""]
    assert "precision" not in format_summary(summarize(older))

    results = {("base", 0): 2.0, ("base", 1): 2.1, ("bf", 0): 1.9, ("bf", 1): 2.0}
    folder = fake_experiment(tmp_path / "exp", "exp", results)
    for run_dir, precision in (("bf/seed-0", "bf16-mixed"), ("bf/seed-1", "bf16-mixed")):
        summary = read_json(folder / run_dir / "summary.json")
        write_json(folder / run_dir / "summary.json", {**summary, "precision": precision})
    for run_dir in ("base/seed-0", "base/seed-1"):
        summary = read_json(folder / run_dir / "summary.json")
        write_json(folder / run_dir / "summary.json", {**summary, "precision": "fp32"})
    md = write_report(folder, tmp_path / "rep", figures=False).markdown.read_text()
    assert "precision: bf16-mixed" in md
    assert "- **precision**: the variant's runs trained in another precision" in md


def test_resolution_is_the_pooled_paired_mde():
    s = summarize(seeded({"base": [2.0, 2.2, 2.1], "b": [1.9, 2.15, 2.0], "c": [2.1, 2.2, 2.3]}))
    res = s.attrs["resolution"]
    diffs = [[-0.1, -0.05, -0.1], [0.1, 0.0, 0.2]]
    sd = math.sqrt(sum(np.var(d, ddof=1) * 2 for d in diffs) / 4)
    assert res["paired"] and res["n"] == 3 and res["df"] == 4
    assert res["sd"] == pytest.approx(sd)
    expected = stats.noncentrality(2) * sd / math.sqrt(3)  # 80% power at 2 df, exactly
    assert res["mde"] == pytest.approx(expected)
    assert s.set_index("variant").loc["b", "mde"] == pytest.approx(expected)
    assert res["mde_pct"] == pytest.approx(100 * expected / 2.1)
    text = format_summary(s)
    assert f"{expected:.4f}" in text and "none larger than that" in text


def test_resolution_unpaired_and_with_one_seed():
    t = table(
        [
            *[{"variant": "base", "seed": i, "val_loss": x, "baseline": True}
              for i, x in enumerate([2.0, 2.2])],
            *[{"variant": "b", "seed": 10 + i, "val_loss": x} for i, x in enumerate([1.9, 2.1])],
        ]
    )  # fmt: skip
    res = summarize(t).attrs["resolution"]
    sd = math.sqrt((0.02 + 0.02) / 2)
    assert not res["paired"] and res["sd"] == pytest.approx(sd)
    assert res["mde"] == pytest.approx(stats.noncentrality(2) * sd)  # sqrt(2/n) = 1 for n = 2
    one = summarize(seeded({"base": [2.0], "b": [1.9]}))
    assert "no estimate of the seed-to-seed noise" in format_summary(one)


# -- multiple comparisons, outlier seeds, the A/A check ----------------------------------------

BASE = [2.0, 2.2, 2.1]
FAMILY = {  # paired differences to the baseline -> two-sided p
    "base": BASE,
    "b": [x + d for x, d in zip(BASE, [0.05, 0.07, 0.06], strict=True)],  # p 0.009: worse
    "c": [x - d for x, d in zip(BASE, [0.03, 0.06, 0.04], strict=True)],  # p 0.039: by chance?
    "d": [x + d for x, d in zip(BASE, [-0.02, 0.03, 0.01], strict=True)],  # p 0.69
}


def test_holm_adjusts_the_family_of_comparisons_and_the_verdicts_read_it():
    s = summarize(seeded(FAMILY))
    by = s.set_index("variant")
    assert s.attrs["correction"] == "holm" and s.attrs["alpha"] == 0.05
    # Holm over the 3 tested variants: 3 · p_b, then max(that, 2 · p_c), then max(.., p_d).
    p = by["p_value"]
    assert by.loc["b", "p_holm"] == pytest.approx(3 * p["b"])
    assert by.loc["c", "p_holm"] == pytest.approx(2 * p["c"])
    assert by.loc["d", "p_holm"] == pytest.approx(p["d"])
    assert math.isnan(by.loc["base", "p_holm"])
    assert by["verdict"].to_dict() == {"b": "worse", "c": "n.s.", "d": "n.s.", "base": ""}
    none = summarize(seeded(FAMILY), correction="none").set_index("variant")
    assert none.loc["c", "verdict"] == "better"  # p 0.039 < 0.05 unadjusted
    assert none["p_holm"].equals(by["p_holm"])  # the column is there either way
    with pytest.raises(ToolkitError, match=r"use 'holm'.*or 'none'"):
        summarize(seeded(FAMILY), correction="bonferroni")


def test_the_text_says_which_correction_the_verdicts_used():
    text = format_summary(summarize(seeded(FAMILY)))
    header = text.splitlines()[0]
    assert " p p Holm verdict test " in f"{header} "
    assert "Holm-Bonferroni over the 3 comparisons with the baseline" in text
    assert "--correction none" in text
    line = next(x for x in text.splitlines() if x.startswith("  c "))
    assert " 0.039  0.078 n.s. " in line
    plain = format_summary(summarize(seeded(FAMILY), correction="none"))
    assert "p Holm" not in plain.splitlines()[0]
    assert "not corrected for multiple comparisons (correction none): with 3 comparisons" in plain
    line = next(x for x in plain.splitlines() if x.startswith("  c "))
    assert " 0.039 better " in line
    alone = format_summary(summarize(seeded({"base": [2.0, 2.1]})))
    assert "verdict:" not in alone  # nothing tested, nothing to say


def test_outlier_seed_is_flagged_in_the_table_and_named_in_a_note():
    values = {
        "base": [2.00, 2.01, 1.99, 2.00, 2.02],
        "b": [1.95, 1.96, 1.94, 2.30, 1.95],  # seed 3 ran off
        "c": [2.05, 2.04, 2.06, 2.05, 2.03],
    }
    s = summarize(seeded(values))
    by = s.set_index("variant")
    assert by["outlier_seeds"].to_dict() == {"b": "3", "base": "", "c": ""}
    assert by.loc["b", "flags"] == "outlier seed 3"
    [o] = s.attrs["outliers"]
    assert (o["variant"], o["seed"], o["value"]) == ("b", 3, 2.30)
    assert o["others_mean"] == pytest.approx(1.95) and o["p_value"] < 0.01 / 5
    [line] = [x for x in format_summary(s).splitlines() if x.startswith("outlier:")]
    assert line.startswith("outlier: b seed 3 has val_loss 2.3000, far from the mean of its ")
    assert "look at that run" in line
    clean = summarize(seeded({**values, "b": [1.95, 1.96, 1.94, 1.97, 1.95]}))
    assert (clean["outlier_seeds"] == "").all() and clean.attrs["outliers"] == []
    assert "outlier" not in format_summary(clean)


def test_aa_check_splits_the_baseline_seeds_in_two_halves():
    values = {"base": [2.00, 2.01, 1.99, 2.00, 2.02, 2.01], "b": [1.9] * 2}
    s = summarize(seeded(values))
    check = s.attrs["aa_check"]
    assert (check["first"], check["second"]) == ([0, 1, 2], [3, 4, 5])
    ref = sp.ttest_ind([2.00, 2.01, 1.99], [2.00, 2.02, 2.01], equal_var=True)
    assert check["p_value"] == pytest.approx(ref.pvalue) and check["test"] == "Student t"
    assert check["delta"] == pytest.approx(-0.01) and not check["alarm"]
    [line] = [x for x in format_summary(s).splitlines() if x.startswith("A/A check")]
    assert line.startswith("A/A check: baseline seeds 0-2 vs 3-5: Δ -0.0100 nats/token, p ")
    assert line.endswith("as expected, two halves of one configuration do not differ.")

    drift = summarize(seeded({**values, "base": [2.00, 2.01, 1.99, 2.10, 2.11, 2.12]}))
    assert drift.attrs["aa_check"]["alarm"]
    [line] = [x for x in format_summary(drift).splitlines() if x.startswith("A/A check")]
    assert ": warning, two halves of one configuration differ at p < 0.05." in line

    few = summarize(seeded({**values, "base": [2.0, 2.1, 2.0]}))
    assert few.attrs["aa_check"] is None and "A/A check" not in format_summary(few)


# -- properties of the aggregation --------------------------------------------------------------

runs_strategy = st.dictionaries(
    st.sampled_from(["base", "a", "b", "c"]),
    st.lists(st.floats(0.5, 5), min_size=1, max_size=5),
    min_size=1,
)


@pytest.mark.slow
@settings(max_examples=30, deadline=None)
@given(runs_strategy, st.randoms())
def test_permuting_paired_runs_does_not_change_the_table(values, rnd):
    t = seeded(values)
    shuffled = t.sample(frac=1, random_state=rnd.randint(0, 1000))
    a, b = summarize(t), summarize(shuffled)
    pd.testing.assert_frame_equal(a, b)  # same rows in the same order, bit for bit
    assert a.attrs["resolution"].keys() == b.attrs["resolution"].keys()


@pytest.mark.slow
@settings(max_examples=30, deadline=None)
@given(runs_strategy)
def test_n_seeds_gives_n(values):
    s = summarize(seeded(values)).set_index("variant")
    for variant, xs in values.items():
        assert s.loc[variant, "ok"] == len(xs) == s.loc[variant, "runs"]
        assert math.isnan(s.loc[variant, "val_loss_std"]) == (len(xs) == 1)
        assert s.loc[variant, "val_loss_mean"] == pytest.approx(np.mean(xs))
        if variant != "base" and "base" in values:
            single = len(xs) == 1 or len(values["base"]) == 1
            assert math.isnan(s.loc[variant, "p_value"]) or not single
            assert s.loc[variant, "test"] == ("" if single else "paired t")


# -- experiment folders: interrupted sweeps, several folders, the CLI -----------------------------


def fake_experiment(
    folder: Path,
    name: str,
    results: dict[tuple[str, int], float | None],
    baseline: str = "base",
    lr: float = 1e-3,
    base_hash: str | None = None,
) -> Path:
    """An experiment folder as `ablate run` leaves it, without training: results maps (variant,
    seed) to the final val_loss, or None for a run that has not finished (no summary.json)."""
    runs, variants = [], []
    for variant, seed in results:
        if variant not in variants:
            variants.append(variant)
        digest = (
            f"{base_hash or f'base-lr{lr}'}-{seed}"
            if variant == baseline
            else f"{name}-{variant}-{seed}"
        )
        runs.append(
            {"variant": variant, "seed": seed, "folder": run_folder(variant, seed),
             "config_hash": digest}
        )  # fmt: skip
    write_json(
        folder / "experiment.json",
        {"name": name, "baseline": baseline, "seeds": sorted({s for _, s in results}),
         "axes": ["model.norm"], "variants": variants, "runs": runs},
    )  # fmt: skip
    for run, ((variant, seed), loss) in zip(runs, results.items(), strict=True):
        run_dir = folder / run["folder"]
        config = {
            "experiment": name,
            "variant": variant,
            "seed": seed,
            "data": {"corpus": "pydoc", "tokenizer": "bytes"},
            "model_resolved": {"n_layers": 1, "emb_dim": 32, "context_length": 32,
                               "vocab_size": 257, "tie_embeddings": False, "norm": variant},
            "train": {"lr": lr if variant == baseline else 2e-3, "threads": seed},
        }  # fmt: skip
        write_json(run_dir / "config.json", config)
        if loss is None:
            (run_dir / "metrics.jsonl").write_text(
                json.dumps({"step": 1, "tokens": 128, "train_loss": 5.0, "val_loss": 5.0}) + "\n"
            )
            continue
        write_json(
            run_dir / "summary.json",
            {"experiment": name, "variant": variant, "seed": seed, "status": "ok",
             "tokenizer": "bytes", "causal": True, "params": 30_000,
             "params_non_embedding": 20_000, "flops_per_token": 150_000.0,
             "train_loss": loss + 0.1, "val_loss": loss,
             "val_perplexity": math.exp(loss), "val_bpb": loss / math.log(2),
             "tokens_per_s": 1000.0, "train_s": 1.0, "wall_s": 2.0, "config_hash": run["config_hash"],
             "baseline": variant == baseline, "model.norm": variant},
        )  # fmt: skip
    return folder


def test_interrupted_sweep_reports_what_finished_and_lists_what_is_missing(tmp_path):
    folder = fake_experiment(
        tmp_path / "exp",
        "exp",
        {("base", 0): 2.0, ("b", 0): 1.9, ("base", 1): 2.1, ("b", 1): None, ("c", 0): None},
    )
    (folder / "c" / "seed-0" / "metrics.jsonl").unlink()  # c never started
    sweep = load(folder)
    assert [(m["variant"], m["seed"], m["state"]) for m in sweep.missing] == [
        ("b", 1, "started, no summary yet"),
        ("c", 0, "not started"),
    ]
    summary, text = report(folder)
    assert "3 of 5 runs recorded" in text
    assert "missing 2 of 5 runs" in text and "b seed=1: started, no summary yet" in text
    assert summary["variant"].tolist() == ["b", "base"]  # c has no run yet: no row
    assert summary.set_index("variant").loc["b", "flags"] == "1/2 seeds"
    result = write_report(folder, tmp_path / "rep", figures=False)
    md = result.markdown.read_text()
    assert "## Missing runs" in md and "`b` seed 1: started, no summary yet" in md
    assert "`c` seed 0: not started" in md


def test_compare_returns_the_printed_table(tmp_path):
    folder = fake_experiment(
        tmp_path / "exp", "exp", {("base", 0): 2.0, ("b", 0): 1.9, ("base", 1): 2.1, ("b", 1): 2.0}
    )
    table = compare(folder)
    assert isinstance(table, pd.DataFrame) and table["variant"].tolist() == ["b", "base"]
    pd.testing.assert_frame_equal(table, report(folder)[0])
    assert table.loc[0, "flops_per_token"] == 150_000  # as the runs recorded it
    assert compare([folder, folder])["variant"].tolist() == ["b", "base"]  # same folder once


def test_several_folders_sharing_a_baseline_are_one_report(tmp_path):
    a = fake_experiment(
        tmp_path / "a",
        "norms",
        {("base", 0): 2.0, ("rms", 0): 1.9, ("base", 1): 2.2, ("rms", 1): 2.0},
    )
    b = fake_experiment(  # the same baseline under another name, with one more seed
        tmp_path / "b",
        "acts",
        {("gelu", 0): 2.0, ("relu", 0): 2.1, ("gelu", 2): 2.3, ("relu", 2): 2.5},
        baseline="gelu",
        base_hash="base-lr0.001",
    )
    sweep = load([a, b])
    assert sweep.baseline == "base" and sweep.name == "norms + acts"
    s = summarize(sweep.runs, sweep.baseline, asked=sweep.asked).set_index("variant")
    assert sorted(s.index) == ["acts/relu", "base", "norms/rms"]
    assert s.loc["base", "ok"] == 3 and s.loc["base", "seeds_asked"] == 3  # seeds 0 and 1 from a
    assert s.loc["base", "val_loss_mean"] == pytest.approx((2.0 + 2.2 + 2.3) / 3)
    assert s.loc["acts/relu", "test"] == "paired t" and s.loc["acts/relu", "pairs"] == 2
    assert s.loc["acts/relu", "p_value"] == pytest.approx(
        sp.ttest_rel([2.1, 2.5], [2.0, 2.3]).pvalue
    )
    result = write_report([a, b], figures=False)
    assert result.folder == tmp_path / "report-a+b"
    assert "experiments norms + acts: 7 of 7 runs recorded" in result.text
    md = result.markdown.read_text()
    assert "share the baseline `base`" in md and "norms/rms" in md and "acts/relu" in md
    assert "--baseline" not in md
    md = write_report([a, b], tmp_path / "rebased", figures=False, baseline="acts/relu")
    md = md.markdown.read_text()
    assert "share the baseline `base`" in md
    assert "Every variant is compared with `acts/relu` (--baseline)." in md

    # The same training config under the same hash prefix is found by config, too.
    c = fake_experiment(tmp_path / "c", "other", {("base", 5): 2.0}, base_hash="elsewhere")
    assert load([a, c]).baseline == "base"


def test_a_pooled_baseline_takes_a_finished_run_over_a_failed_one_in_either_order(tmp_path):
    a = fake_experiment(
        tmp_path / "a",
        "norms",
        {("base", 0): 2.0, ("rms", 0): 1.9, ("base", 1): 2.2, ("rms", 1): 2.0},
    )
    b = fake_experiment(
        tmp_path / "b", "acts", {("gelu", 0): 2.1, ("relu", 0): 2.1, ("gelu", 1): 2.4},
        baseline="gelu", base_hash="base-lr0.001",
    )  # fmt: skip
    failed = a / "base" / "seed-1" / "summary.json"
    write_json(failed, {**read_json(failed), "status": "failed", "val_loss": None})
    for order in ([a, b], [b, a]):
        sweep = load(order)
        base = sweep.runs[sweep.runs["baseline"]].set_index("seed")
        assert base.loc[1, "status"] == "ok" and base.loc[1, "val_loss"] == 2.4
        assert base.loc[0, "val_loss"] == (2.0 if order[0] == a else 2.1)  # the first folder's
        row = summarize(sweep.runs, sweep.baseline).set_index("variant").loc[sweep.baseline]
        assert (row["ok"], row["failed"]) == (2, 0)


def test_folders_without_a_shared_baseline_are_an_error(tmp_path, capsys):
    a = fake_experiment(tmp_path / "a", "norms", {("base", 0): 2.0, ("rms", 0): 1.9})
    b = fake_experiment(tmp_path / "b", "lrs", {("base", 0): 2.0, ("x", 0): 1.9}, lr=5e-3)
    with pytest.raises(ToolkitError, match="do not share a baseline"):
        load([a, b])
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["report", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ablate: error: ") and err.count("\n") == 1
    assert "do not share a baseline" in err and "train different configs" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.slow
def test_another_baseline_is_chosen_at_report_time(tmp_path, capsys):
    results = {("base", 0): 2.0, ("b", 0): 1.9, ("c", 0): 1.7, ("base", 1): 2.1, ("b", 1): 2.0}
    results[("c", 1)] = 1.9
    folder = fake_experiment(tmp_path / "exp", "exp", results)
    table = compare(folder, "b").set_index("variant")
    assert table["baseline"].tolist() == [False, True, False]  # sorted: c, b, base
    assert table.loc["c", "delta"] == pytest.approx(1.8 - 1.95)  # against b, paired by seed
    assert table.loc["base", "delta"] == pytest.approx(2.05 - 1.95)
    assert math.isnan(table.loc["b", "p_value"])
    summary, text = report(folder, baseline="b")
    pd.testing.assert_frame_equal(compare(folder, "b"), summary)
    marked = [line.split()[1] for line in text.splitlines() if line.startswith("* ")]
    assert marked[0] == "b" and "base" not in marked
    assert main(["report", str(folder), "--baseline", "b", "--out", str(tmp_path / "r")]) == 0
    assert "b (baseline)" in (tmp_path / "r" / "report.md").read_text()
    capsys.readouterr()
    # A name that is no variant: one line, exit 2, nothing written.
    assert main(["report", str(folder), "--baseline", "bb", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ablate: error: baseline 'bb' is not a variant of exp")
    assert "variants: b, base, c" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()
    with pytest.raises(ToolkitError, match="not a variant"):
        compare(folder, "bb")


def test_report_command_writes_into_the_folder_or_out(tmp_path, capsys):
    folder = fake_experiment(tmp_path / "exp", "exp", {("base", 0): 2.0, ("b", 0): 1.9})
    assert main(["report", str(folder), "--out", str(tmp_path / "elsewhere")]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 runs recorded" in out and "report: " in out
    for name in ("report.md", "report.html", "report_runs.csv", "report_summary.csv"):
        assert (tmp_path / "elsewhere" / name).is_file(), name
    assert not (folder / "report.md").exists()
    # A folder that cannot be made there (a file in the way): one line that says what to do.
    (tmp_path / "a-file").write_text("keep")
    assert main(["report", str(folder), "--out", str(tmp_path / "a-file" / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ablate: error: cannot write the report to ") and err.count("\n") == 1
    assert "choose another folder with --out" in err
    assert (tmp_path / "elsewhere" / "figures" / "final.png").is_file()


def test_rendered_report_shows_holm_verdicts_outliers_and_the_aa_check(tmp_path):
    results = {}
    for seed, (base, rms, relu) in enumerate(
        [(2.00, 1.95, 2.10), (2.01, 1.96, 2.11), (1.99, 1.94, 2.09), (2.00, 2.40, 2.12),
         (2.02, 1.95, 2.10), (2.01, 1.96, 2.11)]
    ):  # fmt: skip
        results |= {("base", seed): base, ("rms", seed): rms, ("relu", seed): relu}
    folder = fake_experiment(tmp_path / "exp", "exp", results)
    result = write_report(folder, tmp_path / "rep", figures=False)
    md = result.markdown.read_text()
    assert "| p (test) | p Holm | verdict |" in md
    assert "**p Holm**: Holm-Bonferroni over the 2 comparisons with the baseline" in md
    assert "- Outlier: `rms` seed 3 has val_loss 2.4000" in md
    assert "A/A check: baseline seeds 0-2 vs 3-5: Δ " in md
    assert "`p_holm_(i) = max_{j ≤ i} min(1, (m - j + 1) · p_(j))`" in md
    assert "outlier: rms seed 3 has val_loss 2.4000" in result.text
    assert "A/A check: baseline seeds 0-2 vs 3-5" in result.text
    csv = pd.read_csv(result.folder / "report_summary.csv", dtype={"outlier_seeds": str})
    csv = csv.set_index("variant")
    assert {"p_holm", "verdict", "outlier_seeds"} <= set(csv.columns)
    assert csv.loc["relu", "verdict"] == "worse" and csv.loc["rms", "outlier_seeds"] == "3"
    assert result.summary.attrs["aa_check"]["first"] == [0, 1, 2]

    plain = write_report(folder, tmp_path / "plain", figures=False, correction="none")
    md = plain.markdown.read_text()
    assert "p Holm |" not in md and "| p (test) | verdict |" in md
    assert "p is not corrected for multiple comparisons (correction none)" in md


def test_report_command_passes_the_correction(tmp_path, monkeypatch, capsys):
    import toolkit.analysis.render as render

    seen = {}

    def fake_write_report(dirs, out=None, **kwargs):
        seen.update(kwargs)
        return render.Report(tmp_path, tmp_path / "r.md", tmp_path / "r.html", [], None, "table")

    monkeypatch.setattr(render, "write_report", fake_write_report)
    assert main(["report", str(tmp_path)]) == 0
    assert seen == {"correction": "holm", "baseline": None}
    assert main(["report", str(tmp_path), "--correction", "none"]) == 0
    assert seen == {"correction": "none", "baseline": None}
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path), "--correction", "bonferroni"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'bonferroni'" in capsys.readouterr().err


# -- the report reads what the runs recorded -----------------------------------------------------


@pytest.mark.slow
def test_flops_per_token_is_what_the_run_recorded(tmp_path, plugins):
    """The report shows the FLOPs per token the run measured on its built model
    (toolkit.training.throughput), not a formula of its own that could disagree with it."""
    doc = copy.deepcopy(TINY)
    doc["train"] |= {"max_steps": 2, "eval_interval": 2, "eval_batches": 1, "checkpoint": False}
    doc["sampling"]["max_new_tokens"] = 0
    out = tmp_path / "tiny"
    run_experiment(parse_spec(doc, plugins=plugins), out, plugins=plugins, progress=False)
    [summary_path] = out.glob("*/seed-0/summary.json")
    recorded = read_json(summary_path)["flops_per_token"]
    assert recorded > 0
    assert compare(out).loc[0, "flops_per_token"] == recorded
    result = write_report(out, tmp_path / "rep", figures=False)
    assert pd.read_csv(result.folder / "report_runs.csv")["flops_per_token"].tolist() == [recorded]
    assert pd.read_csv(result.folder / "report_summary.csv")["flops_per_token"][0] == recorded


def test_run_folders_are_found_by_their_slug_without_a_folder_entry(tmp_path):
    """Older experiment.json files list no run folder: the report finds it the way the runner
    names it (toolkit.names.run_folder), also for a variant name that is not a safe folder name."""
    folder = fake_experiment(
        tmp_path / "exp", "exp", {("base", 0): 2.0, ("a/b", 0): 1.9, ("c d", 0): None}
    )
    assert (folder / "a_b" / "seed-0" / "summary.json").is_file()
    experiment = read_json(folder / "experiment.json")
    for r in experiment["runs"]:
        del r["folder"]
    write_json(folder / "experiment.json", experiment)
    point = {"step": 1, "tokens": 128, "train_loss": 2.5, "val_loss": 2.4}
    (folder / "a_b" / "seed-0" / "metrics.jsonl").write_text(json.dumps(point) + "\n")

    loaded = load(folder)
    run_dirs = dict(zip(loaded.runs["variant"], loaded.runs["run_dir"], strict=True))
    assert run_dirs["a/b"] == str(folder / "a_b" / "seed-0")
    curves = load_curves(loaded.runs)
    assert curves.loc[curves["variant"] == "a/b", "val_loss"].tolist() == [2.4]
    [missing] = loaded.missing
    assert missing["variant"] == "c d" and missing["folder"] == str(folder / "c_d" / "seed-0")
    assert missing["state"] == "started, no summary yet"  # its metrics.jsonl was found


def test_compare_renders_as_the_report_table_in_a_notebook(tmp_path):
    """A notebook calls _repr_html_ on a cell's last value: compare() shows the report's
    Results table (formatted, baseline marked, notes), in styles scoped to itself; what is
    derived from it is an ordinary DataFrame."""
    folder = fake_experiment(
        tmp_path / "exp", "exp", {("base", 0): 2.0, ("base", 1): 2.1, ("b", 0): 1.9, ("b", 1): 1.95}
    )
    table = compare(folder)
    html = table._repr_html_()
    assert html.startswith('<div class="ablate-comparison">') and html.endswith("</div>")
    assert "<tr class=baseline><td>base (baseline)</td>" in html
    assert "2.0500 ± 0.0707" in html  # the baseline's mean ± std, as the report writes it
    assert "paired t" in html and "What the sweep could resolve" not in html
    assert "minimum detectable" in html.lower() or "detects a true difference" in html
    styles = html[html.index("<style>") : html.index("</style>")]
    assert all(rule.startswith(".ablate-comparison ") for rule in styles.splitlines()[1:])
    assert table.attrs["baseline"] == "base"
    assert type(table.sort_values("val_loss_mean")) is pd.DataFrame
    assert compare(tmp_path / "exp")._repr_html_() == html  # the same table, the same page
