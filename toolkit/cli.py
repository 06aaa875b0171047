"""`ablate`: the command line over the Python API.

    ablate run SPEC [--out DIR] [--set KEY=VALUE ...] [--plugin MODULE ...] [--quiet] [--restart]
               [--executor local|processes|ray] [--jobs N] [--address ADDR]
    ablate validate SPEC [--set ...] [--plugin ...]
    ablate list [KIND]
    ablate plugins
    ablate report DIR [DIR ...] [--out REPORT_DIR]
    ablate generate RUN_DIR|CHECKPOINT [--prompt TEXT] [--sampler NAME] [--set sampling.KEY=VALUE]...
                    [--max-new-tokens N] [--seed S] [--no-cache]
    ablate import --format hf-gpt2|book SOURCE --out FILE.pt [--n-heads N] [--tokenizer NAME] [--force]
    ablate export --format hf-gpt2|book CHECKPOINT|RUN_DIR --out PATH [--force]
    ablate eval CHECKPOINT|RUN_DIR [--data PATH | --corpus NAME] [--tokenizer NAME] [--split all|train|val]

Bad input (a ToolkitError) prints one line, `ablate: error: ...`, and exits with status 2;
no traceback. A sweep in which some run failed or diverged exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from toolkit.errors import ToolkitError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ToolkitError as exc:
        print(f"ablate: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        note = "; finished runs are kept, run the same command to continue"
        print(f"ablate: interrupted{note if args.command == 'run' else ''}", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ablate", description="Swap components of a GPT, train every variant x seed, compare."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def spec_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("spec", help="experiment spec (TOML)")
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a spec key, e.g. --set train.max_steps=50 (repeatable; TOML values)",
        )
        p.add_argument(
            "--plugin",
            dest="plugins",
            action="append",
            default=[],
            metavar="MODULE",
            help="import a plugin module by dotted name (repeatable)",
        )

    p = sub.add_parser("run", help="train every variant x seed of a spec and print the comparison")
    spec_args(p)
    p.add_argument("--out", help="output folder (default: runs/<spec name>)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard this spec's earlier runs in the output folder and train them again",
    )
    p.add_argument(
        "--executor",
        default="local",
        metavar="NAME",
        help="where runs train: local (default, one after another here), processes (a process "
        "per run, --jobs at a time) or ray (Ray tasks; --address for a cluster)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="processes executor: runs at a time (default: one per core; cores are shared out)",
    )
    p.add_argument(
        "--address",
        metavar="ADDR",
        help="ray executor: the cluster to join (auto, HOST:6379, ray://HOST:10001); default: "
        "start a local Ray instance",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a spec and list its variants with parameter counts")
    spec_args(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("list", help="list registered components, by kind")
    p.add_argument("kind", nargs="?", help="only this kind (attention, normalization, ...)")
    p.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "plugins", help="list loaded plugins, where each came from, what it registers"
    )
    p.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser(
        "report",
        help="compare the variants of experiment folders: table, statistics, figures, report",
        description="Print the comparison table of one or several experiment folders (finished, "
        "running or interrupted) and write report.md, report.html, figures/*.png and the data "
        "behind them (report_runs.csv, report_summary.csv, report_curves.csv). Several folders "
        "must share a baseline.",
    )
    p.add_argument(
        "dirs", nargs="+", metavar="DIR", help="experiment output folders, e.g. runs/quickstart"
    )
    p.add_argument(
        "--out",
        metavar="REPORT_DIR",
        help="where to write the report (default: DIR; for several, report-<a>+<b> beside the "
        "first)",
    )
    p.set_defaults(func=cmd_report)

    from toolkit import checkpoints, evaluate

    checkpoints.add_parser(sub)  # ablate import, ablate export
    evaluate.add_parser(sub)  # ablate eval
    from toolkit.generate import add_parser as add_generate_parser  # torch-free import

    add_generate_parser(sub)  # ablate generate
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    import pandas as pd

    from toolkit.plugins import load_plugins
    from toolkit.report import report
    from toolkit.runner import run
    from toolkit.spec import load_spec

    plugins = load_plugins(tuple(args.plugins))
    executor = executor_choice(args, plugins)
    spec = load_spec(args.spec, args.overrides, plugins=plugins)
    out = args.out or f"runs/{spec.name}"
    from toolkit import distributed

    try:
        table = run(
            spec,
            out,
            plugins=plugins,
            progress=not args.quiet,
            restart=args.restart,
            executor=executor,
        )
    finally:
        distributed.shutdown()  # under torchrun: leave the process group (a no-op otherwise)
    if not distributed.current().main:
        return 0  # under torchrun, rank 0 prints the comparison
    _, text = report(out)
    print(text)
    print(f"results: {out}/results.csv")
    if spec.sampling_ablation is not None:
        from toolkit import sampling_ablation

        summary = pd.read_csv(f"{out}/sampling/summary.csv")
        print(sampling_ablation.format_summary(summary))
        print(f"sampling: {out}/sampling/results.csv, summary.csv, samples.md")
    bad = table[table["status"] != "ok"]
    if len(bad):
        for _, row in bad.iterrows():
            print(
                f"ablate: {row['variant']} seed={row['seed']}: {row['status']}"
                + (f" ({row['error']})" if isinstance(row.get("error"), str) else ""),
                file=sys.stderr,
            )
        return 1
    return 0


def executor_choice(args: argparse.Namespace, plugins: Any) -> dict[str, Any]:
    """--executor NAME with --jobs/--address as its options; a flag the executor does not take
    is an error naming the ones it does."""
    component = plugins.registry.get("executor", args.executor)
    choice: dict[str, Any] = {"name": args.executor}
    for flag, option in (("--jobs", "jobs"), ("--address", "address")):
        value = getattr(args, option)
        if value is None:
            continue
        if option not in component.options:
            takers = [
                name
                for name in plugins.registry.names("executor")
                if option in plugins.registry.get("executor", name).options
            ]
            raise ToolkitError(
                f"{flag} does not apply to the {args.executor} executor; it is for "
                f"--executor {' or '.join(takers) or '(none installed)'}"
            )
        choice[option] = value
    return choice


def cmd_validate(args: argparse.Namespace) -> int:
    from toolkit.model import count_params
    from toolkit.plugins import load_plugins
    from toolkit.runner import prepare_data
    from toolkit.spec import load_spec

    plugins = load_plugins(tuple(args.plugins))
    spec = load_spec(args.spec, args.overrides, plugins=plugins)
    datasets = prepare_data(spec, plugins)
    print(
        f"{spec.path}: ok. experiment {spec.name!r}: {_plural(len(spec.variants), 'variant')} x "
        f"{_plural(len(spec.seeds), 'seed')} = {_plural(len(spec.runs), 'run')}; "
        f"baseline {spec.baseline!r}"
    )
    from toolkit.runner import data_key

    rows = []
    for r in spec.runs[: len(spec.variants)]:
        data = datasets[data_key(r)][0]
        total, non_emb = count_params(r.model_config(data.vocab_size), plugins)
        choices = " ".join(f"{k}={v}" for k, v in r.choices().items())
        rows.append(
            (
                ("*" if r.variant == spec.baseline else " "),
                r.variant,
                f"{total:,}",
                f"{non_emb:,}",
                choices,
            )
        )
    header = ("", "variant", "params", "non-emb")
    widths = [max(len(row[i]) for row in [*rows, header]) for i in range(4)]
    print(
        f"  {'variant':<{widths[1]}}  {'params':>{widths[2]}}  {'non-emb':>{widths[3]}}  components"
    )
    for mark, name, total, non_emb, choices in rows:
        print(
            f"{mark} {name:<{widths[1]}}  {total:>{widths[2]}}  {non_emb:>{widths[3]}}  {choices}"
        )
    return 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def cmd_list(args: argparse.Namespace) -> int:
    from toolkit.plugins import load_plugins
    from toolkit.registry import KINDS, suggest

    plugins = load_plugins(tuple(args.plugins))
    kinds = list(KINDS)
    if args.kind:
        if args.kind not in KINDS:
            raise ToolkitError(
                f"unknown kind {args.kind!r}{suggest(args.kind, KINDS)}; kinds: {', '.join(KINDS)}"
            )
        kinds = [args.kind]
    width = max(len(c.name) for c in plugins.registry)
    for kind in kinds:
        print(f"{kind}:")
        for name in plugins.registry.names(kind):
            c = plugins.registry.get(kind, name)
            facts = "".join(f" [{k}={v}]" for k, v in c.facts.items())
            print(f"  {name:<{width}}  {c.description}{facts}")
            if c.options:
                options = ", ".join(o.describe() for o in c.options.values())
                print(f"  {'':<{width}}  options: {options}")
        print()
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from toolkit.plugins import load_plugins

    plugins = load_plugins(tuple(args.plugins))
    for info in plugins.info.values():
        print(f"{info.name}  ({info.source}; hooks: {', '.join(info.hooks) or 'none'})")
        for kind, name in info.components:
            print(f"    {kind}: {name}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from toolkit.report import write_report

    result = write_report(args.dirs, args.out)
    print(result.text)
    print(f"report: {result.markdown} and {result.html} ({len(result.figures)} figures)")
    return 0
