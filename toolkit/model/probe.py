"""One forward pass of a built model on a tiny input, watching every component: the one that
raises, or returns another shape or dtype than the (B, T, emb_dim) float tensor it was given,
is named with its plugin, where torch would only say "mat1 and mat2 shapes cannot be
multiplied" two modules later.

`check_architecture(config, plugins)` builds the model on the meta device (no memory, no
arithmetic) and probes it there; a component that cannot run on meta tensors is probed on the
CPU instead when the model is small enough. `check_forward(model, plugins, idx)` probes a model
already built on given token ids, leaving the random number generator as it was: a run whose
first step fails probes its model on that step's batch to name the culprit.

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
PROBE_TOKENS = 8


def check_architecture(config: ModelConfig, plugins: Plugins) -> None:
    """Build the model `config` describes and run one forward pass on a tiny input; a
    component that raises or breaks the (B, T, emb_dim) contract is a ComponentError naming
    it and its plugin. On the meta device first; on the CPU when a component cannot run on
    meta tensors and the model has at most CPU_PROBE_MAX_PARAMS parameters."""
    with torch.device("meta"):
        model = build_model(config, plugins)
    try:
        check_forward(model, plugins)
        return
    except ComponentError as exc:
        if not _meta_limitation(exc):
            raise
    if model.num_params() > CPU_PROBE_MAX_PARAMS:
        return
    state = torch.get_rng_state()
    try:
        check_forward(build_model(config, plugins), plugins)
    finally:
        torch.set_rng_state(state)


def check_forward(model: GPT, plugins: Plugins, idx: torch.Tensor | None = None) -> None:
    """One forward pass of `model` in training mode on token ids `idx` (default: zeros of
    shape (1, min(8, context_length))), the RNG state and the model's mode restored after.
    Raises a ComponentError naming the component (and plugin) that raised, or returned a
    tensor of another shape or dtype than its input."""
    config = model.config
    if idx is None:
        device = next(model.parameters()).device
        idx = torch.zeros(
            1, min(PROBE_TOKENS, config.context_length), dtype=torch.long, device=device
        )
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
