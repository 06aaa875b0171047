"""Differential attention, `diff` (Ye et al. 2024, "Differential Transformer"): each head attends
with the difference of two softmax maps, so attention that both maps give to irrelevant context
cancels, as a differential amplifier cancels common-mode noise.

With h = n_heads / 2 heads (the paper's h = d_model / 2d, d the baseline's head dimension, so
parameters and FLOPs per token match `sdpa`'s at the same n_heads):

    [Q1 Q2] = x W_query, [K1 K2] = x W_key     head_dim per map and head
    V = x W_value                              2 head_dim per head
    A = softmax(Q1 K1^T / sqrt(head_dim)) - lambda softmax(Q2 K2^T / sqrt(head_dim))   (causal)
    head = (1 - lambda_init) RMSNorm(A V)      per head, over its 2 head_dim, one shared gain
    out = concat(heads) W_o

lambda = exp(lambda_q1 . lambda_k1) - exp(lambda_q2 . lambda_k2) + lambda_init, from four learned
vectors of head_dim started at normal(0, 0.1), one lambda per layer. The paper sets
lambda_init = 0.8 - 0.6 exp(-0.3 (l - 1)) for layer l, which needs the layer's index; a
component is not told it, so `lambda_init` is an option (default 0.8, that schedule's value deep
in the network; the paper also trains with constant values and reports losses close to the
schedule's).

Sub-heads 2i and 2i + 1 of the projections are head i's two maps, as in the authors' code. A
bound RoPE rotates every sub-head (head_dim each) and qk_norm norms each; ALiBi gives both maps
of head i the slope of row 2i of its n_heads rows, spanning the same range of slopes. Attention
dropout (drop_rate_attn) drops entries of each of the two maps, as the fused kernel does for
one. The KV cache keeps the n_heads key sub-heads and the h value heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from plugins.attention import ProjectedAttention
from plugins.heads import HeadRMSNorm
from toolkit.api.hookspecs import hookimpl
from toolkit.errors import ComponentError

LAMBDA_INIT_STD = 0.1  # the lambda vectors' start, as the paper's code draws them


class DifferentialAttention(ProjectedAttention):
    """Differential attention: each head's map is the difference of two softmax maps (Ye et al. 2024)"""

    def __init__(self, config, *, lambda_init: float = 0.8, qk_norm: bool = False) -> None:
        if config.n_heads % 2:
            raise ComponentError(
                f"attention 'diff': n_heads must be even (each head takes two query and key "
                f"sub-heads of head_dim), got {config.n_heads}; choose an even n_heads"
            )
        if not 0.0 <= lambda_init < 1.0:
            raise ComponentError(
                f"attention 'diff': lambda_init must be in [0, 1) (the heads are scaled by "
                f"1 - lambda_init), got {lambda_init!r}"
            )
        super().__init__(config, n_kv_heads=config.n_heads, qk_norm=qk_norm)
        self.heads = config.n_heads // 2
        self.lambda_init = lambda_init
        hs = self.head_dim
        for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            setattr(self, name, nn.Parameter(torch.randn(hs) * LAMBDA_INIT_STD))
        self.subln = HeadRMSNorm(2 * hs)
        self._bias_heads = slice(None, None, 2)  # ALiBi: one row of slopes per head, both maps

    def lambda_full(self) -> torch.Tensor:
        """This layer's lambda, a float32 scalar."""
        first = torch.exp((self.lambda_q1.float() * self.lambda_k1.float()).sum())
        second = torch.exp((self.lambda_q2.float() * self.lambda_k2.float()).sum())
        return first - second + self.lambda_init

    def project(
        self, qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor], start: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The projections' outputs (B, T, d) each -> q, k (B, n_heads, T, head_dim), normed and
        rotated, and v (B, h, T, 2 head_dim)."""
        q, k, v = qkv
        b, t, _ = q.shape
        q = q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.heads, 2 * self.head_dim).transpose(1, 2)
        q, k = self.queries_keys(q, k, start)
        return q, k, v

    def combine(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """The two maps' outputs (B, h, T, 2 head_dim) -> (B, T, d): their difference, normed per
        head, scaled and projected."""
        heads = first - self.lambda_full().to(first.dtype) * second
        return self.merge_heads(self.subln(heads) * (1.0 - self.lambda_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.project((self.W_query(x), self.W_key(x), self.W_value(x)), 0)
        first = self.attend_fused(q[:, 0::2], k[:, 0::2], v)
        second = self.attend_fused(q[:, 1::2], k[:, 1::2], v)
        return self.combine(first, second)

    def forward_cached(self, x: torch.Tensor, cache: dict, start: int) -> torch.Tensor:
        """forward() for x (B, T, d) at positions start .., with the keys and values of earlier
        calls kept in `cache`; the three projections as one stacked matrix product."""
        stacked = self.stacked_projection(cache, start, self.W_query, self.W_key, self.W_value)
        q, k, v = self.project(F.linear(x, *stacked).chunk(3, dim=-1), start)
        k, v = self.cache_keys_values(cache, k, v, start)
        first = self.attend_cached(q[:, 0::2], k[:, 0::2], v, start)
        second = self.attend_cached(q[:, 1::2], k[:, 1::2], v, start)
        return self.combine(first, second)


@hookimpl
def register_components(register) -> None:
    register(
        "attention",
        "diff",
        DifferentialAttention,
        causal=True,
        positional_inside=True,
        kv_cache=True,
    )
