"""`ablate eval CHECKPOINT_OR_RUN_DIR`: loss, perplexity and bits per byte of a checkpoint over
a whole corpus split (toolkit.inference.evaluate does the scoring). It writes nothing but the
token cache."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from toolkit.cli.common import add_device_option, add_plugin_option, check_device, plugins_of
from toolkit.errors import DataError

SPLITS = ("all", "train", "val")


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
    add_device_option(p)
    add_plugin_option(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    """`ablate eval`: print loss, perplexity and bits per byte of a checkpoint on a corpus."""
    # torch-heavy imports, on first use: `ablate --help` stays quick.
    from toolkit.data.resolve import check_vocab, run_corpus, run_tokenizer
    from toolkit.data.tokens import load_tokens
    from toolkit.inference.evaluate import combine, evaluate_corpus
    from toolkit.model.checkpoint import open_checkpoint

    plugins = plugins_of(args)
    for name in ("batch_size", "context"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise DataError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    device = check_device(args.device)
    checkpoint = open_checkpoint(args.source)
    path, run, recorded = checkpoint.path, checkpoint.run, checkpoint.tokenizer
    model = checkpoint.model(plugins).to(device)
    del checkpoint  # the model holds the weights now
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
    if args.data:
        corpus_choice: Any = {"name": "files", "path": args.data}
    else:
        corpus_choice = args.corpus or run_corpus(run)
    corpus = plugins.registry.build("corpus", corpus_choice)
    tokenizer = run_tokenizer(
        run,
        plugins,
        recorded=recorded,
        choice=args.tokenizer,
        where=path,
        vocab_size=config.vocab_size,
    )
    check_vocab(
        tokenizer, config.vocab_size, "give the tokenizer the model was trained with (--tokenizer)"
    )
    data = load_tokens(corpus, tokenizer, val_fraction)

    arrays = {"train": data.train, "val": data.val}
    names = ["train", "val"] if split == "all" else [split]
    print(
        f"{path}: {model.num_params():,} parameters, context {context}; corpus "
        f"{getattr(corpus, 'description', corpus_choice)}; tokenizer {tokenizer.name}; "
        f"split {split}"
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
                device,
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
