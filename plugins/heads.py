"""What every attention with per-head queries and keys shares (the built-in ones in
plugins/attention.py but `simplified` and `self`, and `diff` and `mla`): HeadAttention.

It holds the causal mask, the dropout on the attention weights, the optional query/key norm
(`qk_norm`: RMS norm over head_dim), the positional module the model binds (RoPE rotates
queries and keys, ALiBi biases the scores), and the optional sink logits; and it attends two
ways, the book's explicit maths (explicit()) and F.scaled_dot_product_attention (fused()), which
the training forward and the KV cache's path (plugins/kv_cache.py, mixed in) both call. It
registers nothing: the attentions built on it do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from plugins.kv_cache import KVCache

# enable_gqa arrived in torch 2.5; older ones (the project allows 2.4) get expanded keys/values.
_SDPA_HAS_GQA = torch.__version__ >= (2, 5)
QK_NORM_EPS = 1e-6


def grouped(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """k, v (B, n_kv, T, hs) for F.scaled_dot_product_attention with q (B, nh, ..): as they
    are with enable_gqa when their heads are fewer, or repeated on torches without it (query
    head h reads key/value head h // group, as enable_gqa does); and the keywords to pass."""
    if k.shape[1] == q.shape[1]:
        return k, v, {}
    if _SDPA_HAS_GQA:
        return k, v, {"enable_gqa": True}
    group = q.shape[1] // k.shape[1]
    return k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1), {}


def qkv_bias(config) -> bool:
    """Whether the query/key/value projections carry biases: model.qkv_bias, unless
    model.bias = false removes every bias in the model."""
    return config.qkv_bias and config.bias


class HeadRMSNorm(nn.Module):
    """RMS norm over the last (head) dimension with a learnable gain shared by all heads"""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Cast the gain so bf16 activations keep the fused kernel and their dtype.
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), eps=QK_NORM_EPS)


class HeadAttention(KVCache, nn.Module):
    """Causal attention over per-head queries and keys: what the registered ones share

    Holds the causal mask, the dropout on the attention weights, the optional query/key norm
    (Henry et al. 2020; Dehghani et al. 2023; here RMS norm over head_dim) and the positional
    module bound by the model. Subclasses project and split heads; attend() (explicit, the
    book's maths) and attend_fused() (F.scaled_dot_product_attention) do the rest. Unbound and
    without qk_norm they add nothing to the computation.
    """

    def __init__(
        self, config, *, head_dim: int, qk_norm: bool, bias_head: int | None = None
    ) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.q_norm = HeadRMSNorm(head_dim) if qk_norm else None
        self.k_norm = HeadRMSNorm(head_dim) if qk_norm else None
        self.dropout = nn.Dropout(config.dropout("attn"))
        # True above the diagonal: position t may not look at t+1, t+2, ...
        # Not persistent: it is derived from context_length and need not be in checkpoints.
        n = self.context_length = config.context_length  # also the KV cache's length
        self.register_buffer(
            "mask", torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1), persistent=False
        )
        # A single head (the wrapper's, or `causal`) takes one row of a per-head score bias.
        self._bias_heads = slice(None) if bias_head is None else slice(bias_head, bias_head + 1)
        self._positional: tuple[nn.Module, ...] = ()
        self.sinks: nn.Parameter | None = None  # (nh,) sink logits, where a subclass has them

    def hidden(self, t: int) -> torch.Tensor:
        """(T, T), True above the diagonal, where a position may not look: the mask buffer's
        corner, or for a sequence longer than context_length (an evaluation in longer windows
        than training's) one made for it."""
        if t <= self.mask.shape[0]:
            return self.mask[:t, :t]
        return torch.ones(t, t, dtype=torch.bool, device=self.mask.device).triu(diagonal=1)

    def bind_positional(self, module: nn.Module) -> None:
        """Apply `module`'s rotate() and score_bias() from now on."""
        # Kept in a tuple so nn.Module does not register it: the model owns it as pos_emb, and a
        # submodule here would be counted, initialised and saved once per layer.
        self._positional = (module,)

    def queries_keys(
        self, q: torch.Tensor, k: torch.Tensor, start: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Norm (qk_norm) and rotate (a bound RoPE) q (B, nh, T, hs) and k (B, n_kv, T, hs) at
        positions start .. start+T-1."""
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self._positional:
            q, k = self._positional[0].rotate(q, k, start=start)
        return q, k

    def positional_bias(self, t: int) -> torch.Tensor | None:
        """The bound positional's bias on the (T, T) scores, (nh, T, T), or None."""
        if not self._positional:
            return None
        bias = self._positional[0].score_bias(t, t, start=0)
        return None if bias is None else bias[self._bias_heads]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T / sqrt(hs) + bias, causally masked) v with dropout on the weights."""
        t = q.shape[-2]
        return self.explicit(q, k, v, self.positional_bias(t), self.hidden(t))

    def attend_fused(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None
    ) -> torch.Tensor:
        """The same maths through F.scaled_dot_product_attention; k and v may have fewer heads
        than q (grouped), and `window` limits each position to its last `window` positions."""
        if q.dtype == torch.bfloat16 and q.device.type == "cpu" and q.requires_grad:
            # On CPUs the fused kernel's bfloat16 backward is slower than its float32 one
            # (forward + backward 1.8x on a 2-core AMX Xeon: benchmarks/attention.py), so
            # training steps attend in float32, which is also the more exact maths;
            # forward-only calls, faster in bfloat16, stay in it.
            with torch.autocast("cpu", enabled=False):
                out = self.attend_fused(q.float(), k.float(), v.float(), window)
            return out.to(q.dtype)
        t = q.shape[-2]
        bias = self.positional_bias(t)
        windowed = window is not None and window < t
        if bias is None and not windowed and self.sinks is None:
            k, v, extra = grouped(q, k, v)
            p = self.dropout.p if self.training else 0.0
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, **extra)
        hidden = self.hidden(t)  # (T, T), True where a position may not look
        if windowed:
            # Also hide keys window or more positions back: j <= i - window.
            hidden = hidden | torch.ones_like(hidden).tril(diagonal=-window)
        return self.fused(q, k, v, bias, hidden)

    def explicit(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None,
        hidden: torch.Tensor | None,
    ) -> torch.Tensor:
        """The book's maths: scores q (B, nh, t_q, hs) . k (B, nh, t_k, hs) / sqrt(hs), plus
        `bias` (nh, t_q, t_k), -inf where `hidden` (t_q, t_k) is True, softmax (with the sink
        logits as one more column when the heads have them), dropout, times v."""
        scores = q @ k.transpose(-2, -1) / self.head_dim**0.5  # (B, nh, t_q, t_k)
        if bias is not None:
            scores = scores + bias
        if hidden is not None:
            scores = scores.masked_fill(hidden, float("-inf"))
        if self.sinks is None:
            weights = torch.softmax(scores, dim=-1)
        else:  # one more column, then dropped: the weight that no key takes
            sink = self.sinks.to(scores.dtype).view(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
            weights = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
        return self.dropout(weights) @ v

    def fused(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None,
        hidden: torch.Tensor | None,
    ) -> torch.Tensor:
        """explicit()'s maths through F.scaled_dot_product_attention, whose k and v may have
        fewer heads than q. Sinks enter as one more key in front: zero key and value, its
        score set by the float mask to the head's sink logit."""
        k, v, extra = grouped(q, k, v)
        p = self.dropout.p if self.training else 0.0
        if self.sinks is None and bias is None:  # boolean, True where allowed
            attn_mask = None if hidden is None else ~hidden
        else:
            t_q, t_k = q.shape[-2], k.shape[-2]
            attn_mask = q.new_zeros(t_q, t_k) if bias is None else bias.to(q.dtype)
            if hidden is not None:
                attn_mask = attn_mask.masked_fill(hidden, float("-inf"))
        if self.sinks is not None:
            heads = q.shape[1]
            sink = self.sinks.to(q.dtype).view(heads, 1, 1).expand(heads, q.shape[-2], 1)
            attn_mask = torch.cat([sink, attn_mask.expand(heads, *attn_mask.shape[-2:])], dim=-1)
            zero = k.new_zeros(*k.shape[:2], 1, k.shape[-1])
            k, v = torch.cat([zero, k], dim=2), torch.cat([zero, v], dim=2)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p, **extra)
