"""The corpus and tokenizer a run trains on, rebuilt from a spec's [data] or a run's
config.json: the one place that turns data choices into objects.

    load_data(data, plugins)           -> (TokenData, tokenizer) for a [data] section
    holdout_of(data)                   the splits a [data] section or config.json asks for
    corpus_tokens(corpus, tokenizer, h) a corpus's token arrays (text or token shards)
    data_key(data)                     runs with equal keys train on the same tokens
    run_corpus(run)                    the corpus choice a run's config.json records
    tokenizer_record(choice, tok)      what a checkpoint records of its tokenizer: the choice
                                       and, for a learned one (bpe), what it learned
    run_tokenizer(run, plugins, ...)   the tokenizer a checkpoint goes with, its learned
                                       vocabulary restored from the checkpoint (or, for a
                                       checkpoint from before it held one, relearned from the
                                       run's training text, if that is unchanged)
    check_vocab(tokenizer, vocab_size) the model has an embedding row for every id

A learned tokenizer is only ever the one its run learned: restored from the checkpoint, which
keeps it, so that an edited or deleted corpus changes nothing (older checkpoints: learned again,
identically, from the run's corpus and split, refused when that text has changed). Not here: tokenizing and
caching (tokens.py), batching (batches.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from toolkit.api.manager import Plugins
from toolkit.api.registry import Choice, split_choice
from toolkit.data.shards import load_shards
from toolkit.data.splits import Holdout
from toolkit.data.tokens import TokenData, load_tokens
from toolkit.errors import DataError

GPT2_VOCAB = 50257  # a checkpoint with this many ids and nothing else to go on is GPT-2's


def load_data(data: Any, plugins: Plugins) -> tuple[TokenData, Any]:
    """The tokens of a [data] section (a DataSpec), through the content-keyed cache, and its
    tokenizer (trained, when it learns)."""
    corpus = plugins.registry.build("corpus", data.corpus)
    tokenizer = plugins.registry.build("tokenizer", data.tokenizer)
    labels = {
        f"{kind}_label": f"{kind} {c.name!r} (plugin {c.plugin!r})"
        for kind, choice in (("corpus", data.corpus), ("tokenizer", data.tokenizer))
        for c in [plugins.registry.get(kind, split_choice(choice)[0])]
    }
    return corpus_tokens(corpus, tokenizer, holdout_of(data), **labels), tokenizer


# The [data] keys that say how a corpus is split, and the Holdout field each fills.
_HOLDOUT_KEYS = {
    "split": "by",
    "val_fraction": "val_fraction",
    "test_fraction": "test_fraction",
    "val_documents": "val_documents",
    "test_documents": "test_documents",
}


def holdout_of(data: Any) -> Holdout:
    """The splits a [data] section (a DataSpec) or a config.json's "data" dict asks for; keys
    an older config.json lacks take the value runs had before the key existed."""
    fields = asdict(data) if is_dataclass(data) else dict(data or {})
    return Holdout(**{h: fields[k] for k, h in _HOLDOUT_KEYS.items() if k in fields})


def corpus_tokens(
    corpus: Any, tokenizer: Any, holdout: Holdout | float, **labels: str | None
) -> TokenData:
    """A corpus's token arrays: its documents tokenized through the cache, or, for a corpus of
    token shards (`pretokenized = True`: train, val, test, layout), the shards as they are.
    `labels` (corpus_label, tokenizer_label) name the components in load_tokens' errors."""
    if not isinstance(holdout, Holdout):
        holdout = Holdout(val_fraction=holdout)
    if getattr(corpus, "pretokenized", False):
        if getattr(tokenizer, "needs_training", False):
            raise DataError(
                f"tokenizer {tokenizer.name!r} learns from text, but corpus 'tokens' holds "
                f"token ids; name the tokenizer that made the shards"
            )
        return load_shards(corpus, tokenizer, holdout)
    return load_tokens(corpus, tokenizer, holdout, **labels)


def data_key(data: Any) -> str:
    """Equal keys for [data] sections that give the same tokens."""
    fields = asdict(data) if is_dataclass(data) else dict(data)
    return json.dumps(fields, sort_keys=True, default=str)


def run_corpus(run: dict[str, Any] | None) -> Choice:
    """The corpus a run's config.json records (its path shortcut included); pydoc, the default
    corpus, when there is no run."""
    data = (run or {}).get("data") or {}
    if data.get("path") and data.get("corpus") in (None, "pydoc"):
        return {"name": "files", "path": data["path"]}
    return data.get("corpus") or "pydoc"


def label(choice: Choice) -> str:
    """How a tokenizer choice reads in output: 'bpe (vocab_size=300)'."""
    name, options = split_choice(choice)
    return name if not options else f"{name} ({', '.join(f'{k}={v}' for k, v in options.items())})"


def tokenizer_record(choice: Choice, tokenizer: Any) -> dict[str, Any]:
    """What a run's checkpoint records of its tokenizer (save_checkpoint's extra entries): the
    choice, and a learned tokenizer's state(), so that the checkpoint decodes and scores with
    exactly that tokenizer whatever happens to the text it was learned from."""
    record: dict[str, Any] = {"tokenizer": choice}
    if getattr(tokenizer, "needs_training", False):
        record["tokenizer_state"] = tokenizer.state()
    return record


def run_tokenizer(
    run: dict[str, Any] | None,
    plugins: Plugins,
    *,
    recorded: Choice | None = None,
    state: dict[str, Any] | None = None,
    choice: Choice | None = None,
    where: str | Path = "the checkpoint",
    vocab_size: int | None = None,
) -> Any:
    """The tokenizer a checkpoint goes with: `choice` (--tokenizer), else the one `recorded` in
    the checkpoint, else the run's (config.json), else gpt2 for GPT-2's 50,257 ids. A learned
    one (bpe) gets the `state` the checkpoint recorded; a checkpoint from before checkpoints
    held it needs the run's config.json, and its training text as it was. A `choice` that is
    not the tokenizer the run trained with is refused: the model never learned its ids."""
    data = (run or {}).get("data") or {}
    trained_with = recorded or data.get("tokenizer")
    other = choice is not None and trained_with is not None
    if other and split_choice(choice) != split_choice(trained_with):
        raise DataError(
            f"{where} was trained with tokenizer {label(trained_with)!r}, not "
            f"{label(choice)!r}, whose ids it never learned; leave --tokenizer out"
        )
    choice = choice or trained_with
    if choice is None:
        if vocab_size != GPT2_VOCAB:
            ids = f", a vocabulary of {vocab_size:,} ids" if vocab_size else ""
            # gpt2's 50,257 ids fit no smaller vocabulary: suggest it only where it could.
            fits = "gpt2 or --tokenizer bytes" if vocab_size is None else "bytes (257 ids)"
            raise DataError(
                f"cannot tell which tokenizer {where} goes with (no run config.json beside "
                f"it{ids}); pass the one it was trained with, e.g. --tokenizer {fits}"
            )
        choice = "gpt2"
    component = plugins.registry.get("tokenizer", split_choice(choice)[0])
    tokenizer = plugins.registry.build("tokenizer", choice)
    if getattr(tokenizer, "needs_training", False) or component.facts.get("needs_training"):
        if state is not None:
            tokenizer.load_state(state)
            return Frozen(tokenizer)
        if not data.get("corpus"):
            raise DataError(
                f"tokenizer {label(choice)!r} is learned from the training text, which only a "
                f"run's config.json names; give the run folder"
            )
        corpus = plugins.registry.build("corpus", run_corpus(run))
        learned = load_tokens(corpus, tokenizer, holdout_of(data))  # restores what it learned
        if data_changed(run, learned):
            raise DataError(
                f"tokenizer {label(choice)!r} of {where} was learned from its run's training "
                f"text, which has changed since the run trained (config.json's data_key no "
                f"longer matches); restore that text to use this checkpoint"
            )
        tokenizer = Frozen(tokenizer)
    return tokenizer


def data_changed(run: dict[str, Any] | None, data: TokenData) -> bool:
    """Whether `data`, built from a run's own [data] settings, is not what the run trained on:
    its config.json records the tokens' cache key (data_key) and this one differs."""
    recorded = (run or {}).get("data_key")
    return bool(recorded) and recorded != data.key


class Frozen:
    """A trained tokenizer that load_tokens will not train again on other text (it reads
    needs_training); everything else is the tokenizer's own."""

    needs_training = False

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


def check_vocab(tokenizer: Any, vocab_size: int, fix: str) -> None:
    """The model's vocab_size covers every id the tokenizer makes; else a DataError ending in
    `fix`."""
    if tokenizer.vocab_size > vocab_size:
        raise DataError(
            f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size:,} ids but the model only "
            f"{vocab_size:,}; {fix}"
        )
