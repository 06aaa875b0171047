"""Files written whole or not at all, JSON every reader accepts, and JSON read back leniently.

Every file the toolkit writes (run folders, caches, checkpoints, reports) goes through
`write_atomic`: a temp file in the same folder, synced to disk, then os.replace (and the folder
synced), so neither a killed process nor a machine that loses power leaves half a file, and
the result is readable by others (0644, not mkstemp's 0600). JSON goes through `to_json`,
which writes a NaN or an infinity (a diverged loss) as null, since strict readers reject bare
NaN; pandas reads null back as NaN. Not here: what goes in the files (each
layer knows its own).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MODE = 0o644  # results, caches and reports are for sharing
# OSError numbers that mean "this storage cannot take the write" rather than a bug.
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
)
# ... and numbers that mean something stands where a file of ours goes (a folder, a file).
IN_THE_WAY_ERRNOS = frozenset({errno.EISDIR, errno.ENOTDIR})


def storage_problem(exc: BaseException) -> str | None:
    """'No space left on device (runs/x/summary.json)' for an OSError that is the storage's
    doing (full, read-only, permissions), else None."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS | IN_THE_WAY_ERRNOS:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return None


def storage_remedy(exc: BaseException) -> str:
    """What to do about a storage_problem: move what is in the way, or make room."""
    if isinstance(exc, OSError) and exc.errno in IN_THE_WAY_ERRNOS:
        return "move what is in the way"
    return "free space or fix permissions"


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temp file beside `path` to write (by name: numpy, safetensors), moved onto `path` when
    the block ends without an error and removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:32]}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, MODE)
        _sync(tmp)  # the bytes on disk before the name points at them (a reboot keeps both)
        os.replace(tmp, path)
        _sync(path.parent, folder=True)  # ... and the rename itself
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.errno is not None and exc.filename in (None, tmp):
            # Name the file meant (a full disk, a folder where it goes), not our temp file.
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sync(path: str | Path, folder: bool = False) -> None:
    """fsync a file or a folder; a file system that cannot sync a folder is let be."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise
    finally:
        os.close(fd)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a whole file or nothing."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def to_json(obj: Any, indent: int | None = None) -> str:
    """Strict JSON: {"loss": nan} -> '{"loss": null}'; anything else JSON lacks becomes str()."""
    return json.dumps(_finite(obj), indent=indent, default=str, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, to_json(obj, indent=2) + "\n")


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def remove_temps(folder: Path, *, older_than_s: float = 0.0, recursive: bool = False) -> int:
    """Delete the temp files interrupted writes left in a folder (`.<name>.<random>.tmp`, as
    atomic_path makes them) that are older than `older_than_s` seconds; returns how many.
    Only for a folder nobody else writes now, or with an age no live write can have."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    now = time.time()
    removed = 0
    for path in folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"):
        try:
            if path.is_file() and now - path.stat().st_mtime >= older_than_s:
                path.unlink()
                removed += 1
        except OSError:  # gone already, or not ours to remove: leave it
            continue
    return removed


# A JSON record's digest of its own content (summary.json's: its test scores and perplexities
# have no metrics.jsonl line to check them by): the key under its "digests", and the sha256 of
# the record, those digests left out, as to_json writes it (keys sorted). A record read back
# from the file hashes as the record written did.
SELF_DIGEST = "scores"


def self_digest(record: dict[str, Any]) -> str:
    content = {k: v for k, v in record.items() if k != "digests"}
    text = json.dumps(_finite(content), sort_keys=True, default=str, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def digest(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (a checkpoint is never in memory twice)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
