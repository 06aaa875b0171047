"""Built-in samplers: `greedy`, `temperature` and `top-k` (the book's generate(): top-k filter,
then temperature, then a multinomial draw; greedy when temperature is 0).

A sampler maps the last position's logits (B, V) and a torch.Generator to token ids (B, 1).
Option ranges are checked when a sampler is built, so a bad spec fails before training.
Not here: nucleus, min-p, typical sampling and chains (later additions).
"""

from __future__ import annotations

import torch

from toolkit.errors import ComponentError
from toolkit.hookspecs import hookimpl


class Greedy:
    """Always the most likely token (argmax)."""

    def __call__(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return logits.argmax(dim=-1, keepdim=True)


class TopK:
    """Keep the k most likely tokens, divide logits by temperature, draw; temperature 0 is greedy."""

    def __init__(self, *, k: int | None = None, temperature: float = 1.0) -> None:
        if k is not None and k < 1:
            raise ComponentError(f"sampler option k must be at least 1, got {k}")
        if temperature < 0:
            raise ComponentError(
                f"sampler option temperature must be >= 0 (0 is greedy), got {temperature}"
            )
        self.k, self.temperature = k, temperature

    def __call__(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if self.k is not None and self.k < logits.shape[-1]:
            kth = torch.topk(logits, self.k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.temperature == 0:
            return logits.argmax(dim=-1, keepdim=True)
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator)


def temperature_sampler(*, temperature: float = 1.0) -> TopK:
    """Divide logits by temperature and draw from the softmax; 0 is greedy."""
    return TopK(temperature=temperature)


def top_k_sampler(*, k: int = 50, temperature: float = 1.0) -> TopK:
    """Keep the k most likely tokens, then temperature, then draw (the book's order)."""
    return TopK(k=k, temperature=temperature)


@hookimpl
def register_components(register) -> None:
    register("sampler", "greedy", Greedy)
    register("sampler", "temperature", temperature_sampler)
    register("sampler", "top-k", top_k_sampler)
