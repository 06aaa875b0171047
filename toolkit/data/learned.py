"""What a tokenizer that learns its vocabulary (`needs_training = True`) learned, and from
which text: `train_tokenizer` trains it on a corpus's training split only (never the
validation or test text), before anything is encoded. What it learns (`tokenizer.state()`) is
cached as `<key>.trained.json` in the token cache's folder, keyed by the training text's hash,
the tokenizer's name and `training_config` and TRAINED_FORMAT; later loads, in this process or
another, restore it with `load_state` instead of retraining. Not here: the token arrays
(tokens.py), whose key uses the trained tokenizer's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from itertools import takewhile
from pathlib import Path
from typing import Any

from toolkit.api.contracts import Corpus, TrainableTokenizer
from toolkit.data import reading
from toolkit.data.splits import Holdout, pieces
from toolkit.errors import DataError
from toolkit.files import write_atomic

# Part of every learned-state cache key: bump it when what counts as the
# training text or the file layout changes.
TRAINED_FORMAT = 1
# (cache folder, learned-state key) -> state: a trainable tokenizer's state learned or loaded in
# this process, so a repeat neither retrains nor rereads the file.
_TRAINED: dict[tuple[str, str], dict[str, Any]] = {}


def forget() -> None:
    """Forget the learned states loaded in this process (the files on disk stay)."""
    _TRAINED.clear()


def train_tokenizer(
    corpus: Corpus, tokenizer: TrainableTokenizer, holdout: Holdout, folder: Path, label: str
) -> None:
    """Give a trainable tokenizer the state learned from this corpus's training split: from this
    process's memo, else the cache file, else by training it (and caching what it learned);
    `label` names the corpus in errors."""
    cut, _ = reading.survey(corpus, holdout, label)

    def train_texts() -> Iterator[str]:
        # The training pieces come first; stop reading at the first held-out piece.
        return (t for _, t in takewhile(lambda p: p[0] == "train", pieces(corpus, cut)))

    h = hashlib.sha256()
    for text in train_texts():
        reading.hash_part(h, text)
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
