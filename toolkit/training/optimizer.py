"""How a run learns: the optimizer (train.optimizer) and the learning-rate schedule
(train.schedule), both components from the registry, resolved once when the run is set up.

    make_optimizer(model, run, device, plugins)   the optimizer, its groups checked
    make_schedule(run, total_steps, plugins)      step -> multiplier of every group's peak lr

The loop wraps the multiplier in torch's LambdaLR, which saves and restores its step with the
optimizer's state on resume. Not here: how long a run learns (budget.py) or the loop that steps
them (loop.py); the built-in optimizers and schedules (plugins/optimizers.py, schedules.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from toolkit.api.contracts import check_optimizer
from toolkit.api.manager import Plugins, load_plugins
from toolkit.api.registry import split_choice
from toolkit.errors import ComponentError, one_line
from toolkit.spec.schema import SCHEDULE_KEYS, RunSpec


def make_optimizer(
    model: nn.Module, run: RunSpec, device: str, plugins: Plugins | None = None
) -> torch.optim.Optimizer:
    """The run's optimizer over the model's trainable parameters (the default: AdamW with
    weight decay on matrices and embeddings). Raises ComponentError naming the optimizer when
    it returns something else than a torch.optim.Optimizer, gives a group no lr, or leaves a
    trainable parameter out of its groups, or puts one in two (contracts.check_optimizer,
    which validation runs too)."""
    plugins = plugins or load_plugins()
    name, options = split_choice(run.train.optimizer)
    component = plugins.registry.get("optimizer", name)
    optimizer = component.build(model, run.train.optimizer_config(device), **options)
    check_optimizer(optimizer, model, f"optimizer {name!r} (plugin {component.plugin!r})")
    return optimizer


def make_schedule(run: RunSpec, total_steps: int, plugins: Plugins) -> Callable[[int], float]:
    """The multiplier of every parameter group's peak lr at a 0-based step (for LambdaLR): the
    run's schedule, given train.warmup_steps and train.min_lr_ratio when it takes options of
    those names. A schedule that raises, or returns a negative or non-finite multiplier, is a
    ComponentError naming it and the step."""
    name, options = split_choice(run.train.schedule)
    component = plugins.registry.get("schedule", name)
    options.update({k: getattr(run.train, k) for k in SCHEDULE_KEYS if k in component.options})
    options = component.check_options(options, where=f"train.schedule {name!r}")
    factory, where = component.factory, f"schedule {name!r} (plugin {component.plugin!r})"

    def multiplier(step: int) -> float:
        try:
            value = factory(step, total_steps, **options)
        except Exception as exc:
            raise ComponentError(
                f"{where} failed at step {step} of {total_steps}: {one_line(exc)}"
            ) from exc
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ComponentError(
                f"{where} returned {value!r} at step {step} of {total_steps}, not a finite "
                f"number >= 0"
            )
        return value

    return multiplier
