"""How a corpus is cut into its training, validation and test splits.

    Holdout(by="characters", val_fraction=0.1)   the last 10% of the characters: validation
    Holdout(by="documents", val_fraction=0.05, test_fraction=0.05)
                                                 whole documents, chosen by a hash of their names
    plan(holdout, n_chars, hashes) -> Plan       the cut for one corpus (checks no split is empty)
    pieces(corpus, plan)                         (split, text) pieces: every training piece first,
                                                 then validation, then test

By characters, the documents are concatenated in order; the first part is training text, then
validation, then test, and a document straddling a boundary is cut there. By documents, each
document lands whole in one split, decided by a 64-bit hash of its name (`doc_hash`): the lowest
hashes are the test split, the next the validation split, the rest training. A fraction is a
range of hash values, so adding documents to a corpus never moves the others; a count
(val_documents, test_documents) takes that many documents in hash order, so adding documents
moves at most as many as were added. Documents sharing a name share a split.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from toolkit.api.contracts import Corpus
from toolkit.errors import DataError

SPLITS = ("train", "val", "test")
SPLIT_BY = ("characters", "documents")
_SPAN = 1 << 64  # doc_hash values lie in [0, _SPAN)


def doc_hash(name: str) -> int:
    """A document name's place in the hash order: 64 bits of BLAKE2b, stable across machines
    and Python versions."""
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _fraction(value: Any, what: str, low_open: bool) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    ok = ok and (0 < value < 1 if low_open else 0 <= value < 1)
    if not ok:
        bound = "strictly between 0 and 1 (e.g. 0.1)" if low_open else "from 0 up to, not at, 1"
        raise DataError(f"{what} must be a number {bound}, got {value!r}")
    return float(value)


def _count(value: Any, what: str, least: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise DataError(f"{what} must be a whole number of documents >= {least}, got {value!r}")
    return value


@dataclass(frozen=True)
class Holdout:
    """Which text is held out of training: see the module's docstring. A count of documents
    (val_documents, test_documents), when given, replaces that split's fraction; counts need
    by = "documents"."""

    by: str = "characters"
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    val_documents: int | None = None
    test_documents: int | None = None

    def __post_init__(self) -> None:
        if self.by not in SPLIT_BY:
            raise DataError(
                f"data.split must be one of {', '.join(map(repr, SPLIT_BY))}, got {self.by!r}"
            )
        val = _fraction(self.val_fraction, "data.val_fraction", low_open=True)
        test = _fraction(self.test_fraction, "data.test_fraction", low_open=False)
        val_docs = _count(self.val_documents, "data.val_documents", 1)
        test_docs = _count(self.test_documents, "data.test_documents", 0)
        if self.by == "characters" and (val_docs, test_docs) != (None, None):
            raise DataError(
                "data.val_documents and data.test_documents count documents; set data.split = "
                '"documents" to use them, or give data.val_fraction / data.test_fraction'
            )
        held = (0 if val_docs is not None else val) + (0 if test_docs is not None else test)
        if held >= 1:
            raise DataError(
                f"data.val_fraction + data.test_fraction must leave text to train on, got "
                f"{val} + {test}; make them smaller"
            )

    @property
    def has_test(self) -> bool:
        if self.test_documents is not None:
            return self.test_documents > 0
        return self.test_fraction > 0

    def key(self) -> list[Any]:
        """What the token cache's key holds of the split. The split every run used before test
        splits and document splits existed keys as it did then, so those caches stay valid."""
        if self.by == "characters" and not self.has_test:
            return [float(self.val_fraction).hex()]
        return [
            self.by,
            float(self.val_fraction).hex(),
            float(self.test_fraction).hex(),
            self.val_documents,
            self.test_documents,
        ]

    def describe(self) -> str:
        """How the split reads in messages: 'the last 10% of the characters'."""
        if self.by == "characters":
            test = f", then {100 * self.test_fraction:g}% test" if self.has_test else ""
            return f"the last {100 * self.val_fraction:g}% of the characters{test}"
        val = self.val_documents or f"{100 * self.val_fraction:g}%"
        test = self.test_documents or f"{100 * self.test_fraction:g}%"
        return f"{val} of the documents" + (f", and {test} for test" if self.has_test else "")


@dataclass(frozen=True)
class Plan:
    """One corpus's cut. By characters: validation from character `val_start`, test from
    `test_start`. By documents: a document hashing below `test_below` is test, below
    `val_below` validation, else training."""

    by: str
    val_start: int = 0
    test_start: int = 0
    test_below: int = 0
    val_below: int = 0

    def split_of(self, name: str) -> str:
        h = doc_hash(name)
        return "test" if h < self.test_below else "val" if h < self.val_below else "train"


def plan(holdout: Holdout, n_chars: int, hashes: Sequence[int] = ()) -> Plan:
    """The cut for a corpus of n_chars characters whose documents' names hash to `hashes`
    (needed by documents only); a DataError when a split would be empty."""
    if holdout.by == "characters":
        return Plan(
            "characters",
            val_start=round(n_chars * (1 - holdout.val_fraction - holdout.test_fraction)),
            test_start=round(n_chars * (1 - holdout.test_fraction)),
        )
    ordered = sorted(hashes)

    def below(start: int, count: int | None, fraction: float) -> int:
        """The hash bound after `start` that takes `count` more documents, or a `fraction`
        of the hash range."""
        if count is None:
            return min(start + round(fraction * _SPAN), _SPAN)
        taken = bisect_left(ordered, start)
        return _SPAN if taken + count >= len(ordered) else ordered[taken + count]

    test_below = below(0, holdout.test_documents, holdout.test_fraction)
    val_below = below(test_below, holdout.val_documents, holdout.val_fraction)
    result = Plan("documents", test_below=test_below, val_below=val_below)
    n_test = bisect_left(ordered, test_below)
    n_val = bisect_left(ordered, val_below) - n_test
    n_train = len(ordered) - n_val - n_test
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for split in ("train", "val", "test") if holdout.has_test else ("train", "val"):
        if counts[split] == 0:
            fix = {
                "train": "hold out fewer documents",
                "val": "raise data.val_fraction or set data.val_documents",
                "test": "raise data.test_fraction or set data.test_documents",
            }[split]
            raise DataError(
                f"splitting {len(ordered):,} document(s) by their names puts none in the "
                f"{split} split ({holdout.describe()}); {fix}"
            )
    return result


def pieces(corpus: Corpus, cut: Plan) -> Iterator[tuple[str, str]]:
    """(split, text) for every non-empty piece of the corpus: the training pieces first, then
    validation, then test, each in corpus order. By documents this reads the corpus once per
    split."""
    if cut.by == "documents":
        for split in SPLITS:
            for name, text in corpus.documents():
                if text and cut.split_of(name) == split:
                    yield split, text
        return
    start = 0
    for _, text in corpus.documents():
        end = start + len(text)
        val_at = min(max(cut.val_start - start, 0), len(text))
        test_at = min(max(cut.test_start - start, 0), len(text))
        for split, a, b in (
            ("train", 0, val_at),
            ("val", val_at, test_at),
            ("test", test_at, len(text)),
        ):
            if b > a:
                yield split, text[a:b]
        start = end
