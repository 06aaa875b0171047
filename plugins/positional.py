"""Built-in positional schemes: on the embeddings (`learned`, `sinusoidal`, `none`) and inside
attention (`rope`, `alibi`).

A positional module's forward(x, start=0) adds position information to embeddings x of shape
(B, T, emb_dim) for positions start .. start+T-1. The schemes registered with
inside_attention=True return x unchanged there and act through the attention instead:
rotate(q, k, start) turns queries and keys (B, heads, T, head_dim) at positions start ..
start+T-1, and score_bias(t_q, t_k, start) -> (heads, t_q, t_k) or None is added to the scores
of queries at positions start .. start+t_q-1 against keys at 0 .. t_k-1 (so that a KV cache can
ask for the new rows only). Fixed tables are non-persistent buffers up to context_length,
computed further on demand; none of them has parameters but `learned`. All but `learned` (a
table of context_length trained rows) are registered with any_length=True: they take positions
past context_length, so a model can be scored in longer windows than it trained on. Not here:
trained relative biases (T5), NTK/YaRN scaling of RoPE.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from toolkit.api.hookspecs import hookimpl
from toolkit.errors import ComponentError


class LearnedPositional(nn.Module):
    """A trained vector per position, added to the token embedding (context_length x emb_dim)."""

    def __init__(self, config) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(config.context_length, config.emb_dim))
        nn.init.normal_(self.weight)  # what nn.Embedding does, so the book's init is kept

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        return x + self.weight[start : start + x.shape[1]]


def sinusoid_table(start: int, t: int, dim: int, device=None) -> torch.Tensor:
    """(t, dim): sin(pos / 10000^(2i/dim)) in column 2i, cos of the same angle in column 2i+1,
    for pos = start .. start+t-1 (Vaswani et al. 2017, section 3.5)."""
    pos = torch.arange(start, start + t, dtype=torch.float32, device=device)
    inv_freq = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim)
    )  # (ceil(dim/2),)
    angles = torch.outer(pos, inv_freq)  # (t, ceil(dim/2))
    table = torch.empty(t, dim, device=device)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : dim // 2])  # an odd dim has one cosine fewer
    return table


class SinusoidalPositional(nn.Module):
    """Fixed sine/cosine waves added to the token embeddings, no parameters (Vaswani et al. 2017)

    The original also scales the token embeddings by sqrt(emb_dim); this one adds the table to
    them as they are, as GPT-2 adds its learned positions.
    """

    def __init__(self, config) -> None:
        super().__init__()
        table = sinusoid_table(0, config.context_length, config.emb_dim)
        # A buffer, not a parameter: nothing to train, and derived, so kept out of checkpoints.
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        t = x.shape[1]
        if start + t <= self.table.shape[0]:
            table = self.table[start : start + t]
        else:  # past context_length (a longer prompt or cache): compute the rows
            table = sinusoid_table(start, t, x.shape[-1], device=x.device)
        return x + table.to(x.dtype)


class RotaryPositional(nn.Module):
    """Rotary embeddings: queries and keys rotated pairwise by position (Su et al. 2021, RoPE)

    Dimensions (2i, 2i+1) of each head turn by pos x theta^(-2i/r), r = head_dim, so q.k
    depends on the positions only through their difference. With `fraction` below 1 (partial
    rotary, as GPT-NeoX's rotary_pct) only the first r = fraction x head_dim dimensions
    (rounded down to pairs) turn, their frequencies spread over those r, and the rest carry no
    position. Acts inside attention; forward() leaves the embeddings alone.
    """

    def __init__(self, config, *, theta: float = 10000.0, fraction: float = 1.0) -> None:
        super().__init__()
        if not 0 < fraction <= 1:
            raise ComponentError(
                f"positional 'rope': fraction (of each head's dimensions that turn) must be in "
                f"(0, 1], got {fraction!r}"
            )
        self.fraction = fraction
        if fraction == 1 and config.head_dim % 2:
            raise ComponentError(
                f"positional 'rope' rotates pairs of dimensions, but head_dim = emb_dim / n_heads "
                f"= {config.emb_dim} / {config.n_heads} = {config.head_dim} is odd; choose an "
                f"even head_dim"
            )
        if self.rotated(config.head_dim) < 2:
            raise ComponentError(
                f"positional 'rope': fraction {fraction} of head_dim {config.head_dim} turns no "
                f"pair of dimensions; raise the fraction to at least {2 / config.head_dim:.3g}"
            )
        if not theta > 0:
            raise ComponentError(f"positional 'rope': theta must be > 0, got {theta!r}")
        self.theta, self.head_dim = theta, config.head_dim
        cos, sin = self.angles(0, config.context_length, self.rotated(config.head_dim))
        self.register_buffer("cos", cos, persistent=False)  # (context_length, rotated / 2)
        self.register_buffer("sin", sin, persistent=False)

    def rotated(self, dim: int) -> int:
        """How many of a vector's dim dimensions turn: all (fraction 1, dim even), else
        fraction x dim rounded down to pairs."""
        return int(self.fraction * dim) // 2 * 2

    def angles(self, start: int, t: int, dim: int, device=None) -> tuple[torch.Tensor, ...]:
        """cos and sin, each (t, dim / 2), of pos x theta^(-2i/dim) for pos = start..start+t-1."""
        inv_freq = self.theta ** (
            -torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim
        )
        pos = torch.arange(start, start + t, dtype=torch.float32, device=device)
        angles = torch.outer(pos, inv_freq)  # (t, dim / 2)
        return torch.cos(angles), torch.sin(angles)

    def turn(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Rotate x (B, h, T, dim) at positions start..start+T-1; dim may differ from head_dim
        (a single-head attention rotates all of its emb_dim)."""
        t, dim = x.shape[-2], x.shape[-1]
        rot = self.rotated(dim)
        if dim == self.head_dim and start + t <= self.cos.shape[0]:
            cos, sin = self.cos[start : start + t], self.sin[start : start + t]
        else:
            cos, sin = self.angles(start, t, rot, device=x.device)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        turning = x if rot == dim else x[..., :rot]
        even, odd = turning[..., 0::2], turning[..., 1::2]  # (B, h, T, rot / 2) each
        # (even + i odd) x (cos + i sin), written back interleaved: (B, h, T, rot)
        turned = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
        return turned if rot == dim else torch.cat((turned, x[..., rot:]), dim=-1)

    def rotate(
        self, q: torch.Tensor, k: torch.Tensor, start: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.turn(q, start), self.turn(k, start)

    def score_bias(self, t_q: int, t_k: int, start: int = 0) -> None:
        return None

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        return x


def alibi_slopes(n_heads: int) -> list[float]:
    """Press et al.'s head slopes: 2^(-8/n), 2^(-16/n), ..., 2^(-8) for n a power of two;
    otherwise those of the largest power of two p below n, then every other slope of 2p.
    `alibi_slopes(8) -> [1/2, 1/4, ..., 1/256]`."""

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    p = 2 ** math.floor(math.log2(n_heads))
    return geometric(p) + geometric(2 * p)[0::2][: n_heads - p]


class ALiBiPositional(nn.Module):
    """Attention scores biased by -slope x distance, one slope per head (Press et al. 2022, ALiBi)

    Acts inside attention; forward() leaves the embeddings alone and rotate() the queries and
    keys. Past keys are biased by -slope x (query position - key position); future keys get
    -slope x |distance| too, which a causal mask then removes.
    """

    def __init__(self, config) -> None:
        super().__init__()
        slopes = torch.tensor(alibi_slopes(config.n_heads), dtype=torch.float32)
        self.register_buffer("slopes", slopes, persistent=False)  # (n_heads,)

    def score_bias(self, t_q: int, t_k: int, start: int = 0) -> torch.Tensor:
        """(n_heads, t_q, t_k) for queries at start..start+t_q-1 and keys at 0..t_k-1."""
        device = self.slopes.device
        q_pos = torch.arange(start, start + t_q, device=device)
        k_pos = torch.arange(t_k, device=device)
        distance = (q_pos[:, None] - k_pos[None, :]).abs()  # (t_q, t_k)
        return -self.slopes[:, None, None] * distance  # (n_heads, t_q, t_k)

    def rotate(
        self, q: torch.Tensor, k: torch.Tensor, start: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        return x


class NoPositional(nn.Module):
    """No position information: causal attention alone must infer order (Haviv et al. 2022)"""

    def __init__(self, config) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        return x


@hookimpl
def register_components(register) -> None:
    register("positional", "learned", LearnedPositional)  # a table of context_length rows
    register("positional", "sinusoidal", SinusoidalPositional, any_length=True)
    register("positional", "rope", RotaryPositional, inside_attention=True, any_length=True)
    register("positional", "alibi", ALiBiPositional, inside_attention=True, any_length=True)
    register("positional", "none", NoPositional, any_length=True)
