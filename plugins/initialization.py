"""Built-in initialisations: `default` (PyTorch's own, as the book leaves it) and `gpt2`
(normal(0, 0.02) weights, zero biases, residual output projections scaled by 1/sqrt(2 x
n_layers), as GPT-2 does). Both take `zero_residual = true`: the residual output projections
start at zero (weights and biases), so every block begins as the identity and the stream is the
embeddings alone (modded-nanogpt's speed-runs; "ReZero"-like starts).

An init is applied once, right after the model is built, under the run's seed. The residual
output projections of an attention or feed-forward module are what its optional
`residual_projections()` method returns, else its last nn.Linear (the kinds' documentation
asks plugins to follow this). Not here: norm parameters,
which keep their ones and zeros.
"""

from __future__ import annotations

import math

from torch import nn

from toolkit.api.hookspecs import hookimpl


def default_init(model: nn.Module, config, *, zero_residual: bool = False) -> None:
    """PyTorch's default initialisation, untouched (the book's choice)"""
    if zero_residual:
        _zero_residual(model)


def gpt2_init(model: nn.Module, config, *, std: float = 0.02, zero_residual: bool = False) -> None:
    """GPT-2's: normal(0, std) weights and embeddings, zero biases, residual projections / sqrt(2L) (or zero)"""
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    for param in model.pos_emb.parameters():
        if param.dim() >= 2:  # learned positions; sinusoidal tables are buffers, not parameters
            nn.init.normal_(param, mean=0.0, std=std)
    residual_std = std / math.sqrt(2 * config.n_layers)
    for block in model.trf_blocks:
        for branch in (block.att, block.ff):
            for linear in residual_projections(branch):
                nn.init.normal_(linear.weight, mean=0.0, std=residual_std)
    if zero_residual:
        _zero_residual(model)


def _zero_residual(model: nn.Module) -> None:
    """Every block's residual output projections (attention and feed-forward) to zero."""
    for block in model.trf_blocks:
        for branch in (block.att, block.ff):
            for linear in residual_projections(branch):
                nn.init.zeros_(linear.weight)
                if linear.bias is not None:
                    nn.init.zeros_(linear.bias)


def residual_projections(branch: nn.Module) -> list[nn.Linear]:
    """The layers of an attention or feed-forward module that write into the residual stream:
    what its `residual_projections()` returns, else its last nn.Linear."""
    if hasattr(branch, "residual_projections"):
        return list(branch.residual_projections())
    linears = [m for m in branch.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


@hookimpl
def register_components(register) -> None:
    register("init", "default", default_init)
    register("init", "gpt2", gpt2_init)
