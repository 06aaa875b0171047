"""`ablate eval-tasks RUN_DIR... --tasks NAME,...`: lm-evaluation-harness scores of runs, recorded
in each run folder's tasks.json, so `ablate report` and `toolkit.compare` show them beside the
losses (mean ± std over seeds); and `ablate lm-eval ARGS...`, lm-eval's own command line with
the toolkit's model class registered (`--model ablate --model_args checkpoint=RUN_DIR`).

Both need the `lm-eval` extra. The scoring itself is toolkit.inference.lm_tasks (the model,
toolkit.inference.harness); tasks.json is written by toolkit.sweep.results.record_task_scores.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from toolkit.cli.common import (
    add_device_option,
    add_plugin_option,
    check_device,
    plugins_of,
    plural,
    scoring_targets,
)
from toolkit.errors import DataError

NEEDS = 'needs lm-eval: pip install -e ".[lm-eval]"'
LM_EVAL = "lm-eval"  # the command that hands its arguments to lm-eval's command line


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval-tasks",
        help="score runs on lm-evaluation-harness tasks; the report shows the scores",
        description="Score every finished run of the given experiment folders (or the given "
        "run folders) on lm-evaluation-harness tasks, with each run's own tokenizer and KV "
        "cache, and record the scores in the run folder (tasks.json). `ablate report` then "
        "shows them per variant, mean ± std over seeds. Task data must be on this machine: "
        "nothing downloads. A checkpoint file outside a run folder is scored and printed, "
        f"not recorded. {NEEDS[0].upper()}{NEEDS[1:]}.",
    )
    p.add_argument(
        "sources",
        nargs="+",
        metavar="DIR|CHECKPOINT",
        help="experiment folders (every finished run), run folders or checkpoint files",
    )
    p.add_argument("--tasks", required=True, metavar="NAME,...", help="lm-eval task or group names")
    p.add_argument(
        "--include-path",
        action="append",
        metavar="DIR",
        help="a folder (or file) of your own task YAMLs (repeatable)",
    )
    p.add_argument("--num-fewshot", type=int, metavar="K", help="few-shot examples per prompt")
    p.add_argument(
        "--limit",
        type=float,
        metavar="N",
        help="score only the first N samples of each task (a fraction below 1: that share)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="requests per forward pass (16)")
    p.add_argument("--seed", type=int, default=0, help="seed of few-shot draws and sampling (0)")
    p.add_argument(
        "--tokenizer",
        metavar="NAME",
        help="tokenizer of a checkpoint that records none (gpt2 or bytes); a run's own otherwise",
    )
    add_device_option(p)
    add_plugin_option(p)
    p.set_defaults(func=cmd_eval_tasks)

    passthrough = subparsers.add_parser(
        LM_EVAL,
        help="lm-eval's own command line, with --model ablate registered",
        description="Run lm-evaluation-harness's command line (`lm_eval ...`) with the "
        "toolkit's model class registered as `ablate`, e.g. `ablate lm-eval --model ablate "
        "--model_args checkpoint=runs/quickstart/base/seed-0 --tasks my_task --include_path "
        f"tasks/`. Writes only what lm-eval writes. {NEEDS[0].upper()}{NEEDS[1:]}.",
        add_help=False,
    )
    passthrough.add_argument("rest", nargs=argparse.REMAINDER)
    passthrough.set_defaults(func=cmd_lm_eval)


def _harness() -> Any:
    try:
        harness = importlib.import_module("toolkit.inference.lm_tasks")
    except ImportError as exc:
        if "lm_eval" not in str(exc):
            raise
        raise DataError(f"this command {NEEDS}") from None
    return harness


def cmd_eval_tasks(args: argparse.Namespace) -> int:
    """`ablate eval-tasks`: score runs on lm-eval tasks and record the scores."""
    # pandas-heavy import, on first use: every `ablate` command builds this parser.
    from toolkit.sweep.results import TASKS_FILE, record_task_scores

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise DataError(f"--num-fewshot must be 0 or more, got {args.num_fewshot}")
    limit = args.limit
    if limit is not None:
        if not limit > 0 or (limit >= 1 and not limit.is_integer()):
            raise DataError(
                f"--limit must be a whole number of samples or a fraction below 1, got {limit:g}"
            )
        limit = int(limit) if limit >= 1 else limit
    targets = scoring_targets(args.sources)
    device = check_device(args.device)
    harness = _harness()
    harness.check_seed(args.seed, "--seed")
    # Every task and its data (and enough examples for --num-fewshot), before any model is scored.
    manager = harness.load_tasks(tasks, args.include_path, num_fewshot=args.num_fewshot)
    plugins = plugins_of(args)
    settings = {"num_fewshot": args.num_fewshot, "limit": limit, "seed": args.seed}
    if args.tokenizer:  # scored with another tokenizer than the run's: a different score
        settings["tokenizer"] = args.tokenizer
    for i, (source, recorded) in enumerate(targets, 1):
        print(f"eval-tasks: [{i}/{len(targets)}] {source}", file=sys.stderr, flush=True)
        scores = harness.evaluate_tasks(
            source,
            tasks,
            manager=manager,
            num_fewshot=args.num_fewshot,
            limit=limit,
            batch_size=args.batch_size,
            device=device,
            seed=args.seed,
            plugins=plugins,
            progress=sys.stderr.isatty(),
            tokenizer=args.tokenizer,
        )
        if recorded:
            record_task_scores(source, scores, settings)
        for task, metrics in scores["tasks"].items():
            values = "  ".join(f"{m} {v:.4f}" for m, v in metrics.items())
            n = scores["samples"].get(task)
            print(f"{source}  {task}: {values}  ({plural(int(n or 0), 'sample')})")
    recorded = [s for s, r in targets if r]
    if recorded:
        print(
            f"recorded in {TASKS_FILE} of {plural(len(recorded), 'run')}; `ablate report` "
            f"shows them per variant",
            file=sys.stderr,
        )
    return 0


def cmd_lm_eval(args: argparse.Namespace) -> int:
    """`ablate lm-eval ARGS...`: lm-eval's command line with the model 'ablate' registered."""
    harness = _harness()
    import lm_eval.models  # noqa: F401  (lm-eval's own models stay available beside ours)
    from lm_eval.__main__ import cli_evaluate

    harness.offline_datasets()
    saved = sys.argv
    sys.argv = ["lm-eval", *args.rest]
    try:
        cli_evaluate()
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    finally:
        sys.argv = saved
    return 0
