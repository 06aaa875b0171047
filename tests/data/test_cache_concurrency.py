"""The token cache under real processes: two processes building the same cache at the same
moment both get the same ids and leave one valid entry; a process killed (SIGKILL) at any point
of building it leaves nothing a later load_tokens takes for a valid cache."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from plugins.corpora import FilesCorpus
from plugins.tokenizers import ByteTokenizer
from toolkit.data.cache import scan
from toolkit.data.tokens import TokenData, clear_memo, load_tokens

ROOT = Path(__file__).resolve().parents[2]
VAL_FRACTION = 0.1

# Both kinds of script print what they loaded the way _digest() does.
PRELUDE = (
    f"VAL_FRACTION = {VAL_FRACTION!r}\n"
    + """
import hashlib, os, sys, time
from pathlib import Path
import numpy as np
from plugins.corpora import FilesCorpus
from plugins.tokenizers import ByteTokenizer
from toolkit.data.tokens import load_tokens

def digest(d):
    h = hashlib.sha256()
    for ids in (d.train, d.val):
        h.update(len(ids).to_bytes(8, "little") + np.ascontiguousarray(ids).tobytes())
    return f"{d.key} {h.hexdigest()} {len(d.train)} {len(d.val)}"
"""
)

# argv: corpus folder, ready file, go file. Imports and finds the files, says it is ready, waits
# for the go file, then loads; each batch takes 0.2 s longer, so both builds surely overlap.
RACER = (
    PRELUDE
    + """
class SlowBytes(ByteTokenizer):
    def encode_batch(self, texts):
        time.sleep(0.2)
        return super().encode_batch(texts)

corpus = FilesCorpus(path=sys.argv[1])
Path(sys.argv[2]).touch()
go = Path(sys.argv[3])
while not go.exists():
    time.sleep(0.0005)
print(digest(load_tokens(corpus, SlowBytes(), VAL_FRACTION)), flush=True)
"""
)

# argv: corpus folder, marker file, where to stop. At that point it touches the marker and
# sleeps until the test kills it:
#   tokenizing    the second batch of text (ids of the first may be in a temp file already)
#   ids-written   the ids complete in their temp file, about to be moved onto <key>.npy
#   ids-in-place  <key>.npy in place, its metadata (<key>.json) about to be moved in
VICTIM = (
    PRELUDE
    + """
marker, where = Path(sys.argv[2]), sys.argv[3]

def stop_here():
    marker.touch()
    time.sleep(600)

class Tokenizer(ByteTokenizer):
    batches = 0

    def encode_batch(self, texts):
        Tokenizer.batches += 1
        if where == "tokenizing" and Tokenizer.batches == 2:
            stop_here()
        return super().encode_batch(texts)

real_replace = os.replace

def replace(src, dst, *args, **kwargs):
    # files.atomic_path moves every finished file into place with os.replace.
    name = os.fspath(dst)
    if (where == "ids-written" and name.endswith(".npy")) or (
        where == "ids-in-place" and name.endswith(".json") and not name.endswith(".trained.json")
    ):
        stop_here()
    return real_replace(src, dst, *args, **kwargs)

os.replace = replace
print(digest(load_tokens(FilesCorpus(path=sys.argv[1]), Tokenizer(), VAL_FRACTION)), flush=True)
"""
)


def _digest(d: TokenData) -> str:
    h = hashlib.sha256()
    for ids in (d.train, d.val):
        h.update(len(ids).to_bytes(8, "little") + np.ascontiguousarray(ids).tobytes())
    return f"{d.key} {h.hexdigest()} {len(d.train)} {len(d.val)}"


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four text files of ~800 KB (3.2 MB in all, some of it non-ASCII), made the same each
    time: more than one tokenizing batch (1 M characters)."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    words = ["cache", "token", "ablation", "layer", "naïve", "über", "—", "αβγ", "x", "the"]
    for i in range(4):
        lines, size = [], 0
        while size < 800_000:
            line = " ".join(rng.choices(words, k=rng.randint(3, 15)))
            lines.append(line)
            size += len(line) + 1
        (folder / f"part-{i}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def reference(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """What loading the corpus gives, built alone in this process in a cache of its own."""
    d = load_tokens(
        FilesCorpus(path=str(corpus_dir)),
        ByteTokenizer(),
        VAL_FRACTION,
        tmp_path_factory.mktemp("reference"),
    )
    text_bytes = sum(len(f.read_bytes()) for f in corpus_dir.iterdir())
    n_docs = len(list(corpus_dir.iterdir()))
    # Bytes: one id per byte of text, one end-of-text between documents of a split (the
    # document cut at the train/validation boundary starts the validation split).
    assert len(d.train) + len(d.val) == text_bytes + n_docs - 1
    assert d.train_bytes + d.val_bytes == text_bytes
    return _digest(d)


def _spawn(script: str, cache: Path, *argv: str | Path) -> subprocess.Popen[str]:
    env = dict(os.environ, ABLATE_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    env["ABLATE_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, argv)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, procs: list[subprocess.Popen[str]], timeout: float = 60) -> None:
    """Until `path` exists; fails with a process's output if one ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        for p in procs:
            if p.poll() is not None:
                out, err = p.communicate()
                pytest.fail(f"process ended (status {p.returncode}) before {path.name}: {out}{err}")
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.001)


def _reload(corpus_dir: Path, cache: Path) -> TokenData:
    """load_tokens afresh (nothing memoized in this process) from the shared cache folder."""
    clear_memo()
    return load_tokens(FilesCorpus(path=str(corpus_dir)), ByteTokenizer(), VAL_FRACTION, cache)


@pytest.mark.slow
def test_two_processes_building_one_cache_at_once(
    corpus_dir: Path, reference: str, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    procs = [
        _spawn(RACER, cache, corpus_dir, tmp_path / f"ready-{i}", tmp_path / "go") for i in (0, 1)
    ]
    try:
        for i in (0, 1):
            _wait_for(tmp_path / f"ready-{i}", procs)
        (tmp_path / "go").touch()  # both start loading within a millisecond or two
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        assert "damaged" not in err  # neither read the other's half-written files
    printed = [out.strip() for out, _ in results]
    assert printed == [reference, reference]

    key = reference.split()[0]
    folder = cache / "tokens"
    # One entry, no temp files: each writer's temp file was moved into place (or removed).
    assert sorted(p.name for p in folder.iterdir()) == [f"{key}.json", f"{key}.npy"]
    contents = scan(cache)
    (entry,) = contents.entries
    assert entry.complete and not entry.stale and entry.key == key
    n_train, n_val = map(int, reference.split()[2:])
    assert (entry.fact("n_train"), entry.fact("n_val")) == (n_train, n_val)
    # And it is read back as it is, not rebuilt: no warning, the same file.
    inode = (folder / f"{key}.npy").stat().st_ino
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _digest(_reload(corpus_dir, cache)) == reference
    assert (folder / f"{key}.npy").stat().st_ino == inode


@pytest.mark.slow
@pytest.mark.parametrize("where", ["tokenizing", "ids-written", "ids-in-place"])
def test_a_killed_build_leaves_nothing_read_as_valid(
    corpus_dir: Path, reference: str, tmp_path: Path, where: str
) -> None:
    cache, marker = tmp_path / "cache", tmp_path / "stopped"
    proc = _spawn(VICTIM, cache, corpus_dir, marker, where)
    try:
        _wait_for(marker, [proc])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    key = reference.split()[0]
    folder = cache / "tokens"
    left = scan(cache)
    assert not any(e.complete for e in left.entries), "a killed build left a complete entry"
    if where == "ids-in-place":  # the ids without the metadata that marks them complete
        assert (folder / f"{key}.npy").is_file() and not (folder / f"{key}.json").exists()
    if where == "ids-written":  # the whole ids, in a temp file no reader opens
        assert left.temps and not (folder / f"{key}.npy").exists()

    # A later load builds the cache again and gets the right ids...
    assert _digest(_reload(corpus_dir, cache)) == reference
    after = scan(cache)
    (entry,) = after.entries
    assert entry.complete and entry.key == key
    # ...which the next load reads as they are.
    inode = (folder / f"{key}.npy").stat().st_ino
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _digest(_reload(corpus_dir, cache)) == reference
    assert (folder / f"{key}.npy").stat().st_ino == inode
    # The killed writer's temp files are still there (young: they might be a live write) and
    # are never taken for cache files.
    assert all(f.path.name.startswith(".") for f in after.temps)
