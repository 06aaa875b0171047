"""Built-in positional encodings that act on the token embeddings: `learned` (GPT-2, the book).

A positional module's forward(x, start=0) adds position information to embeddings x of shape
(B, T, emb_dim) for positions start .. start+T-1. Not here: schemes acting inside attention.
"""

from __future__ import annotations

import torch
from torch import nn

from toolkit.hookspecs import hookimpl


class LearnedPositional(nn.Module):
    """A trained vector per position, added to the token embedding (context_length x emb_dim)."""

    def __init__(self, config) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(config.context_length, config.emb_dim))
        nn.init.normal_(self.weight)  # what nn.Embedding does, so the book's init is kept

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        return x + self.weight[start : start + x.shape[1]]


@hookimpl
def register_components(register) -> None:
    register("positional", "learned", LearnedPositional)
