"""Token shards made by other tools, used as they are: no text, no re-tokenization.

Two layouts, told apart by their first four bytes:

- nanoGPT's `prepare.py` (`train.bin`, `val.bin`): raw uint16 token ids, no header;
- llm.c / modded-nanogpt (`fineweb_train_000001.bin`): a header of 256 int32 (magic 20240520,
  version 1, the number of tokens), then that many uint16 ids.

`load_shards(corpus, tokenizer, holdout)` memory-maps them into a TokenData: one shard per split
is mapped in place; several are concatenated, as a stream, into the token cache once. Every id
must be in the named tokenizer's vocabulary (the shards say nothing of which tokenizer made
them), else a one-line DataError says which file holds which id. Without validation (or test)
shards, the end of the training tokens is held out: val_fraction of them (and test_fraction). Not here: the `tokens` corpus
component that names the files (plugins/token_shards.py).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.data.cachefile import cache_file
from toolkit.data.splits import Holdout
from toolkit.data.tokens import TokenData, default_cache_dir
from toolkit.errors import DataError

LLMC_MAGIC = 20240520
LLMC_VERSION = 1  # uint16 ids (GPT-2)
LLMC_HEADER_INTS = 256
LLMC_HEADER_BYTES = LLMC_HEADER_INTS * 4
# Ids scanned at once when checking a shard against the vocabulary (bounded memory).
_SCAN = 1 << 24


def shard_files(pattern: str, what: str) -> list[Path]:
    """The files a path or glob names, sorted; a DataError when there are none."""
    expanded = os.path.expanduser(pattern)
    if Path(expanded).is_file():
        return [Path(expanded)]
    files = sorted(Path(p) for p in glob.glob(expanded, recursive=True) if Path(p).is_file())
    if not files:
        raise DataError(
            f"corpus 'tokens': {what} {pattern!r} matches no file (relative paths are resolved "
            f"from {Path.cwd()}); give a .bin file or a glob such as 'data/fineweb_train_*.bin'"
        )
    return files


FORMATS = ("auto", "nanogpt", "llmc")


def read_shard(path: Path, layout: str = "auto") -> np.ndarray:
    """A shard's ids as a read-only uint16 memory map, its layout checked. `layout` "auto"
    reads an llm.c header when the magic number is there, else raw ids; "llmc" requires the
    header, "nanogpt" reads raw ids."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = np.frombuffer(f.read(min(size, LLMC_HEADER_BYTES))[: size // 4 * 4], dtype="<i4")
    # An llm.c header whose token count fits the file exactly, whatever its magic says.
    sized = len(head) >= 3 and size == LLMC_HEADER_BYTES + 2 * int(head[2]) and head[2] > 0
    if layout == "llmc" or (layout == "auto" and len(head) and head[0] == LLMC_MAGIC):
        if len(head) and head[0] == LLMC_MAGIC and size < LLMC_HEADER_BYTES:
            raise DataError(
                f"{path}: {size:,} bytes, shorter than llm.c's {LLMC_HEADER_BYTES:,}-byte header; "
                f"the shard is truncated"
            )
        if len(head) < 3 or head[0] != LLMC_MAGIC:
            found = int(head[0]) if len(head) else "nothing"
            raise DataError(
                f"{path}: starts with {found}, not llm.c's magic number {LLMC_MAGIC}; a damaged "
                f'header, or not an llm.c shard (format = "nanogpt" reads raw uint16 ids)'
            )
        if head[1] != LLMC_VERSION:
            raise DataError(
                f"{path}: llm.c shard version {int(head[1])}; only version {LLMC_VERSION} "
                f"(uint16 ids) is read"
            )
        n = int(head[2])
        if size != LLMC_HEADER_BYTES + 2 * n:
            raise DataError(
                f"{path}: its header says {n:,} tokens ({LLMC_HEADER_BYTES + 2 * n:,} bytes with "
                f"the header) but the file has {size:,} bytes; the shard is truncated or damaged"
            )
        return np.memmap(path, dtype="<u2", mode="r", offset=LLMC_HEADER_BYTES, shape=(n,))
    if layout == "auto" and sized and head[1] == LLMC_VERSION:
        raise DataError(
            f"{path}: an llm.c header (version 1, {int(head[2]):,} tokens, matching the file's "
            f"size) but magic number {int(head[0])}, not {LLMC_MAGIC}; the header is damaged"
        )
    if size % 2:
        raise DataError(
            f"{path}: {size:,} bytes, an odd count, so not uint16 token ids (nanoGPT's .bin); "
            f"the file is truncated or in another format"
        )
    if size == 0:
        raise DataError(f"{path}: empty; give shards that hold tokens")
    return np.memmap(path, dtype="<u2", mode="r", shape=(size // 2,))


def check_ids(ids: np.ndarray, path: Path, tokenizer: Any) -> None:
    """Every id has a place in the tokenizer's vocabulary, scanned in bounded blocks."""
    for start in range(0, len(ids), _SCAN):
        block = ids[start : start + _SCAN]
        top = int(block.max())
        if top >= tokenizer.vocab_size:
            at = start + int(np.argmax(block >= tokenizer.vocab_size))
            raise DataError(
                f"{path}: token {at:,} is id {top:,}, beyond tokenizer {tokenizer.name!r}'s "
                f"{tokenizer.vocab_size:,} ids; these shards were made with another tokenizer: "
                f"name that one in data.tokenizer"
            )


def load_shards(
    corpus: Any,
    tokenizer: Any,
    holdout: Holdout,
    cache_dir: str | os.PathLike[str] | None = None,
) -> TokenData:
    """A `tokens` corpus's shards as a TokenData. `corpus.train`, `.val` and `.test` are paths
    or globs (val or test None: held out from the end of the training tokens, the last
    val_fraction for validation, test_fraction after it for test); `corpus.layout` as
    read_shard takes it. Shards hold no documents, so they split by tokens only."""
    if holdout.by != "characters" or holdout.val_documents or holdout.test_documents:
        raise DataError(
            "corpus 'tokens' holds token ids, not named documents, so it cannot be split by "
            'documents; leave data.split = "characters" (the end of the training shards is '
            "held out) or give val and test shards"
        )
    if tokenizer.vocab_size > 1 << 16:
        raise DataError(
            f"corpus 'tokens' reads uint16 shards, which cannot hold tokenizer "
            f"{tokenizer.name!r}'s {tokenizer.vocab_size:,} ids"
        )
    named = {"train": corpus.train, "val": corpus.val, "test": getattr(corpus, "test", None)}
    splits = {name: shard_files(p, name) for name, p in named.items() if p is not None}
    _check_apart(splits)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    arrays = {
        name: _joined(files, tokenizer, folder / "tokens", corpus.layout)
        for name, files in splits.items()
    }
    whole = arrays["train"]
    fractions = {"test": holdout.test_fraction if named["test"] is None else 0.0}
    fractions["val"] = holdout.val_fraction if named["val"] is None else 0.0
    end = len(whole)
    for name in ("test", "val"):  # carved from the end: test last, validation before it
        if fractions[name] == 0.0:
            continue
        n = int(len(whole) * fractions[name])
        if n < 1 or n >= end:
            raise DataError(
                f"corpus 'tokens': {len(whole):,} training tokens leave no {name} split at "
                f"{name}_fraction {fractions[name]}; give {name} shards"
            )
        arrays[name], end = whole[end - n : end], end - n
    arrays["train"] = whole[:end]
    arrays.setdefault("test", whole[:0])
    token_bytes = np.asarray(tokenizer.token_byte_lengths())
    key = hashlib.sha256(
        json.dumps([_identity(f) for files in splits.values() for f in files]).encode()
    ).hexdigest()
    carved = "-".join(f"{fractions[n].hex()}" for n in ("val", "test") if fractions[n])
    return TokenData(
        train=arrays["train"],
        val=arrays["val"],
        test=arrays["test"],
        vocab_size=tokenizer.vocab_size,
        eot_id=tokenizer.eot_id,
        token_bytes=token_bytes,
        key=f"shards-{key}-{carved or 'val'}",
        **{f"{n}_bytes": _text_bytes(arrays[n], token_bytes) for n in ("train", "val", "test")},
    )


def _check_apart(splits: dict[str, list[Path]]) -> None:
    """No shard in two splits: a glob such as 'data/*.bin' for train also matches val.bin,
    and validation would score tokens the model trained on."""
    seen: dict[Path, str] = {}
    for name, files in splits.items():
        for file in files:
            first = seen.setdefault(file.resolve(), name)
            if first != name:
                raise DataError(
                    f"corpus 'tokens': {str(file)!r} is both a {first} and a {name} shard, so "
                    f"the two splits would share its tokens; narrow the {first} pattern (e.g. "
                    f"'data/*train*.bin') so that each shard is in one split"
                )


def _identity(path: Path) -> list[Any]:
    """What names a shard's content cheaply: its absolute path, size and modification time."""
    stat = path.stat()
    return [str(path.absolute()), stat.st_size, stat.st_mtime_ns]


def _joined(files: list[Path], tokenizer: Any, folder: Path, layout: str) -> np.ndarray:
    """One shard mapped in place, or several concatenated into the cache (once, streamed)."""
    shards = [read_shard(f, layout) for f in files]
    for f, ids in zip(files, shards, strict=True):
        check_ids(ids, f, tokenizer)
    if len(shards) == 1:
        return shards[0]
    key = "shards-" + hashlib.sha256(json.dumps([_identity(f) for f in files]).encode()).hexdigest()
    npy = folder / f"{key}.npy"
    if npy.is_file() and (folder / f"{key}.json").is_file():
        try:
            joined = np.load(npy, mmap_mode="r", allow_pickle=False)
            if len(joined) == sum(len(s) for s in shards):
                return joined
        except (OSError, ValueError):
            pass  # damaged: written again below
    total = 0
    with cache_file(folder, key, np.dtype(np.uint16)) as out:
        for ids in shards:
            for start in range(0, len(ids), _SCAN):
                out.write(np.ascontiguousarray(ids[start : start + _SCAN]).tobytes())
            total += len(ids)
        meta = {"corpus": f"tokens: {len(files)} shards from {files[0].parent}", "n": total}
        out.finish(total, {**meta, "tokenizer": tokenizer.name, "dtype": "uint16"})
    return np.load(npy, mmap_mode="r")


def _text_bytes(ids: np.ndarray, token_bytes: np.ndarray) -> int:
    """UTF-8 bytes of text the ids stand for, counted in bounded blocks."""
    return sum(
        int(token_bytes[np.asarray(ids[s : s + _SCAN], dtype=np.int64)].sum())
        for s in range(0, len(ids), _SCAN)
    )
