"""Weights in and out of the toolkit from other code bases: what the formats share.

    hf_gpt2.py   Hugging Face GPT-2 folders (config.json + model.safetensors), both ways
    hf_llama.py  Hugging Face Llama (or Qwen3, with qk_norm) folders, export only
    book.py      the state dicts of "Build a Large Language Model From Scratch"'s GPTModel

The names line up because the toolkit's GPT uses the book's module names. What cannot be
exported is refused with one line naming the components (`unrepresentable`): GPT-2 and the book
have multi-head attention without qk_norm, LayerNorm before each sub-block, learned positions
and a 4x feed-forward with GELU (GPT-2 also takes exact GELU and ReLU). Written tensors are
standalone copies (`standalone`). Not here: the toolkit's own checkpoint format
(checkpoint.py) and the commands (toolkit/cli/checkpoints.py).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import torch

from toolkit.api.registry import split_choice
from toolkit.errors import ComponentError, DataError
from toolkit.model.checkpoint import (
    StateDict,
    check_fits,
    locate_checkpoint,
    meta_state_dict,
    read_checkpoint,
)
from toolkit.model.config import ModelConfig
from toolkit.names import label

# GPT-2's activation_function for each toolkit activation it has.
TO_HF_ACTIVATION = {"gelu": "gelu_new", "gelu-exact": "gelu", "relu": "relu"}
# Norm components with LayerNorm's maths, and the names of their two parameters.
LAYERNORM_PARAMS = {"layernorm": ("scale", "shift"), "torch-layernorm": ("weight", "bias")}
BOOK_EPS = 1e-5  # the book's LayerNorm hard-codes it


def standalone(
    tensors: dict[str, torch.Tensor], keep_shared: frozenset[str] = frozenset()
) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors of their own: a tied head becomes a copy, and no
    tensor is a view into another's storage (safetensors refuses shared storage; torch.save
    would store the whole shared storage)."""
    seen: set[int] = set()
    out = {}
    for key, tensor in tensors.items():
        t = tensor.detach().to("cpu").contiguous()
        if key.rsplit(".", 1)[-1] not in keep_shared:
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
                t = t.clone()
            seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


# What each target has, for the error that names what it lacks.
TARGETS = {
    "gpt2": (
        "GPT-2",
        "multihead/sdpa attention without qk_norm, layernorm or torch-layernorm placed pre, "
        "learned positions and gelu, gelu-exact or relu",
    ),
    "book": (
        "the book's GPT",
        "multihead attention without qk_norm, layernorm (eps 1e-5) placed pre, learned "
        "positions and gelu",
    ),
}


def exportable(source: Any, target: str) -> tuple[ModelConfig, StateDict]:
    """(config, state dict) of a model, checkpoint dict or checkpoint file / run folder that
    `target` ("gpt2" or "book") can represent, its weights checked against its config; else a
    one-line error naming every component the target lacks."""
    config, state = model_and_state(source)
    problems = unrepresentable(config, book=target == "book")
    if problems:
        name, has = TARGETS[target]
        raise ComponentError(f"{name} cannot represent {', '.join(problems)}; it has {has}")
    check_fits(config, state)
    return with_zero_biases(config, state)


def with_zero_biases(config: ModelConfig, state: StateDict) -> tuple[ModelConfig, StateDict]:
    """(config, state) of the same function with every bias and norm shift GPT-2's and the
    book's layouts hold: a model built with model.bias = false (or a LayerNorm with bias =
    false) has none, so they come as zeros (a zero bias or shift adds nothing), under a config
    with biases (qkv biases only where the model has them). A model
    with all its biases comes back as it is."""
    norm, options = split_choice(config.norm)
    if config.bias and options.get("bias", True):
        return config, state
    options.pop("bias", None)
    full = replace(
        config,
        bias=True,
        qkv_bias=config.qkv_bias and config.bias,
        norm={"name": norm, **options} if options else norm,
    )
    like = state["tok_emb.weight"]  # the checkpoint's dtype and device
    filled = {
        key: state[key] if key in state else like.new_zeros(want.shape)
        for key, want in meta_state_dict(full).items()
    }
    return full, filled


def unrepresentable(config: ModelConfig, *, book: bool) -> list[str]:
    """The config's components that GPT-2 (or the book's GPT) has no equivalent of."""
    problems = []
    attention, att_options = split_choice(config.attention)
    if attention not in ("multihead", "sdpa") or any(att_options.values()):
        problems.append(f"attention {label(config.attention)}")
    norm, norm_options = split_choice(config.norm)
    extra = {k for k, v in norm_options.items() if k != "eps" and not (k == "bias" and v is False)}
    if (
        norm not in LAYERNORM_PARAMS
        or extra
        or (book and norm_options.get("eps", BOOK_EPS) != BOOK_EPS)
    ):
        problems.append(f"norm {label(config.norm)}")
    if config.norm_placement != "pre":
        problems.append(f"norm_placement {config.norm_placement!r}")
    if config.logit_softcap:
        problems.append(f"logit_softcap {config.logit_softcap:g}")
    positional, pos_options = split_choice(config.positional)
    if positional != "learned" or pos_options:
        problems.append(f"positional {label(config.positional)}")
    activation, act_options = split_choice(config.activation)
    allowed = ("gelu",) if book else tuple(TO_HF_ACTIVATION)
    if activation not in allowed or act_options:
        problems.append(f"activation {label(config.activation)}")
    return problems


def model_and_state(source: Any) -> tuple[ModelConfig, StateDict]:
    """(ModelConfig, state dict) of a GPT module, a checkpoint dict, or a checkpoint file /
    run folder."""
    if hasattr(source, "state_dict") and hasattr(source, "config"):
        return source.config, source.state_dict()
    if isinstance(source, str | os.PathLike):
        source = read_checkpoint(locate_checkpoint(source)[0])
    if not (isinstance(source, dict) and {"model", "config"} <= set(source)):
        raise DataError("give a model, a checkpoint dict {'model', 'config'} or a checkpoint file")
    config = source["config"]
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    state = source["model"]
    assert isinstance(config, ModelConfig)
    return config, state
