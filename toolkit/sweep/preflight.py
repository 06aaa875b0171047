"""What a sweep checks and prepares before anything trains, so a mistake fails in seconds: the
output folder is writable, each distinct corpus/tokenizer/split is tokenized once and every run
fits its data (vocabulary, windows for its context and batch, init_from weights, one forward
pass per distinct architecture), a sweep under torchrun can split its batches, and bf16 on a
CPU that runs it slowly is said out loud.

    datasets = prepare_data(spec, plugins)    # data key -> (TokenData, tokenizer)
    check_output_dir(out)                      check_distributed(spec, world_size, executor)
    precision_warnings(spec.runs)              # lines to print, [] when none

`ablate validate` runs the same checks as `ablate run`. Not here: running the sweep (runner.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from toolkit.api.manager import Plugins
from toolkit.api.registry import split_choice
from toolkit.data.batches import count_windows
from toolkit.data.resolve import check_vocab, data_key, holdout_of, label, load_data
from toolkit.data.tokens import TokenData
from toolkit.errors import ComponentError, DataError, SpecError, ToolkitError
from toolkit.model.checkpoint import initial_weights, open_checkpoint
from toolkit.model.gpt import build_model
from toolkit.model.probe import check_architecture
from toolkit.spec.schema import RunSpec, Spec
from toolkit.training.throughput import resolve_device, slow_bf16


def check_distributed(spec: Spec, world_size: int, executor: str) -> None:
    """What a sweep under torchrun needs: the local executor, and a global batch each rank
    can take an equal share of."""
    if executor != "local":
        raise SpecError(
            f"under torchrun every run spans all {world_size} processes, so runs go one after "
            f"another: leave out --executor (got {executor!r})"
        )
    for r in spec.runs:
        if r.train.batch_size % world_size:
            raise SpecError(
                f"{spec.path}: variant {r.variant!r}: train.batch_size ({r.train.batch_size}) "
                f"must be a multiple of the number of processes ({world_size}): each trains an "
                f"equal share of the global batch"
            )


def precision_warnings(runs: list[RunSpec]) -> list[str]:
    """A warning per device where some of these runs ask for bf16-mixed and bfloat16 matrix
    products are the slower (throughput.slow_bf16): said before anything trains."""
    devices = {resolve_device(r.train.device) for r in runs if r.train.precision == "bf16-mixed"}
    return [w for d in sorted(devices) if (w := slow_bf16(d))]


def check_output_dir(out: Path) -> None:
    """The output folder must be a folder we can write; say so before any training."""
    if out.exists() and not out.is_dir():
        raise SpecError(f"output path {out} is a file; give a folder with --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SpecError(
            f"cannot write to output folder {out} ({exc.strerror}); choose another with --out"
        ) from None


def prepare_data(spec: Spec, plugins: Plugins) -> dict[str, tuple[TokenData, Any]]:
    """Tokenize each distinct corpus/tokenizer/split once and check every run fits its data."""
    datasets: dict[str, tuple[TokenData, Any]] = {}
    probed: set[str] = set()
    several = len({data_key(r.data) for r in spec.runs}) > 1
    for r in spec.runs:
        key = data_key(r.data)
        if key not in datasets:
            try:
                datasets[key] = load_data(r.data, plugins)
            except (DataError, ComponentError) as exc:  # the corpus's or tokenizer's own words
                where = f"{spec.path}: variant {r.variant!r}:" if several else f"{spec.path}:"
                kind = DataError if isinstance(exc, DataError) else ComponentError
                raise kind(f"{where} {exc}") from None
        data, tokenizer = datasets[key]
        check_fits(r, data, tokenizer, spec.path)
        if r.model.init_from:
            check_init_from(r, data, tokenizer, spec.path, plugins)
        config = r.model_config(data.vocab_size)
        architecture = json.dumps(config.to_dict(), sort_keys=True, default=str)
        if architecture not in probed:  # one forward pass per distinct architecture
            probed.add(architecture)
            try:
                check_architecture(config, plugins)
            except ComponentError as exc:
                raise ComponentError(f"{spec.path}: variant {r.variant!r}: {exc}") from None
    return datasets


def check_fits(r: RunSpec, data: TokenData, tokenizer: Any, source: str) -> None:
    """A run's model and batches fit its data: every id has an embedding row, and every split
    it scores (validation, and test when it holds one out) holds a window."""
    where = f"{source}: variant {r.variant!r}:"
    ctx, batch = r.model.context_length, r.train.batch_size
    if r.model.vocab_size is not None:
        fix = (
            "train with the tokenizer model.init_from's checkpoint was trained with"
            if r.model.init_from
            else "leave model.vocab_size unset to use it"
        )
        try:
            check_vocab(tokenizer, r.model.vocab_size, fix)
        except DataError as exc:
            raise SpecError(f"{where} {exc}") from None
    splits = [("validation", data.val), ("training", data.train)]
    if len(data.test) or holdout_of(r.data).has_test:
        splits.append(("test", data.test))
    for split, tokens in splits:
        if len(tokens) < ctx + 1:
            raise DataError(
                f"{where} the {split} split holds {len(tokens):,} tokens, fewer than one window "
                f"of model.context_length + 1 = {ctx + 1}; lower context_length or hold out "
                f"more text"
            )
    windows = count_windows(len(data.train), ctx, r.train.stride or ctx)
    if windows < batch:
        raise DataError(
            f"{where} the training split holds {windows} windows of {ctx + 1} tokens, fewer "
            f"than train.batch_size ({batch}); lower batch_size, stride or context_length"
        )


def check_init_from(
    r: RunSpec, data: TokenData, tokenizer: Any, source: str, plugins: Plugins
) -> None:
    """The checkpoint's weights fit this variant's model (checked on the meta device), and it
    was trained with this run's tokenizer (when it records one): else its embeddings would
    read ids they never learned."""
    where = f"{source}: variant {r.variant!r}:"
    with torch.device("meta"):
        model = build_model(r.model_config(data.vocab_size), plugins)
    try:
        checkpoint = open_checkpoint(r.model.init_from)
        initial_weights(model, r.model.init_from)
    except ToolkitError as exc:
        raise SpecError(f"{where} {exc}") from None
    trained_with = checkpoint.tokenizer or ((checkpoint.run or {}).get("data") or {}).get(
        "tokenizer"
    )
    if trained_with is None:
        return
    if split_choice(trained_with) != split_choice(r.data.tokenizer):
        raise SpecError(
            f"{where} model.init_from {r.model.init_from} was trained with tokenizer "
            f"{label(trained_with)!r}, but data.tokenizer is {label(r.data.tokenizer)!r}; set "
            f"data.tokenizer to the checkpoint's so its embeddings read the ids they learned"
        )
    learned = checkpoint.tokenizer_state
    if (
        learned is not None
        and getattr(tokenizer, "needs_training", False)
        and learned != tokenizer.state()
    ):
        raise SpecError(
            f"{where} model.init_from {r.model.init_from} was trained with a "
            f"{label(trained_with)!r} tokenizer learned from other text than this run's "
            f"training split, so the same ids stand for other pieces of text; fine-tune on "
            f"the text it was learned from, or train from scratch"
        )
