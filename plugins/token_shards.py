"""The `tokens` corpus: token shards already prepared by another tool (nanoGPT's `train.bin` /
`val.bin`, llm.c's and modded-nanogpt's FineWeb shards), trained on as they are.

    [data]
    corpus = { name = "tokens", train = "data/fineweb_train_*.bin", val = "data/fineweb_val_*.bin" }
    tokenizer = "gpt2"          # the tokenizer that made them: ids are checked against it

Reading and checking the files is `toolkit.data.shards`'s job; this module only names them.
"""

from __future__ import annotations

from collections.abc import Iterator

from toolkit.api.hookspecs import hookimpl
from toolkit.errors import DataError

LAYOUTS = ("auto", "nanogpt", "llmc")


class TokenShards:
    """Pre-tokenized uint16 shards: a path or glob for training (`train`) and, optionally, for
    validation (`val`; else the last val_fraction of the training tokens) and test (`test`;
    else, when data.test_fraction is set, the very end of the training tokens). `format`: "auto"
    (an llm.c header when its magic number is there, else raw ids), "nanogpt" or "llmc"."""

    pretokenized = True  # toolkit.data.resolve reads the shards instead of documents()

    def __init__(
        self, *, train: str, val: str | None = None, test: str | None = None, format: str = "auto"
    ) -> None:
        if format not in LAYOUTS:
            raise DataError(
                f"corpus 'tokens': format must be one of {', '.join(LAYOUTS)}, got {format!r}"
            )
        self.train, self.val, self.test, self.layout = train, val, test, format
        held = [f"{name} {p}" for name, p in (("val", val), ("test", test)) if p]
        self.description = f"tokens: {train}" + (f" ({', '.join(held)})" if held else "")

    def documents(self) -> Iterator[tuple[str, str]]:
        raise DataError(
            "corpus 'tokens' holds token ids, not text: it cannot train a tokenizer or be read "
            "as documents; use it with the tokenizer that made the shards"
        )


@hookimpl
def register_components(register) -> None:
    register(
        "corpus",
        "tokens",
        TokenShards,
        description="token shards as they are: nanoGPT .bin or llm.c / modded-nanogpt shards",
    )
