"""Multi-head latent attention, `mla` (DeepSeek-AI 2024, DeepSeek-V2): every head's keys and values
are up-projected from one small latent per token, and generation caches only that latent (plus a
narrow shared key that carries the rotary positions), not every head's keys and values.

For n_heads heads of head_dim hs, a latent of kv_rank r_kv and rope_dim r:

    c = RMSNorm(x W_dkv)                       (B, T, r_kv): all the cache keeps, with k_rope
    k_nope = c W_uk, v = c W_uv                per head, hs each
    k_rope = RoPE(x W_kr)                      (B, T, r), one for all heads
    q = x W_query (or RMSNorm(x W_dq) W_uq with q_rank), per head [q_nope (hs), q_rope (r)]
    head = softmax([q_nope, RoPE(q_rope)] . [k_nope, k_rope] / sqrt(hs + r), causal) v
    out = concat(heads) W_o

The rotary part is decoupled, as in the paper: rotating k_nope would tie it to positions, so W_uk
could no longer be folded into the queries. With a bound RoPE only q_rope and k_rope turn (their
frequencies spread over r dimensions); ALiBi biases the scores of every head; with learned,
sinusoidal or no positions k_rope is just a narrow key shared by the heads.

Generation uses that folding ("absorbed" attention): a query scores the cached latents directly
through q_nope W_uk^T (per head, r_kv wide), and the heads' outputs in latent space go through
W_uv afterwards. It is the training forward's maths reassociated, so a step reads (r_kv + r)
numbers per cached position rather than 2 n_heads hs; W_uk and W_uv carry no bias, so that the
folding is exact.

Defaults: kv_rank = emb_dim / 2 (the projections then hold 7/8 of multihead's attention
parameters at rope_dim 0, a little more with the rotary key, and the cache per token is
(emb_dim / 2 + r) numbers against multihead's 2 emb_dim), rope_dim = head_dim / 2 rounded down
to an even number (DeepSeek-V2's ratio), full-rank queries (q_rank unset). The paper's latent is
smaller (512 for emb_dim 5120); set kv_rank to ablate it. The latents' RMS norms (the paper's)
take the place of qk_norm, which this attention does not offer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from plugins.heads import HeadAttention, HeadRMSNorm, qkv_bias
from toolkit.api.hookspecs import hookimpl
from toolkit.errors import ComponentError


class MultiHeadLatentAttention(HeadAttention):
    """Multi-head latent attention: keys and values from one small cached latent per token (DeepSeek-V2)"""

    def __init__(
        self,
        config,
        *,
        kv_rank: int | None = None,
        rope_dim: int | None = None,
        q_rank: int | None = None,
    ) -> None:
        what = "attention 'mla'"
        d, hs = config.emb_dim, config.head_dim
        kv_rank = d // 2 if kv_rank is None else kv_rank
        rope_dim = max(2, hs // 2 // 2 * 2) if rope_dim is None else rope_dim
        if kv_rank < 1:
            raise ComponentError(f"{what}: kv_rank must be at least 1, got {kv_rank}")
        if rope_dim < 2 or rope_dim % 2:
            raise ComponentError(
                f"{what}: rope_dim must be an even number >= 2 (RoPE turns pairs of "
                f"dimensions), got {rope_dim}"
            )
        if q_rank is not None and q_rank < 1:
            raise ComponentError(f"{what}: q_rank must be at least 1 when given, got {q_rank}")
        super().__init__(config, head_dim=hs, qk_norm=False)
        self.n_heads, self.kv_rank, self.rope_dim = config.n_heads, kv_rank, rope_dim
        q_width = config.n_heads * (hs + rope_dim)
        bias = qkv_bias(config)
        if q_rank is None:
            self.W_query = nn.Linear(d, q_width, bias=bias)
        else:
            self.W_dq = nn.Linear(d, q_rank, bias=bias)
            self.q_latent_norm = HeadRMSNorm(q_rank)
            self.W_uq = nn.Linear(q_rank, q_width, bias=bias)
        self.W_dkv = nn.Linear(d, kv_rank, bias=bias)
        self.kv_latent_norm = HeadRMSNorm(kv_rank)
        self.W_kr = nn.Linear(d, rope_dim, bias=bias)
        # No biases here: generation folds these matrices into the queries and the outputs.
        self.W_uk = nn.Linear(kv_rank, config.n_heads * hs, bias=False)
        self.W_uv = nn.Linear(kv_rank, config.n_heads * hs, bias=False)
        self.out_proj = nn.Linear(config.n_heads * hs, d, bias=config.bias)

    def bind_positional(self, module: nn.Module) -> None:
        """As HeadAttention's, refusing a partial RoPE: mla's rope_dim already says how many
        dimensions turn, and a fraction of those could turn none."""
        fraction = getattr(module, "fraction", 1.0)
        if fraction != 1.0:
            raise ComponentError(
                f"attention 'mla' turns its own rope_dim dimensions; positional 'rope' takes no "
                f"fraction with it (got {fraction}): set rope_dim instead"
            )
        super().bind_positional(module)

    def project(
        self, x: torch.Tensor, start: int, cache: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, d) at positions start.. -> q_nope (B, nh, T, hs), q_rope (B, nh, T, r), the
        latent (B, 1, T, r_kv) and k_rope (B, 1, T, r), the rotary parts turned when RoPE is
        bound. With a KV `cache`, the three projections of x are one stacked matrix product."""
        b, t, _ = x.shape
        first = self.W_query if hasattr(self, "W_query") else self.W_dq
        if cache is None:
            q, kv, kr = first(x), self.W_dkv(x), self.W_kr(x)
        else:
            stacked = self.stacked_projection(cache, start, first, self.W_dkv, self.W_kr)
            widths = [first.out_features, self.kv_rank, self.rope_dim]
            q, kv, kr = F.linear(x, *stacked).split(widths, dim=-1)
        if first is not getattr(self, "W_query", None):
            q = self.W_uq(self.q_latent_norm(q))
        q = q.view(b, t, self.n_heads, self.head_dim + self.rope_dim).transpose(1, 2)
        q_nope, q_rope = q.split([self.head_dim, self.rope_dim], dim=-1)
        latent = self.kv_latent_norm(kv).unsqueeze(1)
        k_rope = kr.unsqueeze(1)
        if self._positional:
            q_rope, k_rope = self._positional[0].rotate(q_rope, k_rope, start=start)
        return q_nope, q_rope, latent, k_rope

    def merge_heads(self, context: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = context.shape
        return self.out_proj(context.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q_nope, q_rope, latent, k_rope = self.project(x, 0)
        b, _, t, _ = latent.shape
        k_nope = self.W_uk(latent).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.W_uv(latent).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        q = torch.cat([q_nope, q_rope], dim=-1)
        k = torch.cat([k_nope, k_rope.expand(-1, self.n_heads, -1, -1)], dim=-1)
        return self.merge_heads(self.attend_fused(q, k, v))  # scaled by 1 / sqrt(hs + r)

    def forward_cached(self, x: torch.Tensor, cache: dict, start: int) -> torch.Tensor:
        """forward() for x (B, T, d) at positions start .., attending to the latents and rotary
        keys cached by earlier calls, in the absorbed form (see the module's docstring)."""
        q_nope, q_rope, latent, k_rope = self.project(x, start, cache)
        (keys,) = self.cache_rows(cache, start, latent=torch.cat([latent, k_rope], dim=-1))
        w_uk = self.W_uk.weight.view(self.n_heads, self.head_dim, self.kv_rank)
        q_latent = q_nope @ w_uk  # (B, nh, T, r_kv): each head's queries through its W_uk
        # attend()'s maths scales by 1 / sqrt(head_dim); the scores must be scaled by
        # 1 / sqrt(hs + r), as in training. (Explicit maths: the fused kernel has no fast path
        # for keys narrower than the values' heads, and falls back to slower maths of its own.)
        rescale = math.sqrt(self.head_dim / (self.head_dim + self.rope_dim))
        q = torch.cat([q_latent, q_rope], dim=-1) * rescale
        values = keys[..., : self.kv_rank]  # one head, broadcast over the queries' heads
        context = self.attend_cached(q, keys, values, start, fused=False)  # (B, nh, T, r_kv)
        w_uv = self.W_uv.weight.view(self.n_heads, self.head_dim, self.kv_rank)
        return self.merge_heads(context @ w_uv.transpose(1, 2))  # through each head's W_uv


@hookimpl
def register_components(register) -> None:
    register(
        "attention",
        "mla",
        MultiHeadLatentAttention,
        causal=True,
        positional_inside=True,
        kv_cache=True,
    )
