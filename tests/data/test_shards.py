"""Token shards made by other tools load as they are (nanoGPT's raw uint16 .bin, llm.c's header
format), through the `tokens` corpus, the Python API and the CLI; malformed shards are one line
naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TOML

from plugins.token_shards import TokenShards
from plugins.tokenizers import ByteTokenizer, GPT2Tokenizer
from toolkit.api.manager import Plugins
from toolkit.cli import main
from toolkit.data.resolve import corpus_tokens
from toolkit.data.shards import LLMC_MAGIC, load_shards
from toolkit.data.splits import Holdout
from toolkit.errors import DataError

BYTES = ByteTokenizer()


def load(train, val=None, fraction=0.1, *, test=None, layout="auto", cache=None, **split):
    """load_shards on a `tokens` corpus naming these files."""
    corpus = TokenShards(
        train=str(train), val=None if val is None else str(val),
        test=None if test is None else str(test), format=layout,
    )  # fmt: skip
    return load_shards(corpus, BYTES, Holdout(val_fraction=fraction, **split), cache_dir=cache)


def nanogpt(path: Path, ids: np.ndarray) -> Path:
    ids.astype("<u2").tofile(path)
    return path


def llmc(path: Path, ids: np.ndarray, magic: int = LLMC_MAGIC, version: int = 1) -> Path:
    header = np.zeros(256, dtype="<i4")
    header[:3] = [magic, version, len(ids)]
    path.write_bytes(header.tobytes() + ids.astype("<u2").tobytes())
    return path


def ids(n: int, seed: int = 0, top: int = 257) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, top, n).astype(np.uint16)


def test_nanogpt_bins_load_as_they_are(tmp_path: Path) -> None:
    train, val = ids(5000, 1), ids(800, 2)
    data = load(
        nanogpt(tmp_path / "train.bin", train), nanogpt(tmp_path / "val.bin", val),
        cache=tmp_path / "cache",
    )  # fmt: skip
    np.testing.assert_array_equal(data.train, train)
    np.testing.assert_array_equal(data.val, val)
    assert data.vocab_size == 257 and data.train_bytes == int((train < 256).sum())
    assert not (tmp_path / "cache").exists()  # one shard per split: mapped in place


def test_llmc_shards_are_joined_in_order_and_validation_held_out(tmp_path: Path) -> None:
    parts = [ids(3000, s) for s in range(3)]
    for i, p in enumerate(parts):
        llmc(tmp_path / f"fineweb_train_{i:06d}.bin", p)
    data = load(tmp_path / "fineweb_train_*.bin", cache=tmp_path / "cache")
    whole = np.concatenate(parts)
    np.testing.assert_array_equal(np.concatenate([data.train, data.val]), whole)
    assert len(data.val) == 900
    again = load(tmp_path / "fineweb_train_*.bin", cache=tmp_path / "cache")
    assert again.key == data.key and len(list((tmp_path / "cache/tokens").glob("*.npy"))) == 1


def test_the_tokens_corpus_through_the_registry(tmp_path: Path) -> None:
    plugins = Plugins(autoload=False)
    train = nanogpt(tmp_path / "train.bin", ids(4000, 3, top=50257))
    corpus = plugins.registry.build("corpus", {"name": "tokens", "train": str(train)})
    data = corpus_tokens(corpus, GPT2Tokenizer(), 0.25)
    assert len(data.train) == 3000 and len(data.val) == 1000


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d.joinpath("odd.bin").write_bytes(b"\x01\x02\x03"), "3 bytes, an odd count"),
        (lambda d: llmc(d / "bad.bin", ids(100), magic=1234), "magic number 1234, not 20240520"),
        (lambda d: llmc(d / "v2.bin", ids(100), version=2), "llm.c shard version 2"),
        (
            lambda d: d.joinpath("cut.bin").write_bytes(
                llmc(d / "x.bin", ids(100)).read_bytes()[:-10]
            ),
            "header says 100 tokens",
        ),
        (
            lambda d: nanogpt(d / "big.bin", np.array([1, 2, 300])),
            "token 2 is id 300, beyond tokenizer 'bytes'",
        ),
        (lambda d: d.joinpath("empty.bin").write_bytes(b""), "empty"),
    ],
)
def test_malformed_shards_are_one_line_naming_the_file(tmp_path: Path, make, message) -> None:
    make(tmp_path)
    (path,) = [p for p in tmp_path.glob("*.bin") if p.name != "x.bin"]
    with pytest.raises(DataError) as info:
        load(path, cache=tmp_path / "cache")
    text = str(info.value)
    assert "\n" not in text and str(path) in text and message in text


def test_a_missing_shard_and_a_llmc_format_asked_of_a_raw_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="matches no file"):
        load(tmp_path / "nope_*.bin")
    raw = nanogpt(tmp_path / "raw.bin", ids(100))
    with pytest.raises(DataError, match=r"not llm\.c's magic number"):
        load(raw, layout="llmc")
    truncated = tmp_path / "short.bin"  # the magic number, then nothing of the header
    truncated.write_bytes(np.array([LLMC_MAGIC, 1], dtype="<i4").tobytes())
    with pytest.raises(DataError, match=r"8 bytes, shorter than llm\.c's 1,024-byte header"):
        load(truncated)


def test_no_shard_in_two_splits(tmp_path: Path) -> None:
    # nanoGPT's layout under a glob that also matches val.bin: validation would be trained on.
    nanogpt(tmp_path / "train.bin", ids(1000))
    val = nanogpt(tmp_path / "val.bin", ids(200))
    for train in (tmp_path / "*.bin", val):
        with pytest.raises(DataError, match=r"'.*val\.bin' is both a train and a val shard"):
            load(train, val)
    assert len(load(tmp_path / "train.bin", val).val) == 200


def test_a_test_split_from_shards_or_from_the_end_of_the_training_tokens(tmp_path: Path) -> None:
    train, test = ids(10_000, 4), ids(700, 5)
    path = nanogpt(tmp_path / "train.bin", train)
    carved = load(path, fraction=0.1, test_fraction=0.05)
    # Training, then validation, then test: the test split is the very end.
    assert (len(carved.train), len(carved.val), len(carved.test)) == (8500, 1000, 500)
    np.testing.assert_array_equal(carved.test, train[-500:])
    np.testing.assert_array_equal(carved.val, train[-1500:-500])
    assert carved.key != load(path, fraction=0.1).key
    given = load(path, fraction=0.1, test=nanogpt(tmp_path / "test.bin", test))
    np.testing.assert_array_equal(given.test, test)
    assert len(given.train) == 9000 and given.test_bytes == int((test < 256).sum())
    assert len(load(path).test) == 0


def test_shards_cannot_be_split_by_documents(tmp_path: Path) -> None:
    path = nanogpt(tmp_path / "train.bin", ids(1000))
    with pytest.raises(DataError, match="cannot be split by documents"):
        load(path, by="documents")


@pytest.mark.slow
def test_ablate_trains_on_token_shards(tmp_path: Path, capsys, monkeypatch) -> None:
    nanogpt(tmp_path / "train.bin", ids(20_000, 4))
    nanogpt(tmp_path / "val.bin", ids(2_000, 5))
    spec = TINY_TOML.split("[grid]")[0].replace(
        '[data]\ntokenizer = "bytes"',
        '[data]\ntokenizer = "bytes"\ncorpus = { name = "tokens", train = "train.bin", val = "val.bin" }',
    )
    (tmp_path / "spec.toml").write_text(spec)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "spec.toml", "--out", "runs", "--quiet"]) == 0
    assert "2 of 2 runs recorded" in capsys.readouterr().out
