"""Text generation with a sampler component, with a KV cache.

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

The cache is static: the built-in attentions allocate keys and values for all context_length
positions on the first fill and write each step's in place (a refill from position 0 too), and
attend to the filled prefix only; the query, key and value projections run as one stacked
matrix product. A decoding step is one position through every layer: it reads every weight
matrix for one row of products, and for a small model its operations and Python calls cost
about a third as much again (benchmarks/run.py's model on 2 CPU cores), so the loop writes the
new ids into one preallocated buffer and feeds each step's ids straight to the next, runs under
torch.inference_mode, and forward_cached leaves out dropout (the model is in eval mode). On a
CPU, how many threads such a step should take depends on the host and its load; the stream
measures it, where the choice cannot change a token (threads.py). Batched prompts share one
length (no padding here).

Text in, text out: `stream_text(model, tokenizer, prompt, ...)` yields the continuation piece
by piece (`IncrementalDecoder` holds back a character split across tokens), and
`generate_text(run_folder_or_checkpoint, prompt)` (`toolkit.generate`) loads a checkpoint with
its run's tokenizer and sampling settings first. Library code only: `ablate generate` is
toolkit/cli/generate.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from toolkit.api.manager import Plugins, load_plugins
from toolkit.api.registry import Choice, split_choice
from toolkit.data.resolve import check_vocab, run_tokenizer
from toolkit.errors import SpecError
from toolkit.inference.device import check_device
from toolkit.inference.threads import DecodeThreads
from toolkit.model.checkpoint import open_checkpoint
from toolkit.spec.limits import MAX_NEW_TOKENS, check_seeds
from toolkit.spec.schema import SamplingSpec

Sampler = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def check_max_new_tokens(value: Any, where: str) -> int:
    """`value` as a count of new tokens, 0 to MAX_NEW_TOKENS; a one-line SpecError naming
    `where` (the flag or key it came from) otherwise."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise SpecError(f"{where} must be a whole number of tokens, got {value!r}")
    if value < 0:
        raise SpecError(f"{where} must be >= 0, got {value}")
    if value > MAX_NEW_TOKENS:
        raise SpecError(
            f"{where} must be at most {MAX_NEW_TOKENS:,} (new tokens of one generation), "
            f"got {value}"
        )
    return value


def check_seed(value: Any, where: str) -> int:
    """`value` as a seed of the draws: an integer from 0 to 2**63 - 1, as a spec's seeds."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise SpecError(f"{where} must be an integer from 0 to 2**63 - 1, got {value!r}")
    check_seeds([value], where)
    return value


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
    runs and gets its former mode back at the end.

    Each step runs under torch.inference_mode (less bookkeeping per operation than no_grad),
    so the ids yielded are inference tensors: read or copy them; changing one in place outside
    inference mode raises. The ids so far live in one buffer allocated for all the steps, and
    a step syncs with the device only to stop on eot_id."""
    was_training = model.training
    model.eval()
    cached = use_cache and bool(getattr(model, "supports_kv_cache", False))
    b, t = idx.shape
    ids = idx.new_empty(b, t + max_new_tokens)  # the prompt, then each new id in place: no cat
    ids[:, :t] = idx
    # One sequence stops at its eot_id as it comes; a batch tracks which have finished.
    done = None if eot_id is None or b == 1 else torch.zeros(b, dtype=torch.bool, device=idx.device)
    cache = model.new_cache() if cached else None
    next_ids = idx[:, -1:]  # the newest ids, which a cached step feeds: each step's own next
    # On a CPU, the threads of cached steps: measured per step where that cannot change a token.
    threads = (
        DecodeThreads(model, b, max_new_tokens) if cached and idx.device.type == "cpu" else None
    )

    def one_row(cache: Any) -> torch.Tensor:  # the newest token (the last step's ids), next
        return model.forward_cached(next_ids, cache, cache.length, True)

    try:
        if threads is not None:
            threads.start()
            if cache is not None:  # a one-row pass, each time into a cache of its own
                with torch.inference_mode():
                    threads.probe(lambda: model.forward_cached(idx[:, -1:], model.new_cache(), 0))
        for end in range(t, t + max_new_tokens):  # ids[:, :end] are known; ids[:, end] is next
            with torch.inference_mode():
                if cache is not None and 0 < cache.length < context_length:
                    logits = one_row(cache) if threads is None else threads.step(one_row, cache)
                else:  # the whole window: uncached, or to (re)fill the cache from position 0
                    if threads is not None:
                        threads.canonical_count()
                    window = ids[:, max(0, end - context_length) : end]
                    if cache is None:
                        logits = model(window)
                    else:
                        logits = model.forward_cached(window, cache, 0, last_only=True)
                next_ids = sampler(logits[:, -1, :], generator)  # (B, V) -> (B, 1)
                if done is not None:
                    next_ids = next_ids.masked_fill(done.unsqueeze(1), eot_id)
                    done |= next_ids.squeeze(1) == eot_id
                ids[:, end : end + 1] = next_ids
            yield next_ids
            # The host syncs, only to stop on eot_id.
            if done is not None and bool(done.all()):
                break
            if done is None and eot_id is not None and int(next_ids) == eot_id:
                break
    finally:
        model.train(was_training)
        if threads is not None:
            threads.stop()


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


def stream_text(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    sampler: Sampler,
    max_new_tokens: int,
    *,
    seed: int = 0,
    use_cache: bool = True,
) -> Iterator[str]:
    """The continuation of `prompt` (not the prompt itself) as text pieces, as the model writes
    them, up to max_new_tokens or its end-of-text token; draws seeded by `seed`."""
    device = next(model.parameters()).device
    ids = tokenizer.encode(prompt) or [tokenizer.eot_id]
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    context = model.config.context_length
    decoder = IncrementalDecoder(tokenizer.decode)
    steps = stream(
        model, idx, max_new_tokens, sampler, context, generator, tokenizer.eot_id, use_cache
    )
    for next_ids in steps:
        token = int(next_ids[0, 0])
        if token == tokenizer.eot_id:
            break
        piece = decoder.add(token)
        if piece:
            yield piece
    tail = decoder.flush()
    if tail:
        yield tail


def generate_text(
    source: str | os.PathLike[str],
    prompt: str | None = None,
    *,
    sampler: Choice | None = None,
    max_new_tokens: int | None = None,
    seed: int | None = None,
    tokenizer: Choice | None = None,
    device: str = "cpu",
    use_cache: bool = True,
    plugins: Plugins | None = None,
) -> str:
    """A run folder's (or checkpoint's) model continuing `prompt`; what is not given comes from
    the run's config ([sampling] and seed), as `ablate generate` does.

    >>> toolkit.generate("runs/quickstart/base/seed-0", "Every effort", sampler="greedy")

    A prompt that is not a str, max_new_tokens outside 0 .. MAX_NEW_TOKENS or a seed outside
    0 .. 2**63 - 1 raise a one-line SpecError before anything loads.
    """
    if prompt is not None and not isinstance(prompt, str):
        raise SpecError(f"prompt must be text (a str), got a {type(prompt).__name__}")
    if max_new_tokens is not None:
        check_max_new_tokens(max_new_tokens, "max_new_tokens")
    if seed is not None:
        check_seed(seed, "seed")
    plugins = plugins or load_plugins()
    model, tok, sampling = load_for_generation(source, tokenizer, device, plugins)
    chosen = sampler_choice(sampling["sampler"], sampler, "sampler", plugins)
    if max_new_tokens is None:
        max_new_tokens = check_max_new_tokens(
            sampling["max_new_tokens"], "the run's sampling.max_new_tokens"
        )
    return "".join(
        stream_text(
            model,
            tok,
            sampling["prompt"] if prompt is None else prompt,
            plugins.registry.build("sampler", chosen),
            max_new_tokens,
            seed=sampling["seed"] if seed is None else seed,
            use_cache=use_cache,
        )
    )


def sampler_choice(run: Choice, given: Any, where: str, plugins: Plugins) -> Choice:
    """The sampler to use when `given` (a name or a {name, options} table; None: the run's)
    is asked of a run that sampled with `run`: the run's own name keeps the run's options,
    another name starts from that sampler's defaults. An unknown name or a value of another
    kind is a one-line error naming `where` it came from."""
    if given is None:
        return run
    if isinstance(given, dict) and isinstance(given.get("name"), str):
        name = given["name"]
    elif isinstance(given, str) and given:
        name = given
        if name == split_choice(run)[0]:
            given = run
    else:
        raise SpecError(
            f"{where}: expected a sampler name or a {{name = ..., options}} table, got {given!r}"
        )
    plugins.registry.get("sampler", name)  # unknown: a one-line ComponentError
    return given


def load_for_generation(
    source: str | os.PathLike[str],
    tokenizer: Choice | None = None,
    device: str = "cpu",
    plugins: Plugins | None = None,
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """(model on `device` in eval mode, its tokenizer, the run's sampling settings: sampler,
    prompt, max_new_tokens and seed, with the spec's defaults where the run has none)."""
    plugins = plugins or load_plugins()
    check_device(device)
    checkpoint = open_checkpoint(source)  # weights only, memory-mapped on the CPU
    model = checkpoint.model(plugins).to(device).eval()
    tok = run_tokenizer(
        checkpoint.run,
        plugins,
        recorded=checkpoint.tokenizer,
        state=checkpoint.tokenizer_state,
        choice=tokenizer,
        where=checkpoint.path,
        vocab_size=model.config.vocab_size,
    )
    check_vocab(tok, model.config.vocab_size, "give the run's tokenizer (--tokenizer)")
    run = checkpoint.run or {}
    defaults = SamplingSpec()
    recorded = run.get("sampling") or {}
    sampling = {
        "sampler": recorded.get("sampler", defaults.sampler),
        "prompt": recorded.get("prompt", defaults.prompt),
        "max_new_tokens": recorded.get("max_new_tokens", defaults.max_new_tokens),
        "seed": int(run.get("seed", 0)),
    }
    return model, tok, sampling
