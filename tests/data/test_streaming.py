"""Tokenizing streams: long documents are cut at newlines that change no token, encoded a batch
at a time and appended to the cache file, so memory is bounded by a batch and the ids are
those of tokenizing every document whole."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.tokenizers import ByteTokenizer, GPT2Tokenizer
from toolkit.data import encode
from toolkit.data import tokens as data
from toolkit.data.encode import cut_parts
from toolkit.data.tokens import load_tokens
from toolkit.errors import DataError

GPT2 = GPT2Tokenizer()

# Words, spaces, newlines (single, doubled, indented), punctuation and digits: the characters
# where GPT-2's pre-tokenizer decides its pieces.
PIECES = st.sampled_from(
    ["def", " foo", "bar", "\n", "\n\n", "\n    ", " ", "  ", "(x)", ":", "42", "é", "\t", "'s"]
)


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(PIECES, max_size=200), size=st.integers(1, 40))
def test_cut_parts_tokenize_as_the_whole_text(pieces: list[str], size: int) -> None:
    text = "".join(pieces)
    parts = list(cut_parts(text, GPT2, size))
    assert "".join(parts) == text
    assert [i for p in parts for i in GPT2.encode(p)] == GPT2.encode(text)
    assert all(p for p in parts) or parts == [""]


def test_a_tokenizer_that_does_not_say_so_is_never_cut() -> None:
    class Whole(ByteTokenizer):
        newline_splits = False

    text = "a\nb\n" * 100
    assert list(cut_parts(text, Whole(), 3)) == [text]
    assert len(list(cut_parts(text, ByteTokenizer(), 3))) > 10


class ListCorpus:
    description = "list"

    def __init__(self, docs: list[tuple[str, str]]) -> None:
        self.docs = docs

    def documents(self):
        yield from self.docs


def test_a_build_in_many_batches_writes_the_ids_of_whole_documents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = [(f"d{i}", f"line {i} of text\nand more {i}\n" * (50 + i)) for i in range(12)]
    whole = load_tokens(ListCorpus(docs), GPT2, 0.2, cache_dir=tmp_path / "a")
    monkeypatch.setattr(data, "_BATCH_CHARS", 64)  # hundreds of batches
    monkeypatch.setattr(encode, "PART_CHARS", 64)  # documents cut into many parts
    data.clear_memo()
    batches = []
    real = encode.encode_all
    monkeypatch.setattr(
        encode, "encode_all", lambda t, texts: batches.append(len(texts)) or real(t, texts)
    )
    cut = load_tokens(ListCorpus(docs), GPT2, 0.2, cache_dir=tmp_path / "b")
    assert len(batches) > 100
    np.testing.assert_array_equal(cut.train, whole.train)
    np.testing.assert_array_equal(cut.val, whole.val)
    # One end-of-text between documents, none inside a cut document.
    assert int((cut.train == GPT2.eot_id).sum()) + int((cut.val == GPT2.eot_id).sum()) == 11


def test_the_cache_records_what_it_holds(tmp_path: Path) -> None:
    import json

    load_tokens(ListCorpus([("a", "some text\n" * 50)]), ByteTokenizer(), 0.1, cache_dir=tmp_path)
    (meta_file,) = (tmp_path / "tokens").glob("*.json")
    meta = json.loads(meta_file.read_text())
    assert meta["corpus"] == "list" and meta["tokenizer"] == "bytes" and meta["created"] > 0


def test_long_corpora_say_how_tokenizing_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(encode, "PROGRESS_CHARS", 100)
    load_tokens(ListCorpus([("a", "some text\n" * 50)]), ByteTokenizer(), 0.1, cache_dir=tmp_path)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "tokenizing 'list' with bytes: 0.0 M characters"
    assert err[1].startswith("tokenizing 'list' with bytes: done, 0.0 M characters in ")


class Counted:
    """A spy on encode._process_pool: how many pools it started."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started = 0
        real = encode._process_pool

        def spy(*args):
            pool = real(*args)
            self.started += pool is not None
            return pool

        monkeypatch.setattr(encode, "_process_pool", spy)


def many_docs() -> list[tuple[str, str]]:
    return [(f"d{i}", f"def f{i}(x):\n    return x + {i}\n\n" * (40 + i)) for i in range(30)]


# fork: Linux's default before Python 3.14; spawn: macOS's and Windows' (the workers unpickle
# the tokenizer); forkserver: Linux's from 3.14.
@pytest.mark.parametrize("start", ["fork", "spawn", "forkserver"])
@pytest.mark.slow
def test_long_corpora_are_encoded_in_worker_processes_to_the_same_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    here = load_tokens(ListCorpus(many_docs()), GPT2, 0.2, cache_dir=tmp_path / "here")
    data.clear_memo()
    context = multiprocessing.get_context(start)
    monkeypatch.setattr(multiprocessing, "get_context", lambda *a: context)
    monkeypatch.setattr(encode, "PROCESS_CHARS", 0)
    monkeypatch.setattr(encode, "usable_cores", lambda: 2)
    monkeypatch.setattr(data, "_BATCH_CHARS", 500)  # many batches in flight at once
    pools = Counted(monkeypatch)
    there = load_tokens(ListCorpus(many_docs()), GPT2, 0.2, cache_dir=tmp_path / "there")
    assert pools.started == 1
    np.testing.assert_array_equal(there.train, here.train)
    np.testing.assert_array_equal(there.val, here.val)
    assert (there.train_bytes, there.val_bytes) == (here.train_bytes, here.val_bytes)


def test_short_corpora_one_core_or_a_cap_of_one_stay_in_this_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(encode, "usable_cores", lambda: 4)
    assert encode.worker_count(encode.PROCESS_CHARS) == 4
    assert encode.worker_count(encode.PROCESS_CHARS - 1) == 0
    monkeypatch.setenv(encode.WORKERS_ENV, "2")
    assert encode.worker_count(encode.PROCESS_CHARS) == 2
    monkeypatch.setenv(encode.WORKERS_ENV, "1")
    assert encode.worker_count(encode.PROCESS_CHARS) == 0
    monkeypatch.setattr(encode, "usable_cores", lambda: 1)
    monkeypatch.delenv(encode.WORKERS_ENV)
    assert encode.worker_count(10 * encode.PROCESS_CHARS) == 0


def test_a_cap_that_is_not_a_number_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(encode.WORKERS_ENV, "all")
    with pytest.raises(DataError, match=r"ABLATE_TOKENIZE_WORKERS is 'all', not a whole number"):
        encode.worker_count(encode.PROCESS_CHARS)


class DiesInWorkers(ByteTokenizer):
    """Kills any process but the one that made it, as a worker out of memory would die."""

    def __init__(self) -> None:
        self.home = os.getpid()

    def encode_batch(self, texts):
        if os.getpid() != self.home:
            os._exit(3)
        return super().encode_batch(texts)


def test_workers_that_die_leave_the_rest_to_this_process_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encode, "PROCESS_CHARS", 0)
    monkeypatch.setattr(encode, "usable_cores", lambda: 2)
    monkeypatch.setattr(data, "_BATCH_CHARS", 500)
    with pytest.warns(UserWarning, match="tokenizing worker processes stopped"):
        died = load_tokens(ListCorpus(many_docs()), DiesInWorkers(), 0.2, cache_dir=tmp_path)
    whole = "".join(t for _, t in many_docs()).encode()
    assert int((died.train != 256).sum()) + int((died.val != 256).sum()) == len(whole)
    assert int((died.train == 256).sum()) + int((died.val == 256).sum()) == 29


class OutOfVocabulary(ByteTokenizer):
    def encode_batch(self, texts):
        return [np.full(len(t), 999) for t in texts]


def test_a_bad_id_found_in_a_worker_is_the_same_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encode, "PROCESS_CHARS", 0)
    monkeypatch.setattr(encode, "usable_cores", lambda: 2)
    pools = Counted(monkeypatch)
    with pytest.raises(DataError, match=r"produced id 999, outside its vocabulary \[0, 257\)"):
        load_tokens(ListCorpus(many_docs()), OutOfVocabulary(), 0.2, cache_dir=tmp_path)
    assert pools.started == 1
    assert not list((tmp_path / "tokens").glob("*.npy"))  # nothing half-written is kept


def test_a_tokenizer_from_a_script_stays_here_where_workers_start_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class FromAScript(ByteTokenizer):
        pass

    FromAScript.__module__ = "__main__"
    spawn = multiprocessing.get_context("spawn")
    monkeypatch.setattr(multiprocessing, "get_context", lambda *a: spawn)
    assert encode._process_pool(FromAScript(), np.dtype(np.uint16), 2) is None
