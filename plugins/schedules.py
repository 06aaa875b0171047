"""Built-in learning-rate schedules: `cosine` (the default), `linear`, `constant`,
`inverse-sqrt` and `wsd` (warm-up, stable, decay).

A schedule is a pure function `(step, total_steps, **options) -> multiplier`: the multiplier of
every parameter group's peak lr at the 0-based optimizer step `step` of a run of total_steps.
The loop calls it for steps 0 .. total_steps (the last one after the final update, never used).
Every schedule here warms up the same way: over `warmup_steps` steps the multiplier climbs
linearly, (step + 1) / warmup_steps, to 1 at step warmup_steps - 1. The decays end at
`min_lr_ratio` at step total_steps, so the last update's lr is a little above it.

    cosine(0, 100, warmup_steps=10)  -> 0.1        cosine(100, 100) -> 0.1 (min_lr_ratio)
    wsd(79, 100) -> 1.0 (stable)     wsd(90, 100, min_lr_ratio=0.0) -> 0.5 (half-way down)

Not here: which train keys feed these options (train.warmup_steps and train.min_lr_ratio feed
the options of those names; toolkit/spec/validate.py) and the LambdaLR that applies them
(toolkit/training/optimizer.py).
"""

from __future__ import annotations

import math

from toolkit.api.hookspecs import hookimpl

WSD_SHAPES = ("linear", "cosine", "1-sqrt")


def _warmup(step: int, warmup_steps: int) -> float | None:
    """The warm-up multiplier at a step inside the warm-up, else None."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    return (step + 1) / warmup_steps if step < warmup_steps else None


def _check_floor(min_lr_ratio: float) -> None:
    if not 0 <= min_lr_ratio <= 1:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")


def cosine(
    step: int, total_steps: int, *, warmup_steps: int = 0, min_lr_ratio: float = 0.1
) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio x the peak (the default)"""
    _check_floor(min_lr_ratio)
    warm = _warmup(step, warmup_steps)
    if warm is not None:
        return warm
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def linear(
    step: int, total_steps: int, *, warmup_steps: int = 0, min_lr_ratio: float = 0.1
) -> float:
    """Linear warm-up, then linear decay to min_lr_ratio x the peak"""
    _check_floor(min_lr_ratio)
    warm = _warmup(step, warmup_steps)
    if warm is not None:
        return warm
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr_ratio + (1 - min_lr_ratio) * (1 - min(1.0, progress))


def constant(step: int, total_steps: int, *, warmup_steps: int = 0) -> float:
    """Linear warm-up, then the peak lr to the end"""
    warm = _warmup(step, warmup_steps)
    return 1.0 if warm is None else warm


def inverse_sqrt(step: int, total_steps: int, *, warmup_steps: int = 0) -> float:
    """Linear warm-up, then sqrt(warmup_steps / (step + 1)) (the 2017 Transformer's; no floor)"""
    warm = _warmup(step, warmup_steps)
    if warm is not None:
        return warm
    # Continuous at the end of the warm-up (1 at step warmup_steps - 1); without one, 1 at step 0.
    return math.sqrt(max(1, warmup_steps) / (step + 1))


def wsd(
    step: int,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.1,
    decay_fraction: float = 0.2,
    shape: str = "linear",
) -> float:
    """Warm-up, stable at the peak, then a decay over the last decay_fraction of the steps"""
    # The decay takes round(decay_fraction x total_steps) steps (halves up) and starts at
    # decay_start = total_steps - that;
    # progress p goes from 0 there to 1 at total_steps, and the multiplier is
    #   linear: 1 - p    cosine: (1 + cos(pi p)) / 2    1-sqrt: 1 - sqrt(p)
    # scaled into [min_lr_ratio, 1]. A warm-up running into the decay wins while it lasts.
    _check_floor(min_lr_ratio)
    if not 0 <= decay_fraction <= 1:
        raise ValueError(f"decay_fraction must be in [0, 1], got {decay_fraction}")
    if shape not in WSD_SHAPES:
        raise ValueError(f"shape must be one of {', '.join(WSD_SHAPES)}, got {shape!r}")
    warm = _warmup(step, warmup_steps)
    if warm is not None:
        return warm
    decay_steps = math.floor(decay_fraction * total_steps + 0.5)
    decay_start = total_steps - decay_steps
    if step < decay_start or decay_steps == 0:
        return 1.0
    p = min(1.0, (step - decay_start) / decay_steps)
    if shape == "linear":
        down = 1 - p
    elif shape == "cosine":
        down = 0.5 * (1 + math.cos(math.pi * p))
    else:
        down = 1 - math.sqrt(p)
    return min_lr_ratio + (1 - min_lr_ratio) * down


@hookimpl
def register_components(register) -> None:
    register("schedule", "cosine", cosine)
    register("schedule", "linear", linear)
    register("schedule", "constant", constant)
    register("schedule", "inverse-sqrt", inverse_sqrt)
    register("schedule", "wsd", wsd)
