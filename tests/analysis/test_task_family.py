"""The Holm family of the scores after training (toolkit.analysis.tasks.compared): a metric that
is another metric of its task times one constant in every run (a window score's bits per byte
and its loss, on one corpus and tokenizer) is one test, counted once; and the family-wise error
rate of the table stays at alpha, by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toolkit.analysis import stats, tasks

ALPHA = 0.05
LOSS, BPB = "task:val@512/loss", "task:val@512/bpb"


def window_scores(rng: np.random.Generator, variants: int, lengths: int, n: int) -> dict:
    """variant -> column -> seed -> score for a sweep where no variant differs from the
    baseline: per length a loss (seed noise shared by all variants, as a seed's data order is)
    and its bits per byte, the loss times that length's tokens / bytes / ln 2."""
    shared = rng.normal(0.0, 0.02, size=(lengths, n))
    scale = [0.3 + 0.01 * k for k in range(lengths)]  # tokens per byte / ln 2 differ per length
    values = {}
    for v in ["base", *[f"v{i}" for i in range(variants)]]:
        loss = 2.0 + shared + rng.normal(0.0, 0.01, size=(lengths, n))
        values[v] = {}
        for k in range(lengths):
            values[v][f"task:val@{k}/loss"] = {s: float(x) for s, x in enumerate(loss[k])}
            values[v][f"task:val@{k}/bpb"] = {s: float(x) * scale[k] for s, x in enumerate(loss[k])}
    return values


def test_a_rescaled_metric_shares_its_test_and_is_counted_once():
    rng = np.random.default_rng(7)
    values = window_scores(rng, variants=3, lengths=1, n=3)
    values = {v: {LOSS: c["task:val@0/loss"], BPB: c["task:val@0/bpb"]} for v, c in values.items()}
    variants = list(values)
    both = tasks.compared(variants, "base", values, [LOSS, BPB])
    alone = tasks.compared(variants, "base", values, [LOSS])
    assert both[f"{BPB}_p"].tolist()[1:] == pytest.approx(both[f"{LOSS}_p"].tolist()[1:])
    # Holm over the 3 loss comparisons, not 6: the same adjusted p as the loss alone has.
    assert both[f"{LOSS}_p_holm"].tolist()[1:] == pytest.approx(
        alone[f"{LOSS}_p_holm"].tolist()[1:]
    )
    assert both[f"{BPB}_p_holm"].tolist()[1:] == both[f"{LOSS}_p_holm"].tolist()[1:]
    assert math.isnan(both[f"{LOSS}_p_holm"][0])  # the baseline


def test_metrics_that_are_not_one_rescaling_are_separate_tests():
    rng = np.random.default_rng(8)
    acc, norm = "task:hellaswag/acc", "task:hellaswag/acc_norm"
    values = {
        v: {
            acc: {s: float(rng.uniform(0.2, 0.3)) for s in range(3)},
            norm: {s: float(rng.uniform(0.2, 0.3)) for s in range(3)},
        }
        for v in ("base", "a", "b")
    }
    out = tasks.compared(list(values), "base", values, [acc, norm])
    raw = [*out[f"{acc}_p"][1:], *out[f"{norm}_p"][1:]]
    assert [*out[f"{acc}_p_holm"][1:], *out[f"{norm}_p_holm"][1:]] == pytest.approx(stats.holm(raw))
    # The same scores under another task's name are no repeat: a task's metrics only.
    other = {v: {**c, "task:val@64/loss": c[acc]} for v, c in values.items()}
    columns = [acc, "task:val@64/loss"]
    out = tasks.compared(list(other), "base", other, columns)
    raw = [p for c in columns for p in out[f"{c}_p"][1:]]
    held = [p for c in columns for p in out[f"{c}_p_holm"][1:]]
    assert held == pytest.approx(stats.holm(raw))


@pytest.mark.slow
def test_a_scores_delta_is_over_the_seeds_its_test_pairs():
    """The baseline was scored on seeds 0-3, the variant on 0-2 (seed 3's run was retrained, so
    its scores left): _delta is the mean of the three paired differences its _p tests."""
    acc = "task:mc/acc"
    values = {
        "base": {acc: {0: 0.30, 1: 0.32, 2: 0.31, 3: 0.60}},
        "v": {acc: {0: 0.35, 1: 0.36, 2: 0.37}},
    }
    out = tasks.compared(["base", "v"], "base", values, [acc])
    paired = stats.paired_t([0.35, 0.36, 0.37], [0.30, 0.32, 0.31])
    assert out[f"{acc}_delta"][1] == pytest.approx(0.05)
    assert out[f"{acc}_p"][1] == pytest.approx(paired.p_value)


def test_the_scores_tables_family_wise_error_rate_is_alpha():
    # 3 variants equal to the baseline, scored at 2 lengths (loss and bits per byte each), 4
    # seeds paired: the table rejects any of its null comparisons in about alpha of the
    # sweeps. Counting bits per byte as a test of its own would halve that (about 0.025).
    rng = np.random.default_rng(113)
    families, any_family, any_doubled = 2000, [], []
    for _ in range(families):
        values = window_scores(rng, variants=3, lengths=2, n=4)
        scored = sorted(values["base"])
        out = tasks.compared(list(values), "base", values, scored)
        held = np.array([out[f"{c}_p_holm"][1:] for c in scored])
        any_family.append(bool((held < ALPHA).any()))
        doubled = stats.holm([p for c in scored for p in out[f"{c}_p"][1:]])
        any_doubled.append(min(doubled) < ALPHA)
    fwer, fwer_doubled = float(np.mean(any_family)), float(np.mean(any_doubled))
    assert 0.035 <= fwer <= 0.065, fwer
    assert fwer_doubled < 0.035, fwer_doubled
