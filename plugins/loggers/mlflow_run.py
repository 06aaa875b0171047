"""MLflow: ``ABLATE_MLFLOW=URI`` (``sqlite:///mlflow.db``, a folder, or a server) gives each
toolkit run one MLflow run, through MlflowClient (no global active run).

The run is named ``<variant>/seed-<n>``, in the MLflow experiment named after the spec; params
are the flattened resolved config (``model.norm``, ``train.lr``, ...), tags ``experiment``,
``variant`` and ``seed``; metrics at each evaluation, the summary's (``tokens_per_s``, ``mfu``,
``params``, ...) at the end, then status FINISHED (``ok``), FAILED, or KILLED (closed without a
summary). A resumed run continues its unfinished MLflow run, found by the tags
``ablate.folder`` and ``ablate.config_hash``, and logs only the evaluations after the last one
MLflow has. Needs the ``mlflow`` extra.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugins.loggers.shared import SUMMARY_METRICS, flatten, is_number, limit, numbers, text, warn
from toolkit.errors import PluginError, one_line
from toolkit.files import read_json

if TYPE_CHECKING:
    from toolkit.api.contracts import RunInfo

MLFLOW_ENV = "ABLATE_MLFLOW"


def require_mlflow() -> None:
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
            config_hash = (read_json(Path(run.folder) / "config.json") or {}).get("config_hash")
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
                    "overrides": limit(text(run.config.get("overrides", {})), 8000),
                }
                created = self.client.create_run(
                    experiment_id, run_name=f"{run.variant}/seed-{run.seed}", tags=tags
                )
                self.run_id = created.info.run_id
                params = [Param(k, limit(text(v), _param_limit())) for k, v in params_of(run)]
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
            for key, value in numbers(record).items()
        ]
        for i in range(0, len(metrics), 1000):  # MLflow takes 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if self.failed:
            return
        try:
            self._metrics([(step, metrics)])
        except Exception as exc:
            self.failed = warn(self.name, exc)

    def end(self, summary: dict[str, Any] | None) -> None:
        from mlflow.entities import RunTag

        status = "KILLED"
        try:
            if summary is not None:
                status = "FINISHED" if summary.get("status") == "ok" else "FAILED"
                if not self.failed:
                    final = {k: summary[k] for k in SUMMARY_METRICS if is_number(summary.get(k))}
                    self._metrics([(int(summary.get("steps") or 0), final)])
                    tags = {"status": str(summary.get("status"))}
                    if summary.get("error"):
                        tags["error"] = limit(str(summary["error"]), 8000)
                    self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        except Exception as exc:
            self.failed = warn(self.name, exc)
        finally:
            try:
                self.client.set_terminated(self.run_id, status)
            except Exception as exc:
                warn(self.name, exc)


def params_of(run: RunInfo) -> Iterator[tuple[str, Any]]:
    """The flattened resolved config, less `overrides` (a tag: its values are in the config)."""
    return flatten({k: v for k, v in run.config.items() if k != "overrides"})


def _param_limit() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        return int(MAX_PARAM_VAL_LENGTH)
    except (ImportError, AttributeError, TypeError, ValueError):
        return 500  # the limit of old MLflow versions: safe everywhere
