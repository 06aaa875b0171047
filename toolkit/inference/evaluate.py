"""Loss, perplexity and bits per byte of a model over a whole token array.

`evaluate_corpus` scores every token of the array after the first exactly once: the array is
cut into non-overlapping windows of context_length inputs, each predicting its next tokens,
batched; the tail (fewer than context_length predictions) is a last, shorter window. Each
window starts without context, so this measures the model as it reads the text window by
window, which is what training's evaluation batches measure too (on a sample of windows). The
array is read a batch at a time (the token cache is memory-mapped), so memory stays constant
however long the corpus is.

Definitions (as in every table of the toolkit): loss = total cross-entropy in nats / tokens
predicted; perplexity = exp(loss); bits per byte = total nats / (ln 2 x UTF-8 bytes of the
predicted tokens).

`evaluate_checkpoint(run_folder_or_checkpoint, ...)` (`toolkit.evaluate`) does it for a saved
model on a corpus split, the run's own data by default. Library code only: `ablate eval` is
toolkit/cli/evaluate.py. Not here: training-time
evaluation on fixed batches (toolkit.training.step.evaluate_batches).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from toolkit.api.manager import Plugins, load_plugins
from toolkit.api.registry import Choice, split_choice
from toolkit.data.resolve import (
    check_vocab,
    corpus_tokens,
    data_changed,
    holdout_of,
    run_corpus,
    run_tokenizer,
)
from toolkit.errors import DataError
from toolkit.inference.device import check_device
from toolkit.model.checkpoint import open_checkpoint

# progress(targets scored so far, targets in all)
Progress = Callable[[int, int], None]


def evaluate_corpus(
    model: nn.Module,
    tokens: np.ndarray,
    token_bytes: Any,
    context_length: int,
    batch_size: int,
    device: str = "cpu",
    progress: Progress | None = None,
) -> dict[str, float]:
    """Score every token of `tokens` after the first, once, in windows of context_length.

    Returns {"loss", "perplexity", "bpb", "tokens", "bytes", "nats"}: mean nats per predicted
    token, exp(loss), bits per UTF-8 byte, how many tokens were predicted, their bytes, and the
    total nats (so results over several arrays combine exactly: see combine()).
    token_bytes[i] is the number of UTF-8 bytes id i stands for.
    """
    for name, value in (("context_length", context_length), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{name} must be a positive integer, got {value!r}")
    n = len(tokens)
    if n < 2:
        raise DataError(f"{n} token(s) to evaluate; at least 2 are needed (one to predict)")
    n_bytes_table = np.asarray(token_bytes, dtype=np.int64)
    targets = n - 1
    full = targets // context_length  # windows with context_length predictions
    tail = targets % context_length
    was_training = model.training
    model.eval()
    nats, n_bytes, done = 0.0, 0, 0
    try:
        with torch.inference_mode():
            # Full windows, batch_size at a time: window w reads tokens[w*C : w*C + C + 1].
            for first in range(0, full, batch_size):
                count = min(batch_size, full - first)
                start = first * context_length
                chunk = np.asarray(tokens[start : start + count * context_length + 1], np.int64)
                x = chunk[:-1].reshape(count, context_length)
                y = chunk[1:].reshape(count, context_length)
                nats += _nats(model, x, y, device)
                n_bytes += int(n_bytes_table[y].sum())
                done += y.size
                if progress:
                    progress(done, targets)
            if tail:
                chunk = np.asarray(tokens[full * context_length :], np.int64)  # tail + 1 tokens
                x, y = chunk[None, :-1], chunk[None, 1:]
                nats += _nats(model, x, y, device)
                n_bytes += int(n_bytes_table[y].sum())
                done += y.size
                if progress:
                    progress(done, targets)
    finally:
        model.train(was_training)
    return _metrics(nats, done, n_bytes)


def _nats(model: nn.Module, x: np.ndarray, y: np.ndarray, device: str) -> float:
    """Summed cross-entropy in nats of the model's predictions of y from x (numpy int64)."""
    xs = torch.from_numpy(x).to(device)
    ys = torch.from_numpy(y).to(device)
    logits = model(xs)
    return F.cross_entropy(logits.flatten(0, 1).float(), ys.flatten(), reduction="sum").item()


def _metrics(nats: float, tokens: int, n_bytes: int) -> dict[str, float]:
    loss = nats / tokens if tokens else float("nan")
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bpb": nats / (math.log(2) * n_bytes) if n_bytes else float("nan"),
        "tokens": tokens,
        "bytes": n_bytes,
        "nats": nats,
    }


def combine(results: Iterable[dict[str, float]]) -> dict[str, float]:
    """One result from several evaluate_corpus results (e.g. train and val): sums of nats,
    tokens and bytes, and the metrics recomputed from them, exactly as one pass would."""
    results = list(results)
    return _metrics(
        sum(r["nats"] for r in results),
        sum(int(r["tokens"]) for r in results),
        sum(int(r["bytes"]) for r in results),
    )


__all__ = [
    "WindowTooLong",
    "combine",
    "evaluate_checkpoint",
    "evaluate_corpus",
]


SPLITS = ("all", "train", "val", "test")


class WindowTooLong(DataError):
    """A window longer than the model's context_length, which its positional scheme cannot
    read (learned positions: one trained row per position)."""


def _same_files(corpus: Choice, own: Choice, plugins: Plugins) -> bool:
    """Whether `corpus` (--data, --corpus) reads the same files as a run's `own` corpus, with
    the same options: another spelling of its path (`./data` for `data`) would name its
    documents differently and so split them differently (they split by a hash of the name)."""
    (name, options), (own_name, own_options) = split_choice(corpus), split_choice(own)
    options, own_options = dict(options), dict(own_options)
    if (
        name != own_name
        or options.pop("path", None) is None
        or own_options.pop("path", None) is None
    ):
        return False
    if options != own_options:
        return False
    try:
        files = [plugins.registry.build("corpus", c).files for c in (corpus, own)]
    except (DataError, AttributeError):
        return False  # the run's own path finds nothing from here, or no files to compare
    return [Path(f).resolve() for f in files[0]] == [Path(f).resolve() for f in files[1]]


@dataclass
class Evaluation:
    """What evaluate_checkpoint scored and the results, one per split (and "all")."""

    checkpoint: Path
    params: int
    context: int
    corpus: str  # its description
    tokenizer: str
    split: str
    results: dict[str, dict[str, float]] = field(default_factory=dict)


def evaluate_checkpoint(
    source: str | os.PathLike[str],
    *,
    corpus: Choice | None = None,
    tokenizer: Choice | None = None,
    split: str | None = None,
    val_fraction: float | None = None,
    context: int | None = None,
    batch_size: int = 4,
    device: str = "cpu",
    plugins: Plugins | None = None,
    progress: Callable[[str], Progress | None] | None = None,
) -> Evaluation:
    """Loss, perplexity and bits per byte of a run folder's (or checkpoint's) model over every
    token of a corpus split. Defaults: the run's corpus, tokenizer and splits, split "val"
    for a run (the text it did not train on) and "all" for a bare checkpoint (pydoc, and gpt2
    for a 50,257-id vocabulary). `context` sets the window length: at most the model's
    context_length, or longer when its positional scheme is registered with any_length (train
    short, test long). `progress(split)` may return a Progress callback per split.

    >>> toolkit.evaluate("runs/quickstart/base/seed-0").results["val"]["loss"]
    """
    for name, value in (("batch_size", batch_size), ("context", context)):
        if value is not None and (isinstance(value, bool) or value < 1):
            raise DataError(f"{name} must be at least 1, got {value}")
    if split is not None and split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    plugins = plugins or load_plugins()
    check_device(device)
    checkpoint = open_checkpoint(source)
    path, run, recorded = checkpoint.path, checkpoint.run, checkpoint.tokenizer
    learned = checkpoint.tokenizer_state
    model = checkpoint.model(plugins).to(device)
    del checkpoint  # the model holds the weights now
    config = model.config
    context = context or config.context_length
    positional = split_choice(config.positional)[0]
    if context > config.context_length and not plugins.registry.get(
        "positional", positional
    ).facts.get("any_length"):
        raise WindowTooLong(
            f"context {context} is longer than the model's context_length "
            f"({config.context_length}), and its positional {positional!r} reads no further "
            f"(only those registered with any_length, such as rope, alibi, sinusoidal and "
            f"none, do); give at most {config.context_length}"
        )
    holdout = holdout_of((run or {}).get("data"))
    if val_fraction is not None:
        holdout = replace(holdout, val_fraction=val_fraction)
    split = split or ("val" if run else "all")
    if corpus is not None and run and _same_files(corpus, run_corpus(run), plugins):
        corpus = None  # the run's own text however spelled: its documents keep their names
    text = plugins.registry.build("corpus", corpus or run_corpus(run))
    tok = run_tokenizer(
        run, plugins, recorded=recorded, state=learned, choice=tokenizer, where=path,
        vocab_size=config.vocab_size,
    )  # fmt: skip
    check_vocab(
        tok, config.vocab_size, "give the tokenizer the model was trained with (--tokenizer)"
    )
    data = corpus_tokens(text, tok, holdout)
    if corpus is None and val_fraction is None and data_changed(run, data):
        raise DataError(
            f"the run's corpus ({getattr(text, 'description', 'its corpus')}) is not the text "
            f"{path} trained on: it changed since, or a relative path now finds another file "
            f"(config.json's data_key differs), so its splits are not the run's; restore it, "
            f"or name the text to score with --data or --corpus"
        )
    arrays = {"train": data.train, "val": data.val, "test": data.test}
    if split == "test" and not len(data.test):
        raise DataError(
            "no test split: the run held out none (data.test_fraction = 0, and no test "
            "shards); evaluate split val, or train with data.test_fraction set"
        )
    names = [n for n in arrays if n == split or (split == "all" and len(arrays[n]))]
    out = Evaluation(
        path, model.num_params(), context, getattr(text, "description", str(corpus)), tok.name,
        split,
    )  # fmt: skip
    for name in names:
        if len(arrays[name]) < 2:
            raise DataError(
                f"the {name} split holds {len(arrays[name])} token(s), nothing to predict; "
                f"choose another split or val_fraction"
            )
        callback = progress(name) if progress else None
        out.results[name] = evaluate_corpus(
            model, arrays[name], data.token_bytes, context, batch_size, device, callback
        )
    if split == "all":
        out.results["all"] = combine(out.results[n] for n in names)
    return out
