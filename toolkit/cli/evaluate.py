"""`ablate eval CHECKPOINT_OR_RUN_DIR`: loss, perplexity and bits per byte of a checkpoint over
a whole corpus split (toolkit.inference.evaluate does the scoring). It writes nothing but the
token cache."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from toolkit.cli.common import add_device_option, add_plugin_option, check_device, plugins_of
from toolkit.errors import DataError


def add_parser(subparsers: Any) -> None:
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
    p.add_argument(
        "--context",
        type=int,
        help="window length (default: the model's context_length; longer windows for models "
        "whose positional scheme reads past it: rope, alibi, sinusoidal, none)",
    )
    p.add_argument(
        "--split",
        choices=("all", "train", "val", "test"),
        help="which text: the run's validation split (val), its test split (test, when it held "
        "one out), its training text (train) or all of it; default: "
        "val for a run folder (the text it did not train on), all for a checkpoint file",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        help="where train and val split the text (default: the run's, else 0.1)",
    )
    add_device_option(p)
    add_plugin_option(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    """`ablate eval`: print loss, perplexity and bits per byte of a checkpoint on a corpus."""
    # torch-heavy import, on first use: `ablate --help` stays quick.
    from toolkit.inference.evaluate import evaluate_checkpoint

    for name in ("batch_size", "context"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise DataError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    displays: list[_Display] = []

    def progress(split: str) -> Any:
        displays.append(_Display(f"eval {split}"))
        return displays[-1].update

    corpus = {"name": "files", "path": args.data} if args.data else args.corpus
    try:
        result = evaluate_checkpoint(
            args.source,
            corpus=corpus,
            tokenizer=args.tokenizer,
            split=args.split,
            val_fraction=args.val_fraction,
            context=args.context,
            batch_size=args.batch_size,
            device=check_device(args.device),
            plugins=plugins_of(args),
            progress=progress,
        )
    finally:
        for display in displays:
            display.close()
    print(
        f"{result.checkpoint}: {result.params:,} parameters, context {result.context}; corpus "
        f"{result.corpus}; tokenizer {result.tokenizer}; split {result.split}"
    )
    width = max(len(n) for n in result.results)
    for name, r in result.results.items():
        print(
            f"{name:<{width}}  loss {r['loss']:.4f}  perplexity {r['perplexity']:.2f}  "
            f"bits per byte {r['bpb']:.4f}  ({r['tokens']:,} tokens, {r['bytes']:,} bytes)"
        )
    return 0


class _Display:
    """Progress on stderr: a tqdm bar on a terminal, a line every 10% otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.next_report = 0.1

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

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
