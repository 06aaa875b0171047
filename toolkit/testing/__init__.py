"""Conformance checks: one call tells whether a registered component honours its kind's contract.

`check_component(kind, name, plugins)` builds the component the way the engine does and lets
hypothesis draw small sizes and inputs (deterministically: the same examples on every run;
emb_dim/n_heads 16/2, 16/4, 24/3 or 32/4, context 1..16, batch 1..3, dropout 0 or 0.1). A failure
raises `ConformanceError` (an AssertionError) naming the component, the check and the smallest
input hypothesis found that shows it. What each kind must do (`toolkit.api.registry.KINDS`):

- attention: (B, T, emb_dim) float32 out for T = 1, a drawn T and the context length; the same
  output twice in eval mode; `causal` honoured both ways (True: changing tokens after t never
  moves outputs <= t; False: some such change does); batch elements independent; a gradient for
  every parameter; finite bfloat16 out of bfloat16 in. With `positional_inside`, all of it again
  with each registered inside-attention positional bound.
- normalization, activation: shape and dtype kept, determinism, every position and batch element
  computed alone, gradients, bfloat16; an activation's last nn.Linear maps to emb_dim.
- positional: the same, and forward(x[:, s:], start=s) == forward(x)[:, s:]; an inside-attention
  scheme returns x unchanged, and rotate() / score_bias() have the right shapes and offsets.
- init: tiny models with it, over the registered components: finite parameters and loss, and the
  same parameters from the same seed.
- sampler: (B, 1) int64 ids in [0, V), logits left alone, the same ids from the same generator
  seed, bfloat16 logits accepted.
- tokenizer (trained first when `needs_training`): ids in [0, vocab_size) and never eot_id,
  decode(encode(text)) == text, token_byte_lengths() adding up to the UTF-8 length; training
  twice gives the same tokenizer, and so does load_state(state()) where it has them.
- corpus: documents() yields (name, text) string pairs, some text, the same each time.

The toolkit's own test suite runs these checks over every registered component, so a new built-in
is covered as soon as it is registered. To check your plugin, put this in a pytest file
(it needs hypothesis: `pip install hypothesis`):

    from toolkit.api.manager import Plugins
    from toolkit.testing import check_component

    def test_my_attention_conforms():
        check_component("attention", "my-attention", Plugins(["my_pkg.components"]))

Or everything your plugin registers, with `conformance_cases(plugins, plugin="my_pkg.components")`
in `@pytest.mark.parametrize(("kind", "name"), ...)`. A component whose
factory has required options (the `files` corpus needs `path`) is checked only when you pass them:
`check_component("corpus", "files", plugins, options={"path": "notes/"})`.

Not here: checks of the training loop, the data pipeline or quality (loss after training); the
checks say whether a component fits the engine, not whether it is a good idea.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:
    from hypothesis import HealthCheck, Phase, example, given, reject, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Flaky, HypothesisException, Unsatisfiable
except ImportError as exc:  # a dev dependency: only plugin authors' tests need this module
    raise ImportError(
        "toolkit.testing needs hypothesis: pip install hypothesis (or gpt-ablate[dev])"
    ) from exc

from toolkit.api.manager import Plugins, load_plugins
from toolkit.api.registry import Component
from toolkit.errors import ComponentError, ToolkitError, one_line
from toolkit.model.config import NORM_PLACEMENTS, ModelConfig
from toolkit.model.gpt import build_model, check_compatible

HEAD_SHAPES = ((16, 2), (16, 4), (24, 3), (32, 4))  # (emb_dim, n_heads) the checks draw from
MAX_CONTEXT = 16
_seeds = st.integers(0, 2**16)
TOL = {"atol": 1e-5, "rtol": 1e-4}  # float32 "unchanged"; anything beyond it counts as changed
TRAINING_TEXT = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!\n"
    "def main():\n    return 42  # 3.14159\n" + "naïve café, Grüße, 日本語, emoji 🤖.\n"
)


class ConformanceError(AssertionError):
    """A component breaks its kind's contract: the message names it, the check and the input."""


@dataclass
class _Case:
    """The component under test and the input being tried; turns any failure into one error."""

    component: Component
    options: dict[str, Any]
    plugins: Plugins
    inputs: str = ""

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

    def build(self, *args: Any, model: bool = True) -> Any:
        """The component as the engine builds it; a ComponentError for a drawn model config
        means the component rejects that config, so hypothesis tries another."""
        try:
            built = self.component.build(*args, **self.options)
        except ComponentError as exc:
            if model:
                reject()
            raise self.error("build", str(exc)) from exc
        except Exception as exc:
            raise self.error("build", f"raised {type(exc).__name__}: {exc}") from exc
        if model and not isinstance(built, nn.Module):
            self.fail("build", f"returned {type(built).__name__}, not a torch.nn.Module")
        return built


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
    return Draw(config, draw(st.integers(1, 3)), t, draw(st.integers(0, t - 1)), draw(_seeds))


def _settings(max_examples: int) -> settings:
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
def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), **TOL)


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def _expect(case: _Case, check: str, out: Any, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    if not isinstance(out, torch.Tensor):
        case.fail(check, f"returned {type(out).__name__}, not a tensor")
    if tuple(out.shape) != shape or out.dtype != dtype:
        case.fail(check, f"returned {tuple(out.shape)} {out.dtype}, expected {shape} {dtype}")
    if not torch.isfinite(out).all():
        case.fail(check, f"returned non-finite values ({out.dtype})")


def _deterministic(case: _Case, fn: Callable[[], torch.Tensor]) -> None:
    with case.check("eval determinism"), torch.no_grad():
        first, second = fn(), fn()
    if not torch.equal(first, second):
        case.fail("eval determinism", f"two eval-mode calls differ by {_gap(first, second):.3g}")


def _independent(
    case: _Case, check: str, fn: Callable, x: torch.Tensor, keep: torch.Tensor, gen: torch.Generator
) -> None:
    """Changing x where `keep` (B, T) is False must leave the output where it is True alone."""
    if keep.all():
        return
    changed = torch.where(keep[..., None], x, torch.randn(x.shape, generator=gen) * x.std())
    with case.check(check), torch.no_grad():
        a, b = fn(x), fn(changed)
    if not _same(a[keep], b[keep]):
        where = "batch element 0" if check == "batch independence" else "an unchanged position"
        case.fail(
            check,
            f"changing other inputs moved the output at {where} by {_gap(a[keep], b[keep]):.3g}",
        )


def _gradients(case: _Case, modules: list[nn.Module], loss_fn: Callable[[], torch.Tensor]) -> None:
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


def _bfloat16(modules: tuple[nn.Module | None, ...]) -> tuple[Any, ...]:
    """Copies of modules (sharing references among themselves, as in a model) in bfloat16."""
    copies = copy.deepcopy(modules)
    for m in copies:
        if m is not None:
            m.to(torch.bfloat16).eval()
    return copies


def _last_linear(case: _Case, module: nn.Module, emb_dim: int) -> None:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if linears and linears[-1].out_features != emb_dim:
        case.fail(
            "residual projection",
            f"its last nn.Linear maps to {linears[-1].out_features} features, not emb_dim="
            f"{emb_dim}; the contract makes the last nn.Linear the residual output projection",
        )


def _required(component: Component) -> bool:
    return any(o.required for o in component.options.values())


# -- attention ----------------------------------------------------------------------------------
def _check_attention(case: _Case, max_examples: int) -> None:
    component, plugins = case.component, case.plugins
    causal = component.facts.get("causal")
    if not isinstance(causal, bool):
        case.fail("facts", f"`causal` must be True or False, got {causal!r}")
    variants: list[Component | None] = [None]
    if component.facts.get("positional_inside"):
        variants += [
            c
            for c in plugins.registry
            if c.kind == "positional" and c.facts.get("inside_attention") and not _required(c)
        ]

    @_settings(max_examples)
    @given(d=draws())
    def run(d: Draw) -> None:
        for pos_component in variants:
            config, pos = d.config, None
            case.inputs = d.describe()
            torch.manual_seed(d.seed)
            att = case.build(config)
            if pos_component is not None:
                attention = {"name": component.name, **case.options}
                config = replace(config, attention=attention, positional=pos_component.name)
                try:
                    check_compatible(config, plugins)
                except ComponentError:
                    continue
                case.inputs += f" positional={pos_component.name!r}"
                if not callable(getattr(att, "bind_positional", None)):
                    case.fail("positional_inside", "declared, but it has no bind_positional()")
                try:
                    pos = pos_component.build(config)
                except ComponentError:
                    continue  # e.g. RoPE on an odd head_dim: that scheme rejects this config
                with case.check("positional_inside"):
                    att.bind_positional(pos)
            _attention_battery(case, att, pos, d, causal)

    run()


def _attention_battery(
    case: _Case, att: nn.Module, pos: nn.Module | None, d: Draw, causal: bool
) -> None:
    gen = torch.Generator().manual_seed(d.seed)
    b, t, dim = d.batch, d.t, d.config.emb_dim
    att.eval()
    for length in d.lengths():
        x = torch.randn(b, length, dim, generator=gen)
        with case.check("output shape and dtype"), torch.no_grad():
            out = att(x)
        _expect(case, "output shape and dtype", out, (b, length, dim), torch.float32)
    x = torch.randn(b, t, dim, generator=gen)
    _deterministic(case, lambda: att(x))
    _causal(case, att, pos, d, causal, gen)
    if case.component.facts.get("kv_cache"):
        _kv_cache(case, att, x, gen)
    xb = torch.randn(max(b, 2), t, dim, generator=gen)
    keep = torch.zeros(xb.shape[:2], dtype=torch.bool)
    keep[0] = True
    _independent(case, "batch independence", att, xb, keep, gen)
    w = torch.randn(b, t, dim, generator=gen)
    _gradients(case, [att, pos] if pos else [att], lambda: (att(x) * w).sum())
    att16, _ = _bfloat16((att, pos))
    with case.check("bfloat16"), torch.no_grad():
        out = att16(x.bfloat16())
    _expect(case, "bfloat16", out, (b, t, dim), torch.bfloat16)


def _kv_cache(case: _Case, att: nn.Module, x: torch.Tensor, gen: torch.Generator) -> None:
    """A module declaring `kv_cache` gives, fed in chunks through forward_cached(), what
    forward() gives over the whole sequence."""
    if not callable(getattr(att, "forward_cached", None)):
        case.fail("kv_cache", "declared, but it has no forward_cached()")
    t = x.shape[1]
    cuts = sorted({0, t, *torch.randint(1, max(2, t), (2,), generator=gen).tolist()} - {t + 1})
    cuts = [c for c in cuts if c <= t]
    cache: dict = {}
    with case.check("kv_cache"), torch.no_grad():
        parts = [
            att.forward_cached(x[:, a:b], cache, a) for a, b in itertools.pairwise(cuts) if b > a
        ]
        whole = att(x)
    chunked = torch.cat(parts, dim=1)
    if chunked.shape != whole.shape or not torch.allclose(chunked, whole, atol=1e-5, rtol=1e-4):
        case.fail(
            "kv_cache",
            f"forward_cached() in chunks {cuts} differs from forward() by {_gap(chunked, whole):.2e}",
        )


def _causal(
    case: _Case, att: nn.Module, pos: nn.Module | None, d: Draw, causal: bool, gen: torch.Generator
) -> None:
    """Change every token after each cut c; causal: outputs <= c never move; non-causal: some do.
    Also tried on small inputs (softmax far from saturation) and with the parameters perturbed,
    so neither a saturated softmax nor a zero-initialised gate hides a dependence."""
    t = max(d.t, min(2, d.config.context_length))
    if t < 2:
        return
    noisy, _ = copy.deepcopy((att, pos))
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    x = torch.randn(d.batch, t, d.config.emb_dim, generator=gen)
    trials = [(att, 1.0, ""), (att, 0.1, ", inputs x 0.1"), (noisy, 1.0, ", perturbed parameters")]
    moved = False
    for module, scale, how in trials:
        for cut in range(t - 1):
            changed = x.clone()
            changed[:, cut + 1 :] = torch.randn(changed[:, cut + 1 :].shape, generator=gen)
            with case.check("causal"), torch.no_grad():
                a = module(x * scale)[:, : cut + 1]
                b = module(changed * scale)[:, : cut + 1]
            if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
                break  # perturbed parameters out of the component's range: no evidence
            same = _same(a, b)
            if causal and not same:
                case.fail(
                    "causal",
                    f"declared causal=True, but changing tokens after position {cut} (T={t}{how}) "
                    f"moved the outputs at positions <= {cut} by {_gap(a, b):.3g}",
                )
            moved = moved or not same
        if moved and not causal:
            return
    if not causal:
        case.fail(
            "causal",
            f"declared causal=False, but no change to later tokens (T={t}) ever moved an earlier "
            "output: it is causal, so declare causal=True",
        )


# -- normalization, activation, positional ---------------------------------------------------
def _check_positionwise(case: _Case, max_examples: int) -> None:
    """normalization (factory(dim)) and activation (factory(config)): position-wise maps."""
    is_norm = case.component.kind == "normalization"

    @_settings(max_examples)
    @given(d=draws(), scale=st.sampled_from((0.1, 1.0, 10.0)))
    def run(d: Draw, scale: float) -> None:
        case.inputs = d.describe() + f" scale={scale}"
        dim = d.config.emb_dim
        torch.manual_seed(d.seed)
        module = case.build(dim if is_norm else d.config).eval()
        if not is_norm:
            _last_linear(case, module, dim)
        gen = torch.Generator().manual_seed(d.seed)
        for length in d.lengths():
            x = torch.randn(d.batch, length, dim, generator=gen) * scale
            with case.check("output shape and dtype"), torch.no_grad():
                out = module(x)
            _expect(case, "output shape and dtype", out, tuple(x.shape), torch.float32)
        x = torch.randn(max(d.batch, 2), d.t, dim, generator=gen) * scale
        _deterministic(case, lambda: module(x))
        keep = torch.rand(x.shape[:2], generator=gen) < 0.5
        keep[0, 0] = True
        _independent(case, "position independence", module, x, keep, gen)
        w = torch.randn(x.shape, generator=gen)
        _gradients(case, [module], lambda: (module(x) * w).sum())
        (module16,) = _bfloat16((module,))
        with case.check("bfloat16"), torch.no_grad():
            out = module16(x.bfloat16())
        _expect(case, "bfloat16", out, tuple(x.shape), torch.bfloat16)

    run()


def _check_positional(case: _Case, max_examples: int) -> None:
    inside = bool(case.component.facts.get("inside_attention"))

    @_settings(max_examples)
    @given(d=draws())
    def run(d: Draw) -> None:
        case.inputs = d.describe()
        torch.manual_seed(d.seed)
        pos = case.build(d.config).eval()
        gen = torch.Generator().manual_seed(d.seed)
        b, t, s, dim = d.batch, d.t, d.cut, d.config.emb_dim
        for length in d.lengths():
            x = torch.randn(b, length, dim, generator=gen)
            with case.check("output shape and dtype"), torch.no_grad():
                out = pos(x)
            _expect(case, "output shape and dtype", out, (b, length, dim), torch.float32)
            if inside and not torch.equal(out, x):
                case.fail("inside_attention", "forward(x) must return x unchanged")
        x = torch.randn(max(b, 2), t, dim, generator=gen)
        _deterministic(case, lambda: pos(x))
        if inside:
            _check_inside(case, pos, d, gen)
            return
        with case.check("start offset"), torch.no_grad():
            whole, part = pos(x)[:, s:], pos(x[:, s:], start=s)
        if not _same(whole, part):
            case.fail("start offset", f"forward(x[:, {s}:], start={s}) != forward(x)[:, {s}:]")
        keep = torch.zeros(x.shape[:2], dtype=torch.bool)
        keep[0] = True
        _independent(case, "batch independence", pos, x, keep, gen)
        w = torch.randn(x.shape, generator=gen)
        _gradients(case, [pos], lambda: (pos(x) * w).sum())
        (pos16,) = _bfloat16((pos,))
        with case.check("bfloat16"), torch.no_grad():
            out = pos16(x.bfloat16())
        _expect(case, "bfloat16", out, tuple(x.shape), torch.bfloat16)

    run()


def _check_inside(case: _Case, pos: nn.Module, d: Draw, gen: torch.Generator) -> None:
    """rotate(q, k, start) and score_bias(t_q, t_k, start) of a scheme acting inside attention."""
    h, hd, s, t = d.config.n_heads, d.config.head_dim, d.cut, d.t

    def qk(length: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (d.batch, h, length, hd)
        return (
            torch.randn(shape, generator=gen).to(dtype),
            torch.randn(shape, generator=gen).to(dtype),
        )

    def rotate(module: nn.Module, q: torch.Tensor, k: torch.Tensor, start: int = 0) -> Any:
        with case.check("rotate"):
            out = module.rotate(q, k, start=start)
        if not (isinstance(out, tuple | list) and len(out) == 2):
            case.fail("rotate", f"must return (q, k), got {type(out).__name__}")
        _expect(case, "rotate", out[0], tuple(q.shape), q.dtype)
        _expect(case, "rotate", out[1], tuple(k.shape), k.dtype)
        return out

    def bias(module: nn.Module, t_q: int, t_k: int, start: int = 0) -> torch.Tensor | None:
        with case.check("score_bias"):
            out = module.score_bias(t_q, t_k, start=start)
        if out is not None:
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (h, t_q, t_k):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                case.fail(
                    "score_bias",
                    f"score_bias({t_q}, {t_k}) returned {got}, expected {(h, t_q, t_k)} or None",
                )
            if torch.isnan(out).any():
                case.fail("score_bias", f"score_bias({t_q}, {t_k}) holds NaN")
        return out

    with torch.no_grad():
        for length in d.lengths():
            rotate(pos, *qk(length))
            bias(pos, length, length)
        q, k = qk(t)
        rq, rk = rotate(pos, q, k)
        pq, pk = rotate(pos, q[:, :, s:], k[:, :, s:], start=s)
        if not (_same(pq, rq[:, :, s:]) and _same(pk, rk[:, :, s:])):
            case.fail(
                "start offset",
                f"rotate(q[:, :, {s}:], k[:, :, {s}:], start={s}) != rotate(q, k)[:, :, {s}:]",
            )
        full, part = bias(pos, t, t), bias(pos, t - s, t, start=s)
        if (full is None) != (part is None) or (full is not None and not _same(part, full[:, s:])):
            case.fail(
                "start offset",
                f"score_bias({t - s}, {t}, start={s}) != score_bias({t}, {t})[:, {s}:]",
            )
    w = torch.randn(2, *q.shape, generator=gen)
    wb = torch.randn(h, t, t, generator=gen)

    def loss() -> torch.Tensor:
        rq, rk = pos.rotate(q, k, start=0)
        sb = pos.score_bias(t, t, start=0)
        return (rq * w[0]).sum() + (rk * w[1]).sum() + (0 if sb is None else (sb * wb).sum())

    _gradients(case, [pos], loss)
    (pos16,) = _bfloat16((pos,))
    with torch.no_grad():
        rotate(pos16, *qk(t, torch.bfloat16))
        bias(pos16, t, t)


# -- init, sampler, tokenizer, corpus ---------------------------------------------------------
def _check_init(case: _Case, max_examples: int) -> None:
    """A tiny model built with this init, over the registered model components: finite
    parameters, a finite loss, and the same parameters for the same seed."""
    registry = case.plugins.registry
    pick = {
        kind: st.sampled_from([c.name for c in registry if c.kind == kind and not _required(c)])
        for kind in ("attention", "normalization", "activation", "positional")
    }
    init = {"name": case.component.name, **case.options}

    @_settings(max_examples)
    @given(
        d=draws(max_context=8),
        n_layers=st.integers(1, 2),
        placement=st.sampled_from(NORM_PLACEMENTS),
        tie=st.booleans(),
        att=pick["attention"],
        norm=pick["normalization"],
        act=pick["activation"],
        pos=pick["positional"],
    )
    def run(
        d: Draw, n_layers: int, placement: str, tie: bool, att: str, norm: str, act: str, pos: str
    ) -> None:
        config = replace(
            d.config, n_layers=n_layers, norm_placement=placement, tie_embeddings=tie,
            attention=att, norm=norm, activation=act, positional=pos, init=init,
        )  # fmt: skip
        case.inputs = (
            f"{d.describe()} n_layers={n_layers} norm_placement={placement!r} tie={tie} "
            f"attention={att!r} norm={norm!r} activation={act!r} positional={pos!r}"
        )
        try:
            check_compatible(config, case.plugins)
        except ComponentError:
            reject()
        states = []
        for _ in range(2):
            torch.manual_seed(d.seed)
            try:
                model = build_model(config, case.plugins)
            except ComponentError:
                reject()  # a component rejects this config (gqa's n_kv_heads and n_heads=3)
            except Exception as exc:
                raise case.error("build", f"raised {type(exc).__name__}: {exc}") from exc
            states.append(model.state_dict())
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            case.fail("finite parameters", f"parameter {bad[0]!r} holds non-finite values")
        differ = [n for n in states[0] if not torch.equal(states[0][n], states[1][n])]
        if differ:
            case.fail("seeded", f"the same seed gave different values of {differ[0]!r}")
        tokens = torch.randint(
            0, config.vocab_size, (d.batch, d.t), generator=torch.Generator().manual_seed(d.seed)
        )
        with case.check("finite loss"), torch.no_grad():
            loss = F.cross_entropy(model.eval()(tokens).flatten(0, 1), tokens.flatten())
        if not torch.isfinite(loss):
            case.fail("finite loss", f"the loss on random tokens is {loss.item()}")

    run()


def _check_sampler(case: _Case, max_examples: int) -> None:
    sampler = case.build(model=False)
    if not callable(sampler):
        case.fail("build", f"returned {type(sampler).__name__}, which is not callable")

    def draw_ids(logits: torch.Tensor, seed: int, check: str) -> torch.Tensor:
        with case.check(check):
            ids = sampler(logits, torch.Generator().manual_seed(seed))
        b, v = logits.shape
        if not isinstance(ids, torch.Tensor):
            case.fail(check, f"returned {type(ids).__name__}, not a tensor of ids")
        if tuple(ids.shape) != (b, 1) or ids.dtype != torch.int64:
            case.fail(check, f"returned {tuple(ids.shape)} {ids.dtype}, not ({b}, 1) torch.int64")
        if ((ids < 0) | (ids >= v)).any():
            case.fail(check, f"returned ids {ids.flatten().tolist()} outside the range [0, {v})")
        return ids

    @_settings(max_examples)
    @given(
        b=st.integers(1, 4),
        v=st.integers(1, 80),
        scale=st.sampled_from((0.1, 1.0, 10.0, 100.0)),
        seed=_seeds,
    )
    def run(b: int, v: int, scale: float, seed: int) -> None:
        case.inputs = f"logits ({b}, {v}) scale={scale} seed={seed}"
        torch.manual_seed(seed)  # a sampler drawing from the global RNG still replays
        logits = torch.randn(b, v, generator=torch.Generator().manual_seed(seed)) * scale
        given_logits = logits.clone()
        ids = draw_ids(given_logits, seed, "ids in range")
        if not torch.equal(given_logits, logits):
            case.fail("logits untouched", "it changed the logits it was given in place")
        again = draw_ids(logits.clone(), seed, "seeded")
        if not torch.equal(ids, again):
            case.fail("seeded", "two generators with the same seed gave different ids")
        draw_ids(logits.bfloat16(), seed, "bfloat16")

    run()


def _check_tokenizer(case: _Case, max_examples: int) -> None:
    """Round trips of arbitrary text; a trainable one (`needs_training`) is first trained with
    train(texts) on drawn text, and must train deterministically and restore from state()."""

    def build(corpus: list[str]) -> tuple[Any, bool]:
        tok = case.build(model=False)
        trains = bool(case.component.facts.get("needs_training"))
        trains = trains or bool(getattr(tok, "needs_training", False))
        if trains:
            with case.check("train"):
                tok.train([TRAINING_TEXT, *corpus])
        return tok, trains

    @_settings(max_examples)
    @given(
        corpus=st.lists(st.text(min_size=1, max_size=120), max_size=4),
        texts=st.lists(st.text(max_size=60), max_size=4),
    )
    @example(corpus=[], texts=["", "<|endoftext|>", "Hi, 42!\n\tx  y", "naïve 日本語 🤖\u00a0\x00"])
    def run(corpus: list[str], texts: list[str]) -> None:
        case.inputs = f"training texts {corpus!r}"
        tok, trains = build(corpus)
        case.inputs = case.inputs if trains else ""
        others = [build(corpus)[0]] if trains else []
        if trains and callable(getattr(tok, "state", None)):
            with case.check("state"):
                restored = case.build(model=False)
                restored.load_state(json.loads(json.dumps(tok.state())))
            others.append(restored)
        with case.check("attributes"):
            v, eot, lengths = tok.vocab_size, tok.eot_id, np.asarray(tok.token_byte_lengths())
            names = (tok.name, tok.fingerprint)
        if not all(isinstance(n, str) and n for n in names):
            case.fail("attributes", f"name and fingerprint must be non-empty strings: {names!r}")
        if not (isinstance(v, int) and isinstance(eot, int) and 0 <= eot < v):
            case.fail("attributes", f"eot_id {eot!r} must be an int in [0, vocab_size={v!r})")
        if lengths.shape != (v,) or not np.issubdtype(lengths.dtype, np.integer):
            case.fail(
                "token_byte_lengths", f"gave {lengths.shape} {lengths.dtype}, not ({v},) ints"
            )
        for t in [*texts, *corpus]:
            case.inputs = f"text {t!r}" + (f", training texts {corpus!r}" if trains else "")
            with case.check("encode"):
                ids = [int(i) for i in tok.encode(t)]
            out = [i for i in ids if not 0 <= i < v]
            if out:
                case.fail("ids in range", f"encode gave id {out[0]}, outside [0, {v})")
            if eot in ids:
                case.fail("ids in range", f"encode turned text into the end-of-text id {eot}")
            with case.check("round trip"):
                back = tok.decode(ids)
            if back != t:
                case.fail("round trip", f"decode(encode(text)) gave {back!r}")
            if int(lengths[ids].sum()) != len(t.encode("utf-8")):
                total = int(lengths[ids].sum())
                case.fail(
                    "token_byte_lengths", f"its ids stand for {total} bytes, not {len(t.encode())}"
                )
            for other, check in zip(others, ("deterministic training", "state"), strict=False):
                with case.check(check):
                    same = other.fingerprint == tok.fingerprint and other.encode(t) == ids
                if not same:
                    what = (
                        "training again on the same texts"
                        if other is others[0]
                        else "load_state(state())"
                    )
                    case.fail(check, f"{what} gave another fingerprint or other ids")

    run()


def _check_corpus(case: _Case, max_examples: int) -> None:
    corpus = case.build(model=False)
    if not isinstance(getattr(corpus, "description", None), str):
        case.fail("attributes", "a corpus needs a `description` string")
    with case.check("documents"):
        first = list(itertools.islice(corpus.documents(), 50))
    bad = [
        doc
        for doc in first
        if not (isinstance(doc, tuple) and len(doc) == 2 and all(isinstance(s, str) for s in doc))
    ]
    if bad:
        case.fail("documents", f"must yield (name, text) string pairs, got {bad[0]!r:.80}")
    with case.check("documents"):
        again = list(itertools.islice(corpus.documents(), 50))
        any_text = any(text for _, text in corpus.documents())
    if not any_text:
        case.fail("documents", "yields no document with any text")
    if first != again:
        case.fail("documents", "documents() yields different documents the second time")


def _check_executor(case: _Case, max_examples: int) -> None:
    """A 2-run sweep trained by the executor equals the same sweep trained locally: every run
    once, same status, same metrics line for line (one thread each, so bit for bit)."""
    import tempfile

    from toolkit.spec.parse import parse_spec
    from toolkit.sweep.runner import run

    doc = {
        "name": "conformance",
        "seeds": [0],
        "data": {"tokenizer": "bytes"},
        "model": {"context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 1},
        "train": {"batch_size": 2, "max_steps": 4, "eval_interval": 2, "eval_batches": 1,
                  "threads": 1, "checkpoint": False},
        "sampling": {"max_new_tokens": 0},
        "grid": {"model.norm": ["layernorm", "rmsnorm"]},
    }  # fmt: skip
    # The sweep uses built-in components only, loaded by module name, so executors that train
    # in other processes can load them there (whatever else the caller's plugins hold).
    plugins = Plugins(autoload=False)
    spec = parse_spec(doc, plugins=plugins)
    case.inputs = "a sweep of 2 runs of a 1-layer model, 4 steps each"
    executor = case.component.build(**case.options)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        run(spec, out / "local", plugins=plugins, progress=False)
        try:
            table = run(spec, out / "other", plugins=plugins, progress=False,
                        executor=executor)  # fmt: skip
        except ToolkitError as exc:
            raise case.error("execute", str(exc)) from exc
        except Exception as exc:
            raise case.error("execute", f"raised {type(exc).__name__}: {exc}") from exc
        bad = table[table["status"] != "ok"]
        if len(bad):
            raise case.error("execute", f"run {bad['variant'].iloc[0]!r}: {bad['error'].iloc[0]}")
        for r in spec.runs:
            mine, local = (
                [
                    {k: v for k, v in json.loads(line).items() if k != "elapsed_s"}
                    for line in (out / side / r.folder / "metrics.jsonl").read_text().splitlines()
                ]
                for side in ("other", "local")
            )
            if mine != local:
                raise case.error(
                    "same losses", f"run {r.variant!r} logged {mine} where local gave {local}"
                )


CHECKS: dict[str, Callable[[_Case, int], None]] = {
    "attention": _check_attention,
    "normalization": _check_positionwise,
    "activation": _check_positionwise,
    "positional": _check_positional,
    "init": _check_init,
    "sampler": _check_sampler,
    "tokenizer": _check_tokenizer,
    "corpus": _check_corpus,
    "executor": _check_executor,
}


# -- the public API ------------------------------------------------------------------------------
def check_component(
    kind: str,
    name: str,
    plugins: Plugins | None = None,
    *,
    max_examples: int = 10,
    options: dict[str, Any] | None = None,
) -> None:
    """Check one registered component against its kind's contract; raise ConformanceError
    naming the check and the input when it breaks it. `options` are the component's options
    (needed when it has required ones). The global torch RNG is left as it was."""
    plugins = plugins or load_plugins()
    component = plugins.registry.get(kind, name)
    if kind not in CHECKS:
        raise ConformanceError(
            f"no conformance checks for kind {kind!r} yet: add them to toolkit/testing/__init__.py"
        )
    case = _Case(component, component.check_options(dict(options or {})), plugins)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster, and immune to busy cores
    try:
        with torch.random.fork_rng(devices=[]):
            CHECKS[kind](case, max_examples)
    except Unsatisfiable as exc:
        case.inputs = ""
        raise case.error("build", "it rejected every configuration tried") from exc
    except Flaky as exc:  # failed once, passed on the replay of the same input
        found = [e for e in getattr(exc, "exceptions", ()) if isinstance(e, ConformanceError)]
        if not found:
            raise
        detail = "; it is not reproducible: the same input gave another result when repeated"
        raise ConformanceError(str(found[0]) + detail) from exc
    finally:
        torch.set_num_threads(threads)


def conformance_cases(
    plugins: Plugins | None = None,
    options: dict[tuple[str, str], dict[str, Any]] | None = None,
    *,
    plugin: str | None = None,
) -> list[tuple[str, str]]:
    """(kind, name) of every registered component the checks can build (only those the plugin
    named `plugin` registered, when given): those with required options only when `options`,
    keyed by (kind, name), gives them."""
    plugins = plugins or load_plugins()
    options = options or {}
    return [
        (c.kind, c.name)
        for c in plugins.registry
        if (not _required(c) or (c.kind, c.name) in options) and plugin in (None, c.plugin)
    ]


def check_all(
    plugins: Plugins | None = None,
    *,
    max_examples: int = 10,
    options: dict[tuple[str, str], dict[str, Any]] | None = None,
) -> None:
    """check_component for every case of conformance_cases(); one ConformanceError lists all
    the components that fail."""
    plugins = plugins or load_plugins()
    options = options or {}
    failures = []
    for kind, name in conformance_cases(plugins, options):
        try:
            check_component(
                kind, name, plugins, max_examples=max_examples, options=options.get((kind, name))
            )
        except ConformanceError as exc:
            failures.append(str(exc))
    if failures:
        raise ConformanceError(f"{len(failures)} component(s) fail:\n" + "\n".join(failures))


__all__ = ["ConformanceError", "check_all", "check_component", "conformance_cases"]
