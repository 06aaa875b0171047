"""The terminal table explains a negative generalization gap (val_loss below train_loss) in one
note line, naming the variants, and says nothing when every gap is positive."""

from __future__ import annotations

import math

import pandas as pd

from toolkit.analysis.table import summarize
from toolkit.analysis.text import format_summary

NOTE = "val_loss below train_loss"


def runs(gaps: dict[str, float]) -> pd.DataFrame:
    """Two seeds per variant, val_loss 2.0 (+0.01 per variant), train_loss = val_loss - gap."""
    rows = []
    for i, (variant, gap) in enumerate(gaps.items()):
        for seed in (0, 1):
            val = 2.0 + 0.01 * i + 0.001 * seed
            rows.append(
                {"variant": variant, "seed": seed, "status": "ok", "val_loss": val,
                 "train_loss": val - gap, "val_perplexity": math.exp(val), "val_bpb": 1.0,
                 "params": 10, "params_non_embedding": 5, "tokens_per_s": 100.0,
                 "causal": True, "baseline": i == 0}
            )  # fmt: skip
    return pd.DataFrame(rows)


def note_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if NOTE in line]


def test_a_negative_mean_gap_gets_one_note_naming_the_variants():
    text = format_summary(summarize(runs({"base": 0.05, "rms": -0.004, "relu": -0.01})))
    (line,) = note_lines(text)
    assert line.startswith("val_loss below train_loss (mean, rms, relu) is no bug")
    assert "evaluation mode" in line and "data.val_fraction" in line
    assert "train.eval_batches" in line
    assert text.splitlines()[-1] == line  # after the other notes


def test_every_variant_and_many_variants_are_said_briefly():
    text = format_summary(summarize(runs({"a": -0.01, "b": -0.02})))
    assert note_lines(text)[0].startswith("val_loss below train_loss (mean, every variant)")
    many = {"base": 0.01, **{f"v{i}": -0.01 for i in range(5)}}
    (line,) = note_lines(format_summary(summarize(runs(many))))
    assert "(mean, v0, v1, v2 and 2 more)" in line


def test_no_note_when_every_gap_is_positive_or_unknown():
    assert note_lines(format_summary(summarize(runs({"base": 0.05, "b": 0.0})))) == []
    no_train = runs({"base": -0.05, "b": -0.05})
    no_train["train_loss"] = math.nan  # no gap to speak of
    assert note_lines(format_summary(summarize(no_train))) == []


def test_the_eval_windows_note_is_kept():
    table = runs({"base": 0.05, "b": -0.01})
    table["eval_windows"] = ["grid", "grid", "spread", "spread"]
    text = format_summary(summarize(table))
    assert "eval windows: this variant's losses" in text and len(note_lines(text)) == 1
