"""Tokenizing streams: long documents are cut at newlines that change no token, encoded a batch
at a time and appended to the cache file, so memory is bounded by a batch and the ids are
those of tokenizing every document whole."""

from __future__ import annotations

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
