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
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.api.contracts import Corpus, Tokenizer, TrainableTokenizer
from toolkit.errors import DataError
from toolkit.files import atomic_path, remove_temps, write_atomic

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
STALE_TEMP_S = 24 * 3600


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
        cached = _build(corpus, tokenizer, n_train_chars, dtype, folder, key)
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
    dtype: np.dtype,
    folder: Path,
    key: str,
) -> tuple[np.ndarray, dict[str, Any]]:
    chunks: dict[bool, list[np.ndarray]] = {True: [], False: []}
    n_bytes = {True: 0, False: 0}
    eot = np.array([tokenizer.eot_id], dtype=dtype)
    pending: list[tuple[bool, str]] = []

    def flush() -> None:
        texts = [t for _, t in pending]
        for (is_train, _), ids in zip(pending, _encode_all(tokenizer, texts), strict=True):
            if chunks[is_train]:
                chunks[is_train].append(eot)
            chunks[is_train].append(_to_array(ids, dtype, tokenizer))
        pending.clear()

    pending_chars = 0
    for is_train, text in _split(corpus, n_train_chars):
        n_bytes[is_train] += len(text.encode("utf-8", "surrogatepass"))
        pending.append((is_train, text))
        pending_chars += len(text)
        if pending_chars >= _BATCH_CHARS:
            flush()
            pending_chars = 0
    flush()

    n_train = sum(len(c) for c in chunks[True])
    meta = {
        "format": CACHE_FORMAT,
        "n_train": n_train,
        "n_val": sum(len(c) for c in chunks[False]),
        "dtype": dtype.name,
        "train_bytes": n_bytes[True],
        "val_bytes": n_bytes[False],
    }
    parts = chunks[True] + chunks[False]
    try:
        tokens = _write_cache(folder, key, parts, meta, dtype)
    except OSError as exc:
        # A read-only or full disk costs the cache, not the run.
        warnings.warn(f"token cache not written to {folder} ({exc}); using memory", stacklevel=3)
        tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    return tokens, meta


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


def _paths(folder: Path, key: str) -> tuple[Path, Path]:
    return folder / f"{key}.npy", folder / f"{key}.json"


def _write_cache(
    folder: Path, key: str, parts: list[np.ndarray], meta: dict[str, Any], dtype: np.dtype
) -> np.ndarray:
    """Write ids and metadata atomically (the metadata last: it marks the ids complete) and
    return the ids memory-mapped from the final file."""
    npy, meta_path = _paths(folder, key)
    total = sum(len(p) for p in parts)
    with atomic_path(npy, suffix=".npy.tmp") as tmp:
        # Fill a memory-mapped file piece by piece: never a second in-memory copy of all ids.
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(total,))
        pos = 0
        for p in parts:
            out[pos : pos + len(p)] = p
            pos += len(p)
        out.flush()
        del out
    write_atomic(meta_path, json.dumps(meta))
    return np.load(npy, mmap_mode="r")


def _read_cache(
    folder: Path, key: str, dtype: np.dtype, vocab_size: int
) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The cached ids and metadata, or None when absent or damaged (the caller rebuilds, and a
    damaged cache is said so in one line)."""
    npy, meta_path = _paths(folder, key)
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
