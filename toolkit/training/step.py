"""The part of a training step that autograd differentiates, as one module: the model's forward
in the run's precision, the cross-entropy in float32 and the auxiliary losses the forward left
(a z-loss, a mixture's balance loss).

    LossStep(model, device, precision)(x, y) -> (cross-entropy, loss to differentiate, aux)

Why one module: with train.compile, torch.compile takes forward, loss and auxiliary terms as
one graph, so the logits (batch x context x vocabulary floats, the largest activation of a
small model) feed the cross-entropy inside compiled code instead of crossing into eager code
and back. Evaluation calls the same module with reduction="sum" (its own compiled graph, the
model in eval mode). Not here: the optimizer step and the loop (loop.py), the speed switches
themselves (throughput.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.model.gpt import GPT
from toolkit.training.throughput import autocast


class LossStep(nn.Module):
    """forward(x, y) -> (cross-entropy, the loss to differentiate, {name: auxiliary loss}).

    `model` is what the forward runs: the GPT, or DistributedDataParallel around it; `owner`
    is the GPT itself, whose modules hold the auxiliary losses the forward left (defaults to
    `model`). With reduction="sum" the cross-entropy is summed over tokens (evaluation) and
    the auxiliary losses are left out, as evaluation never has them."""

    def __init__(
        self, model: nn.Module, device: str, precision: str, owner: GPT | None = None
    ) -> None:
        super().__init__()
        self.model = model
        # In a tuple, so nn.Module does not register the GPT a second time under DDP.
        self._owner = (owner if owner is not None else model,)
        self.device, self.precision = device, precision

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean"
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        with autocast(self.device, self.precision):
            logits = self.model(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction=reduction)
        if reduction != "mean":
            return loss, loss, {}
        aux = self._owner[0].gather_aux_losses()
        return loss, (loss + sum(aux.values()) if aux else loss), aux
