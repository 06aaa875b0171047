"""How a run learns: AdamW with weight decay on matrices (or on every parameter, as the book
does), and the learning rate's linear warm-up and cosine decay. Not here: how long it learns
(budget.py) or the loop that steps them (loop.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from toolkit.spec.schema import RunSpec


def lr_at(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at a 0-based step: linear warm-up, then cosine to min_ratio.
    lr_at(0, 100, 10, 0.1) -> 0.1;  lr_at(99, 100, 0, 0.1) -> ~0.1."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, run: RunSpec, device: str) -> torch.optim.Optimizer:
    """AdamW. train.weight_decay_on = "matrices": weight decay on matrices and embeddings
    (dim >= 2), not on norms or biases; "all": on every parameter (the book's chapter 5)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = run.train.weight_decay
    if run.train.weight_decay_on == "all":
        groups = [{"params": params, "weight_decay": decay}]
    else:
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
    # The fused CUDA kernel updates every parameter in one launch; same maths.
    fused = {"fused": True} if device.startswith("cuda") else {}
    return torch.optim.AdamW(groups, lr=run.train.lr, betas=tuple(run.train.betas), **fused)
