"""How long a run trains, and what it took to get somewhere.

    total_steps(run, batches_per_epoch, flops_per_token)   the budget in optimizer steps
    time_to_target(metrics, target, flops_per_token)       tokens, FLOPs and seconds a run
                                                           needed to first reach a val loss

A budget is one of train.max_steps, max_tokens, epochs or max_flops. max_flops divides by the
run's own training FLOPs per token (throughput.flops_per_token: 6 x matmul weights + the
attention term), so variants of different cost spend the same compute and a cheaper one takes
more steps. The target is checked at evaluations only (every train.eval_interval steps), so
the figures are the first evaluation at or below it, not an interpolation. Not here: the loop
(loop.py) or the learning-rate schedule (optimizer.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from toolkit.spec.schema import RunSpec


def total_steps(run: RunSpec, batches_per_epoch: int, flops_per_token: float) -> int:
    """The budget in optimizer steps: max_steps, or max_tokens / tokens per step, or
    epochs x batches per epoch, or max_flops / (FLOPs per token x tokens per step), rounded
    up."""
    t = run.train
    tokens_per_step = t.batch_size * run.model.context_length
    if t.max_flops is not None:
        return max(1, math.ceil(t.max_flops / (flops_per_token * tokens_per_step)))
    if t.max_tokens is not None:
        return max(1, math.ceil(t.max_tokens / tokens_per_step))
    if t.epochs is not None:
        return max(1, math.ceil(t.epochs * batches_per_epoch))
    return t.max_steps


def time_to_target(
    metrics: Iterable[dict[str, Any]], target: float, flops_per_token: float
) -> dict[str, Any]:
    """The summary's target columns: the first evaluation whose val_loss is at or below
    `target` (metrics: the metrics.jsonl lines in order), its step, tokens, training FLOPs and
    training seconds (evaluation time left out); None for each when never reached."""
    hit = next(
        (m for m in metrics if m.get("val_loss") is not None and m["val_loss"] <= target), None
    )
    out: dict[str, Any] = {"target_loss": target}
    if hit is None:
        return {
            **out,
            "target_step": None,
            "target_tokens": None,
            "target_flops": None,
            "target_s": None,
        }
    return {
        **out,
        "target_step": hit["step"],
        "target_tokens": hit["tokens"],
        "target_flops": hit["tokens"] * flops_per_token,
        # Lines written before train_s was recorded have only the wall clock.
        "target_s": hit.get("train_s", hit.get("elapsed_s")),
    }
