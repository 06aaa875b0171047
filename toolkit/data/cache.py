"""What the token cache holds, and removing parts of it (`ablate cache list` / `ablate cache clear`).

The cache (tokens.py writes it) is one folder, `<cache dir>/tokens`, of files named by what they
hold: per corpus + tokenizer + split a `<key>.npy` of token ids and a `<key>.json` of metadata
(written last: it marks the ids complete), `<key>.trained.json` learned tokenizer states, and
`.<name>.<random>.tmp` files of writes that were killed (or are under way). An entry is the
.npy and .json of one key, listed and removed together.

Only regular files directly in that folder whose names follow those patterns are ever listed or
removed: symlinks (never followed, never sized), subfolders and other files are left alone, so
nothing outside the folder is touched. Temp files younger than TEMP_GRACE_S may be a write in
progress (another sweep sharing the cache) and are never removed. Not here: writing or
validating the cache (tokens.py), printing (toolkit.cli.cache).
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.data.tokens import CACHE_FORMAT, default_cache_dir
from toolkit.errors import DataError

# A temp file of an atomic write lives for the seconds it takes to write the file; one older
# than this belongs to a process that died.
TEMP_GRACE_S = 3600.0
# A sha256 in hex, after a kind for keys of other origins ("shards-<hex>": shards.py).
_KEY = r"(?:[a-z0-9]+-)?[0-9a-f]{64}"
SHORT = 12  # hex digits of a key that lists show
_ENTRY_FILE = re.compile(rf"({_KEY})\.(npy|json)")
_TRAINED_FILE = re.compile(rf"({_KEY})\.trained\.json")


@dataclass(frozen=True)
class CachedFile:
    """One regular file of the cache folder."""

    path: Path
    size: int  # bytes on disk as the file's length (a sparse file counts in full)
    mtime: float  # unix time of the last write


@dataclass(frozen=True)
class CacheEntry:
    """A key's token ids and metadata; either file may be missing (a write killed between them,
    a hand-deleted file): then the entry is incomplete and load_tokens builds it again."""

    key: str
    files: tuple[CachedFile, ...]  # the .npy and/or the .json
    meta: dict[str, Any] | None  # the parsed .json; None when missing or unreadable

    @property
    def short(self) -> str:
        """The key as lists show it: '3f2a9c1e0b7d', 'shards-3f2a9c1e0b7d'."""
        kind, _, digest = self.key.rpartition("-")
        return f"{kind}-{digest[:SHORT]}" if kind else digest[:SHORT]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def mtime(self) -> float:
        return max(f.mtime for f in self.files)

    @property
    def complete(self) -> bool:
        """Both files present and the metadata readable (load_tokens still checks the ids)."""
        return len(self.files) == 2 and self.meta is not None

    @property
    def stale(self) -> bool:
        """Written by another cache format: load_tokens never reads it again."""
        return self.meta is not None and self.meta.get("format", CACHE_FORMAT) != CACHE_FORMAT

    def fact(self, name: str) -> Any:
        """A metadata value (corpus, tokenizer, n_train, created, ...), None when absent."""
        return (self.meta or {}).get(name)


@dataclass(frozen=True)
class CacheContents:
    """Everything in a cache folder, by what it is."""

    folder: Path  # <cache dir>/tokens
    entries: list[CacheEntry]  # newest first
    trained: list[CachedFile]  # learned tokenizer states
    temps: list[CachedFile]  # leftovers of killed writes, or writes under way
    others: int = 0  # files and folders the cache did not write: never touched
    exists: bool = True

    @property
    def size(self) -> int:
        files = [f for e in self.entries for f in e.files] + self.trained + self.temps
        return sum(f.size for f in files)


@dataclass(frozen=True)
class Selection:
    """What a clear would remove."""

    folder: Path
    entries: list[CacheEntry] = field(default_factory=list)
    trained: list[CachedFile] = field(default_factory=list)
    temps: list[CachedFile] = field(default_factory=list)

    @property
    def files(self) -> list[CachedFile]:
        # An entry's metadata goes first: without it the ids are never read, even if the
        # removal stops half-way.
        ordered = [
            f for e in self.entries for f in sorted(e.files, key=lambda f: f.path.suffix != ".json")
        ]
        return ordered + self.trained + self.temps

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def __bool__(self) -> bool:
        return bool(self.entries or self.trained or self.temps)


@dataclass(frozen=True)
class Removal:
    """What a clear did: files removed, bytes freed, and the files it could not remove."""

    removed: int
    freed: int
    failed: list[tuple[Path, str]]  # (file, why)


def token_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the token cache: `<cache_dir>/tokens`, by default under
    default_cache_dir() (as load_tokens uses it)."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / "tokens"


def scan(cache_dir: str | os.PathLike[str] | None = None) -> CacheContents:
    """What the token cache under `cache_dir` holds; an empty listing when it does not exist."""
    folder = token_folder(cache_dir)
    if not folder.exists():
        if _holds_entries(folder.parent):  # --dir ~/.cache/ablate/tokens
            raise DataError(
                f"{folder.parent} is the token folder itself; give the folder that holds it, "
                f"{folder.parent.parent}"
            )
        return CacheContents(folder, [], [], [], exists=False)
    if not folder.is_dir():
        raise DataError(f"{folder} is a file, not a token cache folder; give the cache's folder")
    parts: dict[str, list[CachedFile]] = {}
    trained: list[CachedFile] = []
    temps: list[CachedFile] = []
    others = 0
    with os.scandir(folder) as it:
        for item in it:
            try:
                st = item.stat(follow_symlinks=False)
            except OSError:  # removed while we looked
                continue
            if not stat.S_ISREG(st.st_mode):  # symlinks, folders, sockets: not ours
                others += 1
                continue
            file = CachedFile(folder / item.name, st.st_size, st.st_mtime)
            if m := _TRAINED_FILE.fullmatch(item.name):
                trained.append(file)
            elif m := _ENTRY_FILE.fullmatch(item.name):
                parts.setdefault(m.group(1), []).append(file)
            elif item.name.startswith(".") and item.name.endswith(".tmp"):  # files.atomic_path
                temps.append(file)
            else:
                others += 1
    entries = [
        CacheEntry(key, tuple(sorted(files, key=lambda f: f.path.name)), _meta(files))
        for key, files in parts.items()
    ]
    entries.sort(key=lambda e: (-e.mtime, e.key))
    trained.sort(key=lambda f: -f.mtime)
    temps.sort(key=lambda f: -f.mtime)
    return CacheContents(folder, entries, trained, temps, others)


def _holds_entries(folder: Path) -> bool:
    try:
        return any(_ENTRY_FILE.fullmatch(name) for name in os.listdir(folder))
    except OSError:
        return False


def _meta(files: Iterable[CachedFile]) -> dict[str, Any] | None:
    for f in files:
        if f.path.suffix == ".json":
            try:
                meta = json.loads(f.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            return meta if isinstance(meta, dict) else None
    return None


def select(
    contents: CacheContents,
    prefixes: Sequence[str] = (),
    older_than_s: float | None = None,
    now: float | None = None,
) -> Selection:
    """What to remove: with key prefixes, the entries whose key starts with one of them (their
    learned tokenizer states stay: retraining costs more than they weigh); without, every entry,
    learned state and dead temp file. `older_than_s` keeps what was written more recently.
    A prefix that matches no entry is a DataError naming some keys."""
    now = time.time() if now is None else now

    def old(mtime: float) -> bool:
        return older_than_s is None or now - mtime >= older_than_s

    if prefixes:
        wanted = [p.lower() for p in prefixes]
        for prefix, original in zip(wanted, prefixes, strict=True):
            if not prefix.strip():
                raise DataError(
                    "an empty key prefix names no entry; give the first characters of a key "
                    "(`ablate cache list`), or no prefix to clear the whole cache"
                )
            if not any(e.key.startswith(prefix) for e in contents.entries):
                raise DataError(
                    f"no cache entry has a key starting with {original!r}{_some(contents)}"
                )
        entries = [
            e for e in contents.entries if any(e.key.startswith(p) for p in wanted) and old(e.mtime)
        ]
        return Selection(contents.folder, entries)
    grace = max(TEMP_GRACE_S, older_than_s or 0.0)
    return Selection(
        contents.folder,
        [e for e in contents.entries if old(e.mtime)],
        [f for f in contents.trained if old(f.mtime)],
        [f for f in contents.temps if now - f.mtime >= grace],
    )


def _some(contents: CacheContents, n: int = 5) -> str:
    """'; keys: 3f2a9c1e0b7d, 1a2b3c4d5e6f (ablate cache list shows them)', or '; the cache
    is empty'."""
    keys = [e.short for e in contents.entries]
    if not keys:
        return f"; the cache in {contents.folder} is empty"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return f"; keys: {', '.join(keys[:n])}{more} (ablate cache list shows them all)"


def remove(selection: Selection) -> Removal:
    """Remove the selected files (a symlink put in a file's place is removed itself, never its
    target); a file already gone is skipped, one that cannot be removed is reported."""
    removed = freed = 0
    failed: list[tuple[Path, str]] = []
    for f in selection.files:
        if f.path.parent != selection.folder:  # cannot happen from scan(): a guard, not a case
            failed.append((f.path, "not in the cache folder"))
            continue
        try:
            os.unlink(f.path)  # unlink never follows a symlink
        except FileNotFoundError:  # another clear, or load_tokens replacing it
            continue
        except OSError as exc:
            failed.append((f.path, exc.strerror or str(exc)))
            continue
        removed += 1
        freed += f.size
    return Removal(removed, freed, failed)
