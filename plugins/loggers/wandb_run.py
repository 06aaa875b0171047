"""Weights & Biases: ``ABLATE_WANDB=PROJECT`` gives each toolkit run one W&B run in that project.

The W&B run is named ``<variant>/seed-<n>``, grouped by experiment (``group``) and variant
(``job_type``), tagged with the experiment, the variant and ``seed-<n>``, and its config is the
resolved config (nested: W&B shows ``model.norm.name``, ``train.lr``, ...). Each evaluation is one
``run.log(metrics, step=step)`` on the run's own Run object, never the global ``wandb.log``:
runs may train in several threads of one process, each with its own W&B run
(``reinit="create_new"``). At the end the W&B summary gets the final metrics (``val_loss``,
``tokens_per_s``, ``mfu``, ``params``, ...), ``status`` and any ``error``, and the run finishes
with exit code 0 (``ok``) or 1 (failed, diverged, or closed without a summary). W&B's own
variables apply as usual, read by W&B once per process: ``WANDB_MODE=offline`` (nothing touches
the network; ``wandb sync`` uploads later), ``WANDB_DIR``, ``WANDB_ENTITY``, ``WANDB_API_KEY``...
W&B refuses tags and job types over 64 characters and names over 128: longer ones are cut
(``...``); the config keeps the full variant. Needs the ``wandb`` extra.

Resume. A resumed toolkit run continues its W&B run (same id, ``resume="allow"``) and logs only
the evaluations W&B does not have; when the W&B run is new, the run's earlier evaluations are
replayed first. The id is stored, not derived: ``wandb-run.json`` in the run folder holds the W&B
run id, the config hash, a digest of the run's first evaluation and the step of the last
evaluation W&B was given, rewritten after each. W&B cannot be asked instead (offline there is no
server), and an id derived from the folder and config would be the same for the next fresh run
of that folder, which must get a new W&B run. The file is trusted only when its config hash and
first evaluation are this run's: a resume keeps the metrics.jsonl lines before its step, while a
fresh run starts metrics.jsonl over but leaves other files, so a file left by an earlier fresh
run (before one that ran without ABLATE_WANDB) is told apart by its first evaluation. Online, an
id W&B does not know (the earlier attempt was offline and not synced) starts a new W&B run under
that id, with every evaluation replayed. The file is not one of summary.json's ``digests``
(checkpoint.pt and metrics.jsonl), so verification and the results table ignore it; ``--rerun``
and ``--restart`` delete it with the run folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugins.loggers.shared import FINAL_METRICS, is_number, limit, numbers, read_history, warn
from toolkit.errors import PluginError, one_line
from toolkit.files import read_json, to_json, write_json

if TYPE_CHECKING:
    from toolkit.api.contracts import RunInfo

WANDB_ENV = "ABLATE_WANDB"
STATE_FILE = "wandb-run.json"  # in the run folder: which W&B run this run logs to
TAG_LIMIT, NAME_LIMIT = 64, 128  # W&B's limits: tags and job_type; name and group


def require_wandb() -> None:
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise PluginError(
            f"{WANDB_ENV} is set but the wandb package is not installed; "
            f'pip install "gpt-ablate[wandb]" (or unset {WANDB_ENV})'
        ) from None


class WandbLogger:
    """One W&B run per toolkit run, through its own Run object."""

    name = WANDB_ENV

    def __init__(self, run: RunInfo, project: str, history: list[dict[str, Any]]) -> None:
        import wandb

        self.failed = False
        self.folder = Path(run.folder)
        config_hash = (read_json(self.folder / "config.json") or {}).get("config_hash")
        earlier = _earlier(read_json(self.folder / STATE_FILE), config_hash, history)
        tags = (run.experiment, run.variant, f"seed-{run.seed}")
        try:
            self.run = wandb.init(
                project=project,
                id=earlier["run_id"] if earlier else None,
                resume="allow" if earlier else None,
                reinit="create_new",  # other threads' runs stay open, each its own
                name=limit(f"{run.variant}/seed-{run.seed}", NAME_LIMIT),
                group=limit(run.experiment, NAME_LIMIT),
                job_type=limit(run.variant, TAG_LIMIT),
                tags=[limit(tag, TAG_LIMIT) for tag in tags if tag],
                config=run.config,
            )
        except Exception as exc:
            hint = f"; delete {self.folder / STATE_FILE} to start a new W&B run" if earlier else ""
            raise PluginError(
                f"{WANDB_ENV}={project}: cannot start a W&B run ({one_line(exc, 300)}){hint}"
            ) from None
        # W&B has the earlier evaluations if it continued the run; offline, each attempt
        # writes its own file and `wandb sync` joins them by id.
        continued = earlier is not None and (self.run.resumed or self.run.offline)
        self.state = {
            "run_id": self.run.id,
            "config_hash": config_hash,
            "first_eval": _fingerprint(history[0]) if history else None,
            "step": earlier["step"] if earlier and continued else None,  # the last W&B has
        }
        self._save()
        for record in history:
            if self.state["step"] is None or record["step"] > self.state["step"]:
                self.log(record["step"], record)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if self.failed:
            return
        try:
            self.run.log(numbers(metrics), step=step)
        except Exception as exc:
            self.failed = warn(self.name, exc)
            return
        self.state["step"] = step
        if self.state["first_eval"] is None:  # a fresh run's first evaluation, as written
            first = read_history(self.folder)[:1]
            self.state["first_eval"] = _fingerprint(first[0] if first else metrics)
        self._save()

    def end(self, summary: dict[str, Any] | None) -> None:
        exit_code = 1  # closed without a summary: the run was interrupted
        try:
            if summary is not None:
                exit_code = 0 if summary.get("status") == "ok" else 1
                if not self.failed:
                    final: dict[str, Any] = {
                        k: summary[k] for k in FINAL_METRICS if is_number(summary.get(k))
                    }
                    final["status"] = str(summary.get("status"))
                    if summary.get("error"):
                        final["error"] = limit(str(summary["error"]), 8000)
                    self.run.summary.update(final)
        except Exception as exc:
            self.failed = warn(self.name, exc)
        finally:
            try:
                self.run.finish(exit_code=exit_code)
            except Exception as exc:
                warn(self.name, exc)

    def _save(self) -> None:
        """Remember the W&B run in the run folder, for a resume (unless W&B is disabled,
        WANDB_MODE=disabled: then there is no run to continue)."""
        if self.run.disabled:
            return
        try:
            write_json(self.folder / STATE_FILE, self.state)
        except OSError as exc:
            warn(self.name, exc)


def _earlier(state: Any, config_hash: Any, history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The state file of an earlier attempt of this very run, or None: it must be of this
    config and have logged this run's first evaluation (else a fresh run came between)."""
    if not (history and config_hash and isinstance(state, dict)):
        return None
    if state.get("config_hash") != config_hash:
        return None
    if state.get("first_eval") != _fingerprint(history[0]):
        return None
    if not isinstance(state.get("run_id"), str) or not isinstance(state.get("step"), int):
        return None
    return state


def _fingerprint(record: dict[str, Any]) -> str:
    """A digest of an evaluation as metrics.jsonl holds it. A run's first one is the same in
    all its attempts and differs in a fresh run of the same folder (elapsed_s, at least)."""
    return hashlib.sha256(to_json(record).encode()).hexdigest()[:16]
