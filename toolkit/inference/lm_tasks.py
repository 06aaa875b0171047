"""lm-evaluation-harness tasks, offline: loading them (`load_tasks`, every task known and its
data on this machine, with enough examples for the few-shot prompts), the seed's range, and
scoring a checkpoint on them (`evaluate_tasks`) through harness.AblateLM. `ablate eval-tasks`
(toolkit/cli/tasks.py) records the scores for the comparison table. Needs the `lm-eval` extra.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

from toolkit.api.manager import Plugins
from toolkit.data.offline import offline_datasets
from toolkit.errors import DataError, one_line
from toolkit.inference.harness import DEFAULT_BATCH_SIZE, AblateLM

MAX_SEED = 2**32 - 1  # lm-eval seeds numpy's global generator too, which takes 0 .. 2**32 - 1


def check_seed(seed: Any, where: str = "seed") -> int:
    """`seed` as the seed of an lm-eval evaluation (few-shot draws, sampling, and numpy's
    generator): an integer from 0 to 2**32 - 1; a one-line DataError naming `where` otherwise."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise DataError(
            f"{where} {seed!r} is out of range; lm-eval seeds numpy with it, which takes an "
            f"integer from 0 to 2**32 - 1 ({MAX_SEED})"
        )
    return seed


def load_tasks(
    tasks: Sequence[str],
    include_path: str | os.PathLike[str] | Sequence[Any] | None = None,
    *,
    num_fewshot: int | None = None,
) -> Any:
    """lm-eval's TaskManager for `tasks`, once each is known and its data is on this machine: a
    one-line DataError otherwise, before any model is scored. include_path: folders (or
    files) of the user's task YAMLs. lm-eval's own few thousand task files take seconds to
    index, so when every task is found under include_path they are not read. num_fewshot (or
    a task's own num_fewshot when None): each task must have that many examples to draw."""
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise DataError("no tasks given: name at least one lm-eval task (--tasks NAME,...)")
    paths = None
    if include_path is not None:
        given = [include_path] if isinstance(include_path, str | os.PathLike) else include_path
        paths = [os.path.expanduser(os.fspath(p)) for p in given]
        for p in paths:
            if not os.path.exists(p):
                raise DataError(f"--include-path {p}: no such file or folder of task YAMLs")
    with _quiet():
        manager = TaskManager(include_path=paths, include_defaults=False) if paths else None
        if manager is None or not set(tasks) <= set(manager.all_tasks):
            manager = TaskManager(include_path=paths)
    known = set(manager.all_tasks)
    for name in tasks:
        if name not in known:
            raise DataError(
                f"unknown lm-eval task {name!r}: give a task (or group) lm-eval lists "
                f"(lm_eval ls tasks), or the folder of your task YAMLs with --include-path"
            )
    datasets = offline_datasets()
    # Reading the data is part of checking: no progress bar before a one-line error.
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        for name in tasks:
            _load_task(manager, name, num_fewshot)
    finally:
        if bars:
            datasets.enable_progress_bars()
    return manager


def _load_task(manager: Any, name: str, num_fewshot: int | None) -> None:
    """Load one task (its data too), as load_tasks checks it."""
    with _quiet():
        try:
            loaded = manager.load([name])
        except Exception as exc:
            raise DataError(
                f"lm-eval task {name!r}: its data is not on this machine "
                f"({one_line(exc, 200)}); nothing downloads here, so the data must be "
                f"local: write a task YAML over local files (dataset_path: json, "
                f"dataset_kwargs: {{data_files: ...}}) and pass its folder with "
                f"--include-path, or fill the Hugging Face cache on a machine with network"
            ) from None
    _check_fewshot(loaded.get("tasks", {}), num_fewshot)


def _check_fewshot(loaded: dict[str, Any], num_fewshot: int | None) -> None:
    """A one-line DataError for the first of lm-eval's loaded tasks ({name: Task}) that has
    fewer examples than the few-shot prompts draw (lm-eval would stop with "Sample larger than
    population" once scoring has begun). A task whose pool cannot be counted is left to lm-eval."""
    for name, task in loaded.items():
        try:
            config = task.config
            own = getattr(config, "num_fewshot", None)
            # As lm-eval's simple_evaluate: num_fewshot = 0 in a task's YAML is never overridden.
            shots = own if num_fewshot is None or own == 0 else num_fewshot
            if not shots:
                continue
            with _quiet():
                pool = len(task.fewshot_docs())
            # A pool that is the test split leaves out the document being scored.
            split = getattr(getattr(task, "fewshot_cfg", None), "split", None)
            spare = 1 if split is not None and split == getattr(config, "test_split", None) else 0
        except Exception:
            continue
        if shots + spare > pool:
            raise _fewshot_error(name, shots, max(0, pool - spare))


def _fewshot_error(name: str, shots: int, most: int) -> DataError:
    return DataError(
        f"lm-eval task {name!r}: num_fewshot {shots} exceeds the {most} examples it has to "
        f"draw few-shot prompts from; pass --num-fewshot {most} or fewer"
    )


def evaluate_tasks(
    source: str | os.PathLike[str],
    tasks: Sequence[str],
    *,
    manager: Any = None,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "cpu",
    seed: int = 0,
    plugins: Plugins | None = None,
    progress: bool = True,
    tokenizer: str | None = None,
) -> dict[str, Any]:
    """Score one run folder (or checkpoint) on lm-eval tasks: {"tasks": {task: {metric: value}},
    "stderr": {task: {metric: value}}, "samples": {task: n}, "lm_eval": version} (a metric
    lm-eval computes through a filter other than "none" is named metric/filter). `tokenizer`:
    for a checkpoint that records none (the run's own otherwise)."""
    import lm_eval

    check_seed(seed)
    manager = manager or load_tasks(tasks, num_fewshot=num_fewshot)

    lm = AblateLM(
        source,
        tokenizer=tokenizer,
        batch_size=batch_size,
        device=device,
        seed=seed,
        plugins=plugins,
    )
    offline_datasets()
    with _quiet(), contextlib.ExitStack() as stack:
        if not progress:  # lm-eval's bars and ours: tqdm writes them to stderr
            stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        try:
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=list(tasks),
                task_manager=manager,
                num_fewshot=num_fewshot,
                limit=limit,
                log_samples=False,
                bootstrap_iters=1000,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
                verbosity="ERROR",
            )
        except ValueError as exc:
            # random.sample's words when the few-shot prompts ask for more examples than a
            # task has (a manager loaded without num_fewshot, or a pool lm-eval shrinks).
            if "Sample larger than population" not in str(exc):
                raise
            raise _fewshot_shortfall(manager, tasks, num_fewshot) from None
    scores: dict[str, dict[str, float]] = {}
    errors: dict[str, dict[str, float]] = {}
    for task, metrics in (out or {}).get("results", {}).items():
        for key, value in metrics.items():
            if "," not in key or not _is_number(value):
                continue
            metric, filter_name = key.split(",", 1)
            name = metric if filter_name == "none" else f"{metric}/{filter_name}"
            if metric.endswith("_stderr"):
                errors.setdefault(task, {})[name.replace("_stderr", "", 1)] = float(value)
            else:
                scores.setdefault(task, {})[name] = float(value)
    samples = {
        task: int(n.get("effective", 0)) for task, n in (out or {}).get("n-samples", {}).items()
    }
    return {
        "tasks": scores,
        "stderr": errors,
        "samples": samples,
        "lm_eval": getattr(lm_eval, "__version__", "?"),
    }


def _fewshot_shortfall(manager: Any, tasks: Sequence[str], num_fewshot: int | None) -> DataError:
    """The error for lm-eval's "Sample larger than population": the task it names when its
    examples can be counted, otherwise every task of the evaluation."""
    for name in tasks:
        try:
            with _quiet():
                loaded = manager.load([name]).get("tasks", {})
            _check_fewshot(loaded, num_fewshot)
        except DataError as exc:
            return exc
        except Exception:
            continue
    shots = "the tasks' own num_fewshot" if num_fewshot is None else f"num_fewshot {num_fewshot}"
    return DataError(
        f"lm-eval task(s) {', '.join(map(repr, tasks))}: {shots} exceeds the examples a task "
        f"has to draw few-shot prompts from; pass a smaller --num-fewshot"
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """lm-eval logs every task it builds at INFO and WARNING; only errors show here. It also
    runs `git describe` in the working directory for its results' git_hash, which we do not
    keep, and outside a repository git prints "fatal: not a git repository" on our stderr."""
    import lm_eval.evaluator

    loggers = [logging.getLogger(n) for n in ("lm_eval", "lm-eval")]
    levels = [lg.level for lg in loggers]
    git_hash = lm_eval.evaluator.get_git_commit_hash
    lm_eval.evaluator.get_git_commit_hash = lambda: None
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lm_eval.evaluator.get_git_commit_hash = git_hash
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


__all__ = [
    "MAX_SEED",
    "check_seed",
    "evaluate_tasks",
    "load_tasks",
]
