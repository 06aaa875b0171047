"""`ablate generate RUN_DIR|CHECKPOINT --prompt ...`: load a run's checkpoint and tokenizer and
stream the continuation of the prompt to stdout (toolkit.inference.generate does the work)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from toolkit.api.registry import check_type, split_choice, suggest
from toolkit.cli.common import (
    add_device_option,
    add_plugin_option,
    add_set_option,
    check_device,
    plugins_of,
)
from toolkit.errors import SpecError

SAMPLING_KEYS = ("sampler", "prompt", "max_new_tokens")


def add_parser(subparsers: Any) -> None:
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
    add_set_option(
        p,
        "sampling.<option of the sampler>, sampling.max_new_tokens or sampling.prompt, "
        "e.g. --set sampling.p=0.9 (repeatable; TOML values)",
    )
    p.add_argument("--max-new-tokens", type=int, help="default: the run's")
    p.add_argument("--seed", type=int, help="seed of the draws (default: the run's seed)")
    p.add_argument("--no-cache", action="store_true", help="re-run the context at every step")
    p.add_argument(
        "--tokenizer", help="tokenizer of a checkpoint without a config.json: gpt2 or bytes"
    )
    add_device_option(p)
    add_plugin_option(p)
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    """`ablate generate`: stream the continuation of the prompt to stdout."""
    # torch-heavy import, on first use: `ablate --help` stays quick.
    from toolkit.inference.generate import (
        check_max_new_tokens,
        check_seed,
        load_for_generation,
        stream_text,
    )

    # The flags first, before the model loads or anything is printed.
    if args.max_new_tokens is not None:
        check_max_new_tokens(args.max_new_tokens, "--max-new-tokens")
    if args.seed is not None:
        check_seed(args.seed, "--seed")
    plugins = plugins_of(args)
    device = check_device(args.device)
    model, tokenizer, recorded = load_for_generation(args.source, args.tokenizer, device, plugins)
    sampling = _sampling(recorded, args, plugins)
    pieces = stream_text(
        model,
        tokenizer,
        sampling["prompt"],
        plugins.registry.build("sampler", sampling["sampler"]),
        sampling["max_new_tokens"],
        seed=recorded["seed"] if args.seed is None else args.seed,
        use_cache=not args.no_cache,
    )
    out = sys.stdout
    try:
        out.write(sampling["prompt"])
        out.flush()
        for piece in pieces:
            out.write(piece)
            out.flush()
        out.write("\n")
        out.flush()
    except BrokenPipeError:  # `ablate generate ... | head`: the reader has gone; so do we
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    return 0


def _sampling(run: dict[str, Any], args: argparse.Namespace, plugins: Any) -> dict[str, Any]:
    """The run's sampling settings ({"sampler", "prompt", "max_new_tokens"}, as
    load_for_generation gives them) with --sampler, --set sampling.* and the flags applied. A
    different sampler starts from its own defaults; the run's sampler keeps the run's options."""
    from toolkit.inference.generate import check_max_new_tokens, sampler_choice
    from toolkit.spec.overrides import parse_override  # builds models: not at `ablate --help`

    name, options = split_choice(run["sampler"])
    prompt, max_new = run["prompt"], run["max_new_tokens"]
    max_where = "the run's sampling.max_new_tokens"

    def choose(choice: Any, where: str) -> None:
        nonlocal name, options
        current = {"name": name, **options}
        name, options = split_choice(sampler_choice(current, choice, where, plugins))
        options = dict(options)

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
            max_new, max_where = check_type(value, int, f"--set {key}", SpecError), f"--set {key}"
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
        max_new, max_where = args.max_new_tokens, "--max-new-tokens"
    check_max_new_tokens(max_new, max_where)
    return {"sampler": {"name": name, **options}, "prompt": prompt, "max_new_tokens": max_new}
