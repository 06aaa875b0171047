"""Conformance checks of `attention` components.

Checked, for drawn configs, batch sizes and lengths: a (B, T, emb_dim) float32 output for T = 1,
a drawn T and the context length; the same output twice in eval mode; the declared `causal` fact
honoured both ways (True: changing tokens after t never moves outputs <= t; False: some such
change does; also tried on small inputs and with perturbed parameters, so a saturated softmax
or a zero-initialised gate hides nothing); with `kv_cache`, forward_cached() fed in chunks equal
to forward() over the whole sequence; batch elements independent; a gradient for every
parameter; finite bfloat16 out of bfloat16 in. With `positional_inside`, all of it again with
each registered inside-attention positional (those without required options) bound, skipping
the configs that positional or the model rejects. Built from the config with bias=False
(model.bias = false): no parameter whose name ends in "bias" (qkv_bias or not), and the same
output shape.

Not checked: what the inside-attention positional schemes do on their own (modules.py), how
close the output is to some reference attention, speed or memory, and the cache beyond the
context length.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace

import torch
from hypothesis import given
from torch import nn

from toolkit.api.registry import Component
from toolkit.errors import ComponentError
from toolkit.model.gpt import check_compatible
from toolkit.testing.core import (
    Case,
    Draw,
    bfloat16,
    biasless,
    deterministic,
    draws,
    expect,
    gap,
    gradients,
    hypothesis_settings,
    independent,
    required,
    same,
)


def check_attention(case: Case, max_examples: int) -> None:
    component, plugins = case.component, case.plugins
    causal = component.facts.get("causal")
    if not isinstance(causal, bool):
        case.fail("facts", f"`causal` must be True or False, got {causal!r}")
    variants: list[Component | None] = [None]
    if component.facts.get("positional_inside"):
        variants += [
            c
            for c in plugins.registry
            if c.kind == "positional" and c.facts.get("inside_attention") and not required(c)
        ]

    @hypothesis_settings(max_examples)
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
        _without_bias(case, d)

    run()


def _without_bias(case: Case, d: Draw) -> None:
    """Built from the drawn config with bias=False (model.bias = false): no bias parameter,
    qkv_bias or not, and still (B, T, emb_dim) out."""
    case.inputs = d.describe() + " bias=False"
    torch.manual_seed(d.seed)
    att = case.build(replace(d.config, bias=False))
    gen = torch.Generator().manual_seed(d.seed)
    biasless(case, att, torch.randn(d.batch, d.t, d.config.emb_dim, generator=gen))


def _attention_battery(
    case: Case, att: nn.Module, pos: nn.Module | None, d: Draw, causal: bool
) -> None:
    gen = torch.Generator().manual_seed(d.seed)
    b, t, dim = d.batch, d.t, d.config.emb_dim
    att.eval()
    for length in d.lengths():
        x = torch.randn(b, length, dim, generator=gen)
        with case.check("output shape and dtype"), torch.no_grad():
            out = att(x)
        expect(case, "output shape and dtype", out, (b, length, dim), torch.float32)
    x = torch.randn(b, t, dim, generator=gen)
    deterministic(case, lambda: att(x))
    _causal(case, att, pos, d, causal, gen)
    if case.component.facts.get("kv_cache"):
        _kv_cache(case, att, x, gen)
    xb = torch.randn(max(b, 2), t, dim, generator=gen)
    keep = torch.zeros(xb.shape[:2], dtype=torch.bool)
    keep[0] = True
    independent(case, "batch independence", att, xb, keep, gen)
    w = torch.randn(b, t, dim, generator=gen)
    gradients(case, [att, pos] if pos else [att], lambda: (att(x) * w).sum())
    att16, _ = bfloat16((att, pos))
    with case.check("bfloat16"), torch.no_grad():
        out = att16(x.bfloat16())
    expect(case, "bfloat16", out, (b, t, dim), torch.bfloat16)


def _kv_cache(case: Case, att: nn.Module, x: torch.Tensor, gen: torch.Generator) -> None:
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
            f"forward_cached() in chunks {cuts} differs from forward() by {gap(chunked, whole):.2e}",
        )


def _causal(
    case: Case, att: nn.Module, pos: nn.Module | None, d: Draw, causal: bool, gen: torch.Generator
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
            unchanged = same(a, b)
            if causal and not unchanged:
                case.fail(
                    "causal",
                    f"declared causal=True, but changing tokens after position {cut} (T={t}{how}) "
                    f"moved the outputs at positions <= {cut} by {gap(a, b):.3g}",
                )
            moved = moved or not unchanged
        if moved and not causal:
            return
    if not causal:
        case.fail(
            "causal",
            f"declared causal=False, but no change to later tokens (T={t}) ever moved an earlier "
            "output: it is causal, so declare causal=True",
        )
