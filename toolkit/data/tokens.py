"""The token-id pipeline: corpus documents -> cached train/validation token arrays -> batches.

`load_tokens` splits a corpus by characters, tokenizes each split once and keeps the ids in a
content-keyed cache of .npy files that later runs memory-map (batches.py cuts windows out of
them).
It works with any corpus and tokenizer object honouring the registry's contracts and imports no
concrete component.

Tokenizers that learn their vocabulary (`needs_training = True`; see `TrainableTokenizer`) are
trained here, on the training split's text only (after the character split, never the
validation text), before anything is encoded. What they learn (`tokenizer.state()`) is cached
as `<key>.trained.json` next to the token arrays, keyed by the training text's hash, the
tokenizer's name and `training_config` and TRAINED_FORMAT; later loads, in this process or
another, restore it with `load_state` instead of retraining. The token arrays' own key uses the
trained tokenizer's fingerprint, which reflects what it learned, so caches never mix.
Deliberately not here: choosing components (the runner does), model code,
and text cleaning (corpora yield text as they want it modelled).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.api.contracts import Corpus, Tokenizer, TrainableTokenizer
from toolkit.data.cachefile import cache_file, cache_paths
from toolkit.errors import DataError
from toolkit.files import remove_temps, write_atomic

CACHE_ENV = "ABLATE_CACHE_DIR"
# Part of every cache key: bump it whenever splitting, tokenizing or the file layout changes, so
# stale caches are simply never looked up again.
CACHE_FORMAT = 1
# Part of every learned-state cache key (see load_tokens): bump it when what counts as the
# training text or the file layout changes.
TRAINED_FORMAT = 1
# Texts handed to a tokenizer's encode_batch at once: big enough for its threads to pay off,
# small enough that the Python lists of ids it returns stay modest.
_BATCH_CHARS = 1 << 20
# Long documents are cut into parts of about this many characters (where a cut changes no id),
# so that one batch holds many parts for the tokenizer's threads to share.
_PART_CHARS = 1 << 16
STALE_TEMP_S = 24 * 3600
# Corpora at least this long (characters) show their tokenizing progress.
PROGRESS_CHARS = 20_000_000


@dataclass
class TokenData:
    """A tokenized corpus: 1-D id arrays (read-only memory maps of the cache file) and facts."""

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    eot_id: int
    token_bytes: np.ndarray  # UTF-8 bytes each id stands for, to turn loss into bits per byte
    key: str  # the cache key: equal keys mean identical token arrays
    train_bytes: int  # UTF-8 bytes of text in each split
    val_bytes: int


def default_cache_dir() -> Path:
    """$ABLATE_CACHE_DIR, else $XDG_CACHE_HOME/ablate, else ~/.cache/ablate."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ablate"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (halves memory and disk), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


# (cache folder, key) -> TokenData. The documents are still read and hashed on every call (they
# are the key), but a repeat in the same process skips loading and validating the cache files.
_MEMO: dict[tuple[str, str], TokenData] = {}
# (cache folder, learned-state key) -> state: a trainable tokenizer's state learned or loaded in
# this process, so a repeat neither retrains nor rereads the file.
_TRAINED: dict[tuple[str, str], dict[str, Any]] = {}


def clear_memo() -> None:
    """Forget token arrays and learned tokenizer states loaded in this process (the files on
    disk stay)."""
    _MEMO.clear()
    _TRAINED.clear()


def load_tokens(
    corpus: Corpus,
    tokenizer: Tokenizer,
    val_fraction: float,
    cache_dir: str | os.PathLike[str] | None = None,
) -> TokenData:
    """Tokenize a corpus into train/validation id arrays, through the on-disk cache.

    The first (1 - val_fraction) of the characters (documents concatenated in order) are
    training text, the rest validation; the document straddling the boundary is cut there.
    Each split holds its documents' ids with `tokenizer.eot_id` between documents.
    The corpus's documents are read on every call (they are the cache key), and once more to
    tokenize them when no valid cache file exists, so documents() must yield the same each time.
    A tokenizer with `needs_training = True` is first trained on the training split (or given
    its cached learned state), and is left trained for encode/decode after this returns; that
    reads the documents twice more (three times when it must train).
    """
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, int | float)
        or not 0 < val_fraction < 1
    ):
        raise DataError(
            f"val_fraction must be a number strictly between 0 and 1 (e.g. 0.1), got {val_fraction!r}"
        )
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = folder / "tokens"
    # Temp files of writes killed long ago; a live write (another sweep sharing the cache) is
    # younger than this.
    remove_temps(folder, older_than_s=STALE_TEMP_S)
    if getattr(tokenizer, "needs_training", False):
        _train_tokenizer(corpus, tokenizer, float(val_fraction), folder)
    key, n_chars = _cache_key(corpus, tokenizer, float(val_fraction))
    memo_key = (str(folder.absolute()), key)
    if memo_key in _MEMO:
        return _MEMO[memo_key]

    dtype = token_dtype(tokenizer.vocab_size)
    cached = _read_cache(folder, key, dtype, tokenizer.vocab_size)
    if cached is None:
        n_train_chars = round(n_chars * (1 - val_fraction))
        cached = _build(corpus, tokenizer, n_train_chars, n_chars, dtype, folder, key)
    tokens, meta = cached
    n_train = meta["n_train"]
    data = TokenData(
        train=tokens[:n_train],
        val=tokens[n_train:],
        vocab_size=tokenizer.vocab_size,
        eot_id=tokenizer.eot_id,
        token_bytes=np.asarray(tokenizer.token_byte_lengths()),
        key=key,
        train_bytes=meta["train_bytes"],
        val_bytes=meta["val_bytes"],
    )
    _MEMO[memo_key] = data
    return data


def _cache_key(corpus: Corpus, tokenizer: Tokenizer, val_fraction: float) -> tuple[str, int]:
    """(sha256 of everything the token arrays depend on, total characters); checks the corpus
    is not empty."""
    h = hashlib.sha256()
    tok = tokenizer
    header = [
        CACHE_FORMAT,
        tok.name,
        tok.fingerprint,
        tok.vocab_size,
        tok.eot_id,
        val_fraction.hex(),
    ]
    h.update(json.dumps(header).encode())
    n_chars = 0
    for name, text in _checked_documents(corpus):
        # Length prefixes keep ("ab", "c") and ("a", "bc") from hashing alike.
        for part in (name, text):
            _hash_part(h, part)
        n_chars += len(text)
    return h.hexdigest(), n_chars


def _hash_part(h: Any, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    h.update(len(data).to_bytes(8, "little") + data)


def _checked_documents(corpus: Corpus) -> Iterator[tuple[str, str]]:
    """corpus.documents(), checking each is a pair of strings and, at the end, that some text
    is not blank."""
    n_docs = 0
    has_text = False
    for name, text in corpus.documents():
        if not isinstance(name, str) or not isinstance(text, str):
            raise DataError(
                f"corpus {_describe(corpus)} yielded {type(name).__name__}/{type(text).__name__}"
                f" instead of a (name, text) pair of strings; fix its documents()"
            )
        n_docs += 1
        has_text = has_text or bool(text.strip())
        yield name, text
    if not has_text:
        what = "no documents" if n_docs == 0 else f"{n_docs} document(s), all blank"
        raise DataError(f"corpus {_describe(corpus)} is empty ({what}); point it at some text")


def _train_tokenizer(
    corpus: Corpus, tokenizer: TrainableTokenizer, val_fraction: float, folder: Path
) -> None:
    """Give a trainable tokenizer the state learned from this corpus's training split: from this
    process's memo, else the cache file, else by training it (and caching what it learned)."""
    n_chars = sum(len(text) for _, text in _checked_documents(corpus))
    n_train_chars = round(n_chars * (1 - val_fraction))

    def train_texts() -> Iterator[str]:
        # The training pieces come first; stop reading at the first validation piece.
        return (text for _, text in takewhile(lambda p: p[0], _split(corpus, n_train_chars)))

    h = hashlib.sha256()
    for text in train_texts():
        _hash_part(h, text)
    header = [TRAINED_FORMAT, tokenizer.name, tokenizer.training_config, h.hexdigest()]
    key = hashlib.sha256(json.dumps(header).encode()).hexdigest()
    memo_key = (str(folder.absolute()), key)
    path = folder / f"{key}.trained.json"
    state = _TRAINED.get(memo_key)
    if not _restore(tokenizer, state):
        state = _read_trained(path)
        if not _restore(tokenizer, state):
            state = None
    if state is not None:
        _TRAINED[memo_key] = state
        return
    tokenizer.train(train_texts())
    state = tokenizer.state()
    try:
        write_atomic(path, json.dumps(state))
    except OSError as exc:
        warnings.warn(
            f"learned tokenizer state not written to {folder} ({exc}); keeping it in memory",
            stacklevel=3,
        )
    _TRAINED[memo_key] = state


def _restore(tokenizer: TrainableTokenizer, state: dict[str, Any] | None) -> bool:
    """Load a learned state into the tokenizer; False when there is none or it is unusable
    (another version, a hand-edited file): the caller then trains."""
    if state is None:
        return False
    try:
        tokenizer.load_state(state)
    except (DataError, ValueError, TypeError, KeyError):
        return False
    return True


def _read_trained(path: Path) -> dict[str, Any] | None:
    """A cached learned state, or None when absent or unreadable."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _describe(corpus: Corpus) -> str:
    return repr(getattr(corpus, "description", None) or type(corpus).__name__)


def _split(corpus: Corpus, n_train_chars: int) -> Iterator[tuple[bool, str]]:
    """(is_train, text piece) for every non-empty piece, train pieces first."""
    start = 0
    for _, text in corpus.documents():
        end = start + len(text)
        cut = min(max(n_train_chars - start, 0), len(text))
        if cut:
            yield True, text[:cut]
        if cut < len(text):
            yield False, text[cut:]
        start = end


def _build(
    corpus: Corpus,
    tokenizer: Tokenizer,
    n_train_chars: int,
    n_chars: int,
    dtype: np.dtype,
    folder: Path,
    key: str,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Tokenize the corpus into the cache file as it goes, in memory bounded by one batch of
    text: pieces are cut into parts of about _PART_CHARS at newlines, encoded a batch at a
    time (threaded, when the tokenizer has encode_batch) and appended to the file."""
    eot = np.array([tokenizer.eot_id], dtype=dtype)
    counts = {True: 0, False: 0}
    n_bytes = {True: 0, False: 0}
    started: dict[bool, bool] = {True: False, False: False}  # a split's first document seen
    progress = Progress(n_chars, _describe(corpus), tokenizer.name)
    pending: list[tuple[bool, bool, str]] = []  # (is_train, starts a document, text)

    def flush(out: Any) -> None:
        texts = [t for _, _, t in pending]
        for (is_train, first, text), ids in zip(
            pending, _encode_all(tokenizer, texts), strict=True
        ):
            parts = [_to_array(ids, dtype, tokenizer)]
            if first and started[is_train]:
                parts.insert(0, eot)  # between documents, never before a split's first
            started[is_train] = started[is_train] or first
            for part in parts:
                out.write(part.tobytes())
                counts[is_train] += len(part)
            progress.update(len(text))
        pending.clear()

    meta: dict[str, Any] = {}
    try:
        with cache_file(folder, key, dtype) as out:
            pending_chars = 0
            for is_train, text in _split(corpus, n_train_chars):
                n_bytes[is_train] += len(text.encode("utf-8", "surrogatepass"))
                for i, part in enumerate(_parts(text, tokenizer)):
                    pending.append((is_train, i == 0, part))
                    pending_chars += len(part)
                    if pending_chars >= _BATCH_CHARS:
                        flush(out)
                        pending_chars = 0
            flush(out)
            meta = {
                "format": CACHE_FORMAT,
                "n_train": counts[True],
                "n_val": counts[False],
                "dtype": dtype.name,
                "train_bytes": n_bytes[True],
                "val_bytes": n_bytes[False],
                "corpus": getattr(corpus, "description", None) or type(corpus).__name__,
                "tokenizer": tokenizer.name,
                "created": time.time(),
            }
            out.finish(counts[True] + counts[False], meta)
    except OSError as exc:
        # A read-only or full disk costs the cache, not the run: tokenize again into memory.
        warnings.warn(f"token cache not written to {folder} ({exc}); using memory", stacklevel=3)
        return _build_in_memory(corpus, tokenizer, n_train_chars, dtype)
    finally:
        progress.close()
    npy, _ = cache_paths(folder, key)
    return np.load(npy, mmap_mode="r"), meta


def _build_in_memory(
    corpus: Corpus, tokenizer: Tokenizer, n_train_chars: int, dtype: np.dtype
) -> tuple[np.ndarray, dict[str, Any]]:
    """_build without a cache folder: the ids of both splits in one array in memory."""
    arrays: dict[bool, list[np.ndarray]] = {True: [], False: []}
    n_bytes = {True: 0, False: 0}
    eot = np.array([tokenizer.eot_id], dtype=dtype)
    for is_train, text in _split(corpus, n_train_chars):
        n_bytes[is_train] += len(text.encode("utf-8", "surrogatepass"))
        parts = list(_parts(text, tokenizer))
        ids = [_to_array(i, dtype, tokenizer) for i in _encode_all(tokenizer, parts)]
        arrays[is_train] += ([eot] if arrays[is_train] else []) + ids
    train, val = (np.concatenate(arrays[k] or [np.zeros(0, dtype)]) for k in (True, False))
    meta = {
        "n_train": len(train),
        "n_val": len(val),
        "train_bytes": n_bytes[True],
        "val_bytes": n_bytes[False],
    }
    return np.concatenate([train, val]), meta


# Where a long piece of text may be cut without changing how it tokenizes: a newline between
# two non-space characters is a pre-token of its own for GPT-2-style pre-tokenizers (and any
# cut is safe for byte-level ones).
_SAFE_CUT = re.compile(r"(?<=\S)\n(?=\S)")


def _parts(text: str, tokenizer: Tokenizer, size: int | None = None) -> Iterator[str]:
    """A piece of text in parts of about `size` characters (_PART_CHARS), cut after a newline between two
    non-space characters (never elsewhere: a text with no such newline stays whole), so each
    part tokenizes as it would inside the whole and parts can be encoded in parallel. Only
    for tokenizers that say so (`newline_splits = True`); others get the text whole."""
    if not getattr(tokenizer, "newline_splits", False):
        yield text
        return
    size = size or _PART_CHARS
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


def _encode_all(tokenizer: Tokenizer, texts: list[str]) -> Sequence[Sequence[int]]:
    # encode_batch is optional in the contract; tokenizers with one (tiktoken) run it threaded.
    batch = getattr(tokenizer, "encode_batch", None)
    return batch(texts) if batch is not None else [tokenizer.encode(t) for t in texts]


def _to_array(ids: Sequence[int], dtype: np.dtype, tokenizer: Tokenizer) -> np.ndarray:
    arr = np.asarray(ids, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= tokenizer.vocab_size):
        bad = int(arr.min() if arr.min() < 0 else arr.max())
        raise DataError(
            f"tokenizer {tokenizer.name!r} produced id {bad}, outside its vocabulary "
            f"[0, {tokenizer.vocab_size}); fix its encode() or vocab_size"
        )
    return arr.astype(dtype)


def _read_cache(
    folder: Path, key: str, dtype: np.dtype, vocab_size: int
) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The cached ids and metadata, or None when absent or damaged (the caller rebuilds, and a
    damaged cache is said so in one line)."""
    npy, meta_path = cache_paths(folder, key)
    if not (npy.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tokens = np.load(npy, mmap_mode="r", allow_pickle=False)
        n = int(meta["n_train"]) + int(meta["n_val"])
        ok = (
            meta.get("format") == CACHE_FORMAT
            and tokens.ndim == 1
            and tokens.dtype == dtype
            and len(tokens) == n
            and meta.get("dtype") == dtype.name
        )
        # An edited file of the right length and type: every id must have an embedding row.
        # One pass over the memory map, once per process (load_tokens memoizes).
        ok = ok and (n == 0 or int(tokens.max()) < vocab_size)
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        # Truncated or garbled files (a killed writer, a full disk): np.load or json says so.
        ok = False
    if not ok:
        warnings.warn(f"token cache {npy} is damaged; tokenizing the corpus again", stacklevel=3)
        return None
    return tokens, meta
