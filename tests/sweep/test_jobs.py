"""What a sweep's process hands its workers: the CPU peaks each run needs, measured once."""

from __future__ import annotations

import copy

import torch

from tests.conftest import TINY
from toolkit.spec.parse import parse_spec
from toolkit.sweep.jobs import RunJob, with_peaks
from toolkit.training import throughput


def job(index: int, threads: int | None, **train) -> RunJob:
    doc = copy.deepcopy(TINY)
    doc["train"].update(train)
    run = parse_spec(doc).runs[0]
    return RunJob(index, 5, run, f"/tmp/run-{index}", {}, threads=threads)


def test_each_job_gets_the_peaks_its_precision_needs_measured_once_per_thread_count(
    monkeypatch,
):
    measured = []

    def measure(device, precision, size=None):
        measured.append((precision, torch.get_num_threads()))
        return 1e11 if precision == "fp32" else 4e11

    monkeypatch.setattr(throughput, "_PEAKS", {})
    monkeypatch.setattr(throughput, "matmul_flops", measure)
    jobs = [
        job(0, 1, precision="auto"),
        job(1, 1, precision="fp32"),
        job(2, 2, precision="bf16-mixed"),
        job(3, 1, precision="fp32", peak_tflops=1.0),  # a known figure: nothing to measure
        job(4, None, precision="fp32"),  # threads not set: the executor did not plan it
    ]
    got = with_peaks(jobs)
    assert [g.peaks for g in got] == [
        (("fp32", 1, 1e11), ("bf16-mixed", 1, 4e11)),
        (("fp32", 1, 1e11),),
        (("bf16-mixed", 2, 4e11),),
        (),
        (),
    ]
    assert sorted(measured) == [("bf16-mixed", 1), ("bf16-mixed", 2), ("fp32", 1)]
    assert [g.run for g in got] == [j.run for j in jobs]  # nothing else changed


def test_runs_on_a_gpu_measure_their_own(monkeypatch):
    monkeypatch.setattr(throughput, "matmul_flops", lambda *a, **k: 1 / 0)
    (got,) = with_peaks([job(0, 1, device="cuda", precision="auto")])
    assert got.peaks == ()
