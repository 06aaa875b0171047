"""Text generation with a sampler component.

`generate()` extends token ids one position at a time, cropping the context to the model's
last `context_length` tokens, and stops early when every sequence has produced `eot_id`.
Not here (yet): a KV cache; each new token re-runs the cropped context.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


@torch.no_grad()
def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    sampler: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor],
    context_length: int,
    generator: torch.Generator | None = None,
    eot_id: int | None = None,
) -> torch.Tensor:
    """Token ids (B, T) -> (B, T + n) with n <= max_new_tokens new ids drawn by `sampler`."""
    was_training = model.training
    model.eval()
    done = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        logits = model(idx[:, -context_length:])[:, -1, :]  # (B, V): only the last position
        next_ids = sampler(logits, generator)  # (B, 1)
        if eot_id is not None:
            next_ids = next_ids.masked_fill(done.unsqueeze(1), eot_id)
            done |= next_ids.squeeze(1) == eot_id
        idx = torch.cat([idx, next_ids], dim=1)
        if eot_id is not None and bool(done.all()):
            break
    model.train(was_training)
    return idx
