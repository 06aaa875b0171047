"""Turning text into token ids for the token cache: long texts cut where a cut changes no id,
texts encoded a batch at a time (threaded where the tokenizer can), ids checked and packed into
the cache's dtype, and the progress shown on long corpora. tokens.py decides what is encoded
and where the ids go.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator, Sequence

import numpy as np

from toolkit.api.contracts import Tokenizer
from toolkit.errors import DataError

# Long documents are cut into parts of about this many characters (where a cut changes no id),
# so that one batch holds many parts for the tokenizer's threads to share.
PART_CHARS = 1 << 16
# Corpora at least this long (characters) show their tokenizing progress.
PROGRESS_CHARS = 20_000_000

# Where a long piece of text may be cut without changing how it tokenizes: a newline between
# two non-space characters is a pre-token of its own for GPT-2-style pre-tokenizers (and any
# cut is safe for byte-level ones).
_SAFE_CUT = re.compile(r"(?<=\S)\n(?=\S)")


def cut_parts(text: str, tokenizer: Tokenizer, size: int | None = None) -> Iterator[str]:
    """A piece of text in parts of about `size` characters (PART_CHARS), cut after a newline between two
    non-space characters (never elsewhere: a text with no such newline stays whole), so each
    part tokenizes as it would inside the whole and parts can be encoded in parallel. Only
    for tokenizers that say so (`newline_splits = True`); others get the text whole."""
    if not getattr(tokenizer, "newline_splits", False):
        yield text
        return
    size = size or PART_CHARS
    start = 0
    while len(text) - start > size:
        cut = _SAFE_CUT.search(text, start + size)
        if cut is None:
            break
        yield text[start : cut.end()]
        start = cut.end()
    yield text[start:]


class Progress:
    """Tokenizing progress on stderr for corpora of at least PROGRESS_CHARS characters: a
    bar (characters done, MB/s, ETA) on a terminal, else a line at the start and the end."""

    def __init__(self, total: int, corpus: str, tokenizer: str) -> None:
        self.total, self.done, self.bar = total, 0, None
        self.started = time.perf_counter()
        self.shown = total >= PROGRESS_CHARS
        self.what = f"tokenizing {corpus} with {tokenizer}"
        if not self.shown:
            return
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, unit="B", unit_scale=True, desc=self.what, file=sys.stderr,
                leave=False, smoothing=0.1,
            )  # fmt: skip
        else:
            print(f"{self.what}: {total / 1e6:,.1f} M characters", file=sys.stderr, flush=True)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.shown and self.done >= self.total:
            seconds = time.perf_counter() - self.started
            rate = self.total / 1e6 / max(seconds, 1e-9)
            print(
                f"{self.what}: done, {self.total / 1e6:,.1f} M characters in {seconds:.1f} s "
                f"({rate:.1f} M/s)",
                file=sys.stderr,
                flush=True,
            )


def encode_all(tokenizer: Tokenizer, texts: list[str]) -> Sequence[Sequence[int]]:
    """Each text's ids: lists, or arrays from tokenizers that give them (encode_batch is optional
    in the contract; the built-in ones run it threaded and return arrays)."""
    batch = getattr(tokenizer, "encode_batch", None)
    return batch(texts) if batch is not None else [tokenizer.encode(t) for t in texts]


def to_array(ids: Sequence[int], dtype: np.dtype, tokenizer: Tokenizer) -> np.ndarray:
    """Ids in the cache's dtype, each checked to have a row in the vocabulary."""
    arr = ids if isinstance(ids, np.ndarray) else np.asarray(ids, dtype=np.int64)
    if arr.size:
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high >= tokenizer.vocab_size:
            raise DataError(
                f"tokenizer {tokenizer.name!r} produced id {low if low < 0 else high}, outside "
                f"its vocabulary [0, {tokenizer.vocab_size}); fix its encode() or vocab_size"
            )
    return arr.astype(dtype, copy=False)
