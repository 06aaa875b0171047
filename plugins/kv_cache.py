"""The KV cache of the built-in attentions: generation only, never on the training path.

Every causal attention in plugins/attention.py (and `diff`, `mla`) is registered with
`kv_cache=True` and has forward_cached(x, cache, start): x holds the new positions start ..
start+T-1, and `cache` is a dict the module owns across calls. It keeps the keys and values after
qk_norm and RoPE at their own positions, in static buffers of context_length positions written
in place (gqa/mqa keep only n_kv_heads; the wrapper one dict per head; mla one latent), and the
query, key and value weights stacked for one matrix product. The queries attend to every cached
key causally, with ALiBi's score_bias(T, start+T, start) and, for sliding-window, only the last
`window` keys. start = 0 refills the cache. Not here: other sparse patterns.

KVCache is the machinery those attentions share, mixed into HeadAttention; the attending itself
is the host's explicit() or fused(), the same maths the training forward runs.
"""

from __future__ import annotations

import torch
from torch import nn


class KVCache:
    """forward_cached()'s shared parts: the stacked projection, the static buffers, and
    attending over what they hold. Mixed into an nn.Module with context_length, _positional,
    _bias_heads, explicit() and fused() (HeadAttention)."""

    @staticmethod
    def stacked_projection(cache: dict, start: int, *linears: nn.Linear) -> tuple:
        """(weight, bias) of `linears` (the query, key and value projections) stacked into one
        matrix product, whose output holds theirs side by side and whose every row is computed
        as its own Linear computes it. Made when the cache is (re)filled (start = 0) and kept in
        it, since generation does not change the weights: one product per step, not three."""
        if start == 0 or "stacked" not in cache:
            biases = [lin.bias for lin in linears]
            cache["stacked"] = (
                torch.cat([lin.weight for lin in linears]),
                None if biases[0] is None else torch.cat(biases),
            )
        return cache["stacked"]

    def cache_keys_values(
        self, cache: dict, k: torch.Tensor, v: torch.Tensor, start: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, n_kv, T, hs) of positions start .. start+T-1 in `cache` (a dict this
        module owns) and return views of the keys and values of positions 0 .. start+T-1.
        start = 0 starts afresh. See cache_rows()."""
        k, v = self.cache_rows(cache, start, k=k, v=v)
        return k, v

    def cache_rows(self, cache: dict, start: int, **rows: torch.Tensor) -> list[torch.Tensor]:
        """Store each of `rows` (B, h, T, dim: keys, values, or a latent that stands for both) of
        positions start .. start+T-1 in `cache` under its name, and return views of each name's
        positions 0 .. start+T-1, in the order given. start = 0 starts afresh.

        The buffers are static: (B, h, context_length, dim), allocated by the first call and
        written in place from then on, a refill from position 0 included, so a decoding step
        copies only its own rows and allocates nothing. One is made anew only for another
        batch size, head count, width, dtype or device, or to go past context_length (which
        generate() never does: it refills from position 0 instead)."""
        t = next(iter(rows.values())).shape[-2]
        end = start + t
        if start != cache.get("length", 0) and start != 0:
            raise ValueError(f"KV cache holds {cache.get('length', 0)} positions, not {start}")
        views = []
        for name, x in rows.items():
            buf = cache.get(name)
            if (
                buf is None
                or buf.shape[-2] < end
                or buf.shape[:2] != x.shape[:2]
                or buf.shape[-1] != x.shape[-1]
                or buf.dtype != x.dtype
                or buf.device != x.device
            ):
                # Past context_length (a caller other than generate()), doubling: few copies.
                size = max(end, self.context_length, 2 * buf.shape[-2] if start else 0)
                new = x.new_empty(*x.shape[:2], size, x.shape[-1])
                if start:  # past context_length: keep what is cached
                    new[:, :, :start] = buf[:, :, :start]
                buf = cache[name] = new
            buf.narrow(2, start, t).copy_(x)
            views.append(buf.narrow(2, 0, end))
        cache["length"] = end
        return views

    def attend_cached(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        start: int,
        window: int | None = None,
        fused: bool = True,
    ) -> torch.Tensor:
        """Queries q (B, nh, t_q, hs) at positions start .. start+t_q-1 against all cached keys
        and values (B, n_kv, t_k, hs) at 0 .. t_k-1 (t_k = start + t_q): causal, the bound
        positional's score_bias(t_q, t_k, start), and `window` limiting each query to its last
        `window` positions. fused: F.scaled_dot_product_attention (k, v may have fewer heads);
        else attend()'s explicit maths."""
        t_q, t_k = q.shape[-2], k.shape[-2]
        first = 0 if window is None else max(0, start - window + 1)  # no query sees before it
        if first:
            k, v = k[:, :, first:], v[:, :, first:]
        bias = None
        if self._positional:
            bias = self._positional[0].score_bias(t_q, t_k, start=start)
            bias = None if bias is None else bias[self._bias_heads][..., first:]
        hidden = None  # (t_q, t_k - first), True where a query may not look
        if t_q > 1:  # one query (a decoding step) sees every key it is given
            q_pos = torch.arange(start, start + t_q, device=q.device)[:, None]
            k_pos = torch.arange(first, t_k, device=q.device)[None, :]
            hidden = k_pos > q_pos
            if window is not None:
                hidden = hidden | (k_pos <= q_pos - window)
        if fused:
            return self.fused(q, k, v, bias, hidden)
        return self.explicit(q, k, v, bias, hidden)
