"""The kind contracts: what the engine expects of a component, as typing Protocols.

`toolkit.api.registry.KINDS` says in words what each kind's factory receives and returns; the
Protocols here are the objects some of those factories return, for plugin authors' type
checkers and the engine's signatures. `RunInfo` is what the observer hooks receive
(`toolkit.api.hookspecs`); `TrainConfig` is what an optimizer factory receives. Modules,
attention and feed-forward blocks are plain torch modules and need no Protocol. Not here:
checking that a component honours its contract (`toolkit.testing`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

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


# -- kinds optimizer and schedule: how a run learns --------------------------------------------
DECAY_TARGETS = ("matrices", "all")  # the values of train.weight_decay_on


@dataclass(frozen=True)
class TrainConfig:
    """What an optimizer factory receives besides the model: the run's training settings that
    say how it learns (the [train] keys of the same names), and where the model is.

    An optimizer takes what applies to it and says in its description what it ignores (SGD has
    no betas). Its own settings are its options (`train.optimizer = {name = "sgd", momentum =
    0.9}`). The schedule multiplies every parameter group's "lr" by its multiplier at each step,
    so `lr` is the peak. Not here: the budget and the schedule (the loop owns them).
    """

    lr: float  # train.lr: the peak learning rate
    betas: tuple[float, float]  # train.betas: moment decay rates (Adam's, Lion's)
    weight_decay: float  # train.weight_decay
    weight_decay_on: str  # train.weight_decay_on: "matrices" or "all" (see decay_groups)
    # Where the parameters are: "cpu", "cuda", "cuda:N", "mps"; "meta" when a spec is validated
    # (the optimizer is built over a model without storage, and never stepped).
    device: str = "cpu"

    def decay_groups(self, params: Iterable[nn.Parameter]) -> list[dict[str, Any]]:
        """Parameter groups as train.weight_decay_on says: "matrices" -> two groups, the
        matrices and embeddings (dim >= 2) with weight_decay and the rest (norms, biases) with
        0.0; "all" -> one group, every parameter with weight_decay (the book's chapter 5).
        Both groups are returned even when one is empty, so a state_dict always has as many."""
        params = list(params)
        if self.weight_decay_on == "all":
            return [{"params": params, "weight_decay": self.weight_decay}]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": self.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]


class EvaluationWeights(Protocol):
    """An optimizer whose parameters hold one point while training and another while the run
    is judged (schedule-free's average of its iterates; the `schedulefree` package's classes
    have the same two methods). The loop calls train() before the first step, eval() before
    each evaluation and train() after it (before the resume state is saved, so an interrupted
    run continues from what trained); after the last evaluation the parameters stay as eval()
    left them, so the test score, the sample and the checkpoint are the evaluated model's.
    Both are idempotent and inverse of each other (up to rounding); step() is only called in
    train mode. An optimizer without them has one set of weights."""

    def train(self) -> None: ...

    def eval(self) -> None: ...


class Schedule(Protocol):
    """A learning-rate schedule: the multiplier of the peak lr at a 0-based optimizer step."""

    def __call__(self, step: int, total_steps: int, **options: Any) -> float: ...


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
