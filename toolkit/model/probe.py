"""One forward pass of a built model on a tiny input, watching every component: the one that
raises, or returns another shape or dtype than the (B, T, emb_dim) float tensor it was given,
is named with its plugin, where torch would only say "mat1 and mat2 shapes cannot be
multiplied" two modules later.

`check_architecture(config, plugins)` builds the model on the meta device (no memory, no
arithmetic) and probes it there with a batch of PROBE_BATCH windows of the full context_length,
so a component that breaks only at batch > 1 or only at the longest length a run feeds it fails
at validation, not after training started; a component that cannot run on meta tensors is
probed on the CPU instead when the model is small enough. `check_forward(model, plugins, idx)`
probes a model already built on given token ids, leaving the random number generator as it
was: a run whose first step fails probes its model on that step's batch to name the culprit.

Not here: the model itself (gpt.py), and the kit that checks components one by one against
their contracts (toolkit.testing).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from toolkit.api.manager import Plugins
from toolkit.api.registry import split_choice
from toolkit.errors import ComponentError, one_line
from toolkit.model.config import COMPONENT_SLOTS, ModelConfig
from toolkit.model.gpt import GPT, build_model

# Which component each module of the GPT skeleton is, by the last part of its name.
ROLES = {
    "pos_emb": "positional",
    "norm1": "norm",
    "norm2": "norm",
    "final_norm": "norm",
    "att": "attention",
    "ff": "activation",
}
# Above this many parameters, a model is not rebuilt on the CPU to probe it (float32: 4 bytes
# each); the check is left to the run's first step.
CPU_PROBE_MAX_PARAMS = 200_000_000
# The probe's batch: two windows, so a component that folds the batch into another dimension
# (or drops it) breaks here as it would in training.
PROBE_BATCH = 2
# The meta probe always runs the full context_length: meta tensors cost nothing per
# multiply-add. The CPU probe (for a component meta tensors cannot run) runs the longest window,
# halving from context_length down to PROBE_TOKENS, whose forward costs at most CPU_PROBE_MACS
# multiply-adds (about 0.2 s on a 2-core machine, which did 1e11 a second) and whose attention
# scores (PROBE_BATCH x n_heads x T x T floats, where a component materializes them) fit in
# CPU_PROBE_SCORE_BYTES.
CPU_PROBE_MACS = 20_000_000_000
CPU_PROBE_SCORE_BYTES = 256 * 2**20
PROBE_TOKENS = 8


def check_architecture(config: ModelConfig, plugins: Plugins) -> None:
    """Build the model `config` describes and run one forward pass on PROBE_BATCH windows of
    context_length tokens; a component that raises or breaks the (B, T, emb_dim) contract is a
    ComponentError naming it and its plugin. On the meta device first: shapes without data, so
    the full context costs next to nothing (measured against one window of 8 tokens: +0.4 ms of
    25 ms for the quick-start model, +1 ms of 80 ms for gpt2-small, +9 ms of 260 ms for
    gpt2-xl). On the CPU when a component cannot run on meta tensors and the model has at most
    CPU_PROBE_MAX_PARAMS parameters, at the longest length cpu_probe_length allows: a real
    forward of gpt2-small at (2, 1024) took 8 s there, far more than validation should."""
    with torch.device("meta"):
        model = build_model(config, plugins)
    try:
        check_forward(model, plugins)
        return
    except ComponentError as exc:
        if not _meta_limitation(exc):
            raise
    n_params = model.num_params()
    if n_params > CPU_PROBE_MAX_PARAMS:
        return
    state = torch.get_rng_state()
    try:
        idx = torch.zeros(PROBE_BATCH, cpu_probe_length(config, n_params), dtype=torch.long)
        check_forward(build_model(config, plugins), plugins, idx)
    finally:
        torch.set_rng_state(state)


def cpu_probe_length(config: ModelConfig, n_params: int) -> int:
    """The tokens per window of a CPU probe: context_length, halved until a forward of
    PROBE_BATCH windows costs at most CPU_PROBE_MACS multiply-adds (each token through every
    parameter, and attention's T x T scores) and its scores fit in CPU_PROBE_SCORE_BYTES, but
    never below PROBE_TOKENS.
    A 0.9M-parameter model with context 128 -> 128; gpt2-small (124M, 1024) -> 64."""

    def too_big(t: int) -> bool:
        macs = PROBE_BATCH * (t * n_params + 2 * config.n_layers * t * t * config.emb_dim)
        scores = PROBE_BATCH * config.n_heads * t * t * 4
        return macs > CPU_PROBE_MACS or scores > CPU_PROBE_SCORE_BYTES

    length = config.context_length
    while length > PROBE_TOKENS and too_big(length):
        length //= 2
    return max(length, min(PROBE_TOKENS, config.context_length))


def check_forward(model: GPT, plugins: Plugins, idx: torch.Tensor | None = None) -> None:
    """One forward pass of `model` in training mode on token ids `idx` (default: zeros of
    shape (PROBE_BATCH, context_length)), the RNG state and the model's mode restored after.
    Raises a ComponentError naming the component (and plugin) that raised, or returned a
    tensor of another shape or dtype than its input."""
    config = model.config
    if idx is None:
        device = next(model.parameters()).device
        idx = torch.zeros(PROBE_BATCH, config.context_length, dtype=torch.long, device=device)
    labels = _labels(model, plugins)
    running: list[str] = []  # the components inside whose forward we are, innermost last
    state = torch.get_rng_state()
    was_training = model.training
    model.train()  # dropout paths too: a component may break only while training
    try:
        with _watch(model, labels, running):
            model(idx)
    except ComponentError:
        raise
    except Exception as exc:
        if not running:
            raise
        shape = (*idx.shape, config.emb_dim)
        raise ComponentError(
            f"{running[-1]} raised in forward on a {shape} input: {one_line(exc, 300)}"
        ) from exc
    finally:
        model.train(was_training)
        torch.set_rng_state(state)


def _labels(model: GPT, plugins: Plugins) -> dict[nn.Module, str]:
    """Each component module -> "normalization 'dyt' (plugin 'my_norm')"."""
    labels: dict[nn.Module, str] = {}
    for path, module in model.named_modules():
        role = ROLES.get(path.rsplit(".", 1)[-1])
        if role is None or (path == "final_norm" and isinstance(module, nn.Identity)):
            continue
        name = split_choice(getattr(model.config, role))[0]
        component = plugins.registry.get(COMPONENT_SLOTS[role], name)
        labels[module] = f"{component.kind} {name!r} (plugin {component.plugin!r})"
    return labels


@contextlib.contextmanager
def _watch(model: GPT, labels: dict[nn.Module, str], running: list[str]) -> Iterator[None]:
    """Forward hooks on every component: a stack of those running, and a check of each one's
    output against its input."""

    def before(module: nn.Module, args: tuple[Any, ...]) -> None:
        running.append(labels[module])

    def after(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor):
            _check_output(labels[module], x, output)
        running.pop()

    handles = []
    for module in labels:
        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _check_output(label: str, x: torch.Tensor, output: Any) -> None:
    if not isinstance(output, torch.Tensor):
        raise ComponentError(
            f"{label} returned {type(output).__name__} from forward, not a tensor of the "
            f"input's shape {tuple(x.shape)}"
        )
    if output.shape != x.shape:
        raise ComponentError(
            f"{label} returned shape {tuple(output.shape)} from an input of shape "
            f"{tuple(x.shape)}; it must return the input's shape (B, T, emb_dim)"
        )
    if output.dtype != x.dtype:
        raise ComponentError(
            f"{label} returned {output.dtype} from a {x.dtype} input; it must keep the dtype"
        )


def _meta_limitation(exc: ComponentError) -> bool:
    """Whether a component failed only because meta tensors hold no data (an op with no meta
    kernel, a custom operator with no fake implementation, or a value read out of a
    tensor)."""
    cause = exc.__cause__
    text = f"{type(cause).__name__}: {cause}".lower() if cause is not None else ""
    return cause is not None and (
        isinstance(cause, NotImplementedError)
        or "meta" in text
        or "no fake impl" in text
        or "data-dependent" in text
        or "item()" in text
    )
