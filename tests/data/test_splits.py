"""Splits that suit real data: by characters or by whole documents (chosen by a hash of each
document's name, so adding documents never moves the others), and a test split beside training
and validation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import small_toml
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.tokenizers import ByteTokenizer
from toolkit.cli import main
from toolkit.data.splits import Holdout, doc_hash, plan
from toolkit.data.tokens import load_tokens
from toolkit.errors import DataError

BYTES = ByteTokenizer()


class ListCorpus:
    description = "list"

    def __init__(self, docs: list[tuple[str, str]]) -> None:
        self.docs = docs

    def documents(self):
        yield from self.docs


def docs_of(names: list[str]) -> list[tuple[str, str]]:
    return [(name, f"<{name}>") for name in names]


def split_docs(data, docs: list[tuple[str, str]]) -> dict[str, set[str]]:
    """Which documents each split holds, read back from its bytes ('<name>' joined by
    end-of-text)."""
    out = {}
    for split in ("train", "val", "test"):
        ids = np.asarray(getattr(data, split))
        text = bytes(int(i) if i != BYTES.eot_id else 0 for i in ids).decode()
        out[split] = {piece[1:-1] for piece in text.split("\0") if piece}
    assert set().union(*out.values()) == {name for name, _ in docs}  # nothing lost or doubled
    assert sum(map(len, out.values())) == len(docs)
    return out


def test_the_default_split_keys_the_cache_as_before_test_splits_existed(tmp_path: Path) -> None:
    docs = [("a", "some text here " * 40), ("b", "and more text " * 40)]
    as_float = load_tokens(ListCorpus(docs), BYTES, 0.1, cache_dir=tmp_path)
    assert Holdout().key() == [(0.1).hex()]
    assert load_tokens(ListCorpus(docs), BYTES, Holdout(), cache_dir=tmp_path).key == as_float.key
    assert len(as_float.test) == 0 and as_float.test_bytes == 0


def test_a_character_split_with_a_test_part_keeps_every_character_in_order(
    tmp_path: Path,
) -> None:
    docs = [("a", "".join(chr(97 + i % 26) for i in range(700))), ("b", "0123456789" * 30)]
    data = load_tokens(
        ListCorpus(docs), BYTES, Holdout(val_fraction=0.2, test_fraction=0.1), cache_dir=tmp_path
    )
    n = 1000
    assert (len(data.train), len(data.val), len(data.test)) == (700, 200, 100)
    joined = np.concatenate([data.train, data.val, data.test])
    assert bytes(joined.tolist()).decode() == "".join(t for _, t in docs)
    assert data.train_bytes + data.val_bytes + data.test_bytes == n


@settings(max_examples=40, deadline=None)
@given(
    names=st.lists(st.text(min_size=1, max_size=12), min_size=30, max_size=80, unique=True),
    more=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=30, unique=True),
)
@pytest.mark.slow
def test_adding_documents_never_moves_the_others(names: list[str], more: list[str]) -> None:
    holdout = Holdout(by="documents", val_fraction=0.3, test_fraction=0.2)
    before = plan_of(holdout, names)
    after = plan_of(holdout, names + [m for m in more if m not in names])
    assert all(before.split_of(n) == after.split_of(n) for n in names)


def plan_of(holdout: Holdout, names: list[str]):
    try:
        return plan(holdout, 0, [doc_hash(n) for n in names])
    except DataError:  # a split left empty by chance: the whole hash range still decides
        return plan(Holdout(by="documents", val_documents=1, test_documents=1), 0, [0, 1, 2])


def test_document_fractions_are_calibrated() -> None:
    """Over many names the share of documents in each split matches its fraction within
    binomial error (4 standard deviations)."""
    n = 40_000
    cut = plan(
        Holdout(by="documents", val_fraction=0.1, test_fraction=0.05),
        0,
        [doc_hash(f"doc-{i}.txt") for i in range(n)],
    )
    counts = {"train": 0, "val": 0, "test": 0}
    for i in range(n):
        counts[cut.split_of(f"doc-{i}.txt")] += 1
    for split, p in (("val", 0.1), ("test", 0.05), ("train", 0.85)):
        assert abs(counts[split] - n * p) < 4 * math.sqrt(n * p * (1 - p)), (split, counts)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(5, 60),
    val=st.integers(1, 10),
    test=st.integers(0, 10),
    offset=st.integers(0, 10_000),
)
def test_document_counts_take_exactly_that_many(n: int, val: int, test: int, offset: int) -> None:
    names = [f"file-{offset + i}.py" for i in range(n)]
    holdout = Holdout(by="documents", val_documents=val, test_documents=test)
    if val + test >= n:
        with pytest.raises(DataError, match="puts none in the train split"):
            plan(holdout, 0, [doc_hash(x) for x in names])
        return
    cut = plan(holdout, 0, [doc_hash(x) for x in names])
    splits = [cut.split_of(x) for x in names]
    assert (splits.count("val"), splits.count("test")) == (val, test)


def test_documents_land_whole_in_one_split_with_end_of_text_between(tmp_path: Path) -> None:
    docs = docs_of([f"page{i}" for i in range(60)])
    holdout = Holdout(by="documents", val_documents=9, test_documents=6)
    data = load_tokens(ListCorpus(docs), BYTES, holdout, cache_dir=tmp_path)
    where = split_docs(data, docs)
    assert (len(where["val"]), len(where["test"])) == (9, 6)
    cut = plan(holdout, 0, [doc_hash(name) for name, _ in docs])
    assert all(cut.split_of(name) == split for split, names in where.items() for name in names)
    # A separate cache entry from the character split of the same corpus.
    assert data.key != load_tokens(ListCorpus(docs), BYTES, 0.1, cache_dir=tmp_path).key


def test_a_document_split_is_the_same_whatever_order_the_corpus_yields(tmp_path: Path) -> None:
    docs = docs_of([f"d{i}" for i in range(40)])
    holdout = Holdout(by="documents", val_fraction=0.25)
    one = split_docs(load_tokens(ListCorpus(docs), BYTES, holdout, cache_dir=tmp_path), docs)
    rev = docs[::-1]
    two = split_docs(load_tokens(ListCorpus(rev), BYTES, holdout, cache_dir=tmp_path), rev)
    assert one == two


@pytest.mark.parametrize(
    ("holdout", "message"),
    [
        (dict(by="pages"), "data.split must be one of 'characters', 'documents'"),
        (dict(val_documents=3), 'set data.split = "documents" to use them'),
        (dict(val_fraction=0.6, test_fraction=0.4), "must leave text to train on"),
        (dict(test_fraction=-0.1), "data.test_fraction must be a number from 0"),
        (dict(by="documents", val_documents=0), "data.val_documents must be a whole number"),
        (dict(by="documents", test_documents=2.5), "data.test_documents must be a whole number"),
    ],
)
def test_bad_splits_are_one_line_errors(holdout: dict, message: str) -> None:
    with pytest.raises(DataError) as info:
        Holdout(**holdout)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_too_few_documents_for_a_split_says_how_to_fix_it(tmp_path: Path) -> None:
    docs = docs_of(["only", "two"])
    with pytest.raises(DataError, match=r"puts none in the (val|train) split"):
        load_tokens(
            ListCorpus(docs), BYTES, Holdout(by="documents", val_fraction=0.01), cache_dir=tmp_path
        )


@pytest.mark.slow
def test_a_run_split_by_documents_reports_its_test_loss_and_evaluates_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pages = tmp_path / "pages"
    pages.mkdir()
    for i in range(40):
        (pages / f"page{i:02d}.txt").write_text(f"page {i}: " + "some words here. " * 30)
    spec = small_toml(
        "docs",
        data=f'path = "{pages}"\nsplit = "documents"\nval_documents = 4\ntest_fraction = 0.2',
        train="max_steps = 2\neval_batches = 1",
    )
    (tmp_path / "spec.toml").write_text(spec)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "spec.toml", "--out", "runs", "--quiet"]) == 0
    summary = json.loads((tmp_path / "runs/base/seed-0/summary.json").read_text())
    assert summary["test_loss"] > 0 and summary["test_bpb"] > 0
    assert summary["test_perplexity"] == pytest.approx(math.exp(summary["test_loss"]))
    capsys.readouterr()
    assert main(["eval", "runs/base/seed-0", "--split", "test"]) == 0
    assert "test" in capsys.readouterr().out

    # A run that held out no test split says so, in one line, with exit code 2.
    (tmp_path / "plain.toml").write_text(small_toml("plain", data=f'path = "{pages}"'))
    assert main(["run", "plain.toml", "--out", "plain", "--quiet"]) == 0
    assert "test_loss" not in json.loads((tmp_path / "plain/base/seed-0/summary.json").read_text())
    capsys.readouterr()
    assert main(["eval", "plain/base/seed-0", "--split", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no test split" in err
