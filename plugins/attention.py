"""Built-in attention components: causal multi-head attention as the book builds it (`multihead`)
and the same maths through PyTorch's fused kernel (`sdpa`).

Both take the model config (emb_dim, n_heads, context_length, drop_rate, qkv_bias) and map
(B, T, emb_dim) to (B, T, emb_dim). They share parameter names (W_query, W_key, W_value,
out_proj), so one's state dict loads into the other. Not here: positional schemes that act
inside attention, grouped key/value heads, KV caching (later additions to this family).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.hookspecs import hookimpl


class MultiHeadAttention(nn.Module):
    """Causal multi-head attention with separate query/key/value projections (the book's)."""

    def __init__(self, config) -> None:
        super().__init__()
        d = config.emb_dim
        self.n_heads, self.head_dim = config.n_heads, config.emb_dim // config.n_heads
        self.W_query = nn.Linear(d, d, bias=config.qkv_bias)
        self.W_key = nn.Linear(d, d, bias=config.qkv_bias)
        self.W_value = nn.Linear(d, d, bias=config.qkv_bias)
        self.out_proj = nn.Linear(d, d)
        self.dropout = nn.Dropout(config.drop_rate)
        # True above the diagonal: position t may not look at t+1, t+2, ...
        # Not persistent: it is derived from context_length and need not be in checkpoints.
        mask = torch.triu(
            torch.ones(config.context_length, config.context_length, dtype=torch.bool), diagonal=1
        )
        self.register_buffer("mask", mask, persistent=False)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        # (B, T, d) -> (B, nh, T, hs)
        q = self.W_query(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.W_key(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.W_value(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.split_heads(x)
        scores = q @ k.transpose(2, 3)  # (B, nh, T, T)
        scores = scores.masked_fill(self.mask[:t, :t], float("-inf"))
        weights = torch.softmax(scores / self.head_dim**0.5, dim=-1)
        weights = self.dropout(weights)
        context = (weights @ v).transpose(1, 2).reshape(b, t, d)  # (B, T, d)
        return self.out_proj(context)


class SDPAttention(MultiHeadAttention):
    """Causal multi-head attention through torch's fused scaled_dot_product_attention."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.split_heads(x)
        p = self.dropout.p if self.training else 0.0
        context = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        return self.out_proj(context.transpose(1, 2).reshape(b, t, d))


@hookimpl
def register_components(register) -> None:
    register(
        "attention",
        "multihead",
        MultiHeadAttention,
        causal=True,
        description="causal multi-head attention as the book builds it: explicit mask and softmax",
    )
    register(
        "attention",
        "sdpa",
        SDPAttention,
        causal=True,
        description="the same causal multi-head maths through torch's fused scaled_dot_product_attention",
    )
