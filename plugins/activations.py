"""Built-in feed-forward blocks, named by their activation.

Plain: `gelu` (the book's tanh approximation), `gelu-exact` (erf), `relu`, `relu2` (squared ReLU)
(relu(x)^2) and `silu` (x * sigmoid(x)); each is Linear(d, 4d), activation, Linear(4d, d), laid
out as in the book (`ff.layers.0`, `ff.layers.2`). The config's `ffn_hidden` replaces the
hidden width (4d here, 8d/3 for the gated units) when set. Every Linear has a bias unless
model.bias = false.

Gated (GLU, Shazeer 2020): `swiglu` and `geglu`, down(act(gate(x)) * up(x)), laid out as
`ff.gate`, `ff.up`, `ff.down`. Their hidden width defaults to 8d/3 so that their three matrices
hold as many parameters as the plain block's two (options `match_params`, `hidden_mult`).
Not here: the mixture of experts, which routes tokens among these (plugins/moe.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from toolkit.api.hookspecs import hookimpl
from toolkit.errors import ComponentError


class FeedForward(nn.Module):
    """Position-wise feed-forward: Linear(d, h), activation, Linear(h, d), h = 4d unless the
    config's ffn_hidden says otherwise; biased unless model.bias = false."""

    def __init__(self, config, activation: nn.Module) -> None:
        super().__init__()
        d = config.emb_dim
        h = getattr(config, "ffn_hidden", None) or 4 * d
        self.layers = nn.Sequential(
            nn.Linear(d, h, bias=config.bias), activation, nn.Linear(h, d, bias=config.bias)
        )

    def forward(self, x):
        return self.layers(x)


class SquaredReLU(nn.Module):
    """relu(x)^2 (So et al. 2021, Primer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).square()


class GatedFeedForward(nn.Module):
    """Gated feed-forward: down(act(gate(x)) * up(x)), gate and up Linear(d, hidden).

    All three linears carry biases, like the plain FeedForward's, so that parameter counts
    compare like with like; LLaMA-style models drop them: model.bias = false removes these
    2 * hidden + d parameters (and the plain block's hidden + d).
    """

    def __init__(self, config, activation: nn.Module, *, hidden: int) -> None:
        super().__init__()
        d = config.emb_dim
        self.gate = nn.Linear(d, hidden, bias=config.bias)
        self.up = nn.Linear(d, hidden, bias=config.bias)
        self.act = activation
        self.down = nn.Linear(hidden, d, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.gate(x)) * self.up(x))


def gated_hidden(
    name: str,
    emb_dim: int,
    match_params: bool,
    hidden_mult: float | None,
    ffn_hidden: int | None = None,
) -> int:
    """The hidden width of a gated feed-forward: round(hidden_mult * d) when given, else the
    config's ffn_hidden when set, else 8d/3 (rounded down) with match_params, else 4d.
    `gated_hidden("swiglu", 768, True, None) -> 2048`."""
    if hidden_mult is not None:
        # Checked here too: the registry lets any value through an `X | None` annotation.
        number = isinstance(hidden_mult, int | float) and not isinstance(hidden_mult, bool)
        if not (number and math.isfinite(hidden_mult) and hidden_mult > 0):
            raise ComponentError(
                f"activation {name!r}: hidden_mult must be a finite number > 0, got {hidden_mult!r}"
            )
        hidden = round(hidden_mult * emb_dim)
        if hidden < 1:
            raise ComponentError(
                f"activation {name!r}: hidden_mult {hidden_mult!r} gives no hidden units at "
                f"emb_dim {emb_dim}; use at least 1/emb_dim = {1 / emb_dim:.3g}"
            )
        return hidden
    if ffn_hidden:
        return ffn_hidden
    # 3 * d * h (+ 2h + d biases) against the plain block's 8 * d^2 (+ 5d): h = 8d/3.
    return 8 * emb_dim // 3 if match_params else 4 * emb_dim


def gelu_feed_forward(config) -> FeedForward:
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as GPT-2 and the book."""
    return FeedForward(config, nn.GELU(approximate="tanh"))


def gelu_exact_feed_forward(config) -> FeedForward:
    """GELU, exact: x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))) (Hendrycks & Gimpel 2016)"""
    return FeedForward(config, nn.GELU())


def relu_feed_forward(config) -> FeedForward:
    """ReLU: max(0, x), the original transformer's activation."""
    return FeedForward(config, nn.ReLU())


def squared_relu_feed_forward(config) -> FeedForward:
    """Squared ReLU: max(0, x)^2 (So et al. 2021, Primer)"""
    return FeedForward(config, SquaredReLU())


def silu_feed_forward(config) -> FeedForward:
    """SiLU (swish): x * sigmoid(x) (Elfwing et al. 2018; Ramachandran et al. 2017)"""
    return FeedForward(config, nn.SiLU())


def swiglu_feed_forward(
    config, *, match_params: bool = True, hidden_mult: float | None = None
) -> GatedFeedForward:
    """SwiGLU: down(silu(gate(x)) * up(x)), hidden 8d/3 by default to match gelu's parameters (Shazeer 2020)"""
    hidden = gated_hidden(
        "swiglu", config.emb_dim, match_params, hidden_mult, getattr(config, "ffn_hidden", None)
    )
    return GatedFeedForward(config, nn.SiLU(), hidden=hidden)


def geglu_feed_forward(
    config, *, match_params: bool = True, hidden_mult: float | None = None
) -> GatedFeedForward:
    """GEGLU: down(gelu(gate(x)) * up(x)), erf GELU, hidden 8d/3 by default to match gelu's parameters (Shazeer 2020)"""
    hidden = gated_hidden(
        "geglu", config.emb_dim, match_params, hidden_mult, getattr(config, "ffn_hidden", None)
    )
    return GatedFeedForward(config, nn.GELU(), hidden=hidden)


@hookimpl
def register_components(register) -> None:
    register("activation", "gelu", gelu_feed_forward)
    register("activation", "gelu-exact", gelu_exact_feed_forward)
    register("activation", "relu", relu_feed_forward)
    register("activation", "relu2", squared_relu_feed_forward)
    register("activation", "silu", silu_feed_forward)
    register("activation", "swiglu", swiglu_feed_forward)
    register("activation", "geglu", geglu_feed_forward)
