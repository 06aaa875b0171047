"""The token pipeline: character split, end-of-text placement, dtype, the on-disk cache (hits,
corruption), trainable tokenizers (trained on the training split only, learned state cached),
and deterministic, resumable batching."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from plugins.corpora import PydocCorpus
from plugins.tokenizers import BPETokenizer, ByteTokenizer, GPT2Tokenizer
from toolkit.data import learned
from toolkit.data import tokens as data
from toolkit.data.batches import TrainBatches, count_windows, eval_batches, eval_starts
from toolkit.data.splits import Holdout, pieces, plan
from toolkit.data.tokens import load_tokens
from toolkit.errors import DataError


@pytest.fixture(autouse=True, scope="module")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABLATE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


class ListCorpus:
    def __init__(self, docs: list[tuple[str, str]]) -> None:
        self.docs = docs
        self.description = f"{len(docs)} test documents"

    def documents(self) -> Iterator[tuple[str, str]]:
        yield from self.docs


class CountingTokenizer(ByteTokenizer):
    """Bytes, counting encode calls; no encode_batch, so the pipeline's fallback path runs."""

    encode_batch = None

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, text: str) -> list[int]:
        self.calls += 1
        return super().encode(text)


DOCS = [("one", "first document, " * 40), ("two", "second — ünïcode " * 30), ("three", "x" * 500)]


def _load(docs, tokenizer=None, val_fraction=0.25, cache_dir=None) -> data.TokenData:
    return load_tokens(ListCorpus(docs), tokenizer or ByteTokenizer(), val_fraction, cache_dir)


def _texts(ids: np.ndarray, eot: int = 256) -> list[str]:
    """Split a bytes-tokenizer id array at end-of-text ids and decode each piece."""
    pieces = np.split(np.asarray(ids), np.flatnonzero(ids == eot))
    # np.split leaves each separator at the start of the piece after it.
    pieces = pieces[:1] + [p[1:] for p in pieces[1:]]
    return [bytes(p.astype(np.uint8)).decode() for p in pieces]


def test_split_by_characters_with_eot_between_documents(tmp_path: Path) -> None:
    d = _load(DOCS, cache_dir=tmp_path)
    train, val = _texts(d.train), _texts(d.val)
    total = sum(len(t) for _, t in DOCS)
    assert sum(map(len, train)) == round(total * 0.75)
    # The text survives intact: the straddling document is cut, not duplicated or dropped.
    whole = "".join(t for _, t in DOCS)
    assert "".join(train) + "".join(val) == whole
    assert train[:2] == [DOCS[0][1], DOCS[1][1]] and len(train) == 3 and len(val) == 1
    assert d.train[0] != 256 and d.val[0] != 256  # never an end-of-text before the first
    assert (d.train == 256).sum() == 2 and (d.val == 256).sum() == 0
    assert d.train_bytes == len("".join(train).encode()) and d.val_bytes == len(val[0].encode())


def test_pydoc_split_proportions_and_bytes(tmp_path: Path) -> None:
    corpus, tok = PydocCorpus(), ByteTokenizer()
    d = load_tokens(corpus, tok, 0.1, cache_dir=tmp_path)
    n_chars = sum(len(t) for _, t in corpus.documents())
    longest = max(len(t) for _, t in corpus.documents())
    train_chars = sum(len(t) for t in _texts(d.train))
    assert abs(train_chars - 0.9 * n_chars) <= longest
    assert d.train_bytes == int(d.token_bytes[d.train].sum())
    assert d.val_bytes == int(d.token_bytes[d.val].sum())


@pytest.mark.parametrize("tok", [ByteTokenizer(), GPT2Tokenizer()], ids=["bytes", "gpt2"])
def test_dtype_and_facts(tok, tmp_path: Path) -> None:
    d = _load(DOCS, tok, cache_dir=tmp_path)
    assert d.train.dtype == np.uint16 and d.val.dtype == np.uint16
    assert d.vocab_size == tok.vocab_size and d.eot_id == tok.eot_id
    assert d.token_bytes.shape == (tok.vocab_size,)
    assert d.train_bytes == int(d.token_bytes[d.train].sum())
    assert data.token_dtype(100_000) == np.uint32


def test_default_cache_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABLATE_CACHE_DIR", "/somewhere/cache")
    assert data.default_cache_dir() == Path("/somewhere/cache")
    monkeypatch.delenv("ABLATE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert data.default_cache_dir() == Path("/xdg/ablate")


def test_cache_hit_does_not_retokenize(tmp_path: Path) -> None:
    tok = CountingTokenizer()
    first = _load(DOCS, tok, cache_dir=tmp_path)
    assert tok.calls == 3 + 1  # three documents, one cut in two
    data.clear_memo()
    again = _load(DOCS, tok, cache_dir=tmp_path)
    assert tok.calls == 4
    assert again.key == first.key and isinstance(again.train, np.memmap)
    np.testing.assert_array_equal(again.train, first.train)
    np.testing.assert_array_equal(again.val, first.val)
    assert _load(DOCS, tok, cache_dir=tmp_path) is again  # in-process memo
    files = list((tmp_path / "tokens").iterdir())
    assert not [f for f in files if f.name.startswith(".")]  # no temp files left behind


def test_every_cache_file_is_readable_by_others(tmp_path: Path) -> None:
    """A shared cache folder works for every user: the ids, their metadata and a learned
    tokenizer's state are all 0644 (the metadata used to keep mkstemp's 0600)."""
    _load(DOCS, cache_dir=tmp_path)
    load_tokens(ListCorpus(DOCS), BPETokenizer(vocab_size=300), 0.25, tmp_path)
    files = sorted((tmp_path / "tokens").iterdir())
    assert {f.suffix for f in files} == {".npy", ".json"} and any(
        f.name.endswith(".trained.json") for f in files
    )
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {
        f.name: "0o644" for f in files
    }


def test_cache_key_follows_content_tokenizer_and_fraction(tmp_path: Path) -> None:
    base = _load(DOCS, cache_dir=tmp_path).key
    renamed = [("uno", DOCS[0][1]), *DOCS[1:]]
    assert _load(renamed, cache_dir=tmp_path).key != base
    assert _load(DOCS[:2], cache_dir=tmp_path).key != base
    assert _load(DOCS, val_fraction=0.3, cache_dir=tmp_path).key != base
    assert _load(DOCS, GPT2Tokenizer(), cache_dir=tmp_path).key != base


@pytest.mark.parametrize("damage", ["truncate", "garble", "meta", "edited-ids"])
def test_corrupt_cache_is_rebuilt(damage: str, tmp_path: Path) -> None:
    tok = CountingTokenizer()
    good = _load(DOCS, tok, cache_dir=tmp_path)
    train, val = np.array(good.train), np.array(good.val)
    npy = tmp_path / "tokens" / f"{good.key}.npy"
    data.clear_memo()
    del good
    if damage == "truncate":
        npy.write_bytes(npy.read_bytes()[:200])
    elif damage == "garble":
        npy.write_bytes(b"not a numpy file at all")
    elif damage == "edited-ids":  # same length and type, an id beyond the vocabulary
        ids = np.load(npy)
        ids[3] = 60000
        np.save(npy, ids)
    else:
        npy.with_suffix(".json").write_text("{", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"token cache .* is damaged; tokenizing the corpus again"):
        rebuilt = _load(DOCS, tok, cache_dir=tmp_path)
    assert tok.calls == 8  # tokenized again
    np.testing.assert_array_equal(rebuilt.train, train)
    np.testing.assert_array_equal(rebuilt.val, val)


def test_bad_inputs_are_data_errors(tmp_path: Path) -> None:
    for fraction in (0, 1, -0.1, 1.5, float("nan"), True):
        with pytest.raises(DataError, match="val_fraction"):
            _load(DOCS, val_fraction=fraction, cache_dir=tmp_path)
    for docs in ([], [("a", ""), ("b", " \n\t")]):
        with pytest.raises(DataError, match="empty"):
            _load(docs, cache_dir=tmp_path)


class CountingBPE(BPETokenizer):
    """bpe, counting train calls."""

    def __init__(self, vocab_size: int = 320) -> None:
        super().__init__(vocab_size=vocab_size)
        self.trainings = 0

    def train(self, texts) -> None:
        self.trainings += 1
        super().train(texts)


# "zyxwv" occurs only in the validation part (the last quarter of the characters).
SPLIT_DOCS = [
    ("a", "the cat sat on the mat, " * 30),
    ("b", "a dog and the cat ran; " * 20),
    ("c", "the validation text. " + " zyxwv" * 60),
]


def _train_text(docs, val_fraction: float) -> list[str]:
    n_chars = sum(len(t) for _, t in docs)
    cut = plan(Holdout(val_fraction=val_fraction), n_chars)
    return [text for split, text in pieces(ListCorpus(docs), cut) if split == "train"]


def test_trainable_tokenizer_learns_from_the_training_split_only(tmp_path: Path) -> None:
    tok = CountingBPE(400)
    d = _load(SPLIT_DOCS, tok, cache_dir=tmp_path)
    assert tok.trainings == 1 and tok.trained
    alone = BPETokenizer(vocab_size=400)
    alone.train(_train_text(SPLIT_DOCS, 0.25))
    assert tok.merges == alone.merges and tok.fingerprint == alone.fingerprint
    assert "zyxwv" not in "".join(_train_text(SPLIT_DOCS, 0.25))
    everything = BPETokenizer(vocab_size=400)
    everything.train(text for _, text in SPLIT_DOCS)
    assert len(everything.encode(" zyxwv")) == 1  # as if it had seen the validation text
    learned = {tok.decode([i]) for i in range(256, tok.eot_id)}
    assert not [t for t in learned if "zy" in t or "xw" in t]
    assert len(tok.encode(" zyxwv")) == 6
    # The arrays are the trained tokenizer's, and it still encodes and decodes afterwards.
    assert d.vocab_size == tok.vocab_size and d.eot_id == tok.eot_id
    np.testing.assert_array_equal(
        d.train[: len(tok.encode(SPLIT_DOCS[0][1]))], tok.encode(SPLIT_DOCS[0][1])
    )
    val_text = tok.decode(d.val).replace("<|endoftext|>", "")
    assert "".join(_train_text(SPLIT_DOCS, 0.25)) + val_text == "".join(t for _, t in SPLIT_DOCS)
    assert d.train_bytes == int(d.token_bytes[d.train].sum())
    assert d.val_bytes == int(d.token_bytes[d.val].sum())


def test_learned_state_is_cached_and_reused(tmp_path: Path) -> None:
    tok = CountingBPE()
    first = _load(DOCS, tok, cache_dir=tmp_path)
    assert tok.trainings == 1
    again = _load(DOCS, tok, cache_dir=tmp_path)  # same process: memo
    assert tok.trainings == 1 and again is first
    data.clear_memo()  # as a new process would: only the files remain
    fresh = CountingBPE()
    assert not fresh.trained
    reloaded = _load(DOCS, fresh, cache_dir=tmp_path)
    assert fresh.trainings == 0 and fresh.merges == tok.merges
    assert fresh.fingerprint == tok.fingerprint and reloaded.key == first.key
    np.testing.assert_array_equal(reloaded.train, first.train)
    np.testing.assert_array_equal(reloaded.val, first.val)
    assert fresh.decode(fresh.encode("ünïcode — x")) == "ünïcode — x"
    suffixes = sorted(f.name.split(".", 1)[1] for f in (tmp_path / "tokens").iterdir())
    assert suffixes == ["json", "npy", "trained.json"]
    # Another vocab_size or another training text is trained anew, under its own keys.
    other = CountingBPE(260)
    assert _load(DOCS, other, cache_dir=tmp_path).key != first.key and other.trainings == 1
    assert other.vocab_size == 260 and tok.vocab_size > 260
    longer = CountingBPE()
    assert _load(DOCS, longer, val_fraction=0.1, cache_dir=tmp_path).key != first.key
    assert longer.trainings == 1 and longer.fingerprint != tok.fingerprint


def test_damaged_learned_state_is_retrained(tmp_path: Path) -> None:
    tok = CountingBPE()
    good = _load(DOCS, tok, cache_dir=tmp_path)
    (state_file,) = (tmp_path / "tokens").glob("*.trained.json")
    for damage in ["{", '{"merges": [[1, 2], [999, 3]]}', "[]"]:
        state_file.write_text(damage, encoding="utf-8")
        data.clear_memo()
        fresh = CountingBPE()
        again = _load(DOCS, fresh, cache_dir=tmp_path)
        assert fresh.trainings == 1 and fresh.merges == tok.merges and again.key == good.key


def test_learned_state_kept_in_memory_when_the_cache_is_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(learned, "write_atomic", refuse)
    monkeypatch.setattr(data, "cache_file", refuse)
    tok = CountingBPE()
    with pytest.warns(UserWarning, match="not written"):
        d = _load(DOCS, tok, cache_dir=tmp_path)
    fresh = CountingBPE()
    data._MEMO.clear()  # token arrays forgotten, learned state kept
    with pytest.warns(UserWarning, match="token cache not written"):
        again = _load(DOCS, fresh, cache_dir=tmp_path)
    assert fresh.trainings == 0 and fresh.merges == tok.merges
    np.testing.assert_array_equal(again.train, d.train)


def test_untrainable_tokenizers_are_not_trained(tmp_path: Path) -> None:
    d = _load(DOCS, CountingTokenizer(), cache_dir=tmp_path)
    assert not list((tmp_path / "tokens").glob("*.trained.json")) and d.vocab_size == 257


def test_trainable_tokenizer_on_an_empty_corpus_is_a_data_error(tmp_path: Path) -> None:
    tok = CountingBPE()
    with pytest.raises(DataError, match="empty"):
        _load([("a", "  ")], tok, cache_dir=tmp_path)
    assert tok.trainings == 0


def test_count_windows_examples() -> None:
    assert count_windows(10, 4, 4) == 2
    assert count_windows(5, 4, 4) == 1
    assert count_windows(4, 4, 1) == 0
    assert count_windows(10, 4, 1) == 6


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(2, 400),
    context=st.integers(1, 40),
    stride=st.integers(1, 50),
    batch=st.integers(1, 7),
)
def test_count_windows_matches_batches(n: int, context: int, stride: int, batch: int) -> None:
    tokens = np.arange(n, dtype=np.uint32)
    expected = count_windows(n, context, stride)
    assert expected == len(range(0, n - context, stride))
    if expected < batch:
        with pytest.raises(DataError, match="batch_size"):
            TrainBatches(tokens, context, batch, seed=0, stride=stride)
        return
    batches = TrainBatches(tokens, context, batch, seed=0, stride=stride)
    assert batches.n_windows == expected and batches.batches_per_epoch == expected // batch
    starts = [int(s) for x, _ in islice(batches, batches.batches_per_epoch) for s in x[:, 0]]
    # Every window start visited once per epoch; only the last partial batch is dropped.
    assert len(starts) == len(set(starts)) == expected - expected % batch
    assert set(starts) <= set(range(0, n - context, stride))
    assert batches.state() == {"epoch": 1, "index": 0}


def test_train_batches_shapes_and_shift() -> None:
    tokens = (np.arange(1000) * 7 % 257).astype(np.uint16)
    x, y = next(TrainBatches(tokens, 16, 4, seed=0))
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    starts = [int(np.flatnonzero(tokens == v)[0]) for v in x[:, 0]]  # value -> position
    for row, s in zip(x, starts, strict=True):
        assert torch.equal(row, torch.from_numpy(tokens[s : s + 16].astype(np.int64)))


def _take(batches: TrainBatches, n: int) -> list[torch.Tensor]:
    return [x for x, _ in islice(batches, n)]


def test_train_batches_deterministic_per_seed() -> None:
    tokens = np.arange(2000, dtype=np.uint16)
    a, b = (
        _take(TrainBatches(tokens, 8, 4, seed=1), 30),
        _take(TrainBatches(tokens, 8, 4, seed=1), 30),
    )
    c = _take(TrainBatches(tokens, 8, 4, seed=2), 30)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))


def test_epochs_are_reshuffled_and_complete() -> None:
    tokens = np.arange(100, dtype=np.uint16)
    batches = TrainBatches(tokens, 9, 2, seed=0)  # 11 windows -> 5 batches, one window dropped
    epochs = [[int(s) for x in _take(batches, 5) for s in x[:, 0]] for _ in range(2)]
    assert all(len(set(e)) == 10 for e in epochs)
    assert epochs[0] != epochs[1]


def test_state_resumes_exactly() -> None:
    tokens = np.arange(500, dtype=np.uint16)
    straight = TrainBatches(tokens, 8, 3, seed=5)  # 62 windows -> 20 batches an epoch
    expected = _take(straight, 50)
    first = TrainBatches(tokens, 8, 3, seed=5)
    _take(first, 23)
    state = first.state()
    assert state == {"epoch": 1, "index": 3}
    resumed = TrainBatches(tokens, 8, 3, seed=5)
    resumed.load_state(state)
    assert all(torch.equal(p, q) for p, q in zip(_take(resumed, 27), expected[23:], strict=True))
    with pytest.raises(DataError, match="resume"):
        resumed.load_state({"epoch": 0, "index": 20})


def test_eval_batches_fixed_and_spread() -> None:
    tokens = np.arange(10_000, dtype=np.uint16)
    batches = eval_batches(tokens, 32, 4, 3, windows="spread")
    again = eval_batches(tokens, 32, 4, 3, windows="spread")
    assert len(batches) == 3 and all(x.shape == (4, 32) for x, _ in batches)
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(batches, again, strict=True)
    )
    starts = sorted(int(s) for x, _ in batches for s in x[:, 0])
    assert starts[0] == 0 and starts[-1] == 10_000 - 33  # the whole split, end to end
    assert min(np.diff(starts)) >= 32  # no position predicted twice
    for x, y in batches:
        assert torch.equal(x + 1, y)


def test_book_sized_validation_split_is_scored_on_the_grid() -> None:
    # The-verdict's validation split: 534 tokens, context 256. The book scores windows 0 and
    # 256; the spread the toolkit used before scored 0 and 277.
    assert eval_starts(534, 256, 256, 10).tolist() == [0, 256]
    assert eval_starts(534, 256, 256, 10, "spread").tolist() == [0, 277]


def test_grid_windows_are_the_training_windows_when_they_fit() -> None:
    tokens = np.arange(1_000, dtype=np.uint16)
    batches = eval_batches(tokens, 32, 4, 10, stride=32)
    scored = sorted(int(s) for x, _ in batches for s in x[:, 0])
    trained = TrainBatches(tokens, 32, 4, seed=0, stride=32)
    assert scored == [i * 32 for i in range(trained.n_windows)]  # all 30 of them, once each


@given(
    n=st.integers(10, 5_000),
    context=st.integers(1, 64),
    stride=st.integers(1, 80),
    k=st.integers(1, 50),
)
def test_grid_windows_are_trained_windows_never_overlapping(
    n: int, context: int, stride: int, k: int
) -> None:
    assume(n > context)
    starts = eval_starts(n, context, stride, k)
    assert len(starts) >= 1 and starts[0] == 0
    assert all(s % stride == 0 and s + context + 1 <= n for s in starts)  # training windows
    assert all(np.diff(starts) >= context)  # no position scored twice
    # As many as asked for, or every non-overlapping grid window when fewer fit.
    step = stride * -(-context // stride)
    assert len(starts) == min(k, count_windows(n, context, step))
    if len(starts) > 1:  # evenly along the grid: the last pick is the grid's last window
        assert starts[-1] == (count_windows(n, context, step) - 1) * step


def test_unknown_eval_windows_is_refused() -> None:
    with pytest.raises(ValueError, match="grid"):
        eval_starts(100, 8, 8, 4, "random")


def test_eval_batches_small_split() -> None:
    tokens = np.arange(100, dtype=np.uint16)
    batches = eval_batches(tokens, 32, 2, 10)  # room for 3 non-overlapping windows only
    assert [x.shape[0] for x, _ in batches] == [2, 1]
    with pytest.raises(DataError, match=r"has 20 tokens.*smaller context_length"):
        eval_batches(tokens[:20], 32, 2, 10)


def test_too_small_split_for_training() -> None:
    with pytest.raises(DataError, match=r"100 tokens"):
        TrainBatches(np.arange(100, dtype=np.uint16), 32, 8, seed=0)
