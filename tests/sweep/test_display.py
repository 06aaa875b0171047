"""The sweep's progress display: train loss above val loss gets one note per sweep, whether
the runs train in this process (a line per evaluation, or a bar) or in workers (read from their
metrics.jsonl)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from toolkit.spec.parse import parse_spec
from toolkit.sweep.display import SweepDisplay
from toolkit.sweep.runner import make_jobs

NOTE = "note: train loss above val loss is no bug"


@pytest.fixture
def jobs(tiny_doc, plugins, tmp_path: Path):
    """Two runs (seeds 0 and 1) of the tiny spec, as the runner hands them to an executor."""
    tiny_doc["seeds"] = [0, 1]
    spec = parse_spec(tiny_doc, plugins=plugins)
    return make_jobs(spec, tmp_path, range(len(spec.runs)))


def evaluation(step: int, train: float | None, val: float | None) -> dict:
    return {"step": step, "train_loss": train, "val_loss": val}


def train_in_process(display: SweepDisplay, job, evaluations: list[dict], total: int = 6) -> None:
    """What the local executor and the training loop call: start, a step callback per step
    (metrics at the evaluation steps), end."""
    display.start(job)
    step = display.progress(job)
    assert step is not None
    by_step = {e["step"]: e for e in evaluations}
    for i in range(1, total + 1):
        step(i, total, 2.5, by_step.get(i))
    display.end(job, {"status": "ok", "val_loss": evaluations[-1]["val_loss"]})


def test_train_above_val_is_explained_once_per_sweep(jobs, capsys):
    display = SweepDisplay(len(jobs))
    for job in jobs:  # every evaluation of both runs shows train above val
        train_in_process(display, job, [evaluation(3, 2.40, 2.35), evaluation(6, 2.30, 2.25)])
    display.close()
    err = capsys.readouterr().err
    assert err.count(NOTE) == 1
    lines = err.splitlines()
    note = next(i for i, line in enumerate(lines) if NOTE in line)
    # Right under the first evaluation line that shows it, and one line.
    assert lines[note - 1].startswith(f"{jobs[0].label} step 3/6 train 2.4000 val 2.3500")
    assert "evaluation mode" in lines[note] and "up to 8 fixed windows" in lines[note]
    assert "the last 10% of the characters" in lines[note] and "no dropout" in lines[note]


def test_the_note_waits_for_an_evaluation_with_train_above_val(jobs, capsys):
    display = SweepDisplay(len(jobs))
    train_in_process(display, jobs[0], [evaluation(3, 2.40, 2.45), evaluation(6, 2.30, 2.30)])
    assert NOTE not in capsys.readouterr().err  # below or equal: nothing to explain
    train_in_process(display, jobs[1], [evaluation(3, None, 2.45), evaluation(6, 2.31, 2.30)])
    err = capsys.readouterr().err
    assert err.count(NOTE) == 1  # a NaN (None in JSON) is no comparison; step 6 is
    assert err.index(f"{jobs[1].label} step 6/6") < err.index(NOTE)


def test_quiet_prints_no_note(jobs, capsys):
    display = SweepDisplay(len(jobs), enabled=False)
    display.start(jobs[0])
    assert display.progress(jobs[0]) is None
    display.end(jobs[0], {"status": "ok", "val_loss": 2.0})
    assert capsys.readouterr().err == ""


def test_the_note_for_runs_in_workers_comes_from_their_metrics(jobs, capsys):
    display = SweepDisplay(len(jobs))
    for job in jobs:
        display.queue(job)
    for job in jobs:
        folder = Path(job.folder)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        lines = [evaluation(3, 2.40, 2.35), evaluation(6, 2.30, 2.25)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    display.poll()
    display.poll()
    for job in jobs:
        display.end(job, {"status": "ok", "val_loss": 2.25})
    display.close()
    err = capsys.readouterr().err
    assert err.count("step 6 train 2.3000 val 2.2500") == 2 and err.count(NOTE) == 1


def test_the_bar_keeps_the_evaluation_and_writes_the_note_above_it(jobs, capsys):
    display = SweepDisplay(len(jobs))
    display.tty = True  # as on a terminal: a live bar per run
    display.start(jobs[0])
    step = display.progress(jobs[0])
    assert step is not None
    step(1, 30, 2.6, None)
    step(3, 30, 2.5, evaluation(3, 2.40, 2.35))
    step(20, 30, 2.4, None)  # a later step's postfix still shows the evaluation
    postfix = display.bar.postfix
    assert "loss=2.400" in postfix and "train=2.400" in postfix and "val=2.350" in postfix
    display.end(jobs[0], {"status": "ok", "val_loss": math.nan})
    display.close()
    assert capsys.readouterr().err.count(NOTE) == 1


def test_a_run_starts_when_its_config_is_written_not_when_one_is_left_over(jobs, capsys):
    """A config.json left by an earlier run is no start; the worker's rewrite is, even when the
    filesystem stamps it earlier than the clock read when the run was queued."""
    job = jobs[0]
    folder = Path(job.folder)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    os.utime(folder / "config.json", (1_000, 1_000))  # from an interrupted run long ago
    display = SweepDisplay(len(jobs))
    display.queue(job)
    display.poll()
    assert display.active[job.index].started is None
    (folder / "config.json").write_text("{}")
    os.utime(folder / "config.json", (2_000, 2_000))  # stamped before the queue's clock
    display.poll()
    assert display.active[job.index].started is not None
    display.end(job, {"status": "ok", "val_loss": 2.0})
    display.close()
