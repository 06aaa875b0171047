"""Live tracking: the observer hooks feed TensorBoard, MLflow and Weights & Biases, for people
who use trackers.

Opt-in per user, by environment variables read when each run starts; with none set the hooks
return at once, log nothing and import nothing:

- ``ABLATE_TENSORBOARD=DIR``: event files in ``DIR/<experiment>/<variant>/seed-<n>``
  (``tensorboard_run``; the ``tensorboard`` extra);
- ``ABLATE_MLFLOW=URI``: one MLflow run per toolkit run, in the MLflow experiment named after
  the spec (``mlflow_run``; the ``mlflow`` extra);
- ``ABLATE_WANDB=PROJECT``: one W&B run per toolkit run, grouped by experiment and variant;
  W&B's own variables (``WANDB_MODE=offline``, ``WANDB_DIR``, ...) apply (``wandb_run``; the
  ``wandb`` extra).

Each logs the metrics at every evaluation, the resolved config, and at the end the summary's
figures and the status. A resumed run continues its unfinished MLflow run and its W&B run, and
a run's TensorBoard folder is rewritten from ``metrics.jsonl`` whenever the run (re)starts, so
each holds every evaluation once. A run that ends without ``on_run_end`` (it raised, or the
sweep was interrupted) is closed when the next run starts in the same thread, or when the
process exits: failed when its summary says so, else killed (MLflow KILLED; W&B exit code 1).
Logging errors after the start print one line and the run goes on; errors at the start (a
missing package, a store that cannot be opened) are a PluginError, which fails the run.

Here: the hooks and the open loggers; one module per tracker, and ``shared`` for what they
share. A logger is any object with ``log(step, metrics)`` and ``end(summary or None)``.
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugins.loggers.mlflow_run import MLFLOW_ENV, MlflowLogger, require_mlflow
from plugins.loggers.shared import read_history
from plugins.loggers.tensorboard_run import TENSORBOARD_ENV, TensorBoardLogger, require_tensorboard
from plugins.loggers.wandb_run import WANDB_ENV, WandbLogger, require_wandb
from toolkit import hookimpl
from toolkit.files import read_json

if TYPE_CHECKING:
    from toolkit.api.contracts import RunInfo


# -- hooks -----------------------------------------------------------------------------------
@hookimpl
def on_run_start(run: RunInfo) -> None:
    tensorboard_dir = os.environ.get(TENSORBOARD_ENV, "").strip()
    mlflow_uri = os.environ.get(MLFLOW_ENV, "").strip()
    wandb_project = os.environ.get(WANDB_ENV, "").strip()
    if _OPEN:
        _close_stale(threading.get_ident())
    if not tensorboard_dir and not mlflow_uri and not wandb_project:
        return
    # Every package is checked before anything is opened, so a missing one leaves no trace.
    if tensorboard_dir:
        require_tensorboard()
    if mlflow_uri:
        require_mlflow()
    if wandb_project:
        require_wandb()
    history = read_history(Path(run.folder))  # a resumed run's earlier evaluations
    loggers: list[Any] = []
    try:
        if tensorboard_dir:
            loggers.append(TensorBoardLogger(run, Path(tensorboard_dir).expanduser(), history))
        if mlflow_uri:
            loggers.append(MlflowLogger(run, mlflow_uri, history))
        if wandb_project:
            loggers.append(WandbLogger(run, wandb_project, history))
    except BaseException:
        for logger in loggers:
            logger.end(None)
        raise
    with _LOCK:
        _OPEN[_key(run)] = (threading.get_ident(), loggers)
    _register_exit_handler()


@hookimpl
def on_eval(run: RunInfo, step: int, metrics: dict[str, float]) -> None:
    entry = _OPEN.get(_key(run)) if _OPEN else None
    if entry is not None:
        for logger in entry[1]:
            logger.log(step, metrics)


@hookimpl
def on_run_end(run: RunInfo, summary: dict[str, Any]) -> None:
    if not _OPEN:
        return
    with _LOCK:
        entry = _OPEN.pop(_key(run), None)
    if entry is not None:
        for logger in entry[1]:
            logger.end(summary)


# -- the open loggers, keyed by run folder ---------------------------------------------------
_OPEN: dict[str, tuple[int, list[Any]]] = {}  # folder -> (thread that started it, loggers)
_LOCK = threading.Lock()


def _key(run: RunInfo) -> str:
    return os.path.abspath(run.folder)


def _close_stale(thread: int | None) -> None:
    """Close the loggers of runs that ended without on_run_end: those started in `thread` (a
    thread trains one run at a time, so a new start means they are over), or all of them."""
    with _LOCK:
        stale = [k for k, (t, _) in _OPEN.items() if thread is None or t == thread]
        entries = [_OPEN.pop(k) for k in stale]
    for folder, (_, loggers) in zip(stale, entries, strict=True):
        summary = read_json(Path(folder) / "summary.json")  # a failed run has one
        for logger in loggers:
            logger.end(summary if isinstance(summary, dict) else None)


def close_all() -> None:
    """Close every open logger (runs interrupted in this process); called at exit."""
    _close_stale(None)


def _register_exit_handler() -> None:
    """close_all at exit, registered last so that it runs first: before the exit handlers a
    tracker registered when it started (W&B's would finish our open runs as succeeded)."""
    atexit.unregister(close_all)
    atexit.register(close_all)


__all__ = [
    "MLFLOW_ENV",
    "TENSORBOARD_ENV",
    "WANDB_ENV",
    "MlflowLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "close_all",
]
