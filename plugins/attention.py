"""Built-in attention components, each mapping (B, T, emb_dim) to (B, T, emb_dim).

The book's four mechanisms, as chapter 3 of "Build a Large Language Model From Scratch" builds
them: `simplified` (no weights: softmax(x x^T) x), `self` (trainable query/key/value, scaled:
SelfAttention_v2), `causal` (one causal head with dropout: CausalAttention) and
`multihead-wrapper` (n_heads causal heads of head_dim, concatenated: MultiHeadAttentionWrapper).
`simplified` and `self` have no mask, so position t sees later positions; they are registered
with causal=False, and a language model trained with them learns to copy the next token.

For GPTs: `multihead` (the book's MultiHeadAttention: W_query, W_key, W_value, out_proj and a
causal mask), `sdpa` (the same maths through F.scaled_dot_product_attention), `sliding-window`
(each position sees its last `window` positions), `gqa` and `mqa` (keys and values in fewer
heads than the queries, shared by groups of query heads). `multihead`, `sdpa` and
`sliding-window` share parameter names and shapes, so their state dicts load into each other,
and into `gqa` when n_kv_heads == n_heads.

Biases: with model.bias = true (the default) the query/key/value projections have them when
model.qkv_bias says (GPT-2's do, the book's default does not) and out_proj always, as in the
book; model.bias = false removes every one, qkv_bias included (Llama's attention has none).

Every attention with per-head queries and keys (all but `simplified` and `self`) takes the
option `qk_norm` and applies positional schemes that act inside attention (RoPE rotates queries
and keys, ALiBi biases the scores) once the model hands it one through bind_positional(); that
shared machinery is HeadAttention (plugins/heads.py).

Sinks (the option `sinks = true` on multihead, sdpa, sliding-window, gqa and mqa): one learned
logit per head joins every row of that head's softmax as a column with no value, so a head can
put weight on nothing (gpt-oss; Xiao et al. 2023 found models learning such sinks on their own,
on the first tokens). A logit s takes exp(s) / (exp(s) + sum_j exp(score_j)) of a row's weight;
it starts at 0.

KV cache (generation): plugins/kv_cache.py, mixed into HeadAttention (plugins/heads.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from plugins.heads import HeadAttention, qkv_bias
from toolkit.api.hookspecs import hookimpl
from toolkit.errors import ComponentError


class ProjectedAttention(HeadAttention):
    """Multi-head attention's projections, head splitting and output projection

    W_query (d -> d), W_key and W_value (d -> n_kv_heads x head_dim) and out_proj (d -> d),
    registered last so the gpt2 init finds it as the residual projection. out_proj has a bias
    (the book's) unless model.bias = false; the others as qkv_bias() says. Forward is the
    subclasses'; forward_cached (generation with a KV cache) is shared, with the subclass's
    `window` and `fused_cache` (F.scaled_dot_product_attention or attend()'s explicit maths).

    gate (the option `gate = true`): the heads' outputs, before out_proj, are multiplied
    elementwise by sigmoid(x W_gate), W_gate (d -> d) reading the block's normalized input as
    the queries do: one gate per head and dimension, set by the query's own token (Qiu et al.
    2025, "Gated Attention for Large Language Models", their best-performing position G1).

    sinks (the option `sinks = true`): a learned logit per head, one more softmax column with no
    value (gpt-oss), so the head's weights on the keys may sum to less than 1.
    """

    window: int | None = None  # sliding-window sets its own
    fused_cache = True

    def __init__(
        self, config, *, n_kv_heads: int, qk_norm: bool, gate: bool = False, sinks: bool = False
    ) -> None:
        super().__init__(config, head_dim=config.head_dim, qk_norm=qk_norm)
        if sinks:  # one logit per query head, a softmax column with no value
            self.sinks = nn.Parameter(torch.zeros(config.n_heads))
        d, kv = config.emb_dim, n_kv_heads * config.head_dim
        self.n_heads, self.n_kv_heads = config.n_heads, n_kv_heads
        self.W_query = nn.Linear(d, d, bias=qkv_bias(config))
        self.W_key = nn.Linear(d, kv, bias=qkv_bias(config))
        self.W_value = nn.Linear(d, kv, bias=qkv_bias(config))
        # Before out_proj, which must stay the last Linear (the residual projection).
        self.W_gate = nn.Linear(d, d, bias=qkv_bias(config)) if gate else None
        self.out_proj = nn.Linear(d, d, bias=config.bias)

    def split_heads(
        self, x: torch.Tensor, start: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project x (B, T, d) at positions start.. to q (B, nh, T, hs) and k, v (B, n_kv, T,
        hs), normed and rotated when asked."""
        b, t, _ = x.shape
        q = self.W_query(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.W_key(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.W_value(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = self.queries_keys(q, k, start)
        return q, k, v

    def forward_cached(self, x: torch.Tensor, cache: dict, start: int) -> torch.Tensor:
        """forward() for x (B, T, d) at positions start .. start+T-1, attending also to the
        keys and values that earlier calls left in `cache` (only n_kv_heads of them). The
        projections are split_heads()' through one stacked matrix product."""
        b, t, _ = x.shape
        heads = (self.n_heads, self.n_kv_heads, self.n_kv_heads)
        stacked = self.stacked_projection(cache, start, self.W_query, self.W_key, self.W_value)
        qkv = F.linear(x, *stacked).view(b, t, sum(heads), self.head_dim)
        qkv = qkv.transpose(1, 2)  # (B, nh + 2 n_kv, T, hs)
        q, k, v = qkv.split_with_sizes(heads, dim=1)
        q, k = self.queries_keys(q, k, start)
        k, v = self.cache_keys_values(cache, k, v, start)
        context = self.attend_cached(q, k, v, start, self.window, self.fused_cache)
        return self.merge_heads(context, x)

    def merge_heads(self, context: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The heads' outputs (B, nh, T, hs) side by side, gated by x (the attention's input)
        when the gate is on, through out_proj: (B, T, d)."""
        b, _, t, _ = context.shape
        context = context.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)  # (B, T, d)
        if self.W_gate is not None:
            context = context * torch.sigmoid(self.W_gate(x))
        return self.out_proj(context)


class MultiHeadAttention(ProjectedAttention):
    """Causal multi-head attention as the book builds it: explicit mask and softmax"""

    fused_cache = False  # forward_cached uses attend()'s explicit maths, as forward does

    def __init__(
        self, config, *, qk_norm: bool = False, gate: bool = False, sinks: bool = False
    ) -> None:
        super().__init__(config, n_kv_heads=config.n_heads, qk_norm=qk_norm, gate=gate, sinks=sinks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        return self.merge_heads(self.attend(q, k, v), x)


class SDPAttention(MultiHeadAttention):
    """The same causal multi-head maths through torch's fused scaled_dot_product_attention"""

    fused_cache = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        return self.merge_heads(self.attend_fused(q, k, v), x)


class SlidingWindowAttention(MultiHeadAttention):
    """Causal multi-head attention where each position sees only its last `window` positions

    The window includes the position itself, as in Longformer (Beltagy et al. 2020) and Mistral
    7B (Jiang et al. 2023). With window >= T it is `sdpa`.
    """

    def __init__(
        self,
        config,
        *,
        window: int = 64,
        qk_norm: bool = False,
        gate: bool = False,
        sinks: bool = False,
    ) -> None:
        if window < 1:
            raise ComponentError(
                f"attention 'sliding-window': window must be at least 1 (a position sees "
                f"itself), got {window}"
            )
        super().__init__(config, qk_norm=qk_norm, gate=gate, sinks=sinks)
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        return self.merge_heads(self.attend_fused(q, k, v, window=self.window), x)


class GroupedQueryAttention(ProjectedAttention):
    """Grouped-query attention: n_kv_heads key/value heads, each shared by a group of query heads

    Ainslie et al. 2023. Keys and values take n_kv_heads/n_heads of multihead's parameters and,
    at generation time, of its KV cache; with n_kv_heads == n_heads it is `sdpa`.
    """

    def __init__(
        self,
        config,
        *,
        n_kv_heads: int = 2,
        qk_norm: bool = False,
        gate: bool = False,
        sinks: bool = False,
    ) -> None:
        n_heads = config.n_heads
        if not 1 <= n_kv_heads <= n_heads or n_heads % n_kv_heads:
            divisors = [str(n) for n in range(1, n_heads + 1) if n_heads % n == 0]
            raise ComponentError(
                f"attention 'gqa': n_kv_heads ({n_kv_heads}) must divide n_heads ({n_heads}); "
                f"choose one of {', '.join(divisors)}"
            )
        super().__init__(config, n_kv_heads=n_kv_heads, qk_norm=qk_norm, gate=gate, sinks=sinks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split_heads(x)  # k, v: (B, n_kv, T, hs)
        return self.merge_heads(self.attend_fused(q, k, v), x)


class MultiQueryAttention(GroupedQueryAttention):
    """Multi-query attention: one key/value head shared by all query heads (Shazeer 2019)"""

    def __init__(
        self, config, *, qk_norm: bool = False, gate: bool = False, sinks: bool = False
    ) -> None:
        super().__init__(config, n_kv_heads=1, qk_norm=qk_norm, gate=gate, sinks=sinks)


class SimplifiedAttention(nn.Module):
    """The book's first: no trainable weights, softmax(x x^T) x, every position sees every other"""

    def __init__(self, config) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = x @ x.transpose(1, 2)  # (B, T, T): unscaled dot products, as in section 3.3
        weights = torch.softmax(scores, dim=-1)
        return weights @ x  # (B, T, emb_dim)


class SelfAttention(nn.Module):
    """Trainable query/key/value, scaled, no mask: sees the future (the book's SelfAttention_v2)"""

    def __init__(self, config) -> None:
        super().__init__()
        d = config.emb_dim
        self.W_query = nn.Linear(d, d, bias=qkv_bias(config))
        self.W_key = nn.Linear(d, d, bias=qkv_bias(config))
        self.W_value = nn.Linear(d, d, bias=qkv_bias(config))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
        scores = q @ k.transpose(1, 2)  # (B, T, T)
        weights = torch.softmax(scores / k.shape[-1] ** 0.5, dim=-1)
        return weights @ v  # (B, T, emb_dim)


class CausalAttention(HeadAttention):
    """One causal head with trainable query/key/value and dropout on the weights (CausalAttention)

    d_out defaults to emb_dim; the wrapper builds n_heads of them with d_out = head_dim and
    passes each its index `head`, the row of a per-head score bias (ALiBi) it takes. Alone it
    takes row 0, ALiBi's steepest slope. Like the book's, it has no output projection.
    """

    def __init__(
        self, config, d_out: int | None = None, head: int = 0, *, qk_norm: bool = False
    ) -> None:
        d_out = config.emb_dim if d_out is None else d_out
        super().__init__(config, head_dim=d_out, qk_norm=qk_norm, bias_head=head)
        self.W_query = nn.Linear(config.emb_dim, d_out, bias=qkv_bias(config))
        self.W_key = nn.Linear(config.emb_dim, d_out, bias=qkv_bias(config))
        self.W_value = nn.Linear(config.emb_dim, d_out, bias=qkv_bias(config))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, d) -> (B, 1, T, d_out): a head axis, so norms and positionals see their usual shape
        q = self.W_query(x).unsqueeze(1)
        k = self.W_key(x).unsqueeze(1)
        v = self.W_value(x).unsqueeze(1)
        q, k = self.queries_keys(q, k)
        return self.attend(q, k, v).squeeze(1)  # (B, T, d_out)

    def forward_cached(self, x: torch.Tensor, cache: dict, start: int) -> torch.Tensor:
        """forward() for x at positions start.., with the keys and values kept in `cache`."""
        stacked = self.stacked_projection(cache, start, self.W_query, self.W_key, self.W_value)
        q, k, v = F.linear(x, *stacked).unsqueeze(1).chunk(3, dim=-1)  # (B, 1, T, d_out) each
        q, k = self.queries_keys(q, k, start)
        k, v = self.cache_keys_values(cache, k, v, start)
        return self.attend_cached(q, k, v, start, fused=False).squeeze(1)


class MultiHeadAttentionWrapper(nn.Module):
    """n_heads independent causal heads of head_dim, outputs concatenated (the book's wrapper)"""

    def __init__(self, config, *, qk_norm: bool = False) -> None:
        super().__init__()
        self.heads = nn.ModuleList(
            CausalAttention(config, config.head_dim, h, qk_norm=qk_norm)
            for h in range(config.n_heads)
        )

    def bind_positional(self, module: nn.Module) -> None:
        """Apply `module`'s rotate() and score_bias() in every head."""
        for head in self.heads:
            head.bind_positional(module)

    def residual_projections(self) -> list[nn.Linear]:
        """Every head's value projection writes to the residual stream (there is no out_proj)."""
        return [head.W_value for head in self.heads]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(x) for head in self.heads], dim=-1)  # (B, T, n_heads * head_dim)

    def forward_cached(self, x: torch.Tensor, cache: dict, start: int) -> torch.Tensor:
        """forward() with a KV cache: each head keeps its own keys and values in cache[h]."""
        return torch.cat(
            [
                head.forward_cached(x, cache.setdefault(h, {}), start)
                for h, head in enumerate(self.heads)
            ],
            dim=-1,
        )


def causal_attention(config, *, qk_norm: bool = False) -> CausalAttention:
    """One causal head with trainable query/key/value and dropout on the weights (CausalAttention)

    The whole width in one head, as the book's chapter 3 builds it.
    """
    return CausalAttention(config, qk_norm=qk_norm)


@hookimpl
def register_components(register) -> None:
    # The book's chapter 3, in its order.
    register("attention", "simplified", SimplifiedAttention, causal=False)
    register("attention", "self", SelfAttention, causal=False)
    inside = dict(causal=True, positional_inside=True, kv_cache=True)
    register("attention", "causal", causal_attention, **inside)
    register("attention", "multihead-wrapper", MultiHeadAttentionWrapper, **inside)
    register("attention", "multihead", MultiHeadAttention, **inside)
    register("attention", "sdpa", SDPAttention, **inside)
    register("attention", "sliding-window", SlidingWindowAttention, **inside)
    register("attention", "gqa", GroupedQueryAttention, **inside)
    register("attention", "mqa", MultiQueryAttention, **inside)
