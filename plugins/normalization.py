"""Built-in normalizations: the book's LayerNorm (`layernorm`) and RMSNorm (`rmsnorm`).

Each factory takes the normalized width and returns a module normalizing the last dimension.
Not here: placement (pre/post/sandwich) belongs to the block, not to the norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.hookspecs import hookimpl


class LayerNorm(nn.Module):
    """scale * (x - mean) / sqrt(var + eps) + shift, biased variance (the book's LayerNorm)."""

    def __init__(self, dim: int, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.layer_norm computes exactly the book's formula (biased variance), in one kernel.
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class RMSNorm(nn.Module):
    """weight * x / sqrt(mean(x^2) + eps): no centring, no bias (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


@hookimpl
def register_components(register) -> None:
    register("normalization", "layernorm", LayerNorm)
    register("normalization", "rmsnorm", RMSNorm)
