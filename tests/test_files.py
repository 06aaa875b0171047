"""Files written whole or not at all, JSON every reader accepts, and the temp files of
interrupted writes cleaned up when their folder is next opened."""

from __future__ import annotations

import errno
import json
import math
import os
import time

import pytest
from conftest import small_toml

from toolkit.cli import main
from toolkit.data.tokens import load_tokens
from toolkit.files import (
    atomic_path,
    remove_temps,
    storage_problem,
    storage_remedy,
    to_json,
    write_atomic,
)
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run


def test_to_json_writes_non_finite_numbers_as_null():
    text = to_json({"a": math.nan, "b": [1.5, -math.inf], "c": (math.inf,), "d": "nan"})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {
        "a": None, "b": [1.5, None], "c": [None], "d": "nan",
    }  # fmt: skip


def test_an_interrupted_write_leaves_the_old_file_and_a_readable_new_one(tmp_path):
    path = tmp_path / "f.txt"
    write_atomic(path, "old")
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert path.read_text() == "old" and list(tmp_path.iterdir()) == [path]
    write_atomic(path, "new")
    assert path.read_text() == "new" and oct(path.stat().st_mode & 0o777) == "0o644"


def test_a_failed_write_names_the_file_meant_and_leaves_no_temp(tmp_path):
    """A folder where the file goes: the error names that path (not the temp file's), which
    is what the one-line message shows; nothing is left beside it."""
    (tmp_path / "results.csv").mkdir()
    with pytest.raises(OSError) as caught:
        write_atomic(tmp_path / "results.csv", "x")
    assert caught.value.errno == errno.EISDIR
    assert caught.value.filename == str(tmp_path / "results.csv")
    assert storage_problem(caught.value) == f"Is a directory ({tmp_path / 'results.csv'})"
    assert storage_remedy(caught.value) == "move what is in the way"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_a_folder_where_a_sweep_writes_a_file_is_one_line(tmp_path, capsys):
    spec = tmp_path / "tiny.toml"
    spec.write_text(small_toml("tiny"))
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    for name in ("results.csv", "experiment.json"):
        kept = out / name
        kept.rename(tmp_path / name)
        kept.mkdir()
        capsys.readouterr()
        assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"ablate: error: Is a directory ({kept}); move what is in the way, then run the "
            f"same command to go on\n"
        )
        kept.rmdir()
        (tmp_path / name).rename(kept)
    assert main(["verify", str(out)]) == 0


def test_a_write_is_on_disk_before_it_takes_the_name(tmp_path, monkeypatch):
    """The temp file is synced before the rename and the folder after it, so a machine that
    loses power keeps the old file or the new one, never a name over unwritten bytes."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os,
        "fsync",
        lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd)),
    )
    monkeypatch.setattr(
        os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b))
    )
    write_atomic(tmp_path / "f.txt", "data")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert events[0][1].startswith(str(tmp_path / ".f.txt."))  # the temp file
    assert events[2][1] == str(tmp_path)  # the folder, after the rename
    assert (tmp_path / "f.txt").read_text() == "data"


def test_remove_temps_takes_only_old_enough_temp_files(tmp_path):
    (tmp_path / "sub").mkdir()
    old, young, deep = tmp_path / ".a.x1.tmp", tmp_path / ".b.x2.tmp", tmp_path / "sub/.c.tmp"
    keep = [tmp_path / "a.tmp", tmp_path / ".hidden", tmp_path / "data.npy"]
    for path in [old, young, deep, *keep]:
        path.write_text("x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert remove_temps(tmp_path, older_than_s=3600) == 1 and not old.exists()
    assert young.exists() and deep.exists()
    assert remove_temps(tmp_path, recursive=True) == 2
    assert sorted(tmp_path.rglob("*")) == sorted([tmp_path / "sub", *keep])


def test_a_sweep_and_the_token_cache_clean_up_after_interrupted_writes(
    tmp_path, tiny_doc, plugins, monkeypatch
):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ABLATE_CACHE_DIR", str(cache))
    out = tmp_path / "out"
    (out / "base/seed-0").mkdir(parents=True)
    leftovers = [out / ".results.csv.k2j.tmp", out / "base/seed-0/.resume.pt.zz9.tmp"]
    (cache / "tokens").mkdir(parents=True)
    stale, live = cache / "tokens/.abc.q1.npy.tmp", cache / "tokens/.def.q2.npy.tmp"
    for path in [*leftovers, stale, live]:
        path.write_bytes(b"partial")
    os.utime(stale, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    run(parse_spec(tiny_doc), out, plugins=plugins, progress=False)
    assert not any(p.exists() for p in leftovers)
    # The cache is shared: only a temp file older than a day is a dead write.
    assert not stale.exists() and live.exists()
    load_tokens(plugins.registry.build("corpus", "pydoc"), plugins.registry.build(
        "tokenizer", "bytes"), 0.1)  # fmt: skip
    assert live.exists()
