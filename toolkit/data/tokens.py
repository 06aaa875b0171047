"""The token-id pipeline: corpus documents -> cached train/validation/test token arrays ->
batches.

`load_tokens` splits a corpus (by characters or by documents: splits.py), tokenizes each split
once (encode.py) and keeps the ids in a content-keyed cache of .npy files that later runs memory-map (batches.py cuts windows out of
them).
It works with any corpus and tokenizer object honouring the registry's contracts and imports no
concrete component.

Tokenizers that learn their vocabulary (`needs_training = True`; see `TrainableTokenizer`) are
trained here, on the training split's text only (never the validation or test text), before anything is encoded. What they learn (`tokenizer.state()`) is cached
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
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from itertools import takewhile
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.api.contracts import Corpus, Tokenizer, TrainableTokenizer, check_contract
from toolkit.data import encode
from toolkit.data.cachefile import cache_file, cache_paths
from toolkit.data.splits import SPLITS, Holdout, Plan, doc_hash, pieces, plan
from toolkit.errors import ComponentError, DataError, ToolkitError, one_line
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
    corpus_label = corpus_label or f"corpus {_describe(corpus)}"
    tokenizer_label = tokenizer_label or f"tokenizer {_name(tokenizer)!r}"
    check_contract(corpus, Corpus, corpus_label, "a corpus")
    check_contract(tokenizer, Tokenizer, tokenizer_label, "a tokenizer")
    if getattr(tokenizer, "needs_training", False):
        role = "a tokenizer with needs_training = True"
        check_contract(tokenizer, TrainableTokenizer, tokenizer_label, role)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = folder / "tokens"
    # Temp files of writes killed long ago; a live write (another sweep sharing the cache) is
    # younger than this.
    remove_temps(folder, older_than_s=STALE_TEMP_S)
    if getattr(tokenizer, "needs_training", False):
        _train_tokenizer(corpus, tokenizer, holdout, folder, corpus_label)
    token_bytes = _token_bytes(tokenizer, tokenizer_label)
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


def _token_bytes(tokenizer: Tokenizer, label: str) -> np.ndarray:
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


def _survey(corpus: Corpus, holdout: Holdout, label: str, content: Any = None) -> tuple[Plan, int]:
    """One checked pass over the documents: the corpus's cut and its length in characters;
    `content` (a hash) is fed every name and text on the way, `label` names the corpus in
    errors."""
    n_chars = 0
    hashes: list[int] = []
    for name, text in _checked_documents(corpus, label):
        if content is not None:
            # Length prefixes keep ("ab", "c") and ("a", "bc") from hashing alike.
            for part in (name, text):
                _hash_part(content, part)
        if holdout.by == "documents":
            hashes.append(doc_hash(name))
        n_chars += len(text)
    return plan(holdout, n_chars, hashes), n_chars


def _cache_key(
    corpus: Corpus, tokenizer: Tokenizer, holdout: Holdout, label: str
) -> tuple[str, Plan, int]:
    """(sha256 of everything the token arrays depend on, the corpus's cut, its characters);
    checks the corpus is not empty."""
    h = hashlib.sha256()
    tok = tokenizer
    header = [CACHE_FORMAT, tok.name, tok.fingerprint, tok.vocab_size, tok.eot_id, *holdout.key()]
    h.update(json.dumps(header).encode())
    cut, n_chars = _survey(corpus, holdout, label, h)
    return h.hexdigest(), cut, n_chars


def _hash_part(h: Any, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    h.update(len(data).to_bytes(8, "little") + data)


def _checked_documents(corpus: Corpus, label: str) -> Iterator[tuple[str, str]]:
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


def _train_tokenizer(
    corpus: Corpus, tokenizer: TrainableTokenizer, holdout: Holdout, folder: Path, label: str
) -> None:
    """Give a trainable tokenizer the state learned from this corpus's training split: from this
    process's memo, else the cache file, else by training it (and caching what it learned);
    `label` names the corpus in errors."""
    cut, _ = _survey(corpus, holdout, label)

    def train_texts() -> Iterator[str]:
        # The training pieces come first; stop reading at the first held-out piece.
        return (t for _, t in takewhile(lambda p: p[0] == "train", pieces(corpus, cut)))

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


def _name(tokenizer: Tokenizer) -> str:
    name = getattr(tokenizer, "name", None)
    return name if isinstance(name, str) and name else type(tokenizer).__name__


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
    progress = encode.Progress(n_chars, _describe(corpus), tokenizer.name)
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
