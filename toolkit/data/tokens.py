"""The token-id pipeline: corpus documents -> cached train/validation/test token arrays ->
batches.

`load_tokens` splits a corpus (by characters or by documents: splits.py), tokenizes each split
once (encode.py) and keeps the ids in a content-keyed cache of .npy files that later runs
memory-map (batches.py cuts windows out of them). It works with any corpus and tokenizer object
honouring the registry's contracts (checked as they are read: reading.py) and imports no
concrete component. A tokenizer that learns its vocabulary is trained first, on the training
split only (learned.py); the token arrays' key uses the trained tokenizer's fingerprint, which
reflects what it learned, so caches never mix. Deliberately not here: choosing components (the
runner does), model code, and text cleaning (corpora yield text as they want it modelled).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.api.contracts import Corpus, Tokenizer
from toolkit.data import encode, learned, reading
from toolkit.data.cachefile import cache_file, cache_paths
from toolkit.data.splits import SPLITS, Holdout, Plan, pieces
from toolkit.files import remove_temps

CACHE_ENV = "ABLATE_CACHE_DIR"
# Part of every cache key: bump it whenever splitting, tokenizing or the file layout changes, so
# stale caches are simply never looked up again.
CACHE_FORMAT = 1
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
    # The test split: empty unless the spec holds one out (data.test_fraction, test_documents).
    test: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint16))
    test_bytes: int = 0


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


def clear_memo() -> None:
    """Forget token arrays and learned tokenizer states loaded in this process (the files on
    disk stay)."""
    _MEMO.clear()
    learned.forget()


def load_tokens(
    corpus: Corpus,
    tokenizer: Tokenizer,
    holdout: Holdout | float,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    corpus_label: str | None = None,
    tokenizer_label: str | None = None,
) -> TokenData:
    """Tokenize a corpus into train/validation(/test) id arrays, through the on-disk cache.

    `holdout` says which text is held out (splits.py); a number is a val_fraction, the last
    fraction of the characters (documents concatenated in order, the one straddling the
    boundary cut there). Each split holds its pieces' ids with `tokenizer.eot_id` between them.
    The corpus's documents are read on every call (they are the cache key), and once more to
    tokenize them when no valid cache file exists (once per split when split by documents), so
    documents() must yield the same each time.
    A tokenizer with `needs_training = True` is first trained on the training split (or given
    its cached learned state), and is left trained for encode/decode after this returns; that
    reads the documents twice more (three times when it must train).
    Both are first checked against their contracts (Corpus, Tokenizer, and TrainableTokenizer
    when it learns): a missing member is a ComponentError naming the component as
    `corpus_label` / `tokenizer_label` say ("corpus 'mine' (plugin 'my_corpus')", as the caller
    that looked it up in the registry knows it), else by its description or name.
    """
    if not isinstance(holdout, Holdout):
        holdout = Holdout(val_fraction=holdout)
    corpus_label, tokenizer_label = reading.check(corpus, tokenizer, corpus_label, tokenizer_label)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = folder / "tokens"
    # Temp files of writes killed long ago; a live write (another sweep sharing the cache) is
    # younger than this.
    remove_temps(folder, older_than_s=STALE_TEMP_S)
    if getattr(tokenizer, "needs_training", False):
        learned.train_tokenizer(corpus, tokenizer, holdout, folder, corpus_label)
    token_bytes = reading.token_bytes(tokenizer, tokenizer_label)
    key, cut, n_chars = _cache_key(corpus, tokenizer, holdout, corpus_label)
    memo_key = (str(folder.absolute()), key)
    if memo_key in _MEMO:
        return _MEMO[memo_key]

    dtype = token_dtype(tokenizer.vocab_size)
    cached = _read_cache(folder, key, dtype, tokenizer.vocab_size)
    if cached is None:
        cached = _build(corpus, tokenizer, cut, n_chars, dtype, folder, key)
    tokens, meta = cached
    n_train, n_val = meta["n_train"], meta["n_val"]
    data = TokenData(
        train=tokens[:n_train],
        val=tokens[n_train : n_train + n_val],
        test=tokens[n_train + n_val :],
        vocab_size=tokenizer.vocab_size,
        eot_id=tokenizer.eot_id,
        token_bytes=token_bytes,
        key=key,
        train_bytes=meta["train_bytes"],
        val_bytes=meta["val_bytes"],
        test_bytes=meta.get("test_bytes", 0),
    )
    _MEMO[memo_key] = data
    return data


def _cache_key(
    corpus: Corpus, tokenizer: Tokenizer, holdout: Holdout, label: str
) -> tuple[str, Plan, int]:
    """(sha256 of everything the token arrays depend on, the corpus's cut, its characters);
    checks the corpus is not empty."""
    h = hashlib.sha256()
    tok = tokenizer
    header = [CACHE_FORMAT, tok.name, tok.fingerprint, tok.vocab_size, tok.eot_id, *holdout.key()]
    h.update(json.dumps(header).encode())
    cut, n_chars = reading.survey(corpus, holdout, label, h)
    return h.hexdigest(), cut, n_chars


def _build(
    corpus: Corpus,
    tokenizer: Tokenizer,
    cut: Plan,
    n_chars: int,
    dtype: np.dtype,
    folder: Path,
    key: str,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Tokenize the corpus into the cache file as it goes, in memory bounded by a few batches
    of text: pieces are cut into parts of about encode.PART_CHARS at newlines, encoded a batch
    at a time (in worker processes on long corpora: encode.encode_batches) and appended to the
    file, every training piece first, then validation, then test."""
    eot = np.array([tokenizer.eot_id], dtype=dtype).tobytes()
    counts = dict.fromkeys(SPLITS, 0)
    n_bytes = dict.fromkeys(SPLITS, 0)
    progress = encode.Progress(n_chars, reading.describe(corpus), tokenizer.name)
    meta: dict[str, Any] = {}
    try:
        batches = _batches(corpus, tokenizer, cut, n_bytes)
        encoded = encode.encode_batches(tokenizer, dtype, n_chars, batches)
        with cache_file(folder, key, dtype) as out, closing(encoded):
            for tags, ids in encoded:
                for (split, between, n), part in zip(tags, ids, strict=True):
                    if between:
                        out.write(eot)
                        counts[split] += 1
                    out.write(part.tobytes())
                    counts[split] += len(part)
                    progress.update(n)
            meta = {
                "format": CACHE_FORMAT,
                **{f"n_{split}": counts[split] for split in SPLITS},
                "dtype": dtype.name,
                **{f"{split}_bytes": n_bytes[split] for split in SPLITS},
                "corpus": getattr(corpus, "description", None) or type(corpus).__name__,
                "tokenizer": tokenizer.name,
                "created": time.time(),
            }
            out.finish(sum(counts.values()), meta)
    except OSError as exc:
        # A read-only or full disk costs the cache, not the run: tokenize again into memory.
        warnings.warn(f"token cache not written to {folder} ({exc}); using memory", stacklevel=3)
        return _build_in_memory(corpus, tokenizer, cut, n_chars, dtype)
    finally:
        progress.close()
    npy, _ = cache_paths(folder, key)
    return np.load(npy, mmap_mode="r"), meta


_Tag = tuple[str, bool, int]  # (split, an end-of-text goes before it, characters)


def _batches(
    corpus: Corpus, tokenizer: Tokenizer, cut: Plan, n_bytes: dict[str, int]
) -> Iterator[tuple[list[_Tag], list[str]]]:
    """The corpus's pieces in split order, cut into parts (encode.cut_parts) and gathered in
    batches of about _BATCH_CHARS characters, each part tagged with its split, whether an
    end-of-text goes before it (a piece's first part, except a split's first piece) and its
    length; `n_bytes` counts each split's UTF-8 bytes as the pieces pass."""
    tags: list[_Tag] = []
    texts: list[str] = []
    chars = 0
    started = dict.fromkeys(SPLITS, False)
    for split, text in pieces(corpus, cut):
        n_bytes[split] += len(text.encode("utf-8", "surrogatepass"))
        for i, part in enumerate(encode.cut_parts(text, tokenizer)):
            tags.append((split, i == 0 and started[split], len(part)))
            texts.append(part)
            chars += len(part)
            if chars >= _BATCH_CHARS:
                yield tags, texts
                tags, texts, chars = [], [], 0
        started[split] = True
    if texts:
        yield tags, texts


def _build_in_memory(
    corpus: Corpus, tokenizer: Tokenizer, cut: Plan, n_chars: int, dtype: np.dtype
) -> tuple[np.ndarray, dict[str, Any]]:
    """_build without a cache folder: the ids of every split in one array in memory."""
    arrays: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    n_bytes = dict.fromkeys(SPLITS, 0)
    eot = np.array([tokenizer.eot_id], dtype=dtype)
    batches = _batches(corpus, tokenizer, cut, n_bytes)
    encoded = encode.encode_batches(tokenizer, dtype, n_chars, batches)
    with closing(encoded):
        for tags, ids in encoded:
            for (split, between, _), part in zip(tags, ids, strict=True):
                arrays[split] += [eot, part] if between else [part]
    joined = {s: np.concatenate(arrays[s] or [np.zeros(0, dtype)]) for s in SPLITS}
    meta = {
        **{f"n_{split}": len(joined[split]) for split in SPLITS},
        **{f"{split}_bytes": n_bytes[split] for split in SPLITS},
    }
    return np.concatenate([joined[s] for s in SPLITS]), meta


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
        n = int(meta["n_train"]) + int(meta["n_val"]) + int(meta.get("n_test", 0))
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
