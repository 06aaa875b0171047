"""Loss, perplexity and bits per byte of a model over a whole token array, and `ablate eval`.

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

`ablate eval CHECKPOINT_OR_RUN_DIR` (add_parser / cmd_eval) evaluates a run's checkpoint, or an
imported one, on a corpus (the run's by default), printing the three numbers; it writes nothing
but the token cache. torch and numpy are imported on first use, so building the command line
parser stays cheap. Not here: training-time evaluation on fixed batches (train.py).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from toolkit.plugins import Plugins

# progress(targets scored so far, targets in all)
Progress = Callable[[int, int], None]
SPLITS = ("all", "train", "val")


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
    import numpy as np
    import torch
    import torch.nn.functional as F

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
                nats += _nats(model, F, torch, x, y, device)
                n_bytes += int(n_bytes_table[y].sum())
                done += y.size
                if progress:
                    progress(done, targets)
            if tail:
                chunk = np.asarray(tokens[full * context_length :], np.int64)  # tail + 1 tokens
                x, y = chunk[None, :-1], chunk[None, 1:]
                nats += _nats(model, F, torch, x, y, device)
                n_bytes += int(n_bytes_table[y].sum())
                done += y.size
                if progress:
                    progress(done, targets)
    finally:
        model.train(was_training)
    return _metrics(nats, done, n_bytes)


def _nats(model: nn.Module, F: Any, torch: Any, x: Any, y: Any, device: str) -> float:
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


# -- ablate eval ------------------------------------------------------------------------------
def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `eval` command to the CLI's subparsers; it runs cmd_eval(args)."""
    p = subparsers.add_parser(
        "eval",
        help="loss, perplexity and bits per byte of a checkpoint over a whole corpus",
        description="Evaluate a run folder's checkpoint.pt (or a checkpoint file, e.g. from "
        "ablate import) on every token of a corpus split, in non-overlapping windows of the "
        "context length. The run's corpus, tokenizer and val_fraction are the defaults; a bare "
        "checkpoint defaults to the pydoc corpus and, for a 50,257-id vocabulary, the gpt2 "
        "tokenizer. Prints the results; writes nothing but the token cache.",
    )
    p.add_argument("source", metavar="CHECKPOINT|RUN_DIR", help="a run folder or a checkpoint")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", metavar="PATH", help="local text: a file, a folder or a glob")
    data.add_argument("--corpus", metavar="NAME", help="a registered corpus (ablate list corpus)")
    p.add_argument(
        "--tokenizer",
        metavar="NAME",
        help="gpt2, bytes, ... (default: the run's; gpt2 for a 50,257-id checkpoint)",
    )
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (4)")
    p.add_argument("--context", type=int, help="window length (default: the model's context)")
    p.add_argument(
        "--split",
        choices=SPLITS,
        help="which characters: the last val_fraction (val), the rest (train) or all; default: "
        "val for a run folder (the text it did not train on), all for a checkpoint file",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        help="where train and val split the text (default: the run's, else 0.1)",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps (default: cpu)")
    p.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE")
    p.set_defaults(func=cmd_eval)
    return p


def cmd_eval(args: argparse.Namespace) -> int:
    """`ablate eval`: print loss, perplexity and bits per byte of a checkpoint on a corpus."""
    from toolkit.checkpoints import load_imported, locate_checkpoint
    from toolkit.data import load_tokens
    from toolkit.model import split_choice
    from toolkit.plugins import load_plugins
    from toolkit.train import load_checkpoint

    plugins = load_plugins(tuple(args.plugins))
    path, run = locate_checkpoint(args.source)
    for name in ("batch_size", "context"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise DataError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    checkpoint = load_checkpoint(path)
    model = load_imported(checkpoint["config"], checkpoint["model"], plugins, where=path)
    recorded = checkpoint.get("tokenizer")
    del checkpoint  # the model holds the weights now
    try:
        model.to(args.device)
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise DataError(
            f"--device {args.device}: {' '.join(str(exc).split())[:160]}; use cpu or an "
            f"available accelerator"
        ) from None
    config = model.config
    context = args.context or config.context_length
    if context > config.context_length:
        raise DataError(
            f"--context {context} is longer than the model's context_length "
            f"({config.context_length}); give at most {config.context_length}"
        )
    run_data = (run or {}).get("data") or {}
    val_fraction = args.val_fraction
    if val_fraction is None:
        val_fraction = run_data.get("val_fraction", 0.1)
    split = args.split or ("val" if run else "all")
    corpus_choice = _corpus_choice(args, run_data)
    corpus_name, corpus_options = split_choice(corpus_choice)
    corpus = plugins.registry.get("corpus", corpus_name).build(**corpus_options)
    tokenizer, tok_label = _tokenizer(args, recorded, run, path, plugins, config.vocab_size)
    if getattr(tokenizer, "needs_training", False):
        tokenizer = _learned(tokenizer, tok_label, run_data, corpus_choice, val_fraction, plugins)
    if tokenizer.vocab_size > config.vocab_size:
        raise DataError(
            f"tokenizer {tok_label!r} has {tokenizer.vocab_size:,} ids but the model only "
            f"{config.vocab_size:,}; give the tokenizer the model was trained with (--tokenizer)"
        )
    data = load_tokens(corpus, tokenizer, val_fraction)

    arrays = {"train": data.train, "val": data.val}
    names = ["train", "val"] if split == "all" else [split]
    print(
        f"{path}: {model.num_params():,} parameters, context {context}; corpus "
        f"{getattr(corpus, 'description', corpus_name)}; tokenizer {tok_label}; split {split}"
    )
    results = {}
    for name in names:
        if len(arrays[name]) < 2:
            raise DataError(
                f"the {name} split holds {len(arrays[name])} token(s), nothing to predict; "
                f"choose another --split or --val-fraction"
            )
        with _Display(f"eval {name}") as display:
            results[name] = evaluate_corpus(
                model,
                arrays[name],
                data.token_bytes,
                context,
                args.batch_size,
                args.device,
                display.update,
            )
    if split == "all":
        results["all"] = combine(results[n] for n in names)
    width = max(len(n) for n in results)
    for name, r in results.items():
        print(
            f"{name:<{width}}  loss {r['loss']:.4f}  perplexity {r['perplexity']:.2f}  "
            f"bits per byte {r['bpb']:.4f}  ({r['tokens']:,} tokens, {r['bytes']:,} bytes)"
        )
    return 0


def _corpus_choice(args: argparse.Namespace, run_data: dict[str, Any]) -> Any:
    """--data, --corpus, else the run's corpus (its path shortcut included), else pydoc."""
    if args.data:
        return {"name": "files", "path": args.data}
    if args.corpus:
        return args.corpus
    if run_data.get("path") and run_data.get("corpus") in (None, "pydoc"):
        return {"name": "files", "path": run_data["path"]}
    return run_data.get("corpus") or "pydoc"


def _tokenizer(
    args: argparse.Namespace,
    recorded: Any,
    run: dict[str, Any] | None,
    path: Path,
    plugins: Plugins,
    vocab_size: int,
) -> tuple[Any, str]:
    """(tokenizer, its label): --tokenizer, else the checkpoint's recorded one, else the run's,
    else gpt2 for GPT-2's 50,257 ids."""
    from toolkit.model import split_choice

    choice = args.tokenizer or recorded
    if choice is None and run:
        choice = (run.get("data") or {}).get("tokenizer")
    if choice is None:
        if vocab_size != 50257:
            raise DataError(
                f"cannot tell which tokenizer {path} goes with (no run config.json beside it, "
                f"vocabulary of {vocab_size:,} ids); pass --tokenizer (e.g. bytes)"
            )
        choice = "gpt2"
    name, options = split_choice(choice)
    tokenizer = plugins.registry.get("tokenizer", name).build(**options)
    label = name if not options else f"{name} ({', '.join(f'{k}={v}' for k, v in options.items())})"
    return tokenizer, label


def _learned(
    tokenizer: Any,
    label: str,
    run_data: dict[str, Any],
    corpus_choice: Any,
    val_fraction: float,
    plugins: Plugins,
) -> Any:
    """A tokenizer that learns its vocabulary (bpe) must be the one the run learned: restored
    from the run's corpus and split, then frozen so another corpus does not retrain it."""
    from toolkit.data import load_tokens
    from toolkit.model import split_choice

    if not run_data.get("corpus"):
        raise DataError(
            f"tokenizer {label!r} is learned from the training text, which only a run's "
            f"config.json names; give the run folder"
        )
    run_corpus, run_fraction = run_data["corpus"], run_data.get("val_fraction", 0.1)
    if corpus_choice == run_corpus and val_fraction == run_fraction:
        return tokenizer  # load_tokens restores (or relearns) exactly the run's state
    name, options = split_choice(run_corpus)
    corpus = plugins.registry.get("corpus", name).build(**options)
    load_tokens(corpus, tokenizer, run_fraction)  # restores what the run learned
    return _Frozen(tokenizer)


class _Frozen:
    """A trained tokenizer that load_tokens will not train again (it reads needs_training)."""

    needs_training = False

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


class _Display:
    """Progress on stderr: a tqdm bar on a terminal, a line every 10% otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.next_report = 0.1

    def __enter__(self) -> _Display:
        return self

    def update(self, done: int, total: int) -> None:
        if sys.stderr.isatty():
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=total, desc=self.label, unit="tok", unit_scale=True, file=sys.stderr
                )
            self.bar.update(done - self.bar.n)
        elif done >= self.next_report * total:
            print(f"{self.label}: {done:,}/{total:,} tokens", file=sys.stderr, flush=True)
            while self.next_report * total <= done and self.next_report <= 1:
                self.next_report += 0.1

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = [
    "add_parser",
    "cmd_eval",
    "combine",
    "evaluate_corpus",
]
