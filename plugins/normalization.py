"""Built-in normalizations: the book's LayerNorm (`layernorm`), PyTorch's (`torch-layernorm`),
RMSNorm (`rmsnorm`), ScaleNorm (`scalenorm`), Dynamic Tanh (`dyt`, which normalizes nothing: an
elementwise squashing in a norm's place) and no normalization at all (`none`).

Each factory takes the normalized width and returns a module normalizing the last dimension.
Those with an additive shift (layernorm, torch-layernorm, dyt) take `bias`: false builds them without
it (no parameter at all, the maths with a zero shift); model.bias = false passes it (gpt.py's
_build_norm). The others have no shift to drop, so no such option.
Not here: placement (pre/post/sandwich) belongs to the block, not to the norm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.api.hookspecs import hookimpl
from toolkit.errors import ComponentError


class LayerNorm(nn.Module):
    """scale * (x - mean) / sqrt(var + eps) + shift, biased variance (the book's LayerNorm)."""

    def __init__(self, dim: int, *, eps: float = 1e-5, bias: bool = True) -> None:
        _positive_eps("layernorm", eps)
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))
        # bias=False: no shift parameter at all (None, which F.layer_norm reads as zero), so
        # the state dict, the parameter count and the optimizer see none.
        self.shift = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.layer_norm computes exactly the book's formula (biased variance), in one kernel.
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class RMSNorm(nn.Module):
    """weight * x / sqrt(mean(x^2) + eps): no centring, no bias (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, *, eps: float = 1e-5) -> None:
        _positive_eps("rmsnorm", eps)
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


class ScaleNorm(nn.Module):
    """g * x / max(||x||_2, eps) with one learned scalar g, initialised to sqrt(dim)."""

    def __init__(self, dim: int, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        # sqrt(dim) makes the output's RMS 1 at initialisation, as LayerNorm's and RMSNorm's is.
        self.g = nn.Parameter(torch.tensor(math.sqrt(dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp(min=self.eps)
        return self.g * x / norm

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class DynamicTanh(nn.Module):
    """weight * tanh(alpha * x) + bias, alpha one learned scalar (Zhu et al. 2025, DyT)

    No statistics over the features: each is squashed on its own, alpha setting how soon. The
    paper replaces every norm of a Transformer with it; its LLaMA runs also tune alpha's start
    per width and place (the attention's norm apart), which `alpha_init` leaves to the user.
    """

    def __init__(self, dim: int, *, alpha_init: float = 0.5, bias: bool = True) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.alpha.to(x.dtype) * x) * self.weight.to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)


def dyt(dim: int, *, alpha_init: float = 0.5, bias: bool = True) -> DynamicTanh:
    """weight * tanh(alpha x) + bias, one learned scalar alpha: no statistics (Zhu et al. 2025)"""
    if not (math.isfinite(alpha_init) and alpha_init > 0):
        raise ComponentError(
            f"normalization 'dyt': alpha_init must be a finite number > 0, got {alpha_init!r}"
        )
    return DynamicTanh(dim, alpha_init=alpha_init, bias=bias)


def _positive_eps(name: str, eps: float) -> None:
    if not (math.isfinite(eps) and eps > 0):
        raise ComponentError(
            f"normalization {name!r}: eps must be a finite number > 0, got {eps!r}"
        )


def torch_layernorm(dim: int, *, eps: float = 1e-5, bias: bool = True) -> nn.LayerNorm:
    """torch.nn.LayerNorm: the same maths as layernorm, parameters named weight and bias"""
    _positive_eps("torch-layernorm", eps)
    return nn.LayerNorm(dim, eps=eps, bias=bias)


def scalenorm(dim: int, *, eps: float = 1e-5) -> ScaleNorm:
    """g * x / max(||x||_2, eps), one learned scalar g, sqrt(dim) at init (Nguyen & Salazar 2019)"""
    _positive_eps("scalenorm", eps)
    return ScaleNorm(dim, eps=eps)


def no_norm(dim: int) -> nn.Identity:
    """identity: no normalization in the blocks nor before the head, no parameters"""
    return nn.Identity()


@hookimpl
def register_components(register) -> None:
    register("normalization", "layernorm", LayerNorm)
    register("normalization", "torch-layernorm", torch_layernorm)
    register("normalization", "rmsnorm", RMSNorm)
    register("normalization", "scalenorm", scalenorm)
    register("normalization", "dyt", dyt)
    register("normalization", "none", no_norm)
