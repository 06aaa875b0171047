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

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import DataError, SpecError

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


# -- ablate generate ------------------------------------------------------------------------
SAMPLING_KEYS = ("sampler", "prompt", "max_new_tokens")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `generate` command to the CLI's subparsers; it runs cmd_generate(args)."""
    p = subparsers.add_parser(
        "generate",
        help="continue a prompt with a trained run's model, streaming the text",
        description="Load a run folder's checkpoint.pt and config.json (or a checkpoint file "
        "with config.json beside it) and print the prompt, then its continuation as it is "
        "generated, up to max_new_tokens or the end-of-text token. Defaults (sampler, prompt, "
        "max_new_tokens, seed) come from the run's config. Uses a KV cache when the model's "
        "attention has one.",
    )
    p.add_argument("source", metavar="RUN_DIR|CHECKPOINT", help="a run folder or checkpoint.pt")
    p.add_argument("--prompt", help="text to continue (default: the run's sampling.prompt)")
    p.add_argument("--sampler", help="sampler name, e.g. top-p (ablate list sampler)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="sampling.<option of the sampler>, sampling.max_new_tokens or sampling.prompt, "
        "e.g. --set sampling.p=0.9 (repeatable; TOML values)",
    )
    p.add_argument("--max-new-tokens", type=int, help="default: the run's")
    p.add_argument("--seed", type=int, help="seed of the draws (default: the run's seed)")
    p.add_argument("--no-cache", action="store_true", help="re-run the context at every step")
    p.add_argument(
        "--tokenizer", help="tokenizer of a checkpoint without a config.json: gpt2 or bytes"
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps (default: cpu)")
    p.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE")
    p.set_defaults(func=cmd_generate)
    return p


def cmd_generate(args: argparse.Namespace) -> int:
    """`ablate generate`: stream the continuation of the prompt to stdout."""
    import torch

    from toolkit.checkpoints import locate_checkpoint
    from toolkit.model import build_model, split_choice
    from toolkit.plugins import load_plugins
    from toolkit.train import load_checkpoint

    plugins = load_plugins(tuple(args.plugins))
    try:
        torch.empty(0, device=args.device)
    except (RuntimeError, AssertionError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise SpecError(f"--device {args.device}: {detail}") from None
    checkpoint_path, config = locate_checkpoint(Path(args.source))
    sampling = _sampling(config, args, plugins)
    name, options = split_choice(sampling["sampler"])
    sampler = plugins.registry.get("sampler", name).build(**options)
    checkpoint = load_checkpoint(checkpoint_path)  # weights only, memory-mapped on the CPU
    tokenizer = _tokenizer(config, checkpoint, args.tokenizer, checkpoint_path, plugins)

    model_config = checkpoint["config"]
    model = build_model(model_config, plugins).to(args.device)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise DataError(
            f"checkpoint {checkpoint_path} does not fit the model its config builds: {first}"
        ) from None
    if tokenizer.vocab_size > model.config.vocab_size:
        raise DataError(
            f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} ids but the model only "
            f"{model.config.vocab_size}; give the run's tokenizer"
        )

    prompt = sampling["prompt"]
    ids = tokenizer.encode(prompt) or [tokenizer.eot_id]
    idx = torch.tensor([ids], dtype=torch.long, device=args.device)
    seed = args.seed if args.seed is not None else int((config or {}).get("seed", 0))
    generator = torch.Generator(device=args.device).manual_seed(seed)
    steps = stream(
        model,
        idx,
        sampling["max_new_tokens"],
        sampler,
        model.config.context_length,
        generator,
        tokenizer.eot_id,
        use_cache=not args.no_cache,
    )
    out = sys.stdout
    try:
        out.write(prompt)
        out.flush()
        decoder = IncrementalDecoder(tokenizer.decode)
        for next_ids in steps:
            token = int(next_ids[0, 0])
            if token == tokenizer.eot_id:
                break
            out.write(decoder.add(token))
            out.flush()
        out.write(decoder.flush() + "\n")
        out.flush()
    except BrokenPipeError:  # `ablate generate ... | head`: the reader has gone; so do we
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    return 0


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


def _sampling(
    config: dict[str, Any] | None, args: argparse.Namespace, plugins: Any
) -> dict[str, Any]:
    """The run's [sampling] section (or the defaults) with --sampler, --set sampling.* and the
    flags applied: {"sampler": choice, "prompt": str, "max_new_tokens": int}. A different
    sampler starts from its own defaults; the run's sampler keeps the run's options."""
    from toolkit.model import split_choice
    from toolkit.registry import check_type, suggest
    from toolkit.spec import SamplingSpec, parse_override

    base = (config or {}).get("sampling") or {}
    defaults = SamplingSpec()
    name, options = split_choice(base.get("sampler", defaults.sampler))
    prompt = base.get("prompt", defaults.prompt)
    max_new = base.get("max_new_tokens", defaults.max_new_tokens)

    def choose(choice: Any, where: str) -> None:
        nonlocal name, options
        if isinstance(choice, dict) and isinstance(choice.get("name"), str):
            name, options = split_choice(choice)
        elif isinstance(choice, str) and choice:
            if choice != name:
                name, options = choice, {}
        else:
            raise SpecError(f"{where}: expected a sampler name, got {choice!r}")
        plugins.registry.get("sampler", name)  # unknown: a one-line ComponentError

    set_options: dict[str, Any] = {}
    for item in args.overrides:
        key, value = parse_override(item)
        section, _, rest = key.partition(".")
        if section != "sampling" or not rest:
            raise SpecError(
                f"--set {key}: generate takes sampling.* keys only, e.g. --set sampling.p=0.9"
            )
        rest = rest.removeprefix("sampler.")
        if rest == "sampler":
            choose(value, f"--set {key}")
        elif rest == "prompt":
            prompt = check_type(value, str, f"--set {key}", SpecError)
        elif rest == "max_new_tokens":
            max_new = check_type(value, int, f"--set {key}", SpecError)
        else:
            set_options[rest] = (key, value)
    if args.sampler is not None:
        choose(args.sampler, "--sampler")
    component = plugins.registry.get("sampler", name)
    for option, (key, value) in set_options.items():
        if option not in component.options:
            allowed = [*SAMPLING_KEYS, *component.options]
            raise SpecError(
                f"--set {key}: sampler {name!r} has no option {option!r}"
                f"{suggest(option, allowed)}; sampling keys: {', '.join(allowed)}"
            )
        options[option] = value
    if args.prompt is not None:
        prompt = args.prompt
    if args.max_new_tokens is not None:
        max_new = args.max_new_tokens
    if max_new < 0:
        raise SpecError(f"max_new_tokens must be >= 0, got {max_new}")
    return {"sampler": {"name": name, **options}, "prompt": prompt, "max_new_tokens": max_new}


def _tokenizer(
    config: dict[str, Any] | None,
    checkpoint: dict[str, Any],
    name: str | None,
    checkpoint_path: Path,
    plugins: Any,
) -> Any:
    """The run's tokenizer: --tokenizer, else the checkpoint's "tokenizer" entry, else
    config.json's data.tokenizer. A learned one (bpe) gets its state from the token cache (or
    is trained again on the run's corpus, exactly as the run did), which needs config.json."""
    from toolkit.model import split_choice

    data = (config or {}).get("data") or {}
    choice = name or checkpoint.get("tokenizer") or data.get("tokenizer")
    if choice is None:
        raise DataError(
            f"cannot tell which tokenizer {checkpoint_path} was trained with (no config.json "
            f"beside it); pass --tokenizer gpt2 or --tokenizer bytes"
        )
    tok_name, tok_options = split_choice(choice)
    component = plugins.registry.get("tokenizer", tok_name)
    tokenizer = component.build(**tok_options)
    if getattr(tokenizer, "needs_training", False) or component.facts.get("needs_training"):
        if not data.get("corpus"):
            raise DataError(
                f"tokenizer {tok_name!r} is learned from the run's corpus, which only the run's "
                f"config.json names; give the run folder"
            )
        from toolkit.data import load_tokens

        corpus_name, corpus_options = split_choice(data["corpus"])
        corpus = plugins.registry.get("corpus", corpus_name).build(**corpus_options)
        load_tokens(corpus, tokenizer, data.get("val_fraction", 0.1))  # restores what it learned
    return tokenizer
