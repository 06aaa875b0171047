"""Workers die with their sweep: kill the parent of a `processes` sweep (SIGKILL or SIGTERM) and
no worker goes on training; a rerun then ends with a consistent folder and table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import small_toml, write_spec

from toolkit.cli import main

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

LONG = small_toml(
    "orphans",
    (0, 1),
    train="max_steps = 1000000\neval_interval = 1000000\nthreads = 1",
    sampling="max_new_tokens = 0",
)


def workers_of(parent: int) -> list[int]:
    """The spawned worker processes whose parent is `parent`."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
            cmdline = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(parent) and b"spawn_main" in cmdline:
            found.append(int(status.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has stopped: it only waits to be reaped


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killing_the_sweep_kills_its_workers_and_a_rerun_is_consistent(tmp_path, sig, capsys):
    spec = write_spec(tmp_path / "orphans.toml", LONG)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "toolkit", "run", str(spec), "--out", str(out)]
    sweep = subprocess.Popen(
        [*command, "--executor", "processes", "--jobs", "2", "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        workers: list[int] = []
        while time.monotonic() < deadline:  # both workers training: their config.json exists
            workers = workers_of(sweep.pid)
            started = list(out.glob("base/seed-*/config.json"))
            if len(workers) == 2 and len(started) == 2:
                break
            time.sleep(0.2)
        assert len(workers) == 2, "the sweep did not start two workers in time"
        os.kill(sweep.pid, sig)
        sweep.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(w) for w in workers):
            time.sleep(0.2)
        assert not [w for w in workers if alive(w)], "workers outlived their sweep"
    finally:
        if sweep.poll() is None:
            sweep.kill()
        for w in workers_of(sweep.pid):
            os.kill(w, signal.SIGKILL)

    # The interrupted runs are retrained in full (another budget: --restart), and nothing
    # from the killed sweep writes into the folder afterwards.
    argv = ["run", str(spec), "--out", str(out), "--quiet", "--restart"]
    assert main([*argv, "--set", "train.max_steps=3", "--set", "train.eval_interval=3"]) == 0
    time.sleep(1)
    for seed in (0, 1):
        run = out / f"base/seed-{seed}"
        config = json.loads((run / "config.json").read_text())
        summary = json.loads((run / "summary.json").read_text())
        assert config["config_hash"] == summary["config_hash"] and summary["steps"] == 3
    assert main(["verify", str(out)]) == 0
    assert "2 of 2 runs intact" in capsys.readouterr().out


def descendants_of(pid: int) -> set[int]:
    from toolkit.sweep.watchdog import descendants

    return {p for p in descendants(pid) if alive(p)}


def test_a_killed_ray_driver_takes_its_local_ray_instance_with_it(tmp_path):
    pytest.importorskip("ray")
    spec = write_spec(tmp_path / "orphans.toml", LONG)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "toolkit", "run", str(spec), "--out", str(out)]
    sweep = subprocess.Popen(
        [*command, "--executor", "ray", "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    helpers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # Ray is up and a run trains
            helpers = descendants_of(sweep.pid)
            if list(out.glob("base/seed-*/config.json")) and len(helpers) >= 3:
                break
            time.sleep(0.5)
        assert list(out.glob("base/seed-*/config.json")), "no run started on Ray in time"
        helpers = descendants_of(sweep.pid)  # raylet, GCS, workers, the watchdog, ...
        os.kill(sweep.pid, signal.SIGKILL)
        sweep.wait(timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(alive(p) for p in helpers):
            time.sleep(0.5)
        assert not [p for p in helpers if alive(p)], "Ray's processes outlived the driver"
    finally:
        if sweep.poll() is None:
            sweep.kill()
        for p in helpers:
            if alive(p):
                os.kill(p, signal.SIGKILL)
