"""Built-in corpora of text: Python itself (`pydoc`, `python-stdlib`) and the user's text files
(`files`).

A corpus only yields (name, text) documents in a stable order; splitting, tokenizing and caching
are `toolkit.data.tokens`'s job. `pydoc` and `python-stdlib` ship with every CPython, so the
quick start never downloads. Record-structured data sets (jsonl, parquet, hf) are in
plugins/datasets.py, token shards in plugins/token_shards.py.
Deliberately not here: downloading data sets, cleaning or deduplicating text, and other formats
(convert PDFs or HTML to .txt first).
"""

from __future__ import annotations

import glob
import io
import os
import sys
import sysconfig
import tokenize
from collections.abc import Iterator
from pathlib import Path

from toolkit.api.hookspecs import hookimpl
from toolkit.errors import DataError

FOLDER_SUFFIXES = (".txt", ".md")
# Folders of python-stdlib left out: whatever is installed beside the standard library. Its
# own test suites stay in: they are Python code too, and the corpus's point is its size.
STDLIB_SKIP = frozenset({"site-packages", "dist-packages", "__pycache__"})


class PydocCorpus:
    """The standard library's documentation topics (pydoc_data): 79 documents, ~465k characters."""

    def __init__(self) -> None:
        from pydoc_data.topics import topics

        self._topics: dict[str, str] = topics
        n_chars = sum(len(t) for t in topics.values())
        self.description = f"pydoc: {len(topics)} Python documentation topics, {n_chars:,} chars"

    def documents(self) -> Iterator[tuple[str, str]]:
        for name in sorted(self._topics):
            yield name, self._topics[name]


class PythonStdlibCorpus:
    """The standard library's own source: every .py file under sysconfig's "stdlib" folder but
    the STDLIB_SKIP folders, sorted by relative path, which names each document.

    On CPython 3.11.7: 1,790 files, 31,520,563 characters (31.5 MB), its test suites
    included. Files are decoded as Python
    reads them (a BOM or PEP 263 coding line, else UTF-8) with undecodable bytes replaced, so an
    odd installation changes a few characters rather than failing a run.
    """

    def __init__(self) -> None:
        self.root = Path(sysconfig.get_paths()["stdlib"])
        self.files = _stdlib_files(self.root)
        if not self.files:
            raise DataError(
                f"corpus 'python-stdlib': no .py files under {str(self.root)!r} (a zipped or "
                f"stripped standard library?); use corpus 'pydoc' instead"
            )
        n_chars = sum(len(_read_source(f)) for f in self.files)
        version = ".".join(map(str, sys.version_info[:2]))
        self.description = (
            f"python-stdlib: {len(self.files)} files, {n_chars:,} chars of the Python "
            f"{version} standard library"
        )

    def documents(self) -> Iterator[tuple[str, str]]:
        for file in self.files:
            yield file.relative_to(self.root).as_posix(), _read_source(file)


class FilesCorpus:
    """Your own UTF-8 text: one file, every .txt/.md file under a folder, or a glob pattern."""

    def __init__(self, *, path: str) -> None:
        self.path = path
        self.files = _resolve(path)
        self.description = f"files: {len(self.files)} file(s) from {path}"

    def documents(self) -> Iterator[tuple[str, str]]:
        for file in self.files:
            yield str(file), _read_utf8(file)


def _resolve(
    path: str, corpus: str = "files", suffixes: tuple[str, ...] = FOLDER_SUFFIXES
) -> list[Path]:
    """The files a `path` option names, in a stable (sorted) order: the file itself, a folder's
    files with one of `suffixes` (recursively), or a glob's matches (folders as folders)."""
    if not path.strip():  # Path("") is the current folder: every text file under it
        raise DataError(
            f"corpus {corpus!r}: path is empty; give a file, a folder or a glob pattern (an "
            f"unset shell variable in --set data.path=$X gives an empty one)"
        )
    expanded = os.path.expanduser(path)
    # A name that exists is taken literally even if it contains glob characters.
    if any(c in expanded for c in "*?[") and not Path(expanded).exists():
        matches = sorted(glob.glob(expanded, recursive=True))
        files = sorted(
            {
                f
                for m in map(Path, matches)
                for f in ([m] if m.is_file() else _folder_files(m, suffixes))
            }
        )
        if not files:
            raise DataError(
                f"corpus {corpus!r}: pattern {path!r} matches no files; check the pattern "
                f"(relative patterns are resolved from {Path.cwd()})"
            )
        return files
    p = Path(expanded)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = _folder_files(p, suffixes)
        if not files:
            raise DataError(
                f"corpus {corpus!r}: folder {path!r} holds no {' or '.join(suffixes)} files; "
                f"add some, or give a glob pattern such as '{path.rstrip('/')}/*.text' for "
                f"other names"
            )
        return files
    if p.exists():
        raise DataError(f"corpus {corpus!r}: {path!r} is neither a file nor a folder")
    raise DataError(
        f"corpus {corpus!r}: path {path!r} does not exist; give a file, a folder or a glob "
        f"pattern (relative paths are resolved from {Path.cwd()})"
    )


def _folder_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(f for f in folder.rglob("*") if f.suffix.lower() in suffixes and f.is_file())


def _stdlib_files(root: Path) -> list[Path]:
    """Every .py file under root outside STDLIB_SKIP folders, sorted by relative path."""
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [s for s in subfolders if s not in STDLIB_SKIP]  # prune: never walked
        found += [Path(folder, n) for n in names if n.endswith(".py")]
    return sorted(found, key=lambda f: f.relative_to(root).as_posix())


def _read_bytes(file: Path, corpus: str) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise _unreadable(file, corpus, exc) from None


def _unreadable(file: Path, corpus: str, exc: OSError) -> DataError:
    if isinstance(exc, PermissionError):
        return DataError(
            f"corpus {corpus!r}: cannot read {str(file)!r}: permission denied; fix its "
            f"permissions (chmod +r) or leave it out"
        )
    return DataError(f"corpus {corpus!r}: cannot read {str(file)!r}: {exc.strerror or exc}")


def _read_utf8(file: Path) -> str:
    data = _read_bytes(file, "files")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"corpus 'files': {str(file)!r} is not valid UTF-8 (first bad byte at offset "
            f"{exc.start}); re-encode it, e.g. iconv -f latin1 -t utf-8"
        ) from None
    # A byte-order mark is an encoding artefact, not text worth modelling.
    return text.removeprefix("\ufeff")


def _read_source(file: Path) -> str:
    """A Python file's text as the interpreter decodes it, undecodable bytes replaced."""
    data = _read_bytes(file, "python-stdlib")
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:  # an unknown or contradictory coding line
        encoding = "utf-8"
    return data.decode(encoding, errors="replace")


@hookimpl
def register_components(register) -> None:
    register(
        "corpus",
        "pydoc",
        PydocCorpus,
        description="Python's documentation topics (~465k chars, ships with CPython)",
    )
    register(
        "corpus",
        "python-stdlib",
        PythonStdlibCorpus,
        description="the Python standard library's own source (31.5 MB on CPython 3.11)",
    )
    register(
        "corpus",
        "files",
        FilesCorpus,
        description="your UTF-8 text: a file, every .txt/.md under a folder, or a glob",
    )
