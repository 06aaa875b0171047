"""A tokenizer or corpus plugin that breaks its contract (toolkit.api.contracts) is a one-line
ComponentError naming it, raised where the token pipeline first uses it: at `ablate validate`,
not as an AttributeError or a TypeError deep inside the pipeline (or, for a bad
token_byte_lengths() or eot_id, after training started)."""

from __future__ import annotations

import multiprocessing
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import small_toml, write_spec

import toolkit.api.manager
from plugins.tokenizers import BPETokenizer, ByteTokenizer
from toolkit.api.contracts import Corpus, Tokenizer, TrainableTokenizer, members
from toolkit.api.kinds import KINDS
from toolkit.cli import main
from toolkit.data import encode
from toolkit.data import tokens as data
from toolkit.data.resolve import Frozen
from toolkit.data.tokens import load_tokens
from toolkit.errors import ComponentError, DataError

DOCS = [("one", "first document, " * 40), ("two", "second document " * 30)]


class ListCorpus:
    description = "two test documents"

    def __init__(self, docs: list = DOCS) -> None:
        self.docs = docs

    def documents(self) -> Iterator:
        yield from self.docs


class NoFingerprint:
    """ByteTokenizer's members but fingerprint."""

    name, vocab_size, eot_id = "nofp", 257, 256
    encode = ByteTokenizer.encode
    decode = ByteTokenizer.decode
    token_byte_lengths = ByteTokenizer.token_byte_lengths


class NotACorpus:
    description = "nothing to read"


def _load(corpus=None, tokenizer=None, **labels) -> data.TokenData:
    data.clear_memo()
    return load_tokens(corpus or ListCorpus(), tokenizer or ByteTokenizer(), 0.25, **labels)


def _error(corpus=None, tokenizer=None, kind=ComponentError, **labels) -> str:
    with pytest.raises(kind) as err:
        _load(corpus, tokenizer, **labels)
    assert type(err.value) is kind and "\n" not in str(err.value), str(err.value)
    return str(err.value)


# -- members missing, or of the wrong type ---------------------------------------------------
def test_a_tokenizer_without_fingerprint_is_named_with_what_it_lacks() -> None:
    assert _error(tokenizer=NoFingerprint()) == (
        "tokenizer 'nofp': NoFingerprint lacks fingerprint; a tokenizer must have name, "
        "vocab_size, eot_id, fingerprint, encode(), decode() and token_byte_lengths() (see "
        '"The kinds" in the README)'
    )


def test_a_corpus_without_documents_is_named_with_what_it_lacks() -> None:
    assert _error(corpus=NotACorpus()) == (
        "corpus 'nothing to read': NotACorpus lacks documents(); a corpus must have "
        'description and documents() (see "The kinds" in the README)'
    )


def test_the_callers_label_names_the_component_and_its_plugin() -> None:
    labels = {
        "corpus_label": "corpus 'mine' (plugin 'my_corpus')",
        "tokenizer_label": "tokenizer 'nofp' (plugin 'my_tok')",
    }
    assert _error(corpus=NotACorpus(), **labels).startswith(
        "corpus 'mine' (plugin 'my_corpus'): NotACorpus lacks documents()"
    )
    assert _error(tokenizer=NoFingerprint(), **labels).startswith(
        "tokenizer 'nofp' (plugin 'my_tok'): NoFingerprint lacks fingerprint"
    )


def test_a_method_that_is_not_callable_and_attributes_of_the_wrong_type_are_named() -> None:
    class Odd(ByteTokenizer):
        vocab_size = "257"
        fingerprint = None
        decode = "not a method"

    assert _error(tokenizer=Odd()).startswith(
        "tokenizer 'bytes': Odd lacks decode(); has vocab_size '257', not an int; has "
        "fingerprint None, not a str; a tokenizer must have"
    )


def test_a_tokenizer_that_learns_needs_the_learning_members() -> None:
    class Learns(ByteTokenizer):
        needs_training = True
        training_config = "learns-v1"

        def train(self, texts) -> None:
            pass

    message = _error(tokenizer=Learns())
    assert message.startswith("tokenizer 'bytes': Learns lacks state(), load_state(); a ")
    assert "a tokenizer with needs_training = True must have name, " in message


def test_the_protocols_name_what_the_readme_kinds_say() -> None:
    """The contract checked is the one documented: every member of each Protocol is named in
    its kind's description (README "The kinds")."""
    for kind, contracts in (("tokenizer", (Tokenizer, TrainableTokenizer)), ("corpus", (Corpus,))):
        for contract in contracts:
            for member in members(contract):
                assert member.removesuffix("()") in KINDS[kind].contract, (kind, member)
    assert members(Corpus) == ["description", "documents()"]


def test_built_in_and_wrapped_tokenizers_keep_their_contract() -> None:
    assert _load(tokenizer=BPETokenizer(vocab_size=300)).vocab_size <= 300
    bpe = BPETokenizer(vocab_size=300)
    _load(tokenizer=bpe)
    assert _load(tokenizer=Frozen(bpe)).vocab_size == bpe.vocab_size


# -- what a corpus yields ----------------------------------------------------------------------
def test_a_corpus_yielding_ints_is_named_by_the_callers_label() -> None:
    ints = ListCorpus([(1, 2)])
    message = _error(corpus=ints, kind=DataError, corpus_label="corpus 'ints' (plugin 'p')")
    assert message == (
        "corpus 'ints' (plugin 'p') yielded int/int instead of a (name, text) pair of strings; "
        "fix its documents()"
    )
    # Without a label, by its description.
    assert _error(corpus=ints, kind=DataError).startswith("corpus 'two test documents' yielded")


@pytest.mark.parametrize(
    ("docs", "got"), [(["just text"], "str"), ([("a", "b", "c")], "tuple"), ([7], "int")]
)
def test_a_corpus_yielding_other_than_pairs_is_a_data_error(docs: list, got: str) -> None:
    message = _error(corpus=ListCorpus(docs), kind=DataError)
    assert f"yielded {got} instead of a (name, text) pair of strings" in message


def test_a_corpus_that_raises_or_returns_nothing_is_named() -> None:
    class Raises(ListCorpus):
        def documents(self):
            raise OSError("disk gone")

    class ReturnsNone(ListCorpus):
        def documents(self):
            return None

    assert _error(corpus=Raises()) == (
        "corpus 'two test documents' failed reading its documents: OSError: disk gone"
    )
    assert _error(corpus=ReturnsNone()).startswith(
        "corpus 'two test documents' documents() returned NoneType, not an iterator"
    )


# -- what a tokenizer gives ------------------------------------------------------------------
class RaisingEncode(ByteTokenizer):
    fingerprint = "raising-encode"
    encode_batch = None

    def encode(self, text: str) -> list[int]:
        raise RuntimeError("boom")


class TextIds(ByteTokenizer):
    fingerprint = "text-ids"
    encode_batch = None

    def encode(self, text: str):
        return text


class FloatIds(ByteTokenizer):
    fingerprint = "float-ids"

    def encode_batch(self, texts):
        return [np.ones(3) for _ in texts]


class ShortBatch(ByteTokenizer):
    fingerprint = "short-batch"

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts][1:]


@pytest.mark.parametrize(
    ("tokenizer", "message"),
    [
        (RaisingEncode(), "tokenizer 'bytes' raised in encode(): RuntimeError: boom"),
        (TextIds(), "tokenizer 'bytes' encoded a text as str, not a list of integer ids"),
        (FloatIds(), "tokenizer 'bytes' encoded a text as ndarray of float64, not a list"),
        (ShortBatch(), "tokenizer 'bytes' encode_batch() returned 2 id lists for 3 texts"),
    ],
)
def test_a_tokenizer_that_raises_or_gives_other_than_ids_is_named(tokenizer, message) -> None:
    assert message in _error(tokenizer=tokenizer)


def test_a_worker_process_names_the_tokenizer_as_this_process_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # fork: a tokenizer class defined in a test module reaches workers this way only.
    context = multiprocessing.get_context("fork")
    monkeypatch.setattr(multiprocessing, "get_context", lambda *a: context)
    monkeypatch.setattr(encode, "PROCESS_CHARS", 0)
    monkeypatch.setattr(encode, "usable_cores", lambda: 2)
    assert "raised in encode(): RuntimeError: boom" in _error(tokenizer=RaisingEncode())


@pytest.mark.parametrize(
    ("fact", "message"),
    [
        ({"eot_id": 257}, "has eot_id 257, outside its vocabulary [0, vocab_size=257)"),
        (
            {"token_byte_lengths": lambda self: np.ones(10, dtype=np.int64)},
            "token_byte_lengths() gave (10,) int64, not (257,) integers",
        ),
    ],
)
def test_an_eot_id_or_byte_lengths_that_do_not_fit_the_vocabulary_are_named(fact, message):
    bad = type("Bad", (ByteTokenizer,), {"fingerprint": "bad", **fact})()
    assert _error(tokenizer=bad) == f"tokenizer 'bytes' {message}" + (
        "; fix its eot_id or vocab_size"
        if "eot_id" in fact
        else "; it must give the UTF-8 bytes each of its vocab_size ids stands for"
    )


# -- at `ablate validate`: one line, exit status 2 -----------------------------------------------
PLUGIN = """
from toolkit import hookimpl


class NoFp:
    name, vocab_size, eot_id = "nofp", 257, 256

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def token_byte_lengths(self):
        return [1] * 256 + [0]


class NotCorpus:
    description = "nothing"


@hookimpl
def register_components(register):
    register("tokenizer", "nofp", NoFp)
    register("corpus", "not-a-corpus", NotCorpus)
"""


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(toolkit.api.manager, "_DEFAULT", {})
    (tmp_path / "broken_text.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("broken_text", None)


@pytest.mark.parametrize(
    ("data_lines", "message"),
    [
        (
            'tokenizer = "nofp"',
            "tokenizer 'nofp' (plugin 'broken_text'): NoFp lacks fingerprint; a tokenizer must",
        ),
        (
            'tokenizer = "bytes"\ncorpus = "not-a-corpus"',
            "corpus 'not-a-corpus' (plugin 'broken_text'): NotCorpus lacks documents(); a "
            "corpus must have",
        ),
    ],
)
def test_validate_refuses_a_broken_tokenizer_or_corpus_in_one_line(
    broken_plugin: Path, capsys: pytest.CaptureFixture[str], data_lines: str, message: str
) -> None:
    text = small_toml("cat").replace('tokenizer = "bytes"', data_lines)
    spec = write_spec(broken_plugin / "spec.toml", text)
    assert main(["validate", str(spec), "--plugin", "broken_text"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"ablate: error: {spec}: {message}"), err
