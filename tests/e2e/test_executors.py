"""Executors: the same spec gives the same losses trained here, in worker processes and on a real
local Ray instance; failures and dead workers are reported like local failures; resume works on
every executor; bad choices are one-line errors."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import TINY, interrupting_plugins, write_spec
from toolkit.api.hookspecs import hookimpl
from toolkit.api.manager import Plugins
from toolkit.cli import main
from toolkit.errors import SpecError, ToolkitError
from toolkit.spec.parse import parse_spec
from toolkit.sweep.preflight import check_distributed
from toolkit.sweep.runner import run

ROOT = Path(__file__).resolve().parents[2]
LOSSES = ["train_loss", "val_loss", "val_perplexity", "val_bpb"]


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray instance with 2 CPUs, shared by this module's tests."""
    if os.environ.get("ABLATE_TEST_REQUIRE_RAY"):  # CI: a missing ray must fail, not skip
        import ray
    else:
        ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    ray.shutdown()


def sweep_doc(threads: int | None = 1, seeds: tuple[int, ...] = (0, 1)) -> dict:
    doc = copy.deepcopy(TINY)
    doc["seeds"] = list(seeds)
    doc["train"].update(max_steps=6, eval_interval=3)
    if threads:
        doc["train"]["threads"] = threads
    doc["grid"] = {"model.norm": ["layernorm", "rmsnorm"]}
    return doc


def all_metrics(out: Path) -> dict[str, list[dict]]:
    """Every run's metrics.jsonl, without the wall-clock field."""
    return {
        str(path.parent.relative_to(out)): [
            {k: v for k, v in json.loads(line).items() if k not in ("elapsed_s", "train_s")}
            for line in path.read_text().splitlines()
        ]
        for path in sorted(out.glob("*/seed-*/metrics.jsonl"))
    }


def test_same_spec_same_losses_on_local_processes_and_ray(tmp_path, plugins, ray_cluster):
    spec = parse_spec(sweep_doc(threads=1))
    local = run(spec, tmp_path / "local", plugins=plugins, progress=False)
    processes = run(
        spec,
        tmp_path / "processes",
        plugins=plugins,
        progress=False,
        executor={"name": "processes", "jobs": 2},
    )
    on_ray = run(spec, tmp_path / "ray", plugins=plugins, progress=False, executor="ray")

    assert len(local) == 4 and (local["status"] == "ok").all()
    expected = all_metrics(tmp_path / "local")
    assert len(expected) == 4 and all(len(lines) == 2 for lines in expected.values())
    for name, table in (("processes", processes), ("ray", on_ray)):
        # Bit for bit: same seeds, same data order, same thread count.
        assert all_metrics(tmp_path / name) == expected, name
        pd.testing.assert_frame_equal(table[["variant", "seed", *LOSSES]], local[
            ["variant", "seed", *LOSSES]
        ])  # fmt: skip
        assert (table["status"] == "ok").all()
        for column in ("config_hash", "params", "baseline", "model.norm"):
            assert table[column].tolist() == local[column].tolist()
    # Every run folder is complete wherever it trained.
    for folder in (tmp_path / "ray").glob("*/seed-*"):
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "env.json", "summary.json", "sample.txt", "checkpoint.pt"} <= names


def test_processes_share_the_cores_and_agree_with_local_to_float_order(tmp_path, plugins):
    spec = parse_spec(sweep_doc(threads=None, seeds=(0,)))
    local = run(spec, tmp_path / "local", plugins=plugins, progress=False)
    shared = run(
        spec, tmp_path / "p", plugins=plugins, progress=False, executor={"name": "processes"}
    )
    # Each worker got cores // jobs threads (1 here), this process torch's default: only the
    # order of float sums differs.
    for column in LOSSES:
        assert shared[column].tolist() == pytest.approx(local[column].tolist(), rel=1e-5)
    env = json.loads((tmp_path / "p/norm=layernorm/seed-0/env.json").read_text())
    assert env["torch_threads"] == max(1, len(os.sched_getaffinity(0)) // 2)


def failing_doc() -> dict:
    doc = sweep_doc(seeds=(0,))
    doc["plugins"] = ["tests.executor_plugins"]
    doc["grid"] = {"model.activation": ["gelu", "raising"]}
    return doc


@pytest.mark.parametrize("executor", ["local", "processes", "ray"])
def test_a_failing_run_is_reported_the_same_on_every_executor(executor, tmp_path, request):
    if executor == "ray":
        request.getfixturevalue("ray_cluster")
    plugins = Plugins(autoload=False)
    table = run(
        parse_spec(failing_doc(), plugins=plugins),
        tmp_path,
        plugins=plugins,
        progress=False,
        executor=executor,
    )
    assert table["status"].tolist() == ["ok", "failed"]
    # The first step failed: the run probed its model and named the component at fault.
    assert (
        table["error"]
        .iloc[1]
        .startswith("activation 'raising' (plugin 'tests.executor_plugins') raised in forward")
    )
    assert table["error"].iloc[1].endswith("RuntimeError: deliberate failure in forward")
    trace = (tmp_path / "activation=raising/seed-0/error.txt").read_text()
    assert "deliberate failure in forward" in trace and "Traceback" in trace


def test_a_worker_that_dies_is_a_failed_run_and_the_sweep_goes_on(tmp_path, ray_cluster):
    doc = failing_doc()
    doc["grid"] = {"model.activation": ["dying", "gelu"]}
    for executor, how in (
        ("processes", "was killed by SIGKILL (out of memory?)"),
        ("ray", "failed in Ray"),
    ):
        plugins = Plugins(autoload=False)
        out = tmp_path / executor
        table = run(
            parse_spec(doc, plugins=plugins), out, plugins=plugins, progress=False,
            executor=executor,
        )  # fmt: skip
        assert table["status"].tolist() == ["failed", "ok"], executor
        assert how in table["error"].iloc[0], table["error"].iloc[0]
        assert "run the same command to retry it" in table["error"].iloc[0]
        assert how in (out / "activation=dying/seed-0/error.txt").read_text()


def test_an_interrupted_sweep_resumes_on_another_executor(tmp_path, plugins, ray_cluster):
    doc = sweep_doc(threads=1, seeds=(0,))
    doc["model"]["drop_rate"] = 0.2  # the RNG state must come back too
    doc["train"].update(max_steps=9)
    spec = parse_spec(doc)
    whole = run(spec, tmp_path / "whole", plugins=plugins, progress=False)

    for executor in ("processes", "ray"):
        out = tmp_path / executor
        with pytest.raises(KeyboardInterrupt):
            run(spec, out, plugins=interrupting_plugins(6), progress=False)
        assert (out / "norm=layernorm/seed-0/resume.pt").exists()
        resumed = run(spec, out, plugins=plugins, progress=False, executor=executor)
        assert all_metrics(out) == all_metrics(tmp_path / "whole"), executor
        assert resumed["val_loss"].tolist() == whole["val_loss"].tolist()
        summary = json.loads((out / "norm=layernorm/seed-0/summary.json").read_text())
        assert summary["resumed_at_step"] == 6


def test_the_cli_runs_a_sweep_in_processes_and_continues_it(tmp_path):
    spec = write_spec(tmp_path / "tiny.toml", _toml(sweep_doc(threads=1, seeds=(0,))))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "toolkit", "run", str(spec), "--out", str(tmp_path / "o")]
    first = subprocess.run(
        [*command, "--executor", "processes", "--jobs", "2"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "rmsnorm" in first.stdout and "results:" in first.stdout
    assert first.stderr.count(": val_loss ") == 2  # each run's end is shown once
    # Evaluations are read from the workers' metrics.jsonl, each shown once.
    assert first.stderr.count("step 6 train") == 2 and first.stderr.count("step 3 train") == 2
    local = subprocess.run(
        [*command[:-1], str(tmp_path / "local")],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert local.returncode == 0, local.stderr
    assert local.stderr.count("step 3/6 train") == 2 and local.stderr.count("step 3") == 2
    again = subprocess.run(
        [*command, "--executor", "processes"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 0 and again.stderr.count("already finished, skipped") == 2


def test_the_cli_starts_its_own_ray_instance(tmp_path):
    if not os.environ.get("ABLATE_TEST_REQUIRE_RAY"):
        pytest.importorskip("ray", reason="the ray extra is not installed")
    doc = sweep_doc(threads=1, seeds=(0,))
    doc["plugins"] = ["tests.executor_plugins"]
    spec = write_spec(tmp_path / "tiny.toml", _toml(doc))
    result = subprocess.run(
        [sys.executable, "-m", "toolkit", "run", str(spec), "--out", str(tmp_path / "o"),
         "--executor", "ray", "--quiet"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "o/results.csv")
    assert table["status"].tolist() == ["ok", "ok"]


def test_ray_options_are_checked(plugins, tmp_path):
    if not os.environ.get("ABLATE_TEST_REQUIRE_RAY"):
        pytest.importorskip("ray", reason="the ray extra is not installed")
    spec = parse_spec(sweep_doc())
    for options in ({"num_cpus": 0}, {"num_cpus": 2, "address": "auto"}):
        with pytest.raises(ToolkitError, match="num_cpus sizes a local Ray instance"):
            run(spec, tmp_path, plugins=plugins, executor={"name": "ray", **options})


def test_a_missing_ray_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    spec = write_spec(tmp_path / "tiny.toml", _toml(sweep_doc()))
    code = main(["run", str(spec), "--out", str(tmp_path / "o"), "--executor", "ray"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        "ablate: error: the ray executor needs Ray, which is not installed: "
        "pip install 'gpt-ablate[ray]' (or pip install ray)\n"
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("executor", "expected"),
    [
        (
            ["--executor", "ray", "--address", "127.0.0.1:1"],
            "no Ray cluster answers at 127.0.0.1:1 (Connection refused); check the address",
        ),
        (
            ["--executor", "ray", "--set", "train.threads=64"],
            "asks for 64 CPUs (train.threads) but a local Ray instance would have",
        ),
    ],
    ids=["unreachable-address", "too-many-cpus"],
)
def test_a_ray_sweep_that_cannot_start_writes_nothing(executor, expected, tmp_path):
    if not os.environ.get("ABLATE_TEST_REQUIRE_RAY"):
        pytest.importorskip("ray", reason="the ray extra is not installed")
    spec = write_spec(tmp_path / "tiny.toml", _toml(sweep_doc()))
    # A fresh process: this module's own Ray instance would be used, whatever --address says.
    result = subprocess.run(
        [sys.executable, "-m", "toolkit", "run", str(spec), "--out", str(tmp_path / "o"),
         *executor],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    errors = [line for line in result.stderr.splitlines() if line.startswith("ablate: ")]
    assert result.returncode == 2 and len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()  # not even the output folder


def test_a_plugin_object_cannot_travel_to_workers(tmp_path):
    plugins = Plugins(autoload=False)

    class Quiet:
        @hookimpl
        def on_eval(self, run, step, metrics):
            pass

    plugins.add(Quiet(), name="quiet")
    with pytest.raises(ToolkitError, match=r"plugin 'quiet' was added as a Python object"):
        run(parse_spec(sweep_doc()), tmp_path, plugins=plugins, executor="processes")
    assert not list(tmp_path.glob("*/seed-*"))


def test_a_run_no_ray_node_can_hold_fails_before_training(tmp_path, plugins, ray_cluster):
    doc = sweep_doc(threads=8)
    with pytest.raises(ToolkitError, match=r"asks for 8 CPUs \(train.threads\) but the largest"):
        run(parse_spec(doc), tmp_path, plugins=plugins, executor="ray")
    doc = sweep_doc()
    doc["train"]["device"] = "cuda"
    with pytest.raises(ToolkitError, match=r"asks for a GPU .* but no Ray node has one"):
        run(parse_spec(doc), tmp_path, plugins=plugins, executor="ray")
    assert not list(tmp_path.glob("*/seed-*"))
    assert ray_cluster.is_initialized()  # the caller's own instance is left running


def test_torchrun_takes_only_the_local_executor_and_divisible_batches():
    spec = parse_spec(sweep_doc())
    check_distributed(spec, 2, "local")
    with pytest.raises(SpecError, match="leave out --executor"):
        check_distributed(spec, 2, "ray")
    with pytest.raises(SpecError, match=r"batch_size \(4\) must be a multiple .* \(3\)"):
        check_distributed(spec, 3, "local")


def test_executor_objects_and_bad_values(tmp_path, plugins):
    spec = parse_spec(sweep_doc(seeds=(0,)))
    with pytest.raises(SpecError, match="executor must be a name"):
        run(spec, tmp_path, plugins=plugins, executor=3)
    with pytest.raises(ToolkitError, match="unknown executor 'slurm'"):
        run(spec, tmp_path, plugins=plugins, executor="slurm")

    class Reversed:
        """A user's executor object: trains the jobs in reverse order, in this process."""

        def prepare(self, jobs, plugins):
            self.n = len(jobs)

        def execute(self, jobs, sweep):
            from toolkit.sweep.jobs import run_job

            for job in reversed(jobs):
                yield job, run_job(job, sweep)

    table = run(spec, tmp_path / "r", plugins=plugins, progress=False, executor=Reversed())
    assert table["status"].tolist() == ["ok", "ok"]

    class Forgetful(Reversed):
        def execute(self, jobs, sweep):
            yield from list(super().execute(jobs, sweep))[:1]

    with pytest.raises(ToolkitError, match=r"ended without 1 run\(s\) \(norm=layernorm seed=0"):
        run(spec, tmp_path / "f", plugins=plugins, progress=False, executor=Forgetful())

    class Stuttering(Reversed):
        def execute(self, jobs, sweep):
            for job, summary in super().execute(jobs, sweep):
                yield job, summary
                yield job, summary

    with pytest.raises(ToolkitError, match=r"returned \[2/2\] norm=rmsnorm seed=0 twice"):
        run(spec, tmp_path / "s", plugins=plugins, progress=False, executor=Stuttering())


def _toml(doc: dict) -> str:
    """A spec document as TOML (the few shapes these tests use)."""

    def value(v):
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for section, body in doc.items():
        if isinstance(body, dict):
            lines.append(f"[{section}]")
            lines += [f"{json.dumps(k)} = {value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("executor", ["processes", "ray"])
def test_workers_use_the_peaks_this_process_measured(executor, tmp_path, plugins, request):
    """The sweep resolves precision = "auto" once and MFU has one reference: peaks no CPU here
    would measure (fp32 faster than bf16) reach every worker from this process."""
    from toolkit.training import throughput

    if executor == "ray":
        request.getfixturevalue("ray_cluster")
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setattr(throughput, "_PEAKS", {})
    throughput.adopt_peaks((("fp32", 1, 5e11), ("bf16-mixed", 1, 1e11)))
    doc = sweep_doc(threads=1, seeds=(0,))
    doc["train"]["precision"] = "auto"
    table = run(parse_spec(doc), tmp_path, plugins=plugins, progress=False, executor=executor)
    assert (table["status"] == "ok").all()
    assert table["precision"].tolist() == ["fp32", "fp32"]
    assert table["peak_flops"].tolist() == [5e11, 5e11]
    assert table["mfu"].tolist() == pytest.approx(
        (table["flops_per_token"] * table["tokens_per_s"] / 5e11).tolist()
    )
