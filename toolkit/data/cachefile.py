"""The files of one token-cache entry: `<key>.npy` (the ids) and `<key>.json` (what they are),
and writing them as a stream: a fixed-length .npy header reserved first, ids appended as they
come, the real header written last, the file moved into place and the metadata written only
when everything succeeded (the metadata marks the entry complete). A killed process leaves a
temp file no reader opens. Used by tokens.py (tokenized corpora) and shards.py (joined shards).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.files import atomic_path, write_atomic


def cache_paths(folder: Path, key: str) -> tuple[Path, Path]:
    return folder / f"{key}.npy", folder / f"{key}.json"


class _CacheWriter:
    """An .npy file written as a stream: a header of fixed length reserved first, the ids
    appended, the real header written last (its shape is only known at the end)."""

    HEADER = 128  # bytes; numpy pads a 1-D array's header to this for any length we write

    def __init__(self, tmp: Path, dtype: np.dtype) -> None:
        self.tmp, self.dtype = tmp, dtype
        self.file = tmp.open("wb")
        self.file.write(b"\0" * self.HEADER)
        self.meta: dict[str, Any] = {}

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def finish(self, n: int, meta: dict[str, Any]) -> None:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": self.dtype.str, "fortran_order": False, "shape": (n,)}
        )
        if len(header.getvalue()) != self.HEADER:  # cannot happen for a 1-D array, but check
            raise OSError(f"unexpected .npy header length {len(header.getvalue())}")
        self.file.seek(0)
        self.file.write(header.getvalue())
        self.file.close()
        self.meta = meta


@contextlib.contextmanager
def cache_file(folder: Path, key: str, dtype: np.dtype) -> Iterator[_CacheWriter]:
    """A writer for the key's .npy, moved into place (and its metadata written, last: it marks
    the ids complete) only when the block ends without an error. A killed process leaves a
    temp file that no reader ever opens (remove_temps clears it later)."""
    npy, meta_path = cache_paths(folder, key)
    with atomic_path(npy, suffix=".npy.tmp") as tmp:
        writer = _CacheWriter(tmp, dtype)
        try:
            yield writer
        finally:
            writer.file.close()
    write_atomic(meta_path, json.dumps(writer.meta))
