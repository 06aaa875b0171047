"""Live tracking: the observer hooks feed TensorBoard and MLflow, for people who use trackers.

Opt-in per user, by environment variables read when each run starts; with neither set the hooks
return at once, log nothing and import nothing:

- ``ABLATE_TENSORBOARD=DIR``: each run logs into ``DIR/<experiment>/<variant>/seed-<n>``: one
  scalar per metric at each evaluation, the resolved config as text, and at the end the config
  as hparams with the final metrics (``final/val_loss``, ...). Needs the ``tensorboard`` extra.
- ``ABLATE_MLFLOW=URI``: a tracking URI (``sqlite:///mlflow.db``, a folder, or a server). One
  MLflow run per toolkit run, named ``<variant>/seed-<n>``, in the MLflow experiment named after
  the spec; params are the flattened resolved config (``model.norm``, ``train.lr``, ...), tags
  ``experiment``, ``variant`` and ``seed``; metrics at each evaluation, the summary's
  (``tokens_per_s``, ``mfu``, ``params``, ...) at the end, then status FINISHED (``ok``) or
  FAILED. Needs the ``mlflow`` extra.

A resumed run continues its unfinished MLflow run, and a run's TensorBoard folder is rewritten
from ``metrics.jsonl`` whenever the run (re)starts, so either holds every evaluation once. A run
that ends without ``on_run_end`` (it raised, or the sweep was interrupted) is closed when the
next run starts in the same thread, or when the process exits: FAILED when its summary says
so, else KILLED.
Logging errors after the start print one line and the run goes on; errors at the start (a
missing package, a store that cannot be opened) are a PluginError, which fails the run.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import hookimpl
from toolkit.errors import PluginError, one_line
from toolkit.names import run_folder, slug

if TYPE_CHECKING:
    from toolkit.api.contracts import RunInfo

TENSORBOARD_ENV = "ABLATE_TENSORBOARD"
MLFLOW_ENV = "ABLATE_MLFLOW"
# Summary entries logged once, at the end (the per-evaluation metrics come from on_eval).
SUMMARY_METRICS = (
    "tokens_per_s", "mfu", "flops_per_token", "params", "params_non_embedding",
    "train_s", "eval_s", "wall_s",
)  # fmt: skip
FINAL_METRICS = ("train_loss", "val_loss", "val_perplexity", "val_bpb", *SUMMARY_METRICS)


# -- hooks -----------------------------------------------------------------------------------
@hookimpl
def on_run_start(run: RunInfo) -> None:
    tensorboard_dir = os.environ.get(TENSORBOARD_ENV, "").strip()
    mlflow_uri = os.environ.get(MLFLOW_ENV, "").strip()
    if _OPEN:
        _close_stale(threading.get_ident())
    if not tensorboard_dir and not mlflow_uri:
        return
    # Both packages are checked before anything is opened, so a missing one leaves no trace.
    if tensorboard_dir:
        _require_tensorboard()
    if mlflow_uri:
        _require_mlflow()
    history = _read_history(Path(run.folder))  # a resumed run's earlier evaluations
    loggers: list[Any] = []
    try:
        if tensorboard_dir:
            loggers.append(TensorBoardLogger(run, Path(tensorboard_dir).expanduser(), history))
        if mlflow_uri:
            loggers.append(MlflowLogger(run, mlflow_uri, history))
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
_EXIT_HANDLER: list[bool] = []


def _key(run: RunInfo) -> str:
    return os.path.abspath(run.folder)


def _close_stale(thread: int | None) -> None:
    """Close the loggers of runs that ended without on_run_end: those started in `thread` (a
    thread trains one run at a time, so a new start means they are over), or all of them."""
    with _LOCK:
        stale = [k for k, (t, _) in _OPEN.items() if thread is None or t == thread]
        entries = [_OPEN.pop(k) for k in stale]
    for folder, (_, loggers) in zip(stale, entries, strict=True):
        summary = _read_json(Path(folder) / "summary.json")  # a failed run has one
        for logger in loggers:
            logger.end(summary if isinstance(summary, dict) else None)


def close_all() -> None:
    """Close every open logger (runs interrupted in this process); called at exit."""
    _close_stale(None)


def _register_exit_handler() -> None:
    if not _EXIT_HANDLER:
        _EXIT_HANDLER.append(True)
        atexit.register(close_all)


# -- TensorBoard -----------------------------------------------------------------------------
def _require_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise PluginError(
            f"{TENSORBOARD_ENV} is set but the tensorboard package is not installed; "
            f'pip install "gpt-ablate[tensorboard]" (or unset {TENSORBOARD_ENV})'
        ) from None


class TensorBoardLogger:
    """One run's SummaryWriter in DIR/<experiment>/<variant>/seed-<n>."""

    name = TENSORBOARD_ENV

    def __init__(self, run: RunInfo, root: Path, history: list[dict[str, Any]]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.config = run.config
        self.folder = root / slug(run.experiment) / run_folder(run.variant, run.seed)
        self.failed = False
        try:
            # The folder mirrors the run: an earlier attempt's event files go (TensorBoard
            # would merge them by file name), and a resumed run rewrites its earlier
            # evaluations from metrics.jsonl below.
            for old in self.folder.glob("events.out.tfevents.*"):
                old.unlink()
            self.writer = SummaryWriter(log_dir=str(self.folder))
            self.writer.add_text("config", _markdown_table(_flatten(run.config)), 0)
        except Exception as exc:
            raise PluginError(
                f"{TENSORBOARD_ENV}: cannot write to {self.folder} ({one_line(exc, 300)})"
            ) from None
        for record in history:
            self.log(record["step"], record)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if self.failed:
            return
        try:
            for key, value in metrics.items():
                if key != "step" and _is_number(value):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()  # live: evaluations are rare, so each shows at once
        except Exception as exc:
            self.failed = _warn(self.name, exc)

    def end(self, summary: dict[str, Any] | None) -> None:
        try:
            if summary is not None and not self.failed:
                from torch.utils.tensorboard.summary import hparams

                step = int(summary.get("steps") or 0)
                final = {
                    f"final/{k}": float(summary[k])
                    for k in FINAL_METRICS
                    if _is_number(summary.get(k))
                }
                params = {k: _hparam(v) for k, v in _flatten(self.config)}
                params["status"] = str(summary.get("status"))
                # Written by this run's own writer (add_hparams would open a second one).
                for proto in hparams(params, final):
                    self.writer.file_writer.add_summary(proto, step)
                for key, value in final.items():
                    self.writer.add_scalar(key, value, step)
        except Exception as exc:
            self.failed = _warn(self.name, exc)
        finally:
            try:
                self.writer.close()
            except Exception as exc:
                _warn(self.name, exc)


# -- MLflow ----------------------------------------------------------------------------------
def _require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
        from mlflow.tracking import MlflowClient  # noqa: F401
    except ImportError:
        raise PluginError(
            f"{MLFLOW_ENV} is set but the mlflow package is not installed; "
            f'pip install "gpt-ablate[mlflow]" (or unset {MLFLOW_ENV})'
        ) from None


class MlflowLogger:
    """One MLflow run per toolkit run, through MlflowClient (no global active run)."""

    name = MLFLOW_ENV

    def __init__(self, run: RunInfo, uri: str, history: list[dict[str, Any]]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.failed = False
        try:
            self.client = MlflowClient(tracking_uri=uri)
            experiment_id = self._experiment(run.experiment, uri)
            folder = str(Path(run.folder).resolve())
            config_hash = (_read_json(Path(run.folder) / "config.json") or {}).get("config_hash")
            previous = None
            if history and config_hash:
                previous = self._unfinished(experiment_id, folder, str(config_hash))
            if previous is not None:  # resuming: continue that MLflow run
                self.run_id = previous
                self.client.update_run(self.run_id, status="RUNNING")
                logged = self.client.get_metric_history(self.run_id, "val_loss")
                last = max((m.step for m in logged), default=0)
                history = [r for r in history if r["step"] > last]
            else:
                tags = {
                    "experiment": run.experiment,
                    "variant": run.variant,
                    "seed": str(run.seed),
                    "ablate.folder": folder,
                    **({"ablate.config_hash": str(config_hash)} if config_hash else {}),
                    "overrides": _limit(_text(run.config.get("overrides", {})), 8000),
                }
                created = self.client.create_run(
                    experiment_id, run_name=f"{run.variant}/seed-{run.seed}", tags=tags
                )
                self.run_id = created.info.run_id
                params = [Param(k, _limit(_text(v), _param_limit())) for k, v in _params(run)]
                for i in range(0, len(params), 100):  # MLflow takes 100 params per batch
                    self.client.log_batch(self.run_id, params=params[i : i + 100])
            self._metrics([(r["step"], r) for r in history])
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(
                f"{MLFLOW_ENV}={uri}: cannot log to MLflow ({one_line(exc, 300)})"
            ) from None

    def _experiment(self, name: str, uri: str) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self.client.create_experiment(name)
            except MlflowException:  # created meanwhile by another process
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            raise PluginError(
                f"{MLFLOW_ENV}={uri}: the MLflow experiment {name!r} is deleted; restore it "
                f"(mlflow experiments restore) or delete it for good (mlflow gc)"
            )
        return experiment.experiment_id

    def _unfinished(self, experiment_id: str, folder: str, config_hash: str) -> str | None:
        """The latest MLflow run of this run folder and config that did not finish."""
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`ablate.config_hash` = '{config_hash}'",
            order_by=["attributes.start_time DESC"],
            max_results=50,
        )
        for found in runs:
            if found.data.tags.get("ablate.folder") == folder and found.info.status != "FINISHED":
                return found.info.run_id
        return None

    def _metrics(self, records: list[tuple[int, dict[str, Any]]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now, int(step))
            for step, record in records
            for key, value in record.items()
            if key != "step" and _is_number(value)
        ]
        for i in range(0, len(metrics), 1000):  # MLflow takes 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if self.failed:
            return
        try:
            self._metrics([(step, metrics)])
        except Exception as exc:
            self.failed = _warn(self.name, exc)

    def end(self, summary: dict[str, Any] | None) -> None:
        from mlflow.entities import RunTag

        status = "KILLED"
        try:
            if summary is not None:
                status = "FINISHED" if summary.get("status") == "ok" else "FAILED"
                if not self.failed:
                    final = {k: summary[k] for k in SUMMARY_METRICS if _is_number(summary.get(k))}
                    self._metrics([(int(summary.get("steps") or 0), final)])
                    tags = {"status": str(summary.get("status"))}
                    if summary.get("error"):
                        tags["error"] = _limit(str(summary["error"]), 8000)
                    self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        except Exception as exc:
            self.failed = _warn(self.name, exc)
        finally:
            try:
                self.client.set_terminated(self.run_id, status)
            except Exception as exc:
                _warn(self.name, exc)


def _params(run: RunInfo) -> Iterator[tuple[str, Any]]:
    """The flattened resolved config, less `overrides` (a tag: its values are in the config)."""
    return _flatten({k: v for k, v in run.config.items() if k != "overrides"})


def _param_limit() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        return int(MAX_PARAM_VAL_LENGTH)
    except (ImportError, AttributeError, TypeError, ValueError):
        return 500  # the limit of old MLflow versions: safe everywhere


# -- helpers ---------------------------------------------------------------------------------
def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys to plain values. A component choice ({"name": "rmsnorm", "eps": 1e-6})
    gives its name under its own key (model.norm = rmsnorm) and its options below it
    (model.norm.eps = 1e-06), so variants compare on one column."""
    if isinstance(value, dict):
        if prefix and "name" in value:
            yield prefix, value["name"]
        for key, item in value.items():
            if prefix and key == "name":
                continue
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def _text(value: Any) -> str:
    """A config value as MLflow text: strings as they are, the rest as JSON (null, true)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _hparam(value: Any) -> float | str:
    return value if _is_number(value) else _text(value)


def _limit(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _markdown_table(items: Iterator[tuple[str, Any]]) -> str:
    rows = "\n".join(f"| {k} | {_text(v).replace('|', '&#124;')} |" for k, v in items)
    return "| key | value |\n|---|---|\n" + rows


def _read_history(folder: Path) -> list[dict[str, Any]]:
    """The evaluations already in metrics.jsonl (none unless the run resumes)."""
    records = []
    try:
        lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            break
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _warn(name: str, exc: BaseException) -> bool:
    print(f"{name}: logging failed ({one_line(exc, 300)}); training goes on", file=sys.stderr)
    return True


__all__ = ["MLFLOW_ENV", "TENSORBOARD_ENV", "MlflowLogger", "TensorBoardLogger", "close_all"]
