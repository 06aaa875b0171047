"""Text generation with a sampler component, with a KV cache, and the `ablate generate` command.

`generate()` extends token ids one position at a time and stops early when every sequence has
produced `eot_id` (a finished sequence keeps receiving eot_id while the others go on).
`stream()` yields the new ids step by step, for printing as they come.

The context is the last `context_length` ids, as users expect from a model that has only learned
that many positions. With the KV cache (the default, `use_cache=True`, when the model's attention
is registered with `kv_cache=True`): the prompt's window fills the cache in one pass, and each
step then feeds only the new token at the next position. When the cache is full (it holds
context_length positions), the next step rebuilds it from the cropped window, re-run from
position 0: exactly what the uncached path computes, so both give the same tokens and learned,
sinusoidal, rope, alibi and no positions all stay within the positions the model knows. Past
context_length every step therefore re-runs the window, as without a cache; the cache speeds up
the first context_length positions. Models without the fact (the non-causal attentions, plugins
that do not implement forward_cached) silently use the uncached path: each step re-runs the
cropped context through forward().

`ablate generate RUN_DIR|CHECKPOINT --prompt ...` (add_parser / cmd_generate) loads a run's
checkpoint and tokenizer and streams the continuation to stdout. torch is imported on first use,
so building the command line parser stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

Sampler = Callable[["torch.Tensor", "torch.Generator | None"], "torch.Tensor"]


def stream(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    sampler: Sampler,
    context_length: int,
    generator: torch.Generator | None = None,
    eot_id: int | None = None,
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield the next ids (B, 1) of token ids idx (B, T >= 1), at most max_new_tokens times,
    ending early once every sequence has produced eot_id. The model is in eval mode while this
    runs and gets its former mode back at the end."""
    import torch

    was_training = model.training
    model.eval()
    cached = use_cache and bool(getattr(model, "supports_kv_cache", False))
    done = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    cache = model.new_cache() if cached else None
    try:
        for step in range(max_new_tokens):
            with torch.no_grad():
                window = idx[:, -context_length:]
                if not cached:
                    logits = model(window)
                elif step == 0 or cache.length >= context_length:
                    # (Re)fill the cache with the (cropped) window from position 0.
                    logits = model.forward_cached(window, cache, 0, last_only=True)
                else:  # only the newest token, at the next position
                    logits = model.forward_cached(idx[:, -1:], cache, cache.length, True)
                next_ids = sampler(logits[:, -1, :], generator)  # (B, V) -> (B, 1)
                if eot_id is not None:
                    next_ids = next_ids.masked_fill(done.unsqueeze(1), eot_id)
                    done |= next_ids.squeeze(1) == eot_id
                idx = torch.cat([idx, next_ids], dim=1)
            yield next_ids
            if eot_id is not None and bool(done.all()):
                break
    finally:
        model.train(was_training)


def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    sampler: Sampler,
    context_length: int,
    generator: torch.Generator | None = None,
    eot_id: int | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Token ids (B, T) -> (B, T + n) with n <= max_new_tokens new ids drawn by `sampler`."""
    import torch

    steps = stream(
        model, idx, max_new_tokens, sampler, context_length, generator, eot_id, use_cache
    )
    return torch.cat([idx, *steps], dim=1)


class IncrementalDecoder:
    """Text of a growing list of ids, piece by piece: add(id) returns only the text completed
    since the last call. A multi-byte character split across tokens decodes to U+FFFD until its
    last byte arrives, so trailing U+FFFD are held back; flush() returns what is left."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode, self.ids, self.printed = decode, [], ""

    def add(self, token: int) -> str:
        self.ids.append(token)
        return self._emit(self.decode(self.ids).rstrip("\ufffd"))

    def flush(self) -> str:
        return self._emit(self.decode(self.ids))

    def _emit(self, text: str) -> str:
        # Tokenizers here decode prefix-stably; one that does not gets the new tail anyway.
        new = text[len(self.printed) :] if text.startswith(self.printed) else ""
        self.printed += new
        return new
