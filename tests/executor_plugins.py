"""Components the executor tests train in worker processes (loaded there by module name): one
that raises in training, one that kills the process training it, and an optimizer that fails
above a learning rate (a tuning grid whose top points crash). Both behave on a batch of one
row, which is all the forward pass the sweep probes every architecture with before training
(toolkit.model.probe) sends them, so they fail in the run itself."""

from __future__ import annotations

import os
import signal

import torch
from torch import nn

from toolkit import hookimpl


class Raising(nn.Module):
    """A feed-forward block whose forward raises: the run fails, the worker survives."""

    def __init__(self, config) -> None:
        super().__init__()
        self.proj = nn.Linear(config.emb_dim, config.emb_dim)

    def forward(self, x):
        if x.device.type == "meta":  # validation's probe: shapes only
            return self.proj(x)
        raise RuntimeError("deliberate failure in forward")


class Dying(Raising):
    """A feed-forward block whose forward kills its own process, as the OOM killer would."""

    def forward(self, x):
        if x.device.type == "meta":  # validation's probe: shapes only
            return self.proj(x)
        os.kill(os.getpid(), signal.SIGKILL)


def fragile(model: nn.Module, config) -> torch.optim.Optimizer:
    """AdamW, but building it above lr 0.005 raises: those runs fail."""
    if config.lr > 0.005:
        raise RuntimeError("deliberate failure above lr 0.005")
    return torch.optim.AdamW(model.parameters(), lr=config.lr)


@hookimpl
def register_components(register) -> None:
    register("activation", "raising", Raising, description="raises in forward (tests)")
    register("activation", "dying", Dying, description="SIGKILLs its process (tests)")
    register("optimizer", "fragile", fragile, description="fails above lr 0.005 (tests)")
