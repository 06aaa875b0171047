"""Budgets that are fair: train.max_flops gives every variant the same training compute, and
train.target_loss records what each run needed to first reach a validation loss."""

from __future__ import annotations

import json
import math

import pytest

from toolkit.errors import SpecError
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run
from toolkit.training.budget import time_to_target


def summaries(folder, table) -> dict[str, dict]:
    return {
        v: json.loads((folder / v / "seed-0/summary.json").read_text()) for v in table["variant"]
    }


@pytest.mark.slow
def test_a_flops_budget_gives_every_variant_the_same_compute(tmp_path, tiny_doc, plugins):
    tiny_doc["train"].pop("max_steps")
    tiny_doc["train"]["max_flops"] = 2e9
    tiny_doc["grid"] = {"model.emb_dim": [32, 64]}  # about 3x the FLOPs per token
    table = run(parse_spec(tiny_doc), tmp_path, plugins=plugins, progress=False)
    runs = summaries(tmp_path, table)
    small, large = runs["emb_dim=32"], runs["emb_dim=64"]
    assert large["flops_per_token"] > 2.5 * small["flops_per_token"]
    for s in (small, large):
        per_step = s["flops_per_token"] * 4 * 32  # batch 4 x context 32
        assert s["steps"] == math.ceil(2e9 / per_step)
        # Every run spends the budget, and less than one step more.
        assert 2e9 <= s["flops"] < 2e9 + per_step
        assert s["budget"] == "max_flops=2e+09"
    assert small["steps"] > 2.5 * large["steps"]


def test_time_to_target_is_the_first_evaluation_at_or_below_it() -> None:
    lines = [
        {"step": 3, "tokens": 384, "val_loss": 5.0, "train_s": 0.5},
        {"step": 6, "tokens": 768, "val_loss": 4.0, "train_s": 1.0},
        {"step": 9, "tokens": 1152, "val_loss": 3.9, "train_s": 1.5},
    ]
    hit = time_to_target(lines, 4.0, 1000.0)
    assert hit == {
        "target_loss": 4.0, "target_step": 6, "target_tokens": 768, "target_flops": 768_000.0,
        "target_s": 1.0,
    }  # fmt: skip
    missed = time_to_target(lines, 1.0, 1000.0)
    assert missed["target_step"] is None and missed["target_s"] is None
    # A line from before train_s was recorded falls back to the wall clock.
    assert (
        time_to_target([{"step": 1, "tokens": 8, "val_loss": 1.0, "elapsed_s": 2.0}], 2.0, 1)[
            "target_s"
        ]
        == 2.0
    )


def test_a_run_records_when_it_reached_the_target_loss(tmp_path, tiny_doc, plugins):
    tiny_doc["train"].update(max_steps=12, eval_interval=2)
    first = run(parse_spec(tiny_doc), tmp_path / "a", plugins=plugins, progress=False)
    metrics = [
        json.loads(line)
        for line in (tmp_path / "a/base/seed-0/metrics.jsonl").read_text().splitlines()
    ]
    # A target between the first and the last evaluation's loss.
    target = (metrics[0]["val_loss"] + metrics[-1]["val_loss"]) / 2
    expected = next(m for m in metrics if m["val_loss"] <= target)
    tiny_doc["train"]["target_loss"] = target
    run(parse_spec(tiny_doc), tmp_path / "b", plugins=plugins, progress=False)
    summary = json.loads((tmp_path / "b/base/seed-0/summary.json").read_text())
    assert summary["target_step"] == expected["step"]
    assert summary["target_tokens"] == expected["tokens"]
    assert summary["target_flops"] == expected["tokens"] * summary["flops_per_token"]
    assert 0 < summary["target_s"] <= summary["train_s"]
    assert summary["val_loss"] == pytest.approx(first["val_loss"].iloc[0])  # same training


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"max_flops": 1e9}, "give one budget, not max_steps and max_flops"),
        ({"max_steps": None, "max_flops": -5.0}, "train.max_flops must be a positive, finite"),
        ({"target_loss": 0.0}, "train.target_loss must be a positive validation loss"),
        ({"target_loss": float("nan")}, "train.target_loss must be a positive validation loss"),
    ],
)
def test_bad_budgets_are_one_line_errors(tiny_doc, train, message) -> None:
    tiny_doc["train"].update(train)
    tiny_doc["train"] = {k: v for k, v in tiny_doc["train"].items() if v is not None}
    with pytest.raises(SpecError, match=message) as info:
        parse_spec(tiny_doc)
    assert "\n" not in str(info.value)
