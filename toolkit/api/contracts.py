"""The kind contracts: what the engine expects of a component, as typing Protocols.

`toolkit.api.registry.KINDS` says in words what each kind's factory receives and returns; the
Protocols here are the objects some of those factories return, for plugin authors' type
checkers and the engine's signatures. `RunInfo` is what the observer hooks receive
(`toolkit.api.hookspecs`); `TrainConfig` is what an optimizer factory receives. Modules,
attention and feed-forward blocks are plain torch modules and need no Protocol.

`check_contract(obj, Tokenizer, who, "a tokenizer")` checks a built object has every attribute
and method a Protocol names (the engine does so where it first uses one, so a plugin missing
`fingerprint` is a one-line error rather than an AttributeError deep in the pipeline). Not here:
checking that a component behaves as its contract says (`toolkit.testing`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from toolkit.errors import ComponentError

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


def check_optimizer(optimizer: Any, model: nn.Module, who: str) -> None:
    """What an optimizer factory returns, checked as the loop will use it: a
    torch.optim.Optimizer whose parameter groups each have an "lr" (the schedule multiplies
    it) and hold every trainable parameter of `model` exactly once (one left out would never
    learn; one in two would step twice). Else a ComponentError naming `who` ("optimizer
    'muon' (plugin 'plugins.optimizers')"). Run when a spec is validated (on the meta device)
    and when a run builds its optimizer, so both refuse the same optimizers."""
    import torch  # only for the isinstance: this module is imported before torch is needed

    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ComponentError(
            f"{who} returned {type(optimizer).__name__}, not a torch.optim.Optimizer"
        )
    seen: dict[int, int] = {}
    for i, group in enumerate(optimizer.param_groups):
        if "lr" not in group:
            raise ComponentError(
                f"{who} gives parameter group {i} no 'lr'; every group needs one, which the "
                f"schedule multiplies"
            )
        for p in group["params"]:
            seen[id(p)] = seen.get(id(p), 0) + 1
    for param_name, p in model.named_parameters():
        if p.requires_grad and seen.get(id(p), 0) != 1:
            count = "none" if id(p) not in seen else f"{seen[id(p)]}"
            raise ComponentError(
                f"{who} puts parameter {param_name!r} in {count} of its parameter groups; "
                f"every trainable parameter must be in exactly one"
            )


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


# -- checking a built object against a Protocol ------------------------------------------------
# The annotations check_contract also checks the type of (written as strings: this module
# postpones its annotations); others are only checked to be there.
_TYPES: dict[str, tuple[type, str]] = {
    "str": (str, "a str"),
    "int": (int, "an int"),
    "bool": (bool, "a bool"),
}


def members(contract: type) -> list[str]:
    """The attributes and methods a Protocol names, its bases' first, each method with its
    parentheses: `members(Corpus)` -> ['description', 'documents()']."""
    names: list[str] = []
    for cls in reversed(contract.__mro__):
        if cls is Protocol or not getattr(cls, "_is_protocol", False):
            continue
        names += list(inspect.get_annotations(cls))
        names += [f"{k}()" for k, v in cls.__dict__.items() if callable(v) and k[0] != "_"]
    return names


def contract_problems(obj: Any, contract: type) -> tuple[list[str], list[str]]:
    """(the members of `contract` that `obj` lacks, its attributes of another type than the
    Protocol's str, int or bool): `contract_problems(NoFingerprint(), Tokenizer)` ->
    (['fingerprint'], []); with vocab_size = "257" -> ([], ["vocab_size '257', not an int"]).
    A method that is not callable counts as lacking; an attribute whose reading raises
    anything but AttributeError is there (a learned tokenizer's property may refuse to answer
    until it is trained)."""
    types = {
        k: v for cls in contract.__mro__[::-1] for k, v in inspect.get_annotations(cls).items()
    }
    lacking: list[str] = []
    mistyped: list[str] = []
    for member in members(contract):
        name = member.removesuffix("()")
        try:
            value = getattr(obj, name)
        except AttributeError:
            lacking.append(member)
            continue
        except Exception:
            continue
        want, what = _TYPES.get(types.get(name, ""), (None, ""))
        if member.endswith("()") and not callable(value):
            lacking.append(member)
        elif want is not None and not (
            isinstance(value, want) and (want is bool or not isinstance(value, bool))
        ):
            mistyped.append(f"{name} {value!r:.40}, not {what}")
    return lacking, mistyped


def check_contract(obj: Any, contract: type, who: str, role: str) -> None:
    """Raise a ComponentError when `obj` lacks a member of `contract` or has one of the wrong
    type (contract_problems): `who` is what the message calls it ("tokenizer 'nofp' (plugin
    'my_tok')"), `role` what it is meant to be ("a tokenizer")."""
    lacking, mistyped = contract_problems(obj, contract)
    if not (lacking or mistyped):
        return
    problems = [f"lacks {', '.join(lacking)}"] if lacking else []
    problems += [f"has {m}" for m in mistyped]
    wanted = members(contract)
    raise ComponentError(
        f"{who}: {type(obj).__name__} {'; '.join(problems)}; {role} must have "
        f'{", ".join(wanted[:-1])} and {wanted[-1]} (see "The kinds" in the README)'
    )
