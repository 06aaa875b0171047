"""The part of a training step that autograd differentiates, as one module: the model's forward
in the run's precision, the cross-entropy in float32 and the auxiliary losses the forward left
(a z-loss, a mixture's balance loss).

    LossStep(model, device, precision)(x, y) -> (cross-entropy, loss to differentiate, aux)

Why one module: with train.compile, torch.compile takes forward, loss and auxiliary terms as
one graph, so the logits (batch x context x vocabulary floats, the largest activation of a
small model) feed the cross-entropy inside compiled code instead of crossing into eager code
and back. Evaluation calls the same module with reduction="sum" (its own compiled graph, the
model in eval mode): `evaluate_batches` scores a run's fixed batches that way, split across
processes under torchrun. Not here: the optimizer step and the loop (loop.py), the speed
switches themselves (throughput.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.model.gpt import GPT
from toolkit.training import distributed
from toolkit.training.distributed import World
from toolkit.training.throughput import autocast

Batches = list[tuple[torch.Tensor, torch.Tensor]]


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


def evaluate_batches(
    model: nn.Module,
    batches: Batches,
    token_bytes: torch.Tensor,
    device: str,
    precision: str = "fp32",
    *,
    world: World | None = None,
) -> tuple[float, float]:
    """(mean cross-entropy in nats per token, bits per UTF-8 byte) over fixed batches, scored
    by `model` (a GPT, or a LossStep: the compiled one when training compiles) in the given
    precision under torch.inference_mode. Given a `world` of several processes, each scores
    its share of every batch's rows (as many as it trains on, so memory is no worse than
    training's) and the sums are added up across processes: every process gets what one
    process scoring every row would."""
    world = world or World()
    is_step = isinstance(getattr(model, "_orig_mod", model), LossStep)  # compiled, or not
    step = model if is_step else LossStep(model, device, precision)
    was_training = step.training
    step.eval()
    nats, tokens, n_bytes = 0.0, 0, 0
    with torch.inference_mode():
        for x, y in batches:
            x, y = distributed.share(x, world), distributed.share(y, world)
            if not len(y):  # a last batch with fewer rows than processes
                continue
            n_bytes += int(token_bytes[y].sum())
            tokens += y.numel()
            nats += step(x.to(device), y.to(device), reduction="sum")[0].item()
    step.train(was_training)
    if world.active:
        nats, tokens, n_bytes = distributed.all_reduce_sum([nats, tokens, n_bytes])
    return nats / tokens, nats / (math.log(2) * max(1, n_bytes))
