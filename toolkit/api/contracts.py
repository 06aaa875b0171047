"""The kind contracts: what the engine expects of a component, as typing Protocols.

`toolkit.api.registry.KINDS` says in words what each kind's factory receives and returns; the
Protocols here are the objects some of those factories return, for plugin authors' type
checkers and the engine's signatures. `RunInfo` is what the observer hooks receive
(`toolkit.api.hookspecs`). Modules, attention and feed-forward blocks are plain torch modules
and need no Protocol. Not here: checking that a component honours its contract
(`toolkit.testing`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from toolkit.api.manager import Plugins
    from toolkit.sweep.jobs import RunJob, Sweep


@dataclass
class RunInfo:
    """What observer hooks receive about a run."""

    experiment: str
    variant: str
    seed: int
    config: dict[str, Any]  # the resolved config, as in config.json
    folder: Path
    params: int
    params_non_embedding: int


# -- data: kinds corpus and tokenizer ----------------------------------------------------------
class Corpus(Protocol):
    description: str

    def documents(self) -> Iterator[tuple[str, str]]: ...


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eot_id: int
    fingerprint: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def token_byte_lengths(self) -> np.ndarray: ...


class TrainableTokenizer(Tokenizer, Protocol):
    """A tokenizer that learns its vocabulary from text before it can encode.

    `train(texts)` learns from the training split's pieces (each a separate text; afterwards
    vocab_size, eot_id and fingerprint describe what was learned). `training_config` names
    everything besides the text that training depends on (name, options, algorithm version).
    `state()` returns what was learned as JSON-serializable data and `load_state(state)`
    restores it (raising DataError or ValueError when it cannot).
    """

    needs_training: bool  # True
    training_config: str

    def train(self, texts: Iterable[str]) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...


# -- kind executor: where a sweep's runs train (toolkit/sweep/jobs.py has the whole story) -------
class Display(Protocol):
    def concurrent(self) -> None: ...
    def start(self, job: RunJob) -> None: ...
    def queue(self, job: RunJob) -> None: ...
    def poll(self) -> None: ...
    def progress(self, job: RunJob) -> Callable[..., None] | None: ...


class Executor(Protocol):
    def prepare(self, jobs: Sequence[RunJob], plugins: Plugins) -> None: ...
    def execute(self, jobs: Sequence[RunJob], sweep: Sweep) -> Iterator[tuple[RunJob, dict]]: ...
