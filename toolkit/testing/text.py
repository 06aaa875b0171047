"""Conformance checks of the text kinds: tokenizer and corpus.

- tokenizer (trained first on drawn text when it `needs_training`): non-empty name and
  fingerprint strings, eot_id an int in [0, vocab_size), token_byte_lengths() one int per id;
  for drawn Unicode text, ids in [0, vocab_size) and never eot_id, decode(encode(text)) == text,
  and the ids' byte lengths adding up to the text's UTF-8 length; training twice on the same
  texts gives the same fingerprint and ids, and so does load_state(state()) where it has them.
- corpus: a `description` string; documents() yields (name, text) string pairs, some text, and
  the same first 50 documents each time.

Not checked: how well a tokenizer compresses or how fast it encodes, the token cache and data
pipeline (toolkit.data), and a corpus beyond its first 50 documents and first non-empty text.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from toolkit.testing.core import Case, hypothesis_settings

TRAINING_TEXT = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!\n"
    "def main():\n    return 42  # 3.14159\n" + "naïve café, Grüße, 日本語, emoji 🤖.\n"
)


def check_tokenizer(case: Case, max_examples: int) -> None:
    """Round trips of arbitrary text; a trainable one (`needs_training`) is first trained with
    train(texts) on drawn text, and must train deterministically and restore from state()."""

    def build(corpus: list[str]) -> tuple[Any, bool]:
        tok = case.build(model=False)
        trains = bool(case.component.facts.get("needs_training"))
        trains = trains or bool(getattr(tok, "needs_training", False))
        if trains:
            with case.check("train"):
                tok.train([TRAINING_TEXT, *corpus])
        return tok, trains

    @hypothesis_settings(max_examples)
    @given(
        corpus=st.lists(st.text(min_size=1, max_size=120), max_size=4),
        texts=st.lists(st.text(max_size=60), max_size=4),
    )
    @example(corpus=[], texts=["", "<|endoftext|>", "Hi, 42!\n\tx  y", "naïve 日本語 🤖\u00a0\x00"])
    def run(corpus: list[str], texts: list[str]) -> None:
        case.inputs = f"training texts {corpus!r}"
        tok, trains = build(corpus)
        case.inputs = case.inputs if trains else ""
        others = [build(corpus)[0]] if trains else []
        if trains and callable(getattr(tok, "state", None)):
            with case.check("state"):
                restored = case.build(model=False)
                restored.load_state(json.loads(json.dumps(tok.state())))
            others.append(restored)
        with case.check("attributes"):
            v, eot, lengths = tok.vocab_size, tok.eot_id, np.asarray(tok.token_byte_lengths())
            names = (tok.name, tok.fingerprint)
        if not all(isinstance(n, str) and n for n in names):
            case.fail("attributes", f"name and fingerprint must be non-empty strings: {names!r}")
        if not (isinstance(v, int) and isinstance(eot, int) and 0 <= eot < v):
            case.fail("attributes", f"eot_id {eot!r} must be an int in [0, vocab_size={v!r})")
        if lengths.shape != (v,) or not np.issubdtype(lengths.dtype, np.integer):
            case.fail(
                "token_byte_lengths", f"gave {lengths.shape} {lengths.dtype}, not ({v},) ints"
            )
        for t in [*texts, *corpus]:
            case.inputs = f"text {t!r}" + (f", training texts {corpus!r}" if trains else "")
            with case.check("encode"):
                ids = [int(i) for i in tok.encode(t)]
            out = [i for i in ids if not 0 <= i < v]
            if out:
                case.fail("ids in range", f"encode gave id {out[0]}, outside [0, {v})")
            if eot in ids:
                case.fail("ids in range", f"encode turned text into the end-of-text id {eot}")
            with case.check("round trip"):
                back = tok.decode(ids)
            if back != t:
                case.fail("round trip", f"decode(encode(text)) gave {back!r}")
            if int(lengths[ids].sum()) != len(t.encode("utf-8")):
                total = int(lengths[ids].sum())
                case.fail(
                    "token_byte_lengths", f"its ids stand for {total} bytes, not {len(t.encode())}"
                )
            for other, check in zip(others, ("deterministic training", "state"), strict=False):
                with case.check(check):
                    same = other.fingerprint == tok.fingerprint and other.encode(t) == ids
                if not same:
                    what = (
                        "training again on the same texts"
                        if other is others[0]
                        else "load_state(state())"
                    )
                    case.fail(check, f"{what} gave another fingerprint or other ids")

    run()


def check_corpus(case: Case, max_examples: int) -> None:
    corpus = case.build(model=False)
    if not isinstance(getattr(corpus, "description", None), str):
        case.fail("attributes", "a corpus needs a `description` string")
    with case.check("documents"):
        first = list(itertools.islice(corpus.documents(), 50))
    bad = [
        doc
        for doc in first
        if not (isinstance(doc, tuple) and len(doc) == 2 and all(isinstance(s, str) for s in doc))
    ]
    if bad:
        case.fail("documents", f"must yield (name, text) string pairs, got {bad[0]!r:.80}")
    with case.check("documents"):
        again = list(itertools.islice(corpus.documents(), 50))
        any_text = any(text for _, text in corpus.documents())
    if not any_text:
        case.fail("documents", "yields no document with any text")
    if first != again:
        case.fail("documents", "documents() yields different documents the second time")
