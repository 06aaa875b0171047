"""Built-in feed-forward blocks, named by their activation: `gelu` (the book's tanh
approximation) and `relu`. Each is Linear(d, 4d), activation, Linear(4d, d).

The module layout matches the book (`ff.layers.0`, `ff.layers.2`). Not here: gated (GLU)
feed-forwards, which change the layout and the hidden size.
"""

from __future__ import annotations

from torch import nn

from toolkit.hookspecs import hookimpl


class FeedForward(nn.Module):
    """Position-wise feed-forward: Linear(d, 4d), activation, Linear(4d, d)."""

    def __init__(self, config, activation: nn.Module) -> None:
        super().__init__()
        d = config.emb_dim
        self.layers = nn.Sequential(nn.Linear(d, 4 * d), activation, nn.Linear(4 * d, d))

    def forward(self, x):
        return self.layers(x)


def gelu_feed_forward(config) -> FeedForward:
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as GPT-2 and the book."""
    return FeedForward(config, nn.GELU(approximate="tanh"))


def relu_feed_forward(config) -> FeedForward:
    """ReLU: max(0, x), the original transformer's activation."""
    return FeedForward(config, nn.ReLU())


@hookimpl
def register_components(register) -> None:
    register("activation", "gelu", gelu_feed_forward)
    register("activation", "relu", relu_feed_forward)
