"""`ablate eval CHECKPOINT_OR_RUN_DIR`: loss, perplexity and bits per byte of a checkpoint over
a whole corpus split (toolkit.inference.evaluate does the scoring); `ablate eval DIR --context
128,256,512`: every finished run of an experiment folder at each window length, as a table of
mean ± std over seeds per variant (train short, test long). A score at a --context length is
recorded in its run folder's tasks.json (toolkit.sweep.results.record_window_scores) for
`ablate report`, whether the folder was given alone or in an experiment; a checkpoint file's
is only printed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from toolkit.cli.common import (
    add_device_option,
    add_plugin_option,
    check_device,
    plugins_of,
    scoring_targets,
)
from toolkit.errors import DataError
from toolkit.files import read_json


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="loss, perplexity and bits per byte of a checkpoint over a whole corpus",
        description="Evaluate a run folder's checkpoint.pt (or a checkpoint file, e.g. from "
        "ablate import) on every token of a corpus split, in non-overlapping windows of the "
        "context length. The run's corpus, tokenizer and val_fraction are the defaults; a bare "
        "checkpoint defaults to the pydoc corpus and, for a 50,257-id vocabulary, the gpt2 "
        "tokenizer. Given an experiment folder, or several --context lengths, it prints one "
        "loss per variant and window length instead (mean ± std over seeds): scoring models in "
        "longer windows than they trained on. A run folder scored at a --context length records "
        "its score (tasks.json, as val@512 and the like), which `ablate report` shows per "
        "variant with Δ and p against the baseline; a checkpoint file's is only printed.",
    )
    p.add_argument(
        "source",
        metavar="CHECKPOINT|RUN_DIR|DIR",
        help="a run folder, a checkpoint, or an experiment folder (every finished run: a table "
        "of mean ± std over seeds per variant)",
    )
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
        metavar="N[,N...]",
        help="window length, or several (a table: one column each); default: the model's "
        "context_length. Longer windows than it for models whose positional scheme reads "
        "past it: rope, alibi, sinusoidal, none (train short, test long)",
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
    """`ablate eval`: print loss, perplexity and bits per byte of a checkpoint on a corpus; for
    an experiment folder or several --context values, a table of losses by window length."""
    # torch-heavy import, on first use: `ablate --help` stays quick.
    from toolkit.inference.evaluate import evaluate_checkpoint

    if args.batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {args.batch_size}")
    contexts = _contexts(args.context)
    experiment = (Path(args.source).expanduser() / "experiment.json").is_file()
    if experiment or len(contexts) > 1:
        return _by_length(args, contexts)
    displays: list[_Display] = []

    def progress(split: str) -> Any:
        displays.append(_Display(f"eval {split}"))
        return displays[-1].update

    try:
        result = evaluate_checkpoint(
            args.source,
            **_data(args),
            context=contexts[0] if contexts else None,
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
    if contexts and scoring_targets([args.source])[0][1]:
        from toolkit.sweep.results import TASKS_FILE, window_task

        _record(Path(args.source).expanduser(), result, args.val_fraction)
        print(
            f"recorded in {TASKS_FILE} as {window_task(result.split, result.context)}; "
            f"`ablate report` shows it per variant",
            file=sys.stderr,
        )
    return 0


def _record(run_dir: Path, result: Any, val_fraction: float | None) -> None:
    """Record a run folder's score in windows of result.context into its tasks.json, with what
    was scored: the corpus, the tokenizer and a --val-fraction other than the run's own, so a
    report can tell scores of other text apart."""
    from toolkit.sweep.results import record_window_scores  # pandas: `ablate --help` stays quick

    scored = result.results[result.split]
    metrics = {"loss": scored["loss"], "bpb": scored["bpb"]}
    settings = {"corpus": result.corpus, "tokenizer": result.tokenizer}
    if val_fraction is not None:
        settings["val_fraction"] = val_fraction
    record_window_scores(run_dir, result.split, result.context, metrics, scored["tokens"], settings)


def _contexts(text: str | None) -> list[int]:
    """--context's window lengths, in the order given ([] when absent)."""
    if text is None:
        return []
    contexts = []
    for part in text.split(","):
        try:
            value = int(part)
        except ValueError:
            value = 0
        if value < 1:
            raise DataError(
                f"--context takes window lengths of at least 1, separated by commas (128,512); "
                f"got {text!r}"
            )
        if value in contexts:
            raise DataError(f"--context lists {value} twice ({text!r}); give each length once")
        contexts.append(value)
    return contexts


def _data(args: argparse.Namespace) -> dict[str, Any]:
    """The text to score, as evaluate_checkpoint's keywords."""
    return {
        "corpus": {"name": "files", "path": args.data} if args.data else args.corpus,
        "tokenizer": args.tokenizer,
        "split": args.split,
        "val_fraction": args.val_fraction,
    }


def _by_length(args: argparse.Namespace, contexts: list[int]) -> int:
    """Every run of an experiment folder (or one run, or one checkpoint) at each window length:
    the loss per variant, mean ± std over its seeds; '-' where the model's positional scheme
    reads no further than the context_length it trained at."""
    from toolkit.analysis.stats import describe
    from toolkit.inference.evaluate import WindowTooLong, evaluate_checkpoint
    from toolkit.sweep.results import TASKS_FILE

    targets = scoring_targets([args.source])
    device, plugins = check_device(args.device), plugins_of(args)
    columns: list[int | None] = list(contexts) or [None]  # None: each model's own
    losses: dict[str, dict[int | None, list[float]]] = {}
    seeds: dict[str, int] = {}
    split, refused, recorded = "", False, 0
    for i, (target, record) in enumerate(targets, 1):
        print(f"eval: [{i}/{len(targets)}] {target}", file=sys.stderr, flush=True)
        summary = read_json(target / "summary.json") if target.is_dir() else None
        variant = (summary or {}).get("variant") or target.name
        seeds[variant] = seeds.get(variant, 0) + 1
        for context in columns:
            try:
                result = evaluate_checkpoint(
                    target, **_data(args), context=context, batch_size=args.batch_size,
                    device=device, plugins=plugins,
                )  # fmt: skip
            except WindowTooLong:
                refused = True
                continue
            split = result.split
            scored = result.results[split]
            losses.setdefault(variant, {}).setdefault(context, []).append(scored["loss"])
            if record:
                _record(target, result, args.val_fraction)
        recorded += record
    heads = ["trained" if c is None else str(c) for c in columns]
    width = max(len("variant"), *(len(v) for v in seeds))
    print(f"{args.source}: {split} loss (nats/token) by window length, mean ± std over seeds")
    print(f"{'variant':<{width}}  seeds  " + "  ".join(f"{h:<17}" for h in heads).rstrip())
    for variant in sorted(seeds, key=lambda v: (_first(losses.get(v, {}), columns), v)):
        cells = []
        for context in columns:
            values = losses.get(variant, {}).get(context, [])
            if not values:
                cells.append("-")
                continue
            d = describe(values)
            spread = "-" if d.n < 2 else f"{d.std:.4f}"
            cells.append(f"{d.mean:.4f} ± {spread}")
        row = f"{variant:<{width}}  {seeds[variant]:<5}  " + "  ".join(f"{c:<17}" for c in cells)
        print(row.rstrip())
    if refused:
        print(
            "-: longer than the context_length the model trained at, which its positional "
            "scheme reads no further than (learned positions)"
        )
    if recorded:
        print(
            f"recorded in {TASKS_FILE} of {recorded} run(s) as {split}@<length>; `ablate "
            f"report` shows them per variant",
            file=sys.stderr,
        )
    return 0


def _first(losses: dict[int | None, list[float]], columns: list[int | None]) -> float:
    """A variant's mean loss in the first window length (infinity without one): the order."""
    values = losses.get(columns[0], [])
    return sum(values) / len(values) if values else float("inf")


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
