from __future__ import annotations

import math
import statistics

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.report import format_summary, summarize


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
