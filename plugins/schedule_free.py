"""The `schedule-free` optimizer: AdamW without a decaying schedule, whose weights to evaluate
are an average of its iterates (Defazio et al. 2024, "The Road Less Scheduled").

It is the built-in example of the evaluation-weights contract (toolkit.api.contracts): the
parameters hold one point while training and another, the average, while the run evaluates,
samples and saves. The loop switches with the optimizer's eval() and train() methods, which
any optimizer may have (the `schedulefree` package's do the same).

Not here: the loop that calls eval() and train() (toolkit/training/loop.py), the other
optimizers (plugins/optimizers.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from plugins.optimizers import closure_loss, trainable
from toolkit.api.contracts import TrainConfig
from toolkit.api.hookspecs import hookimpl


class ScheduleFreeAdamW(torch.optim.Optimizer):
    """Schedule-free AdamW. Each parameter has three points: z, the AdamW-like iterate; x, a
    weighted average of the z's, which is what the run evaluates; and y = (1 - beta1) z +
    beta1 x, where the gradient g is taken. The parameter holds y while training (train()) and
    x while evaluating (eval()). Step t at lr gamma_t (the group's lr as the schedule set it):

        v  = beta2 v + (1 - beta2) g^2
        u  = g / (sqrt(v / (1 - beta2^t)) + eps) + weight_decay * y    decay taken at y
        z' = z - gamma_t u
        w  = (max over steps i <= t of gamma_i) ^ weight_lr_power
        c  = w / (the sum of w over steps 1 .. t)
        x' = (1 - c) x + c z'
        y' = (1 - beta1) z' + beta1 x'

    The weights follow the authors' released code rather than the paper's Algorithm 1 (which
    folds the bias correction into gamma_t and weighs by gamma_t^2): with the largest lr so
    far, the warm-up's small steps weigh little and every step after it the same.

    Only z and v are stored: substituting z and x' into y' gives
    y' = y + c (z - y) + gamma_t (beta1 (1 - c) - 1) u, and x = (y - (1 - beta1) z) / beta1,
    so eval() and train() are one interpolation each with z (inverse of each other up to
    rounding). Meant for a constant lr after warm-up (train.schedule = "constant"); beta1 is
    the interpolation weight (the paper's 0.9), not a momentum.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 2.5e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        weight_lr_power: float = 2.0,
    ) -> None:
        if not (lr >= 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a finite number >= 0, got {lr}")
        if len(betas) != 2 or not (0 < betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(
                f"betas must be two numbers, the first in (0, 1), the second in [0, 1), got {betas}"
            )
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not (weight_lr_power >= 0 and math.isfinite(weight_lr_power)):
            raise ValueError(f"weight_lr_power must be a finite number >= 0, got {weight_lr_power}")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "weight_lr_power": weight_lr_power,
            "steps": 0,  # updates so far (t - 1 at the next)
            "lr_max": 0.0,  # the largest lr so far
            "weight_sum": 0.0,  # the sum of the steps' weights w
            "train_mode": True,  # the parameters hold y (True) or x (False)
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def eval(self) -> None:
        """Put x, the average, in the parameters: what to evaluate, sample from and save."""
        self._switch(False)

    @torch.no_grad()
    def train(self) -> None:
        """Put y, where gradients are taken, back in the parameters."""
        self._switch(True)

    def _switch(self, train: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] == train:
                continue
            beta1 = group["betas"][0]
            weight = 1 - beta1 if train else 1 - 1 / beta1  # y from x, or x from y
            for p in group["params"]:
                if "z" in self.state[p]:  # never stepped: x = y = z
                    p.lerp_(self.state[p]["z"], weight)
            group["train_mode"] = train

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = closure_loss(closure)
        for group in self.param_groups:
            if not group["train_mode"]:
                raise RuntimeError(
                    "ScheduleFreeAdamW.step() in eval mode: call train() first, so the "
                    "parameters hold the point the gradients were taken at"
                )
            (beta1, beta2), decay = group["betas"], group["weight_decay"]
            group["steps"] += 1
            t, gamma = group["steps"], group["lr"]
            group["lr_max"] = max(group["lr_max"], gamma)
            weight = group["lr_max"] ** group["weight_lr_power"]
            group["weight_sum"] += weight
            c = weight / group["weight_sum"] if group["weight_sum"] > 0 else 0.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("ScheduleFreeAdamW does not take sparse gradients")
                state = self.state[p]
                if not state:
                    state["z"] = p.detach().clone(memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                z, v = state["z"], state["exp_avg_sq"]
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                u = p.grad / v.div(1 - beta2**t).sqrt_().add_(group["eps"])
                if decay:
                    u.add_(p, alpha=decay)
                p.lerp_(z, c).add_(u, alpha=gamma * (beta1 * (1 - c) - 1))
                z.sub_(u, alpha=gamma)
        return loss


def schedule_free(
    model: nn.Module, config: TrainConfig, *, weight_lr_power: float = 2.0
) -> torch.optim.Optimizer:
    """Schedule-free AdamW: evaluates an average of its iterates; for a constant schedule"""
    groups = config.decay_groups(trainable(model))
    return ScheduleFreeAdamW(
        groups, lr=config.lr, betas=tuple(config.betas), weight_lr_power=weight_lr_power
    )


@hookimpl
def register_components(register) -> None:
    # Its averaging stands in for a decaying schedule; warm-up, then constant (the paper's).
    register("optimizer", "schedule-free", schedule_free, schedules=("constant",))
