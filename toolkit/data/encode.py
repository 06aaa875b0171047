"""Turning text into token ids for the token cache: long texts cut where a cut changes no id,
texts encoded a batch at a time, ids checked and packed into the cache's dtype, and the
progress shown on long corpora. tokens.py decides what is encoded and where the ids go.

Long corpora are encoded in worker processes, one per usable core (`encode_batches`): on this
project's 2-core machine tiktoken's threads gained 1.2-1.5x over one core for 1.6-1.8x its CPU
time, where processes gained about 1.7x. Short corpora, single cores and tokenizers a worker
cannot receive stay in this process.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import sys
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import numpy as np

from toolkit.api.contracts import Tokenizer
from toolkit.errors import ComponentError, DataError, ToolkitError, one_line

# Long documents are cut into parts of about this many characters (where a cut changes no id),
# so that one batch holds many parts for the tokenizer's threads to share.
PART_CHARS = 1 << 16
# Corpora at least this long (characters) show their tokenizing progress.
PROGRESS_CHARS = 20_000_000
# Corpora at least this long (characters; about a second of gpt2 encoding on one core) are
# encoded in worker processes when there is more than one usable core: shorter ones would
# spend on starting the processes what they gain from them.
PROCESS_CHARS = 8_000_000
# Set to a number to cap the worker processes (1: encode in this process).
WORKERS_ENV = "ABLATE_TOKENIZE_WORKERS"

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
    in the contract; the built-in ones return arrays). A tokenizer that raises, or returns
    another number of id lists than it was given texts, is a ComponentError naming it."""
    batch = getattr(tokenizer, "encode_batch", None)
    method = "encode_batch" if batch is not None else "encode"
    try:
        ids = list(batch(texts)) if batch is not None else [tokenizer.encode(t) for t in texts]
    except ToolkitError:
        raise
    except Exception as exc:
        raise ComponentError(
            f"tokenizer {tokenizer.name!r} raised in {method}(): {one_line(exc, 300)}"
        ) from exc
    if batch is not None and len(ids) != len(texts):
        raise ComponentError(
            f"tokenizer {tokenizer.name!r} encode_batch() returned {len(ids)} id lists for "
            f"{len(texts)} texts; it must return one per text, in order"
        )
    return ids


def to_array(ids: Sequence[int], dtype: np.dtype, tokenizer: Tokenizer) -> np.ndarray:
    """Ids in the cache's dtype, each checked to be an integer with a row in the vocabulary."""
    arr = ids if isinstance(ids, np.ndarray) else np.asarray(ids)
    if arr.size == 0:
        arr = arr.astype(np.int64)  # [] reads as float64
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        what = type(ids).__name__
        if isinstance(ids, np.ndarray | list | tuple):
            what += f" of {arr.dtype}" if arr.ndim == 1 else f" of shape {arr.shape}"
        raise ComponentError(
            f"tokenizer {tokenizer.name!r} encoded a text as {what}, not a list of integer "
            f"ids; fix its encode()"
        )
    if arr.size:
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high >= tokenizer.vocab_size:
            raise DataError(
                f"tokenizer {tokenizer.name!r} produced id {low if low < 0 else high}, outside "
                f"its vocabulary [0, {tokenizer.vocab_size}); fix its encode() or vocab_size"
            )
    return arr.astype(dtype, copy=False)


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the platform says, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_count(n_chars: int) -> int:
    """Worker processes for a corpus of `n_chars` characters: one per usable core (capped by
    $ABLATE_TOKENIZE_WORKERS) for long corpora; 0 (this process) for short ones or one core."""
    cores = usable_cores()
    cap = os.environ.get(WORKERS_ENV, "").strip()
    if cap:
        try:
            cores = min(cores, int(cap))
        except ValueError:
            raise DataError(
                f"${WORKERS_ENV} is {cap!r}, not a whole number; set it to how many processes "
                f"may tokenize (1: none besides this one) or unset it"
            ) from None
    return cores if cores > 1 and n_chars >= PROCESS_CHARS else 0


def encode_checked(tokenizer: Tokenizer, texts: Sequence[str], dtype: np.dtype) -> list[np.ndarray]:
    """Each text's ids, checked and in `dtype`: one batch, as this process encodes it."""
    return [to_array(ids, dtype, tokenizer) for ids in encode_all(tokenizer, list(texts))]


# A worker process's tokenizer and dtype, set once when it starts (_start_worker).
_WORKER: tuple[Tokenizer, np.dtype] | None = None


def _start_worker(tokenizer: Tokenizer, dtype: np.dtype) -> None:
    global _WORKER
    # Ctrl-C is the parent's to handle: it stops the pool, and workers print no tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER = (tokenizer, dtype)


def _encode_in_worker(texts: list[str]) -> list[np.ndarray]:
    assert _WORKER is not None, "encode worker used before it started"
    tokenizer, dtype = _WORKER
    # A text at a time: a tokenizer's own threads (Hugging Face's, say) would only fight the
    # other workers.
    return [encode_checked(tokenizer, [text], dtype)[0] for text in texts]


def _process_pool(tokenizer: Tokenizer, dtype: np.dtype, workers: int) -> Executor | None:
    """Worker processes holding the tokenizer, or None where they could not get it: a
    platform that starts workers afresh (spawn, forkserver) must import the tokenizer's class,
    which a class written in a script's __main__ does not allow."""
    context = multiprocessing.get_context()
    if context.get_start_method() != "fork" and type(tokenizer).__module__ == "__main__":
        return None
    return ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(tokenizer, dtype)
    )


T = TypeVar("T")


def encode_batches(
    tokenizer: Tokenizer,
    dtype: np.dtype,
    n_chars: int,
    batches: Iterable[tuple[T, list[str]]],
) -> Iterator[tuple[T, list[np.ndarray]]]:
    """(tag, texts) batches to (tag, each text's checked ids), in order, encoded ahead of the
    caller: in worker processes for a corpus of `n_chars` characters when worker_count says so
    (a few batches per worker in flight), else in one background thread of this process, so
    reading the next batch overlaps encoding this one either way. Memory holds the batches in
    flight, never the corpus. Should the workers die (killed, out of memory, a script without
    a __main__ guard under spawn), the rest is encoded here, with a warning."""
    workers = worker_count(n_chars)
    pool = _process_pool(tokenizer, dtype, workers) if workers else None
    thread = ThreadPoolExecutor(1, thread_name_prefix="ablate-encode")
    depth = 2 * workers if pool is not None else 1
    in_flight: deque[tuple[T, list[str], Future[list[np.ndarray]]]] = deque()

    def submit(texts: list[str]) -> Future[list[np.ndarray]]:
        if pool is not None:
            return pool.submit(_encode_in_worker, texts)
        return thread.submit(encode_checked, tokenizer, texts, dtype)

    def finish() -> tuple[T, list[np.ndarray]]:
        nonlocal pool
        tag, texts, future = in_flight.popleft()
        try:
            return tag, future.result()
        except BrokenProcessPool as exc:
            if pool is not None:
                warnings.warn(
                    f"tokenizing worker processes stopped ({exc}); encoding in this process",
                    stacklevel=2,
                )
                pool.shutdown(wait=False, cancel_futures=True)
                pool = None
            # The batches in flight went down with the workers: encode them here.
            return tag, encode_checked(tokenizer, texts, dtype)

    try:
        for tag, texts in batches:
            in_flight.append((tag, texts, submit(texts)))
            if len(in_flight) > depth:
                yield finish()
        while in_flight:
            yield finish()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        thread.shutdown(wait=True, cancel_futures=True)
