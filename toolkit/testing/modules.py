"""Conformance checks of the position-wise and embedding-side kinds: normalization,
activation (the feed-forward block), positional, and init.

- normalization (factory(dim)) and activation (factory(config)): shape and dtype kept, the same
  output twice in eval mode, every position and batch element computed alone, a gradient for
  every parameter, finite bfloat16 out of bfloat16 in; an activation's last nn.Linear maps to
  emb_dim (the residual projection). Built for model.bias = false (an activation from a config
  with bias=False, a norm with a `bias` option given bias=False): no parameter whose name ends
  in "bias", the norm with fewer parameters than with bias=True, and the same output shape.
- positional: shape, dtype, determinism, batch independence, gradients and bfloat16 as above,
  and forward(x[:, s:], start=s) == forward(x)[:, s:]. An inside-attention scheme returns x
  unchanged, and rotate() / score_bias() have the right shapes and dtypes, honour `start`, pass
  gradients and take bfloat16. With the fact any_length, the same shapes for sequences longer
  than context_length, and `start` honoured past it.
- init: tiny models built with it over the registered components (without required options):
  finite parameters, a finite loss on random tokens, and the same parameters from the same seed.

Not checked: the values a normalization or an init produces (unit variance, a given std), that
a positional scheme tells positions apart usefully, an inside-attention scheme bound into an
attention (attention.py does that), and training with any of them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import given, reject
from hypothesis import strategies as st
from torch import nn

from toolkit.errors import ComponentError
from toolkit.model.config import NORM_PLACEMENTS
from toolkit.model.gpt import build_model, check_compatible
from toolkit.testing.core import (
    BIAS_FIX,
    Case,
    Draw,
    bfloat16,
    biasless,
    deterministic,
    draws,
    expect,
    gradients,
    hypothesis_settings,
    independent,
    raised,
    required,
    same,
)


def _last_linear(case: Case, module: nn.Module, emb_dim: int) -> None:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if linears and linears[-1].out_features != emb_dim:
        case.fail(
            "residual projection",
            f"its last nn.Linear maps to {linears[-1].out_features} features, not emb_dim="
            f"{emb_dim}; the contract makes the last nn.Linear the residual output projection",
        )


def check_positionwise(case: Case, max_examples: int) -> None:
    """normalization (factory(dim)) and activation (factory(config)): position-wise maps."""
    is_norm = case.component.kind == "normalization"

    @hypothesis_settings(max_examples)
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
            expect(case, "output shape and dtype", out, tuple(x.shape), torch.float32)
        x = torch.randn(max(d.batch, 2), d.t, dim, generator=gen) * scale
        deterministic(case, lambda: module(x))
        keep = torch.rand(x.shape[:2], generator=gen) < 0.5
        keep[0, 0] = True
        independent(case, "position independence", module, x, keep, gen)
        w = torch.randn(x.shape, generator=gen)
        gradients(case, [module], lambda: (module(x) * w).sum())
        (module16,) = bfloat16((module,))
        with case.check("bfloat16"), torch.no_grad():
            out = module16(x.bfloat16())
        expect(case, "bfloat16", out, tuple(x.shape), torch.bfloat16)
        _without_bias(case, d, x)

    run()


def _parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _without_bias(case: Case, d: Draw, x: torch.Tensor) -> None:
    """Built for model.bias = false: an activation from the config with bias=False, a norm with
    a `bias` option with bias=False, which must also leave fewer parameters than bias=True (a
    shift need not be named bias). Norms without the option have no shift to drop."""
    is_norm = case.component.kind == "normalization"
    if is_norm and "bias" not in case.component.options:
        return
    case.inputs += " bias=False"
    torch.manual_seed(d.seed)
    if not is_norm:
        biasless(case, case.build(replace(d.config, bias=False)), x)
        return
    without = case.build(d.config.emb_dim, options={**case.options, "bias": False})
    biasless(case, without, x)
    full = case.build(d.config.emb_dim, options={**case.options, "bias": True})
    if _parameter_count(without) >= _parameter_count(full):
        case.fail(
            "model.bias",
            f"bias=False leaves as many parameters as bias=True, so it does not honour "
            f"model.bias: {BIAS_FIX['normalization']}",
        )


def check_positional(case: Case, max_examples: int) -> None:
    inside = bool(case.component.facts.get("inside_attention"))

    @hypothesis_settings(max_examples)
    @given(d=draws())
    def run(d: Draw) -> None:
        case.inputs = d.describe()
        torch.manual_seed(d.seed)
        pos = case.build(d.config).eval()
        gen = torch.Generator().manual_seed(d.seed)
        b, t, s, dim = d.batch, d.t, d.cut, d.config.emb_dim
        if case.component.facts.get("any_length"):
            _check_any_length(case, pos, d, gen, inside)
        for length in d.lengths():
            x = torch.randn(b, length, dim, generator=gen)
            with case.check("output shape and dtype"), torch.no_grad():
                out = pos(x)
            expect(case, "output shape and dtype", out, (b, length, dim), torch.float32)
            if inside and not torch.equal(out, x):
                case.fail("inside_attention", "forward(x) must return x unchanged")
        x = torch.randn(max(b, 2), t, dim, generator=gen)
        deterministic(case, lambda: pos(x))
        if inside:
            _check_inside(case, pos, d, gen)
            return
        with case.check("start offset"), torch.no_grad():
            whole, part = pos(x)[:, s:], pos(x[:, s:], start=s)
        if not same(whole, part):
            case.fail("start offset", f"forward(x[:, {s}:], start={s}) != forward(x)[:, {s}:]")
        keep = torch.zeros(x.shape[:2], dtype=torch.bool)
        keep[0] = True
        independent(case, "batch independence", pos, x, keep, gen)
        w = torch.randn(x.shape, generator=gen)
        gradients(case, [pos], lambda: (pos(x) * w).sum())
        (pos16,) = bfloat16((pos,))
        with case.check("bfloat16"), torch.no_grad():
            out = pos16(x.bfloat16())
        expect(case, "bfloat16", out, tuple(x.shape), torch.bfloat16)

    run()


def _check_any_length(
    case: Case, pos: nn.Module, d: Draw, gen: torch.Generator, inside: bool
) -> None:
    """Declared any_length: a sequence twice context_length and more, from position 0 and from
    a start past context_length, gives the shapes it would inside it, and the same rows."""
    long, s = 2 * d.config.context_length + 3, d.config.context_length + 1
    h, hd, dim = d.config.n_heads, d.config.head_dim, d.config.emb_dim
    with case.check("any_length"), torch.no_grad():
        if inside:
            q = torch.randn(d.batch, h, long, hd, generator=gen)
            rq, _ = pos.rotate(q, q, start=0)
            pq, _ = pos.rotate(q[:, :, s:], q[:, :, s:], start=s)
            whole, part = rq[:, :, s:], pq
            bias = pos.score_bias(long, long, start=0)
            if bias is not None and tuple(bias.shape) != (h, long, long):
                case.fail("any_length", f"score_bias({long}, {long}) has shape {tuple(bias.shape)}")
        else:
            x = torch.randn(d.batch, long, dim, generator=gen)
            out = pos(x)
            expect(case, "any_length", out, (d.batch, long, dim), torch.float32)
            whole, part = out[:, s:], pos(x[:, s:], start=s)
    if not same(whole, part):
        case.fail(
            "any_length",
            f"declared any_length, but at {long} positions (context_length "
            f"{d.config.context_length}) the rows from position {s} differ when given with "
            f"start={s}",
        )


def _check_inside(case: Case, pos: nn.Module, d: Draw, gen: torch.Generator) -> None:
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
        expect(case, "rotate", out[0], tuple(q.shape), q.dtype)
        expect(case, "rotate", out[1], tuple(k.shape), k.dtype)
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
        if not (same(pq, rq[:, :, s:]) and same(pk, rk[:, :, s:])):
            case.fail(
                "start offset",
                f"rotate(q[:, :, {s}:], k[:, :, {s}:], start={s}) != rotate(q, k)[:, :, {s}:]",
            )
        full, part = bias(pos, t, t), bias(pos, t - s, t, start=s)
        if (full is None) != (part is None) or (full is not None and not same(part, full[:, s:])):
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

    gradients(case, [pos], loss)
    (pos16,) = bfloat16((pos,))
    with torch.no_grad():
        rotate(pos16, *qk(t, torch.bfloat16))
        bias(pos16, t, t)


def check_init(case: Case, max_examples: int) -> None:
    """A tiny model built with this init, over the registered model components: finite
    parameters, a finite loss, and the same parameters for the same seed."""
    registry = case.plugins.registry
    pick = {
        kind: st.sampled_from([c.name for c in registry if c.kind == kind and not required(c)])
        for kind in ("attention", "normalization", "activation", "positional")
    }
    init = {"name": case.component.name, **case.options}

    @hypothesis_settings(max_examples)
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
            except ComponentError as exc:
                # a component rejects this config (gqa's n_kv_heads and n_heads=3)
                case.rejected(exc)
            except Exception as exc:
                raise case.error("build", raised(exc)) from exc
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
