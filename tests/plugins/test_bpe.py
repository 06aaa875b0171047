"""The trainable byte-level BPE (`bpe`): training matches a from-scratch reference, tiktoken's
encoding matches merge-by-merge BPE, options are checked, and it trains on a real corpus fast."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugins.bpe import GPT2_PATTERN, learn_merges
from plugins.corpora import PydocCorpus
from plugins.tokenizers import BPETokenizer
from toolkit.api.manager import Plugins
from toolkit.data import tokens as data
from toolkit.errors import ComponentError, DataError
from toolkit.spec.parse import parse_spec
from toolkit.sweep.runner import run

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
PYDOC = [text for _, text in PydocCorpus().documents()]
SAMPLE = "".join(PYDOC)[:60_000]  # enough text for a few hundred merges, trained in ms


def _trained(vocab_size: int = 384, texts: list[str] | None = None) -> BPETokenizer:
    tok = BPETokenizer(vocab_size=vocab_size)
    tok.train([SAMPLE] if texts is None else texts)
    return tok


TOK = _trained()


# --- pure-Python references -------------------------------------------------------------------


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def reference_train(texts: list[str], n_merges: int) -> list[tuple[int, int]]:
    """BPE the slow, obvious way: recount every pair before each merge; the most frequent wins,
    the smallest pair on ties; a pair spelling bytes some id already stands for is skipped."""
    chunks = Counter(c for t in texts for c in regex.findall(GPT2_PATTERN, t))
    words = [(list(c.encode()), n) for c, n in chunks.items()]
    spelled = [bytes([i]) for i in range(256)]
    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges:
        counts: Counter[tuple[int, int]] = Counter()
        for ids, n in words:
            for pair in itertools.pairwise(ids):
                counts[pair] += n
        candidates = [
            (-n, pair)
            for pair, n in counts.items()
            if spelled[pair[0]] + spelled[pair[1]] not in spelled
        ]
        if not candidates:
            break
        pair = min(candidates)[1]
        new_id = 256 + len(merges)
        merges.append(pair)
        spelled.append(spelled[pair[0]] + spelled[pair[1]])
        words = [(_merge(ids, pair, new_id), n) for ids, n in words]
    return merges


def reference_encode(text: str, merges: list[tuple[int, int]]) -> list[int]:
    """Merge-by-merge BPE: in each pre-tokenized chunk, apply the lowest-ranked merge present
    until none applies."""
    ranks = {pair: 256 + i for i, pair in enumerate(merges)}
    out: list[int] = []
    for chunk in regex.findall(GPT2_PATTERN, text):
        ids = list(chunk.encode())
        while len(ids) > 1:
            pair = min(itertools.pairwise(ids), key=lambda p: ranks.get(p, float("inf")))
            if pair not in ranks:
                break
            ids = _merge(ids, pair, ranks[pair])
        out.extend(ids)
    return out


# --- training ---------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [0, 100_000, 300_000])
@pytest.mark.slow
def test_training_matches_reference_on_real_text(start: int) -> None:
    texts = ["".join(PYDOC)[start : start + 4000], "a second, separate piece of text"]
    assert learn_merges(texts, 120) == reference_train(texts, 120)


@SETTINGS
@given(texts=st.lists(st.text(alphabet="aab \n'é.1", max_size=60), max_size=4))
def test_training_matches_reference_on_repetitive_text(texts: list[str]) -> None:
    # Runs of one letter make overlapping pairs ("aaa") and pairs spelling existing tokens.
    assert learn_merges(texts, 40) == reference_train(texts, 40)


def test_training_is_deterministic_and_ties_go_to_the_smallest_pair() -> None:
    assert _trained().merges == TOK.merges
    assert _trained().fingerprint == TOK.fingerprint
    # "ab" and "cd" both occur twice: the smaller pair (a, b) is merged first.
    assert learn_merges(["cd", "ab", "cd", "ab"], 1) == [(ord("a"), ord("b"))]
    assert learn_merges(["ab", "cd", "ab", "cd"], 1) == [(ord("a"), ord("b"))]


def test_no_token_spans_two_texts() -> None:
    tok = _trained(300, ["ab"] * 50 + ["c"] * 50)
    assert tok.merges == [(ord("a"), ord("b"))] and tok.vocab_size == 258
    assert tok.encode("bc") == [ord("b"), ord("c")]


def test_fewer_merges_when_text_runs_out_of_pairs() -> None:
    tok = _trained(1000, ["aaaa"])
    # "aaaa" -> (a, a) -> (aa, aa); then one token, nothing left to merge.
    assert tok.merges == [(97, 97), (256, 256)]
    assert (tok.vocab_size, tok.eot_id) == (259, 258)
    assert tok.token_byte_lengths().shape == (259,)
    assert tok.decode(tok.encode("aaaa b")) == "aaaa b"
    empty = _trained(300, [])
    assert (empty.vocab_size, empty.eot_id, empty.merges) == (257, 256, [])


def test_vocab_size_and_eot() -> None:
    assert (TOK.vocab_size, TOK.eot_id, len(TOK.merges)) == (384, 383, 127)
    assert TOK.decode([TOK.eot_id]) == "<|endoftext|>"
    lengths = TOK.token_byte_lengths()
    assert lengths[TOK.eot_id] == 0 and (lengths[:-1] >= 1).all()
    assert lengths[:256].tolist() == [1] * 256 and lengths[256:-1].max() > 2


# --- encoding ---------------------------------------------------------------------------------


@SETTINGS
@given(text=st.text())
def test_tiktoken_matches_merge_by_merge_on_arbitrary_text(text: str) -> None:
    assert TOK.encode(text) == reference_encode(text, TOK.merges)


@SETTINGS
@given(
    start=st.integers(0, sum(map(len, PYDOC)) - 1),
    length=st.integers(0, 3000),
    vocab_size=st.sampled_from([300, 384]),
)
def test_tiktoken_matches_merge_by_merge_on_real_text(
    start: int, length: int, vocab_size: int
) -> None:
    tok = TOK if vocab_size == 384 else SMALL
    text = "".join(PYDOC)[start : start + length]
    assert tok.encode(text) == reference_encode(text, tok.merges)


SMALL = _trained(300, PYDOC[-5:])


@pytest.mark.slow
def test_tiktoken_matches_merge_by_merge_on_a_whole_corpus() -> None:
    big = _trained(1024, PYDOC)
    for text in PYDOC[::4]:
        assert big.encode(text) == reference_encode(text, big.merges)


@SETTINGS
@given(text=st.text())
def test_round_trip_and_byte_lengths(text: str) -> None:
    ids = TOK.encode(text)
    assert TOK.decode(ids) == text
    assert int(TOK.token_byte_lengths()[ids].sum()) == len(text.encode("utf-8"))


def test_unseen_characters_round_trip() -> None:
    text = "日本語のテキスト 🎉🐍 Ωμέγα — never in the training text\u2028\t\x00"
    assert not {"日", "🎉", "Ω", "\u2028", "\x00"} & set(SAMPLE)
    ids = TOK.encode(text)
    assert TOK.decode(ids) == text and TOK.eot_id not in ids
    assert [list(b) for b in TOK.encode_batch([text, "x"])] == [ids, TOK.encode("x")]
    assert TOK.decode(np.array([*ids, TOK.vocab_size + 3])).endswith("\ufffd")


def test_learned_tokens_are_common_words() -> None:
    words = {TOK.decode([i]) for i in range(256, TOK.eot_id)}
    assert {" the", " of", "the"} & words


# --- options, state, errors -------------------------------------------------------------------


@pytest.mark.parametrize("bad", [256, 0, -5, True, 300.0, "512"])
def test_bad_vocab_size_is_a_component_error(bad, plugins: Plugins) -> None:
    with pytest.raises(ComponentError, match="vocab_size") as info:
        BPETokenizer(vocab_size=bad)
    assert "\n" not in str(info.value)
    with pytest.raises(ComponentError, match="vocab_size"):
        plugins.registry.get("tokenizer", "bpe").build(vocab_size=bad)


def test_untrained_tokenizer_says_so() -> None:
    tok = BPETokenizer(vocab_size=300)
    assert tok.needs_training and not tok.trained
    assert (tok.vocab_size, tok.eot_id) == (300, 299)
    for call in (
        lambda: tok.encode("x"),
        lambda: tok.decode([1]),
        tok.token_byte_lengths,
        tok.state,
    ):
        with pytest.raises(DataError, match=r"'bpe'.*not trained.*train\(texts\)"):
            call()


def test_state_round_trip_and_bad_states() -> None:
    state = TOK.state()
    fresh = BPETokenizer(vocab_size=384)
    fresh.load_state(state)
    assert fresh.fingerprint == TOK.fingerprint and fresh.encode(SAMPLE) == TOK.encode(SAMPLE)
    assert fresh.fingerprint != BPETokenizer(vocab_size=384).fingerprint
    assert fresh.fingerprint != SMALL.fingerprint
    bad_states = [
        {**state, "merges": [[1, 2], [300, 1]]},  # id 300 not created yet
        {**state, "merges": [[97, 97], [256, 97], [97, 256]]},  # "aaa" twice
        {**state, "merges": [[1, 2]] * 200},  # too many for vocab_size 384
        {**state, "pattern": r"\w+"},
        {**state, "config": "bpe-v0"},
        [],
    ]
    for bad in bad_states:
        with pytest.raises(DataError, match="cannot load"):
            fresh.load_state(bad)
    with pytest.raises(DataError, match="learned with"):
        BPETokenizer(vocab_size=500).load_state(state)  # a different vocab_size option


def test_registered_with_its_option(plugins: Plugins) -> None:
    component = plugins.registry.get("tokenizer", "bpe")
    assert list(component.options) == ["vocab_size"]
    assert component.options["vocab_size"].default == 1024
    tok = component.build(vocab_size=300)
    assert (
        isinstance(tok, BPETokenizer)
        and tok.name == "bpe"
        and repr(tok) == "BPETokenizer(vocab_size=300)"
    )


# --- a real corpus ------------------------------------------------------------------------------


def test_trains_on_pydoc(tmp_path: Path) -> None:
    # How fast: benchmarks/run.py measures training on pydoc (bpe_train_s), never a timed test.
    tok = BPETokenizer(vocab_size=512)
    d = data.load_tokens(PydocCorpus(), tok, 0.1, cache_dir=tmp_path)
    assert d.vocab_size == tok.vocab_size == 512 and d.eot_id == 511
    # Over two bytes per token on text it never saw, where raw bytes give one.
    assert d.val_bytes / len(d.val) > 2
    assert d.val_bytes == int(d.token_bytes[d.val].sum())
    assert tok.decode(tok.encode(PYDOC[-1])) == PYDOC[-1]


@pytest.mark.slow
def test_a_sweep_trains_and_samples_with_it(tmp_path: Path, tiny_doc: dict) -> None:
    plugins = Plugins(autoload=False)
    tiny_doc["data"]["tokenizer"] = {"name": "bpe", "vocab_size": 320}
    table = run(
        parse_spec(tiny_doc, plugins=plugins), tmp_path / "out", plugins=plugins, progress=False
    )
    assert table["status"].tolist() == ["ok"]
    samples = list((tmp_path / "out").rglob("sample.txt"))
    assert len(samples) == 1 and samples[0].read_text(encoding="utf-8")
