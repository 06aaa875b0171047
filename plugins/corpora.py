"""Built-in corpora: Python's own documentation (`pydoc`) and the user's text files (`files`).

A corpus only yields (name, text) documents in a stable order; splitting, tokenizing and caching
are `toolkit.data.tokens`'s job. `pydoc` ships with every CPython, so the quick start never downloads.
Deliberately not here: downloading data sets, cleaning or deduplicating text, and formats other
than plain UTF-8 text (convert PDFs, HTML or JSONL to .txt first).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path

from toolkit.api.hookspecs import hookimpl
from toolkit.errors import DataError

FOLDER_SUFFIXES = (".txt", ".md")


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


class FilesCorpus:
    """Your own UTF-8 text: one file, every .txt/.md file under a folder, or a glob pattern."""

    def __init__(self, *, path: str) -> None:
        self.path = path
        self.files = _resolve(path)
        self.description = f"files: {len(self.files)} file(s) from {path}"

    def documents(self) -> Iterator[tuple[str, str]]:
        for file in self.files:
            yield str(file), _read_utf8(file)


def _resolve(path: str) -> list[Path]:
    """The files a `path` option names, in a stable (sorted) order."""
    expanded = os.path.expanduser(path)
    # A name that exists is taken literally even if it contains glob characters.
    if any(c in expanded for c in "*?[") and not Path(expanded).exists():
        matches = sorted(glob.glob(expanded, recursive=True))
        files = sorted(
            {f for m in map(Path, matches) for f in ([m] if m.is_file() else _folder_files(m))}
        )
        if not files:
            raise DataError(
                f"corpus 'files': pattern {path!r} matches no files; check the pattern "
                f"(relative patterns are resolved from {Path.cwd()})"
            )
        return files
    p = Path(expanded)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = _folder_files(p)
        if not files:
            raise DataError(
                f"corpus 'files': folder {path!r} holds no .txt or .md files; add some, or "
                f"give a glob pattern such as '{path.rstrip('/')}/*.text' for other names"
            )
        return files
    if p.exists():
        raise DataError(f"corpus 'files': {path!r} is neither a file nor a folder")
    raise DataError(
        f"corpus 'files': path {path!r} does not exist; give a file, a folder or a glob pattern "
        f"(relative paths are resolved from {Path.cwd()})"
    )


def _folder_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        f for f in folder.rglob("*") if f.suffix.lower() in FOLDER_SUFFIXES and f.is_file()
    )


def _read_utf8(file: Path) -> str:
    try:
        data = file.read_bytes()
    except PermissionError:
        raise DataError(
            f"corpus 'files': cannot read {str(file)!r}: permission denied; fix its permissions "
            f"(chmod +r) or leave it out"
        ) from None
    except OSError as exc:
        raise DataError(
            f"corpus 'files': cannot read {str(file)!r}: {exc.strerror or exc}"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"corpus 'files': {str(file)!r} is not valid UTF-8 (first bad byte at offset "
            f"{exc.start}); re-encode it, e.g. iconv -f latin1 -t utf-8"
        ) from None
    # A byte-order mark is an encoding artefact, not text worth modelling.
    return text.removeprefix("\ufeff")


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
        "files",
        FilesCorpus,
        description="your UTF-8 text: a file, every .txt/.md under a folder, or a glob",
    )
