"""What every conformance check shares; no kind's contract lives here.

Here: `ConformanceError`; `Case`, the component under test and the input being tried, which
turns any failure into one ConformanceError naming the component, the check and the input, and
keeps the first error of a rejected config; `raised`, an exception a factory raised with the
plugin's line that raised it (the frames of the toolkit, torch, hypothesis, numpy and Python's
own modules skipped);
`Draw` and `draws`, the small model configs, batch sizes, lengths and seeds the model kinds are
checked with; `hypothesis_settings`, the hypothesis settings every check runs under (derandomized: the
same examples on every run, no example database, no deadline, no "explain" phase); the float32
tolerance `TOL`; and the assertions the model kinds share: shape, dtype and finite values, eval
determinism, outputs independent of other positions or batch elements, a gradient for every
parameter, bfloat16 copies of modules, and a module built without biases (model.bias = false)
holding none (`biasless`).

Not here: which of these assertions a kind must pass and on which inputs (each kind's module
decides: attention.py, modules.py, sampling.py, text.py, executor.py), and the mapping from kind
to check (`CHECKS`, in __init__.py).
"""

from __future__ import annotations

import copy
import os
import sysconfig
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import hypothesis
import numpy
import torch
from hypothesis import HealthCheck, Phase, reject, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException
from torch import nn

import toolkit
from toolkit.api.manager import Plugins
from toolkit.api.registry import Component
from toolkit.errors import ComponentError, ToolkitError, one_line
from toolkit.model.config import ModelConfig

HEAD_SHAPES = ((16, 2), (16, 4), (24, 3), (32, 4))  # (emb_dim, n_heads) the checks draw from
MAX_CONTEXT = 16
SEEDS = st.integers(0, 2**16)
TOL = {"atol": 1e-5, "rtol": 1e-4}  # float32 "unchanged"; anything beyond it counts as changed


class ConformanceError(AssertionError):
    """A component breaks its kind's contract: the message names it, the check and the input."""


@dataclass
class Case:
    """The component under test and the input being tried; turns any failure into one error."""

    component: Component
    options: dict[str, Any]
    plugins: Plugins
    inputs: str = ""
    rejections: int = 0  # drawn configs the component (or a model built with it) rejected
    first_rejection: BaseException | None = None  # what was raised the first time

    def rejected(self, exc: BaseException) -> NoReturn:
        """Tell hypothesis to try another config, keeping the first error for the message
        given when every config is rejected."""
        self.rejections += 1
        self.first_rejection = self.first_rejection or exc
        reject()

    def error(self, check: str, detail: str) -> ConformanceError:
        c = self.component
        where = f"; input: {self.inputs}" if self.inputs else ""
        return ConformanceError(
            f"{c.kind} {c.name!r} (plugin {c.plugin!r}) fails check {check!r}: {detail}{where}"
        )

    def fail(self, check: str, detail: str) -> NoReturn:
        raise self.error(check, detail)

    @contextmanager
    def check(self, name: str) -> Iterator[None]:
        """Any exception raised inside is a failure of check `name` (hypothesis's own pass)."""
        try:
            yield
        except (ConformanceError, HypothesisException):
            raise
        except Exception as exc:
            raise self.error(name, f"raised {one_line(exc, 300)}") from exc

    def build(self, *args: Any, model: bool = True, options: dict[str, Any] | None = None) -> Any:
        """The component as the engine builds it (with `options` instead of the case's when
        given); a ComponentError for a drawn model config means the component rejects that
        config, so hypothesis tries another."""
        try:
            built = self.component.build(*args, **(self.options if options is None else options))
        except ComponentError as exc:
            if model:
                self.rejected(exc)
            raise self.error("build", raised(exc)) from exc
        except Exception as exc:
            raise self.error("build", raised(exc)) from exc
        if model and not isinstance(built, nn.Module):
            self.fail("build", f"returned {type(built).__name__}, not a torch.nn.Module")
        return built


# Where an exception's deepest frame is not the plugin's: these libraries and Python's own.
_NOT_PLUGIN = tuple(
    os.path.dirname(m.__file__) + os.sep for m in (toolkit, torch, hypothesis, numpy)
) + tuple({sysconfig.get_paths()[k] + os.sep for k in ("stdlib", "platstdlib")})


def unwrapped(exc: BaseException) -> BaseException:
    """The exception a factory raised: the one Component.build wrapped in a ComponentError,
    or exc itself (a ComponentError the plugin raised, or any other)."""
    cause = exc.__cause__
    if (
        isinstance(exc, ComponentError)
        and cause is not None
        and not isinstance(cause, ToolkitError)
    ):
        return cause
    return exc


def raised(exc: BaseException) -> str:
    """What a factory raised, with the deepest line of the traceback in the plugin (not in the
    toolkit, torch, hypothesis, numpy or Python's own modules):
    "raised ValueError: alpha must be positive at my_components.py:12"."""
    exc = unwrapped(exc)
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if not os.path.abspath(f.filename).startswith(_NOT_PLUGIN)]
    where = ""
    if mine:
        path = Path(os.path.abspath(mine[-1].filename))
        if path.is_relative_to(Path.cwd()):
            path = path.relative_to(Path.cwd())
        where = f" at {path}:{mine[-1].lineno}"
    return f"raised {one_line(exc, 300)}{where}"


@dataclass(frozen=True, repr=False)
class Draw:
    """One drawn input for the model kinds: a small config, a batch size, a length, a seed."""

    config: ModelConfig
    batch: int
    t: int  # sequence length, 1..context_length
    cut: int  # a position 0..t-1 (the `start` offset the positional checks use)
    seed: int

    def describe(self) -> str:
        c = self.config
        return (
            f"emb_dim={c.emb_dim} n_heads={c.n_heads} context_length={c.context_length} "
            f"drop_rate={c.drop_rate} qkv_bias={c.qkv_bias} batch={self.batch} T={self.t} "
            f"cut={self.cut} seed={self.seed}"
        )

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        return f"Draw({self.describe()})"

    def lengths(self) -> list[int]:
        return sorted({1, self.t, self.config.context_length})


@st.composite
def draws(draw: Callable[..., Any], max_context: int = MAX_CONTEXT) -> Draw:
    emb_dim, n_heads = draw(st.sampled_from(HEAD_SHAPES))
    context = draw(st.integers(1, max_context))
    config = ModelConfig(
        vocab_size=draw(st.integers(2, 64)),
        context_length=context,
        emb_dim=emb_dim,
        n_heads=n_heads,
        n_layers=1,
        drop_rate=draw(st.sampled_from((0.0, 0.1))),
        qkv_bias=draw(st.booleans()),
    )
    t = draw(st.integers(1, context))
    return Draw(config, draw(st.integers(1, 3)), t, draw(st.integers(0, t - 1)), draw(SEEDS))


def hypothesis_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        report_multiple_bugs=False,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.generate, Phase.shrink),  # no slow "explain" phase
    )


# -- shared checks ------------------------------------------------------------------------------
def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), **TOL)


def gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def expect(case: Case, check: str, out: Any, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    if not isinstance(out, torch.Tensor):
        case.fail(check, f"returned {type(out).__name__}, not a tensor")
    if tuple(out.shape) != shape or out.dtype != dtype:
        case.fail(check, f"returned {tuple(out.shape)} {out.dtype}, expected {shape} {dtype}")
    if not torch.isfinite(out).all():
        case.fail(check, f"returned non-finite values ({out.dtype})")


def deterministic(case: Case, fn: Callable[[], torch.Tensor]) -> None:
    with case.check("eval determinism"), torch.no_grad():
        first, second = fn(), fn()
    if not torch.equal(first, second):
        case.fail("eval determinism", f"two eval-mode calls differ by {gap(first, second):.3g}")


def independent(
    case: Case, check: str, fn: Callable, x: torch.Tensor, keep: torch.Tensor, gen: torch.Generator
) -> None:
    """Changing x where `keep` (B, T) is False must leave the output where it is True alone."""
    if keep.all():
        return
    changed = torch.where(keep[..., None], x, torch.randn(x.shape, generator=gen) * x.std())
    with case.check(check), torch.no_grad():
        a, b = fn(x), fn(changed)
    if not same(a[keep], b[keep]):
        where = "batch element 0" if check == "batch independence" else "an unchanged position"
        case.fail(
            check,
            f"changing other inputs moved the output at {where} by {gap(a[keep], b[keep]):.3g}",
        )


def gradients(case: Case, modules: list[nn.Module], loss_fn: Callable[[], torch.Tensor]) -> None:
    params: dict[int, tuple[str, nn.Parameter]] = {}
    for module in modules:
        for name, p in module.named_parameters():
            p.grad = None
            params.setdefault(id(p), (name, p))
    if not any(p.requires_grad for _, p in params.values()):
        return  # nothing to train (e.g. `none`, or fixed tables)
    for module in modules:
        module.train()
    with case.check("gradients"):
        loss_fn().backward()
    for name, p in params.values():
        if p.requires_grad and p.grad is None:
            case.fail("gradients", f"parameter {name!r} gets no gradient")
        if p.grad is not None and not torch.isfinite(p.grad).all():
            case.fail("gradients", f"parameter {name!r} gets a non-finite gradient")
    for module in modules:
        module.eval()


def bfloat16(modules: tuple[nn.Module | None, ...]) -> tuple[Any, ...]:
    """Copies of modules (sharing references among themselves, as in a model) in bfloat16."""
    copies = copy.deepcopy(modules)
    for m in copies:
        if m is not None:
            m.to(torch.bfloat16).eval()
    return copies


# How to honour model.bias, for the failure that says a component does not.
_READ_CONFIG = "read config.bias and build every bias with it: nn.Linear(..., bias=config.bias)"
BIAS_FIX = {
    "attention": _READ_CONFIG,
    "activation": _READ_CONFIG,
    "normalization": "its `bias` option must drop the shift when False (no parameter at all), "
    "as model.bias = false passes bias=False to it",
}


def biasless(case: Case, module: nn.Module, x: torch.Tensor) -> None:
    """`module`, built for model.bias = false (a norm: with bias=False), has no parameter whose
    name ends in "bias" and still maps x to its shape."""
    kind = case.component.kind
    biased = [name for name, _ in module.named_parameters() if name.endswith("bias")]
    if biased:
        case.fail(
            "model.bias",
            f"built with bias=False it still has parameter {biased[0]!r}, so it does not honour "
            f"model.bias: {BIAS_FIX[kind]}",
        )
    with case.check("model.bias"), torch.no_grad():
        out = module.eval()(x)
    expect(case, "model.bias", out, tuple(x.shape), x.dtype)


def required(component: Component) -> bool:
    return any(o.required for o in component.options.values())
