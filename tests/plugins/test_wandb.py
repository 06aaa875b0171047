"""The W&B logger, for real and offline: sweeps log with WANDB_MODE=offline into a temporary
WANDB_DIR, and the tests read back the .wandb files W&B wrote, record by record, with W&B's own
protobuf schema. Nothing touches the network or the developer's W&B settings."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from plugins import loggers
from plugins.loggers.wandb_run import STATE_FILE
from tests.plugins.test_loggers import ROOT, VARIANTS, logging_plugins, records, summary_of, sweep
from toolkit import hookimpl
from toolkit.api.contracts import RunInfo
from toolkit.errors import PluginError
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """W&B offline, writing under tmp_path/wandb-dir only; the developer's own settings
    (WANDB_API_KEY, WANDB_PROJECT, ABLATE_WANDB, ...) never leak in."""
    for name in list(os.environ):
        if name.startswith("WANDB_"):
            monkeypatch.delenv(name)
    for name in (loggers.WANDB_ENV, loggers.TENSORBOARD_ENV, loggers.MLFLOW_ENV):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "wandb-dir"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(root))
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(root / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")  # no crash reports (Sentry)
    monkeypatch.setenv("WANDB_CONSOLE", "off")  # no console capture: pytest captures it
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB__DISABLE_STATS", "true")  # no system-metrics sampler
    monkeypatch.chdir(tmp_path)  # anything W&B wrote outside WANDB_DIR would show here
    # W&B reads its variables once per process, when it sets up: tear down around each test.
    _teardown()
    yield root
    loggers.close_all()
    _teardown()


def _teardown() -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None:
        wandb.teardown()


# -- reading what W&B wrote ------------------------------------------------------------------
BLOCK, HEADER = 32768, 7  # LevelDB's log format, which .wandb files use
FULL, LAST = 1, 4


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of a .wandb file, each a W&B protobuf Record. The file is a 7-byte header
    (":W&B", magic, version), then 32 KiB blocks of chunks (CRC-32 of type and data, length,
    type: full, first, middle or last), a block's tail too short for a chunk being padding."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a .wandb file"
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        if BLOCK - position % BLOCK < HEADER:
            position += BLOCK - position % BLOCK
            continue
        checksum, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        if kind == 0:  # zeros: the end of what was written
            break
        chunk = data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == checksum, f"{path}: bad chunk"
        pending += chunk
        if kind in (FULL, LAST):
            record = Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _key(item: Any) -> str:
    return item.key or ".".join(item.nested_key)


@dataclass
class LoggedRun:
    """One .wandb file: one attempt of a W&B run."""

    path: Path
    id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False
    started: float = 0.0
    history: dict[int, dict[str, Any]] = field(default_factory=dict)  # step -> metrics
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None  # None: the file has no exit record (not finished)


def read_run(path: Path) -> LoggedRun:
    logged = LoggedRun(path)
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            logged.id, logged.name, logged.group = run.run_id, run.display_name, run.run_group
            logged.job_type, logged.tags, logged.resumed = run.job_type, list(run.tags), run.resume
            logged.started = run.start_time.seconds + run.start_time.nanos / 1e9
            for item in run.config.update:
                logged.config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                logged.config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            row = {_key(i): json.loads(i.value_json) for i in record.history.item}
            step = row.pop("_step")
            assert step not in logged.history, f"{path}: step {step} logged twice"
            logged.history[step] = {k: v for k, v in row.items() if not k.startswith("_")}
        elif kind == "summary":
            for item in record.summary.update:
                logged.summary[_key(item)] = json.loads(item.value_json)
        elif kind == "exit":
            logged.exit_code = record.exit.exit_code
    logged.config.pop("_wandb", None)
    return logged


def logged_runs(root: Path) -> list[LoggedRun]:
    """Every W&B run attempt under WANDB_DIR, in the order they started. W&B's service writes
    the files through buffers, closed when it stops: it is stopped first (run.finish() returns
    before; a later wandb.init starts it again)."""
    _teardown()
    found = [read_run(p) for p in root.glob("wandb/offline-run-*/run-*.wandb")]
    return sorted(found, key=lambda r: r.started)


def expected_config(folder: Path) -> dict[str, Any]:
    """The resolved config, as the run folder's config.json holds it (less what it adds)."""
    config = json.loads((folder / "config.json").read_text())
    added = ("model_resolved", "config_hash", "data_key")
    return {k: v for k, v in config.items() if k not in added}


def assert_history(logged: dict[int, dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert sorted(logged) == [r["step"] for r in expected]
    for record in expected:
        numbers = {k: v for k, v in record.items() if k != "step" and v is not None}
        assert logged[record["step"]] == pytest.approx(numbers, rel=1e-12)


# -- the tests -------------------------------------------------------------------------------
@pytest.mark.slow
def test_each_run_is_one_wandb_run_with_its_config_metrics_summary_and_exit_code(
    tmp_path, tiny_doc, monkeypatch, offline_wandb
):
    """One sweep, two runs: rmsnorm finishes (exit code 0), layernorm raises in an observer at
    its second evaluation (failed, closed when the next run starts: exit code 1)."""
    pytest.importorskip("wandb")
    monkeypatch.setenv(loggers.WANDB_ENV, "ablations")

    class Explode:
        @hookimpl
        def on_eval(self, run, step, metrics):
            if run.variant == "norm=layernorm" and step == 6:
                raise RuntimeError("boom")

    table = sweep(tiny_doc, tmp_path / "out", Explode())
    assert table["status"].tolist() == ["failed", "ok"]
    assert not loggers._OPEN

    runs = {r.name: r for r in logged_runs(offline_wandb)}
    assert sorted(runs) == [f"{v}/seed-0" for v in VARIANTS]
    assert len({r.id for r in runs.values()}) == 2
    for variant in VARIANTS:
        logged = runs[f"{variant}/seed-0"]
        folder = tmp_path / "out" / variant / "seed-0"
        summary = summary_of(folder)
        assert (logged.group, logged.job_type) == ("tiny", variant)
        assert sorted(logged.tags) == sorted(["tiny", variant, "seed-0"])
        assert logged.config == expected_config(folder)
        assert logged.config["model"]["norm"]["name"] == variant.removeprefix("norm=")
        assert (logged.config["experiment"], logged.config["seed"]) == ("tiny", 0)
        assert not logged.resumed
        # The run folder remembers its W&B run, for a resume.
        state = json.loads((folder / STATE_FILE).read_text())
        assert state["run_id"] == logged.id
        assert logged.summary["status"] == summary["status"]

    ok, failed = runs["norm=rmsnorm/seed-0"], runs["norm=layernorm/seed-0"]
    assert_history(ok.history, records(tmp_path / "out/norm=rmsnorm/seed-0"))
    assert sorted(ok.history) == [3, 6] and ok.exit_code == 0
    summary = summary_of(tmp_path / "out/norm=rmsnorm/seed-0")
    final = ("val_loss", "train_loss", "tokens_per_s", "params", "params_non_embedding", "wall_s")
    assert {k: ok.summary[k] for k in final} == pytest.approx({k: summary[k] for k in final})
    # The failed run's W&B run never saw step 6 (the observer raised first).
    assert_history(failed.history, records(tmp_path / "out/norm=layernorm/seed-0")[:1])
    assert failed.exit_code == 1 and "boom" in failed.summary["error"]
    # W&B wrote nothing outside WANDB_DIR.
    assert sorted(os.listdir(tmp_path)) == ["out", "wandb-dir"]


@pytest.mark.slow
def test_a_resumed_run_continues_its_wandb_run_and_logs_each_evaluation_once(
    tmp_path, tiny_doc, monkeypatch, offline_wandb
):
    pytest.importorskip("wandb")
    monkeypatch.setenv(loggers.WANDB_ENV, "ablations")
    tiny_doc["train"].update(max_steps=9, eval_interval=3)  # one run: base

    class Interrupt:
        @hookimpl
        def on_eval(self, run, step, metrics):
            if step == 6:
                raise KeyboardInterrupt  # as Ctrl-C would, before the logger sees step 6

    def train(*extra: object):
        plugins = logging_plugins(*extra)
        return run(parse_spec(tiny_doc, plugins=plugins), tmp_path / "out", plugins=plugins,
                   progress=False)  # fmt: skip

    with pytest.raises(KeyboardInterrupt):
        train(Interrupt())
    folder = tmp_path / "out/base/seed-0"
    assert [r["step"] for r in records(folder)] == [3, 6]
    assert len(loggers._OPEN) == 1  # still open: closed when the next run starts

    table = train()
    summary = summary_of(folder)
    assert summary["resumed_at_step"] == 6 and table["status"].tolist() == ["ok"]
    first, second = logged_runs(offline_wandb)
    assert first.id == second.id
    state = json.loads((folder / STATE_FILE).read_text())
    assert (state["run_id"], state["config_hash"], state["step"]) == (
        first.id, summary["config_hash"], 9
    )  # fmt: skip
    assert (first.resumed, second.resumed) == (False, True)
    assert (first.exit_code, second.exit_code) == (1, 0)  # interrupted, then finished
    # Step 6 was never given to W&B before the interruption: the resume fills it in.
    assert (sorted(first.history), sorted(second.history)) == ([3], [6, 9])
    assert_history({**first.history, **second.history}, records(folder))
    assert second.summary["status"] == "ok"
    assert second.summary["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-12)


def start(folder: Path, variant: str = "base", first_elapsed: float = 0.5) -> RunInfo:
    """A run started by hand: its folder with config.json and, past step 0, metrics.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"experiment": "direct", "variant": variant, "seed": 1, "train": {"lr": 1e-3}}
    (folder / "config.json").write_text(json.dumps({**config, "config_hash": "abc"}))
    return RunInfo("direct", variant, 1, config, folder, 10, 5)


def metric(step: int, elapsed: float) -> dict[str, Any]:
    return {"step": step, "val_loss": 10.0 / step, "lr": 1e-3, "elapsed_s": elapsed}


@pytest.mark.slow
def test_a_fresh_run_after_one_without_wandb_starts_a_new_wandb_run(
    tmp_path, monkeypatch, offline_wandb
):
    """The state file a fresh run leaves behind is trusted only by its own resumes: a later
    fresh run (logged elsewhere, or not at all) that then resumes gets a W&B run of its own,
    with every evaluation replayed."""
    pytest.importorskip("wandb")
    monkeypatch.setenv(loggers.WANDB_ENV, "ablations")
    folder = tmp_path / "run"
    info = start(folder)
    loggers.on_run_start(info)
    for step in (2, 4):
        record = metric(step, 0.5 * step)
        with (folder / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        loggers.on_eval(info, step, record)
    loggers.on_run_end(info, {"status": "ok", "steps": 4, "val_loss": 2.5, "params": 10})
    earlier = json.loads((folder / STATE_FILE).read_text())
    assert earlier["step"] == 4

    # A fresh run without W&B, interrupted after step 2 (another clock: another record)...
    (folder / "metrics.jsonl").write_text(json.dumps(metric(2, 0.7)) + "\n")
    # ...resumed with W&B: not the earlier W&B run, and step 2 is replayed.
    loggers.on_run_start(info)
    loggers.on_eval(info, 4, metric(4, 1.4))
    loggers.on_run_end(info, {"status": "diverged", "steps": 4, "params": 10, "mfu": None})

    first, second = logged_runs(offline_wandb)
    assert first.id == earlier["run_id"] and second.id != first.id and not second.resumed
    assert sorted(first.history) == sorted(second.history) == [2, 4]
    assert second.history[2]["elapsed_s"] == 0.7
    assert (first.exit_code, second.exit_code) == (0, 1)
    assert second.summary["status"] == "diverged" and "mfu" not in second.summary
    assert second.summary["params"] == 10


UNFINISHED = """
import sys
from pathlib import Path
from plugins import loggers
from toolkit.api.contracts import RunInfo

loggers._register_exit_handler()  # early, as an earlier run with another tracker would have
info = RunInfo("direct", "base", 1, {"seed": 1}, Path(sys.argv[1]), 10, 5)
loggers.on_run_start(info)
loggers.on_eval(info, 2, {"step": 2, "val_loss": 5.0})
raise KeyboardInterrupt  # the process ends without on_run_end
"""


@pytest.mark.slow
def test_a_run_still_open_at_exit_is_finished_as_failed(tmp_path, monkeypatch, offline_wandb):
    pytest.importorskip("wandb")
    monkeypatch.setenv(loggers.WANDB_ENV, "ablations")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", UNFINISHED, str(tmp_path / "run")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode != 0 and "KeyboardInterrupt" in child.stderr, child.stderr
    assert "logging failed" not in child.stderr
    (logged,) = logged_runs(offline_wandb)
    assert logged.history == {2: {"val_loss": 5.0}}
    assert logged.exit_code == 1  # by close_all, before W&B's own exit handler (255 or 0)


@pytest.mark.slow
def test_runs_in_threads_of_one_process_are_independent_wandb_runs(
    tmp_path, monkeypatch, offline_wandb
):
    pytest.importorskip("wandb")
    monkeypatch.setenv(loggers.WANDB_ENV, "ablations")
    both_open = threading.Barrier(2, timeout=60)
    errors: list[BaseException] = []

    def train(variant: str, offset: float) -> None:
        try:
            info = start(tmp_path / variant, variant)
            loggers.on_run_start(info)
            both_open.wait()  # each logs while the other's run is open
            for step in (1, 2, 3):
                loggers.on_eval(info, step, {"step": step, "val_loss": offset + step})
                both_open.wait()
            loggers.on_run_end(info, {"status": "ok", "steps": 3})
        except BaseException as exc:
            errors.append(exc)
            both_open.abort()

    threads = [threading.Thread(target=train, args=(v, o)) for v, o in (("a", 0.0), ("b", 10.0))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and not loggers._OPEN
    runs = {r.name: r for r in logged_runs(offline_wandb)}
    assert sorted(runs) == ["a/seed-1", "b/seed-1"]
    for name, offset in (("a/seed-1", 0.0), ("b/seed-1", 10.0)):
        assert runs[name].history == {s: {"val_loss": offset + s} for s in (1, 2, 3)}
        assert runs[name].exit_code == 0


def test_a_missing_package_is_a_one_line_plugin_error_and_nothing_is_written(
    tmp_path, monkeypatch, offline_wandb
):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now fails: not installed
    info = start(tmp_path / "run")
    loggers.on_run_start(info)  # not asked: nothing imported, nothing written
    loggers.on_eval(info, 1, metric(1, 0.1))
    loggers.on_run_end(info, {"status": "ok", "steps": 1})

    monkeypatch.setenv(loggers.WANDB_ENV, "ablations")
    with pytest.raises(PluginError) as caught:
        loggers.on_run_start(info)
    message = str(caught.value)
    assert 'pip install "gpt-ablate[wandb]"' in message and loggers.WANDB_ENV in message
    assert "\n" not in message
    assert not (tmp_path / "run" / STATE_FILE).exists() and not offline_wandb.exists()
    assert not loggers._OPEN
