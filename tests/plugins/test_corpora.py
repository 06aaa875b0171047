"""The built-in corpora: pydoc's size and order, the files corpus's three ways of naming text,
and a one-line DataError naming the path for each way it can go wrong."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins import corpora
from plugins.corpora import FilesCorpus, PydocCorpus
from toolkit.api.registry import Registry
from toolkit.errors import DataError


@pytest.fixture(autouse=True, scope="module")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABLATE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    """a.txt, b.md, notes.rst (not picked up from a folder) and sub/c.txt."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("alpha", encoding="utf-8")
    (tmp_path / "b.md").write_text("# beta", encoding="utf-8")
    (tmp_path / "notes.rst").write_text("gamma", encoding="utf-8")
    (tmp_path / "sub" / "c.txt").write_text("délta", encoding="utf-8")
    return tmp_path


def test_pydoc() -> None:
    corpus = PydocCorpus()
    docs = list(corpus.documents())
    assert len(docs) == 79
    assert sum(len(text) for _, text in docs) > 400_000
    assert [name for name, _ in docs] == sorted(name for name, _ in docs)
    assert docs == list(corpus.documents())  # stable: the cache key depends on it
    assert "79" in corpus.description


def test_single_file(texts: Path) -> None:
    corpus = FilesCorpus(path=str(texts / "notes.rst"))
    assert list(corpus.documents()) == [(str(texts / "notes.rst"), "gamma")]


def test_folder_is_recursive_sorted_txt_and_md(texts: Path) -> None:
    docs = list(FilesCorpus(path=str(texts)).documents())
    assert docs == [
        (str(texts / "a.txt"), "alpha"),
        (str(texts / "b.md"), "# beta"),
        (str(texts / "sub" / "c.txt"), "délta"),
    ]


def test_glob(texts: Path) -> None:
    docs = list(FilesCorpus(path=str(texts / "*.txt")).documents())
    assert docs == [(str(texts / "a.txt"), "alpha")]
    recursive = list(FilesCorpus(path=str(texts / "**" / "*.txt")).documents())
    assert [text for _, text in recursive] == ["alpha", "délta"]


def test_home_is_expanded(texts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(texts))
    assert [t for _, t in FilesCorpus(path="~/a.txt").documents()] == ["alpha"]


def test_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfhi")
    assert [t for _, t in FilesCorpus(path=str(tmp_path / "bom.txt")).documents()] == ["hi"]


def _error(path: str) -> str:
    with pytest.raises(DataError) as info:
        list(FilesCorpus(path=path).documents())
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_path(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.txt")
    assert path in _error(path) and "does not exist" in _error(path)


def test_glob_matching_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "*.txt")
    assert path in _error(path) and "matches no files" in _error(path)


def test_folder_without_text_files(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b", encoding="utf-8")
    assert str(tmp_path) in _error(str(tmp_path)) and ".txt" in _error(str(tmp_path))


def test_invalid_utf8_names_file_and_offset(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café au lait".encode("latin-1"))
    message = _error(str(bad))
    assert str(bad) in message and "offset 3" in message and "re-encode" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_unreadable_file(tmp_path: Path) -> None:
    locked = tmp_path / "locked.txt"
    locked.write_text("secret", encoding="utf-8")
    locked.chmod(0)
    try:
        message = _error(str(locked))
    finally:
        locked.chmod(0o644)
    assert str(locked) in message and "permission" in message


def test_unreadable_file_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root ignores file modes, so also simulate the error the way a locked file raises it.
    target = tmp_path / "locked.txt"
    target.write_text("secret", encoding="utf-8")

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", deny)
    message = _error(str(target))
    assert str(target) in message and "permission" in message


def test_registered_through_the_hook() -> None:
    reg = Registry()
    corpora.register_components(
        register=lambda kind, name, factory, **meta: reg.register(
            kind, name, factory, plugin="test", **meta
        )
    )
    assert reg.names("corpus") == ["files", "pydoc", "python-stdlib"]
    files = reg.get("corpus", "files")
    assert list(files.options) == ["path"] and files.options["path"].required
    assert files.options["path"].type is str
    assert len(list(reg.get("corpus", "pydoc").build().documents())) == 79
