"""A full disk is an ordinary failure: one line, nothing half-written, and the same command
goes on once there is room. Tested on a real 1 MiB tmpfs (skipped where mounting is not
allowed), and with a run whose failure cannot even be recorded."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest
from conftest import small_toml, write_spec

from toolkit.cli import main
from toolkit.sweep import jobs

SPEC = small_toml("full", sampling="max_new_tokens = 0")


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip() or done.returncode}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Fill the disk to the last byte; returns the file holding it."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk_is_one_line_and_the_sweep_goes_on_once_there_is_room(
    small_disk, tmp_path, capsys
):
    spec = write_spec(tmp_path / "full.toml", SPEC)
    out = small_disk / "out"
    out.mkdir()
    filler = fill(small_disk)
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ablate: error: ") and err.count("\n") == 1, err
    assert "No space left on device" in err and "run the same command" in err
    assert "Traceback" not in err
    filler.unlink()
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    assert main(["verify", str(out)]) == 0


def test_a_failure_that_cannot_be_recorded_stops_the_sweep_in_one_line(
    tmp_path, monkeypatch, capsys
):
    def no_room(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(jobs, "train_run", no_room)  # the run's first write fails...
    monkeypatch.setattr(jobs, "write_atomic", no_room)  # ...and so does writing error.txt
    spec = write_spec(tmp_path / "full.toml", SPEC)
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "failed (OSError: [Errno 28] No space left on device" in err
    assert "its failure cannot be recorded (No space left on device" in err
