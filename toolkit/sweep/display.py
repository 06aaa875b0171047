"""The sweep's progress display: run i of n, step, losses, ETA.

One run at a time (the local executor): a live bar per run on a terminal, a line per evaluation
otherwise. Several at once (processes, Ray): a line when each run starts, at each of its
evaluations (read from its metrics.jsonl, which the worker writes) and when it ends, plus an
overall bar of finished runs on a terminal. Everything goes to stderr; results go to stdout.

The first evaluation of the sweep that scores the training split worse than the validation
split adds one note saying why that is no bug (`gap_note`), once per sweep.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.data.resolve import holdout_of
from toolkit.sweep.jobs import RunJob
from toolkit.training.resume import resumable_step


@dataclass
class _Active:
    job: RunJob
    started: float | None  # None while only queued (a Ray task waiting for resources)
    # config.json's mtime when the run was queued (None: no file yet). The worker writes it
    # when the run starts: a change means it began. Compared with the file's earlier mtime, not
    # with the clock, whose reading can be later than the file's coarser timestamp.
    config_before: float | None = None
    read: int = 0  # bytes of metrics.jsonl already shown
    in_process: bool = False  # reports through progress(), not through its metrics.jsonl


class SweepDisplay:
    def __init__(self, n_runs: int, enabled: bool = True) -> None:
        self.n, self.enabled = n_runs, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.bar: Any = None  # the current run's bar (one run at a time)
        self.overall: Any = None  # finished runs out of n (several at once)
        self.active: dict[int, _Active] = {}
        self.run_times: list[float] = []
        self.done = 0
        self.several = False  # runs train several at a time
        self.gap_explained = False  # the note on train loss above val loss is shown once

    def _print(self, text: str) -> None:
        if not self.enabled:
            return
        bar = self.overall if self.overall is not None else self.bar
        if bar is not None:  # above the bar, not through it
            bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    # -- called by the runner ----------------------------------------------------------------
    def skip(self, index: int, variant: str, seed: int) -> None:
        self.done += 1
        self._print(f"[{index + 1}/{self.n}] {variant} seed={seed}: already finished, skipped")

    def end(self, job: RunJob, summary: dict[str, Any]) -> None:
        state = self.active.pop(job.index, None)
        if state is not None and state.started is not None:
            self._show_new_evaluations(state)
            self.run_times.append(time.perf_counter() - state.started)
        self.done += 1
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        status = summary.get("status")
        if status == "ok":
            line = f"{job.label}: val_loss {_loss(summary.get('val_loss'))}"
            if summary.get("tokens_per_s"):
                line += f" ({summary['tokens_per_s']:.0f} tokens/s)"
        else:
            line = f"{job.label}: {status}" + (
                f" ({summary['error']})" if summary.get("error") else ""
            )
        self._print(line)
        if self.overall is not None:
            self.overall.update(1)

    def close(self) -> None:
        for bar in (self.bar, self.overall):
            if bar is not None:
                bar.close()
        self.bar = self.overall = None

    # -- called by executors -----------------------------------------------------------------
    def concurrent(self) -> None:
        """Runs will train several at a time (in workers): show the overall bar and lines."""
        self.several = True
        self._ensure_overall()

    def start(self, job: RunJob) -> None:
        """A run starts now (in this process or a worker)."""
        self.active[job.index] = _Active(job, time.perf_counter())
        self._announce(job)

    def queue(self, job: RunJob) -> None:
        """A run is submitted; `poll` notices when it starts (its config.json appears)."""
        self.active[job.index] = _Active(job, None, _mtime(Path(job.folder) / "config.json"))
        self.concurrent()

    def progress(self, job: RunJob) -> Callable[[int, int, float, dict | None], None] | None:
        """The step callback of a run trained in this process."""
        if not self.enabled:
            return None
        state = self.active[job.index]
        state.in_process = True
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(
                total=None,
                desc=job.label,
                unit="step",
                leave=True,
                dynamic_ncols=True,
                file=sys.stderr,
            )

        last_eval: dict[str, str] = {}  # the bar keeps the last evaluation's losses in view

        def step(step: int, total: int, loss: float, metrics: dict[str, float] | None) -> None:
            if self.bar is not None:
                if self.bar.total != total:
                    self.bar.total = total
                self.bar.update(step - self.bar.n)
                if metrics:
                    last_eval["train"] = _loss(metrics["train_loss"], 3)
                    last_eval["val"] = _loss(metrics["val_loss"], 3)
                if metrics or step % 10 == 0:
                    # loss: this step's batch, in training mode; train and val: the evaluation
                    self.bar.set_postfix({"loss": f"{loss:.3f}", **last_eval}, refresh=False)
            elif metrics:
                assert state.started is not None
                elapsed = time.perf_counter() - state.started
                self._print(_eval_line(job, metrics, elapsed / step * (total - step), total))
            if metrics:
                self._explain_gap(job, metrics)

        return step

    def poll(self) -> None:
        """Show what workers did since the last call: runs that started, new evaluations."""
        if not self.enabled:
            return
        for state in list(self.active.values()):
            if state.started is None:
                now = _mtime(Path(state.job.folder) / "config.json")
                if now is None or now == state.config_before:
                    continue
                state.started = time.perf_counter()
                self._announce(state.job)
            self._show_new_evaluations(state)

    # -- helpers ---------------------------------------------------------------------------
    def _announce(self, job: RunJob) -> None:
        step = resumable_step(Path(job.folder), job.run.config_hash())
        note = f"resuming after step {step}" if step else "training"
        parallel = self.several or len(self.active) > 1
        eta = ""
        if self.run_times:
            mean = sum(self.run_times) / len(self.run_times)
            concurrent = max(1, len(self.active))
            eta = f" (sweep ETA {_duration((self.n - self.done) * mean / concurrent)})"
        if self.tty and not parallel:
            if step or eta:  # the run's own bar follows (progress())
                self._print(f"{job.label}: {note}{eta}")
        else:
            self._print(f"{job.label}: {note}{eta}")

    def _ensure_overall(self) -> None:
        if self.overall is None and self.tty:
            from tqdm import tqdm

            self.overall = tqdm(
                total=self.n,
                initial=self.done,
                desc="runs",
                unit="run",
                dynamic_ncols=True,
                file=sys.stderr,
            )

    def _show_new_evaluations(self, state: _Active) -> None:
        """Print the evaluation lines a worker appended to its metrics.jsonl since last time."""
        if state.in_process or state.started is None:
            return
        path = Path(state.job.folder) / "metrics.jsonl"
        try:
            with path.open("rb") as f:
                f.seek(state.read)
                chunk = f.read()
        except OSError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        state.read += len(complete)
        for line in complete.decode("utf-8", "replace").splitlines():
            try:
                metrics = json.loads(line)
            except ValueError:
                continue
            self._print(_eval_line(state.job, metrics, None))
            self._explain_gap(state.job, metrics)

    def _explain_gap(self, job: RunJob, metrics: dict[str, Any]) -> None:
        """The first time in the sweep an evaluation shows train loss above val loss, say why."""
        train, val = metrics.get("train_loss"), metrics.get("val_loss")
        if self.gap_explained or not _finite(train) or not _finite(val) or train <= val:
            return
        self.gap_explained = True
        self._print(gap_note(job))


def gap_note(job: RunJob) -> str:
    """Why train loss above val loss is no bug, in one line: both are scored alike (evaluation
    mode, fixed windows: toolkit.training.loop.evaluate_and_save), on different text."""
    data, train = job.run.data, job.run.train
    windows = train.eval_batches * train.batch_size
    return (
        f"note: train loss above val loss is no bug: both are scored the same way (evaluation "
        f"mode, no dropout, up to {windows} fixed windows per split), but validation is "
        f"{holdout_of(data).describe()}, a different text that can simply "
        f"be easier, and a sample of windows is noisy (more: train.eval_batches). Overfitting "
        f"shows as val above train."
    )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _eval_line(
    job: RunJob, metrics: dict[str, Any], eta: float | None = None, total: int | None = None
) -> str:
    step = f"{metrics['step']}/{total}" if total else str(metrics["step"])
    line = (
        f"{job.label} step {step} train {_loss(metrics['train_loss'])} "
        f"val {_loss(metrics['val_loss'])}"
    )
    return line + (f" (run ETA {_duration(eta)})" if eta is not None else "")


def _loss(value: float | None, digits: int = 4) -> str:
    """A loss as shown: None is how a NaN comes back from JSON (toolkit.files.to_json)."""
    return "nan" if value is None else f"{value:.{digits}f}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _mtime(path: Path) -> float | None:
    """The file's modification time, or None when it cannot be read (not written yet)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return None
