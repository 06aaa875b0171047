"""`ablate cache list` and `ablate cache clear`: the listing, what clear removes (by prefix, by
age, everything), its confirmation and refusals, and that it never touches what is not the
cache's."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from plugins.tokenizers import BPETokenizer, ByteTokenizer
from toolkit.cli import main
from toolkit.data.cache import scan
from toolkit.data.splits import Holdout
from toolkit.data.tokens import TokenData, clear_memo, load_tokens

DAY = 86400.0


class ListCorpus:
    def __init__(self, description: str, docs: list[tuple[str, str]]) -> None:
        self.description = description
        self.docs = docs

    def documents(self) -> Iterator[tuple[str, str]]:
        yield from self.docs


class Stdin(io.StringIO):
    """Typed answers, on what says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _build(cache: Path, description: str, text: str, tokenizer=None) -> TokenData:
    clear_memo()
    corpus = ListCorpus(description, [("a", text), ("b", text[::-1])])
    return load_tokens(corpus, tokenizer or ByteTokenizer(), 0.25, cache)


def _age(cache: Path, key: str, days: float) -> None:
    """Make an entry look written `days` ago."""
    when = time.time() - days * DAY
    for suffix in (".npy", ".json"):
        os.utime(cache / "tokens" / f"{key}{suffix}", (when, when))


def _temp(cache: Path, name: str, days: float = 0.0, size: int = 1000) -> Path:
    """A temp file as a killed atomic write leaves it."""
    path = cache / "tokens" / name
    path.write_bytes(b"\0" * size)
    when = time.time() - days * DAY
    os.utime(path, (when, when))
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, TokenData, TokenData]:
    """A cache with two entries, the second written a day after the first."""
    cache = tmp_path / "cache"
    old = _build(cache, "first corpus", "hello cache world\n" * 200)
    new = _build(cache, "second corpus", "ablate all the things\n" * 100)
    _age(cache, old.key, 1)
    return cache, old, new


def test_list_of_a_missing_or_empty_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "cache", "list", "--dir", str(tmp_path / "nowhere"))
    assert code == 0 and not err
    assert (
        out
        == f"token cache: {tmp_path / 'nowhere' / 'tokens'}: empty (the folder does not exist yet)\n"
    )
    (tmp_path / "empty" / "tokens").mkdir(parents=True)
    code, out, _ = _run(capsys, "cache", "list", "--dir", str(tmp_path / "empty"))
    assert code == 0 and out == f"token cache: {tmp_path / 'empty' / 'tokens'}: empty\n"


def test_list_newest_first_with_counts_and_sizes(
    two: tuple[Path, TokenData, TokenData], capsys: pytest.CaptureFixture[str]
) -> None:
    cache, old, new = two
    _temp(cache, f".{new.key[:32]}.abcd1234.npy.tmp", size=3000)
    code, out, err = _run(capsys, "cache", "list", "--dir", str(cache))
    assert code == 0 and not err
    lines = out.splitlines()
    assert lines[0] == f"token cache: {cache / 'tokens'}"
    assert lines[1].split()[:3] == ["KEY", "CORPUS", "TOKENIZER"]
    rows = {line.split()[0]: line for line in lines[2:4]}
    assert list(rows) == [new.key[:12], old.key[:12]]  # newest first
    for d in (new, old):
        meta = scan(cache).entries[0 if d is new else 1].meta or {}
        row = rows[d.key[:12]]
        assert f"{len(d.train):,}/{len(d.val):,}" in row
        # Descriptions and tokenizer names where the cache recorded them, "?" where not.
        assert str(meta.get("corpus", "?")) in row and str(meta.get("tokenizer", "?")) in row
    assert lines[4].startswith("2 entries: ") and "KiB" in lines[4]
    assert lines[5] == "learned tokenizer states: 0, 0 B"
    assert lines[6].startswith("leftover temp files: 1, 2.9 KiB (1 younger than an hour")
    assert lines[7].startswith("total: ") and lines[7].endswith("KiB")


def test_list_counts_learned_states_and_shows_incomplete_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    d = _build(
        cache, "bpe corpus", "some text to learn merges from\n" * 50, BPETokenizer(vocab_size=260)
    )
    (cache / "tokens" / f"{d.key}.json").unlink()  # as a writer killed before its metadata
    code, out, _ = _run(capsys, "cache", "list", "--dir", str(cache))
    assert code == 0
    assert f"{d.key[:12]}  (incomplete: no metadata; rebuilt when used)" in out
    assert "learned tokenizer states: 1, " in out


def test_clear_by_prefix_removes_that_entry_only(
    two: tuple[Path, TokenData, TokenData], capsys: pytest.CaptureFixture[str]
) -> None:
    cache, old, new = two
    size = sum((cache / "tokens" / f"{old.key}{s}").stat().st_size for s in (".npy", ".json"))
    code, out, err = _run(
        capsys, "cache", "clear", old.key[:8].upper(), "--dir", str(cache), "--yes"
    )
    assert code == 0 and not err
    assert out.startswith(f"removed 2 files from {cache / 'tokens'}; freed ")
    assert [e.key for e in scan(cache).entries] == [new.key]
    assert size > 0 and not (cache / "tokens" / f"{old.key}.npy").exists()


def test_clear_older_than_keeps_newer_entries_and_live_temps(
    two: tuple[Path, TokenData, TokenData], capsys: pytest.CaptureFixture[str]
) -> None:
    cache, _, new = two
    dead = _temp(cache, ".dead.x.npy.tmp", days=3)
    live = _temp(cache, ".live.y.npy.tmp")  # a write that may be under way now
    code, out, _ = _run(capsys, "cache", "clear", "--older-than", "0.5", "--dir", str(cache), "-y")
    assert code == 0 and out.startswith("removed 3 files")
    assert [e.key for e in scan(cache).entries] == [new.key]
    assert not dead.exists() and live.exists()
    # Nothing that old is left: not an error.
    code, out, _ = _run(capsys, "cache", "clear", "--older-than", "0.5", "--dir", str(cache), "-y")
    assert code == 0 and out.endswith(": nothing to remove\n")


def test_clear_everything(
    two: tuple[Path, TokenData, TokenData], capsys: pytest.CaptureFixture[str]
) -> None:
    cache, _, _ = two
    _build(cache, "bpe corpus", "learn merges here\n" * 50, BPETokenizer(vocab_size=260))
    code, out, _ = _run(capsys, "cache", "clear", "--dir", str(cache), "--yes")
    assert code == 0 and out.startswith("removed 7 files")  # 3 entries, 1 learned state
    assert list((cache / "tokens").iterdir()) == []


def test_clear_refuses_without_yes_when_stdin_is_not_a_terminal(
    two: tuple[Path, TokenData, TokenData],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache, _, _ = two
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    before = sorted((cache / "tokens").iterdir())
    code, out, err = _run(capsys, "cache", "clear", "--dir", str(cache))
    assert code == 2 and not out
    assert err.count("\n") == 1 and err.startswith("ablate: error: cache clear would remove 2 ")
    assert "pass --yes" in err
    assert sorted((cache / "tokens").iterdir()) == before


@pytest.mark.parametrize(("answer", "code"), [("y\n", 0), ("n\n", 1), ("", 1)])
def test_clear_asks_on_a_terminal(
    two: tuple[Path, TokenData, TokenData],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    code: int,
) -> None:
    cache, _, new = two
    monkeypatch.setattr("sys.stdin", Stdin(answer))
    got, out, _ = _run(capsys, "cache", "clear", "--dir", str(cache))
    assert got == code
    assert out.startswith("this removes 2 entries (") and new.key[:12] in out
    assert "? [y/N] " in out
    assert len(scan(cache).entries) == (0 if answer.startswith("y") else 2)


def test_unknown_prefix_names_some_keys(
    two: tuple[Path, TokenData, TokenData], capsys: pytest.CaptureFixture[str]
) -> None:
    cache, old, new = two
    prefix = next(c for c in "0123456789abcdef" if c not in (old.key[0], new.key[0]))
    code, out, err = _run(capsys, "cache", "clear", new.key[:6], prefix, "--dir", str(cache), "-y")
    assert code == 2 and not out and err.count("\n") == 1
    assert f"no cache entry has a key starting with '{prefix}'" in err
    assert new.key[:12] in err and old.key[:12] in err
    assert len(scan(cache).entries) == 2  # the good prefix removed nothing either
    code, out, err = _run(capsys, "cache", "clear", "", "--dir", str(cache), "-y")
    assert code == 2 and err.count("\n") == 1 and "an empty key prefix names no entry" in err
    assert len(scan(cache).entries) == 2


def test_list_shows_a_test_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    clear_memo()
    corpus = ListCorpus("split three ways", [("a", "hello cache world\n" * 200)])
    data = load_tokens(corpus, ByteTokenizer(), Holdout(val_fraction=0.2, test_fraction=0.1), cache)
    code, out, _ = _run(capsys, "cache", "list", "--dir", str(cache))
    assert code == 0 and "TOKENS (TRAIN/VAL[/TEST])" in out
    assert f"{len(data.train):,}/{len(data.val):,}/{len(data.test):,}" in out


def test_bad_days_and_a_file_for_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for days in ("-1", "inf", "nan"):
        argv = ["cache", "clear", "--older-than", days, "--dir", str(tmp_path)]
        code, _, err = _run(capsys, *argv)
        assert code == 2, err
        assert f"--older-than takes a finite number of days, 0 or more; got {days}" in err
    (tmp_path / "tokens").write_text("not a folder")
    code, _, err = _run(capsys, "cache", "list", "--dir", str(tmp_path))
    assert code == 2 and "is a file, not a token cache folder" in err


def test_clear_leaves_symlinks_and_foreign_files_alone(
    two: tuple[Path, TokenData, TokenData],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache, old, _ = two
    folder = cache / "tokens"
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "data.npy").write_bytes(b"keep me")
    # Links named like cache files, pointing out of the folder; a folder; a file of the user's.
    link = folder / f"{'f' * 64}.npy"
    link.symlink_to(outside / "data.npy")
    (folder / f".{'e' * 32}.x.tmp").symlink_to(outside)
    (folder / "sub").mkdir()
    (folder / "sub" / f"{old.key}.npy").write_bytes(b"not listed")
    (folder / "notes.txt").write_text("mine")
    code, out, _ = _run(capsys, "cache", "list", "--dir", str(cache))
    assert "f" * 12 not in out and "leftover temp files: 0" in out
    assert "other files and folders: 4 (not the cache's; never removed)" in out
    code, _, _ = _run(capsys, "cache", "clear", "--dir", str(cache), "--yes")
    assert code == 0
    left = sorted(p.name for p in folder.iterdir())
    assert left == sorted([link.name, f".{'e' * 32}.x.tmp", "sub", "notes.txt"])
    assert (outside / "data.npy").read_bytes() == b"keep me"
    assert (folder / "sub" / f"{old.key}.npy").exists()


def test_entries_of_other_origins_are_listed_and_cleared(
    two: tuple[Path, TokenData, TokenData], capsys: pytest.CaptureFixture[str]
) -> None:
    """Keys with a kind ("shards-<sha256>": joined token shards) and metadata without a split."""
    cache, old, new = two
    key = "shards-" + "c" * 64
    np.save(cache / "tokens" / f"{key}.npy", np.arange(1000, dtype=np.uint16))
    meta = {"corpus": "tokens: 3 shards from data", "n": 1000, "tokenizer": "gpt2"}
    (cache / "tokens" / f"{key}.json").write_text(json.dumps(meta))
    code, out, _ = _run(capsys, "cache", "list", "--dir", str(cache))
    (row,) = [line for line in out.splitlines() if line.startswith(f"shards-{'c' * 12} ")]
    assert "tokens: 3 shards from data" in row and " gpt2 " in row and " 1,000 " in row
    assert "old cache format" not in row
    code, out, _ = _run(capsys, "cache", "clear", "shards-", "--dir", str(cache), "--yes")
    assert code == 0 and out.startswith("removed 2 files")
    assert sorted(e.key for e in scan(cache).entries) == sorted([old.key, new.key])


def test_the_tokens_folder_given_for_the_cache_folder(
    two: tuple[Path, TokenData, TokenData], capsys: pytest.CaptureFixture[str]
) -> None:
    cache, _, _ = two
    code, out, err = _run(capsys, "cache", "clear", "--dir", str(cache / "tokens"), "--yes")
    assert code == 2 and not out
    assert f"is the token folder itself; give the folder that holds it, {cache}" in err
    assert len(scan(cache).entries) == 2


def test_a_file_that_cannot_be_removed_is_reported(
    two: tuple[Path, TokenData, TokenData],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache, old, _ = two
    unlink = os.unlink

    def refuse(path: Path) -> None:
        if Path(path).name == f"{old.key}.npy":
            raise PermissionError(13, "Permission denied")
        unlink(path)

    monkeypatch.setattr("toolkit.data.cache.os.unlink", refuse)
    code, out, err = _run(capsys, "cache", "clear", "--dir", str(cache), "--yes")
    assert code == 1 and out.startswith("removed 3 files")
    assert err == f"ablate: could not remove {cache / 'tokens' / old.key}.npy (Permission denied)\n"
    # What was left is an incomplete entry (its metadata went first), rebuilt when used.
    (entry,) = scan(cache).entries
    assert entry.key == old.key and not entry.complete
