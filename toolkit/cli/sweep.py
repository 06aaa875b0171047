"""`ablate run` and `ablate validate`: train every variant x seed of a spec (or only check it)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from toolkit.cli.common import add_plugin_option, add_set_option, plugins_of, plural
from toolkit.errors import ToolkitError
from toolkit.spec.limits import DEFAULT_MAX_RUNS


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="train every variant x seed of a spec and print the comparison")
    _spec_args(p)
    p.add_argument("--out", help="output folder (default: runs/<spec name>)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard this spec's earlier runs in the output folder and train them again",
    )
    p.add_argument(
        "--rerun",
        action="append",
        default=[],
        metavar="VARIANT/seed-N",
        help="train this run again from scratch even if it finished (repeatable)",
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
    _spec_args(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "verify",
        help="check that an experiment folder's finished runs are what they wrote",
        description="For every run of an experiment folder: its checkpoint.pt and metrics.jsonl "
        "are the files the run wrote (sha256 recorded in summary.json), and summary.json's "
        "scores are its last evaluation's. Trains nothing; exits 1 if any run fails a check "
        "(`ablate run` retrains such runs; --rerun VARIANT/seed-N retrains one on purpose).",
    )
    p.add_argument("dir", metavar="DIR", help="an experiment folder, e.g. runs/quickstart")
    p.set_defaults(func=cmd_verify)


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="experiment spec (TOML)")
    p.add_argument(
        "--max-runs",
        type=int,
        default=DEFAULT_MAX_RUNS,
        metavar="N",
        help=f"refuse specs of more than N runs (variants x seeds; default {DEFAULT_MAX_RUNS})",
    )
    add_set_option(
        p, "override a spec key, e.g. --set train.max_steps=50 (repeatable; TOML values)"
    )
    add_plugin_option(p)


def cmd_run(args: argparse.Namespace) -> int:
    # torch-heavy imports, on first use: `ablate --help` stays quick.
    import pandas as pd

    from toolkit.analysis.text import report
    from toolkit.inference import sampling_ablation
    from toolkit.spec.parse import load_spec
    from toolkit.sweep.results import collect
    from toolkit.sweep.runner import run
    from toolkit.sweep.tuning import TUNE_DIR
    from toolkit.training import distributed

    if args.out is not None and not args.out.strip():
        raise ToolkitError("--out is empty; give a folder, or leave --out out for runs/<spec name>")
    if args.restart and args.rerun:
        raise ToolkitError(
            "--restart trains every run of the spec again and --rerun names runs to train "
            "again; give one of them"
        )
    plugins = plugins_of(args)
    executor = executor_choice(args, plugins)
    spec = load_spec(args.spec, args.overrides, plugins=plugins, max_runs=args.max_runs)
    say_notes(spec)
    out = args.out or f"runs/{spec.name}"
    try:
        table = run(
            spec,
            out,
            plugins=plugins,
            progress=not args.quiet,
            restart=args.restart,
            executor=executor,
            rerun=args.rerun,
        )
    finally:
        distributed.shutdown()  # under torchrun: leave the process group (a no-op otherwise)
    if not distributed.current().main:
        return 0  # under torchrun, rank 0 prints the comparison
    if not spec.samples_only:
        _, text = report(out)
        print(text)
        print(f"results: {out}/results.csv")
    if spec.sampling_ablation is not None:
        summary = pd.read_csv(f"{out}/sampling/summary.csv")
        print(sampling_ablation.format_sampler_summary(summary))
        print(f"sampling: {out}/sampling/results.csv, summary.csv, samples.md")
    # A tuned sweep's tuning runs that failed count too: their points were never in the choice.
    # (A point that diverged is an answer tuning expects: it scores +inf.)
    tables = [("", table, ("ok",))]
    if spec.tune is not None:
        tables.insert(0, (f"{TUNE_DIR}/", collect(Path(out) / TUNE_DIR), ("ok", "diverged")))
    failed = 0
    for where, phase, fine in tables:
        bad = phase[~phase["status"].isin(fine)] if "status" in phase else phase.iloc[:0]
        failed += len(bad)
        for _, row in bad.iterrows():
            print(
                f"ablate: {where}{row['variant']} seed={row['seed']}: {row['status']}"
                + (f" ({row['error']})" if isinstance(row.get("error"), str) else ""),
                file=sys.stderr,
            )
    return 1 if failed else 0


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


def say_notes(spec: Any) -> None:
    """What the --set options changed beyond their own keys (a grid axis, variants, the
    corpus), and what the spec pairs that is likely not meant, one line each on stderr."""
    for note in spec.notes:
        print(f"note: {note}", file=sys.stderr)
    for warning in spec.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    # torch-heavy imports, on first use: `ablate --help` stays quick.
    from toolkit.data.resolve import data_key
    from toolkit.model.gpt import count_params
    from toolkit.spec.parse import load_spec
    from toolkit.sweep.preflight import precision_warnings, prepare_data

    plugins = plugins_of(args)
    spec = load_spec(args.spec, args.overrides, plugins=plugins, max_runs=args.max_runs)
    say_notes(spec)
    if spec.samples_only:
        return _validate_sampling(spec)
    datasets = prepare_data(spec, plugins)
    print(
        f"{spec.path}: ok. experiment {spec.name!r}: {plural(len(spec.variants), 'variant')} x "
        f"{plural(len(spec.seeds), 'seed')} = {plural(len(spec.runs), 'run')}; "
        f"baseline {spec.baseline!r}"
    )
    if spec.tune is not None:
        t = spec.tune
        n = t.n_runs([v.name for v in spec.variants])
        own = f" ({', '.join(t.variants)} with their own candidates)" if t.variants else ""
        print(
            f"  first tuning {', '.join(t.keys())}: {plural(len(t.points()), 'point')}{own} x "
            f"{plural(len(t.seeds), 'seed')} per variant = {plural(n, 'run')} (in tune/), then "
            f"the runs below at each variant's best point"
        )
    for warning in precision_warnings(spec.runs):
        print(f"warning: {warning}", file=sys.stderr)
    rows, counts = [], {}
    for r in spec.runs[: len(spec.variants)]:
        data = datasets[data_key(r.data)][0]
        config = r.model_config(data.vocab_size)
        key = json.dumps(config.to_dict(), sort_keys=True, default=str)
        if key not in counts:  # one model per distinct architecture, not per variant
            counts[key] = (*count_params(config, plugins), count_params(config, plugins, True)[1])
        mark = "*" if r.variant == spec.baseline else " "
        choices = " ".join(f"{k}={v}" for k, v in r.choices().items())
        rows.append((mark, r.variant, *(f"{n:,}" for n in counts[key]), choices))
    # A mixture of experts uses fewer parameters per token than it holds: then a column of the
    # non-embedding parameters one token uses (what match_params = "active" matches).
    header = ["", "variant", "params", "non-emb", "active non-emb", "components"]
    if all(row[3] == row[4] for row in rows):
        header.pop(4)
        rows = [(*row[:4], row[5]) for row in rows]
    widths = [max(len(row[i]) for row in [*rows, header]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [row[0], row[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(row[2:-1], widths[2:], strict=True)]
        print(f"{cells[0]:<1} " + "  ".join(cells[1:]) + f"  {row[-1]}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """`ablate verify DIR`: a line per run, ok or what is wrong; status 1 if any is wrong. A
    tuned sweep's tuning runs (DIR/tune), whose scores chose its settings, are checked too."""
    from toolkit.sweep.tuning import TUNE_DIR

    out = Path(args.dir)
    tuning = (out / TUNE_DIR / "experiment.json").is_file()
    if tuning and not (out / "experiment.json").exists():  # stopped before its final phase
        print(f"{out}: a tuned sweep stopped in its tuning phase; its final runs have not started")
        bad = 0
    else:
        bad = _verify_folder(out)
    if tuning:
        bad += _verify_folder(out / TUNE_DIR)
    return 1 if bad else 0


def _verify_folder(out: Path) -> int:
    """Check every run of one experiment folder, a line each and one for the folder; returns
    how many have problems."""
    from toolkit.files import read_json
    from toolkit.sweep.verify import problems

    experiment = read_json(out / "experiment.json")
    if not isinstance(experiment, dict) or not isinstance(experiment.get("runs"), list):
        held = (
            "holds no experiment.json"
            if not (out / "experiment.json").exists()
            else ("has an experiment.json that is not JSON with its runs (corrupt?)")
        )
        raise ToolkitError(f"{out} is not an experiment folder: it {held}; give one")
    bad = unfinished = 0
    for r in experiment["runs"]:
        folder = out / str(r.get("folder", ""))
        name = f"{r.get('variant')} seed={r.get('seed')}"
        if not (folder / "summary.json").is_file():
            unfinished += 1
            print(f"  {name}: not finished")
            continue
        found = problems(folder, r)
        bad += bool(found)
        print(f"{'!' if found else ' '} {name}: {'; '.join(found) or 'ok'}")
    n = len(experiment["runs"])
    print(
        f"{out}: {n - bad - unfinished} of {plural(n, 'run')} intact, {bad} with problems, "
        f"{unfinished} not finished"
    )
    return bad


def _validate_sampling(spec: Any) -> int:
    """`ablate validate` of a spec that samples from runs trained elsewhere: those runs exist,
    hold checkpoints and fit the prompts; it trains nothing."""
    from toolkit.inference import sampling_ablation

    ablation = spec.sampling_ablation
    runs = sampling_ablation.model_runs(ablation, [])
    sampling_ablation.check_runs(ablation, runs)
    print(
        f"{spec.path}: ok. experiment {spec.name!r}: trains nothing; samples from "
        f"{plural(len(runs), 'run')} named in [sampling_ablation] runs with "
        f"{plural(len(ablation.samplers), 'sampler')} x {plural(len(ablation.seeds), 'seed')}, "
        f"{plural(ablation.n_prompts, 'prompt')} each"
    )
    return 0
