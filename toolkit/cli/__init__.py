"""`ablate`: the command line over the Python API.

    ablate run SPEC [--out DIR] [--set KEY=VALUE ...] [--plugin MODULE ...] [--quiet] [--restart]
               [--executor local|processes|ray] [--jobs N] [--address ADDR]
    ablate validate SPEC [--set ...] [--plugin ...]
    ablate list [KIND]
    ablate plugins
    ablate report DIR [DIR ...] [--out REPORT_DIR] [--correction holm|none]
    ablate generate RUN_DIR|CHECKPOINT [--prompt TEXT] [--sampler NAME] [--set sampling.KEY=VALUE]...
                    [--max-new-tokens N] [--seed S] [--no-cache]
    ablate import --format hf-gpt2|book SOURCE --out FILE.pt [--n-heads N] [--tokenizer NAME] [--force]
    ablate export --format hf-gpt2|hf-llama|book CHECKPOINT|RUN_DIR --out PATH [--force]
    ablate eval CHECKPOINT|RUN_DIR [--data PATH | --corpus NAME] [--tokenizer NAME] [--split all|train|val]
    ablate eval-tasks DIR|CHECKPOINT... --tasks NAME,... [--include-path DIR] [--num-fewshot K]
                      [--limit N] [--batch-size N] [--seed S] [--tokenizer NAME]
    ablate lm-eval LM_EVAL_ARGS...
    ablate cache list [--dir DIR]
    ablate cache clear [KEY_PREFIX ...] [--dir DIR] [--older-than DAYS] [--yes]

Bad input (a ToolkitError) prints one line, `ablate: error: ...`, and exits with status 2;
no traceback. A warning prints one line, `warning: ...`. A sweep in which some run failed or diverged exits with status 1. A reader that
stops early (`ablate list | head`) ends the command quietly with status 141, as SIGPIPE ends
other Unix tools.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

from toolkit.cli import (
    cache,
    checkpoints,
    components,
    evaluate,
    generate,
    report,
    sweep,
    tasks,
)
from toolkit.errors import ToolkitError, one_line
from toolkit.files import storage_problem, storage_remedy


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [tasks.LM_EVAL]:  # lm-eval's own options, passed on untouched
        args = argparse.Namespace(command=tasks.LM_EVAL, func=tasks.cmd_lm_eval, rest=argv[1:])
    else:
        args = parser.parse_args(argv)
    shown = warnings.showwarning
    warnings.showwarning = _one_line
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader gone away (`| head`) shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # Nothing more can be shown; stop without a traceback, and with stdout pointing at
        # /dev/null so that the interpreter's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # what a shell reports for a command ended by SIGPIPE
    except ToolkitError as exc:
        print(f"ablate: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        problem = storage_problem(exc)  # a full or read-only disk is not a bug: say so
        if problem is None:
            raise
        print(
            f"ablate: error: {problem}; {storage_remedy(exc)}, then run the same command to go on",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        note = "; finished runs are kept, run the same command to continue"
        print(f"ablate: interrupted{note if args.command == 'run' else ''}", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


def _one_line(message: Warning | str, *_: object, **__: object) -> None:
    """How the command line shows a warning: `warning: ...` on one line, as its own warnings
    read, without the source file and line Python adds for a programmer."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ablate", description="Swap components of a GPT, train every variant x seed, compare."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for commands in (sweep, components, report, generate, checkpoints, evaluate, tasks, cache):
        commands.add_parser(sub)
    return parser
