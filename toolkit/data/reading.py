"""Reading a corpus and a tokenizer as their contracts promise, for the token pipeline
(tokens.py): each checked once against its Protocol (`check`), a corpus's documents checked as
they are read (a pair of strings each, some text in all), a tokenizer's byte lengths and eot_id
checked to fit its vocabulary, and one checked pass over a corpus (`survey`) that gives its
cut and feeds a content hash. Every problem is a one-line ComponentError or DataError naming
the component by the label its caller knows it by ("corpus 'mine' (plugin 'my_corpus')").
Not here: tokenizing, caching (tokens.py) and learned tokenizer states (learned.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from toolkit.api.contracts import Corpus, Tokenizer, TrainableTokenizer, check_contract
from toolkit.data.splits import Holdout, Plan, doc_hash, plan
from toolkit.errors import ComponentError, DataError, ToolkitError, one_line


def check(
    corpus: Corpus,
    tokenizer: Tokenizer,
    corpus_label: str | None = None,
    tokenizer_label: str | None = None,
) -> tuple[str, str]:
    """Check both against their contracts (Corpus, Tokenizer, and TrainableTokenizer when it
    learns); returns the labels that name them in errors: the ones given, else the corpus's
    description and the tokenizer's name."""
    corpus_label = corpus_label or f"corpus {describe(corpus)}"
    tokenizer_label = tokenizer_label or f"tokenizer {name_of(tokenizer)!r}"
    check_contract(corpus, Corpus, corpus_label, "a corpus")
    check_contract(tokenizer, Tokenizer, tokenizer_label, "a tokenizer")
    if getattr(tokenizer, "needs_training", False):
        role = "a tokenizer with needs_training = True"
        check_contract(tokenizer, TrainableTokenizer, tokenizer_label, role)
    return corpus_label, tokenizer_label


def token_bytes(tokenizer: Tokenizer, label: str) -> np.ndarray:
    """tokenizer.token_byte_lengths(), checked to hold an integer per id, and its eot_id
    checked to be one of its ids: else bits per byte, or the model's embedding, would index
    past the vocabulary after training started."""
    v, eot = tokenizer.vocab_size, tokenizer.eot_id
    if not 0 <= eot < v:
        raise ComponentError(
            f"{label} has eot_id {eot}, outside its vocabulary [0, vocab_size={v}); fix its "
            f"eot_id or vocab_size"
        )
    lengths = np.asarray(tokenizer.token_byte_lengths())
    if lengths.shape != (v,) or not np.issubdtype(lengths.dtype, np.integer):
        raise ComponentError(
            f"{label} token_byte_lengths() gave {lengths.shape} {lengths.dtype}, not ({v},) "
            f"integers; it must give the UTF-8 bytes each of its vocab_size ids stands for"
        )
    return lengths


def survey(corpus: Corpus, holdout: Holdout, label: str, content: Any = None) -> tuple[Plan, int]:
    """One checked pass over the documents: the corpus's cut and its length in characters;
    `content` (a hash) is fed every name and text on the way, `label` names the corpus in
    errors."""
    n_chars = 0
    hashes: list[int] = []
    for name, text in checked_documents(corpus, label):
        if content is not None:
            # Length prefixes keep ("ab", "c") and ("a", "bc") from hashing alike.
            for part in (name, text):
                hash_part(content, part)
        if holdout.by == "documents":
            hashes.append(doc_hash(name))
        n_chars += len(text)
    return plan(holdout, n_chars, hashes), n_chars


def hash_part(h: Any, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    h.update(len(data).to_bytes(8, "little") + data)


def checked_documents(corpus: Corpus, label: str) -> Iterator[tuple[str, str]]:
    """corpus.documents(), checking it is iterable, each document is a pair of strings and, at
    the end, that some text is not blank; `label` names the corpus in errors."""
    n_docs = 0
    has_text = False
    for doc in _documents(corpus, label):
        pair = isinstance(doc, tuple | list) and len(doc) == 2
        name, text = doc if pair else (None, None)
        if not isinstance(name, str) or not isinstance(text, str):
            got = f"{type(name).__name__}/{type(text).__name__}" if pair else type(doc).__name__
            raise DataError(
                f"{label} yielded {got} instead of a (name, text) pair of strings; fix its "
                f"documents()"
            )
        n_docs += 1
        has_text = has_text or bool(text.strip())
        yield name, text
    if not has_text:
        what = "no documents" if n_docs == 0 else f"{n_docs} document(s), all blank"
        raise DataError(f"{label} is empty ({what}); point it at some text")


def _documents(corpus: Corpus, label: str) -> Iterator[Any]:
    """What corpus.documents() yields, a corpus that raises (other than a ToolkitError, its
    own words) or returns something not iterable being a ComponentError naming it."""
    try:
        docs = corpus.documents()
        if not isinstance(docs, Iterable):
            raise ComponentError(
                f"{label} documents() returned {type(docs).__name__}, not an iterator of "
                f"(name, text) pairs; make it yield them"
            )
        yield from docs
    except ToolkitError:
        raise
    except Exception as exc:
        raise ComponentError(f"{label} failed reading its documents: {one_line(exc, 300)}") from exc


def describe(corpus: Corpus) -> str:
    return repr(getattr(corpus, "description", None) or type(corpus).__name__)


def name_of(tokenizer: Tokenizer) -> str:
    name = getattr(tokenizer, "name", None)
    return name if isinstance(name, str) and name else type(tokenizer).__name__
