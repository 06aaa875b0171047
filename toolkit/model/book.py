"""The book's GPT ("Build a Large Language Model From Scratch") in and out of the toolkit.

    import_book(path, n_heads=...)  -> (ModelConfig, state_dict)  the book's torch.save(state_dict)
    export_book(source, path)       writes the book's state dict (att.mask buffers included)

The toolkit's GPT uses the book's module names, so the state dicts line up name for name; a
book state dict does not record n_heads, which GPT-2's four widths imply (or the caller gives).
A model built with model.bias = false is exported exactly, with zero biases and norm shifts
where the book's layout has them (interop.exportable fills them in).
Not here: the toolkit's own checkpoint format (checkpoint.py).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolkit.api.registry import split_choice
from toolkit.errors import DataError
from toolkit.files import write_atomic
from toolkit.model.checkpoint import StateDict, load_tensors, meta_state_dict
from toolkit.model.config import ModelConfig, value_problem
from toolkit.model.interop import LAYERNORM_PARAMS, exportable, standalone

# GPT-2's widths and their head counts (gpt2, -medium, -large, -xl): a book state dict does not
# record n_heads, but these four sizes do.
GPT2_HEADS = {768: 12, 1024: 16, 1280: 20, 1600: 25}


def infer_n_heads(emb_dim: int) -> int | None:
    """GPT-2's head count for its widths (768 -> 12, 1024 -> 16, 1280 -> 20, 1600 -> 25)."""
    return GPT2_HEADS.get(emb_dim)


def import_book(
    path: str | os.PathLike[str], *, n_heads: int | None = None, drop_rate: float = 0.1
) -> tuple[ModelConfig, StateDict]:
    """Read a state dict saved from the book's GPTModel (torch.save(model.state_dict(), ...),
    or the book's {"model_state_dict": ..., "optimizer_state_dict": ...}). Sizes come from the
    shapes; n_heads from GPT-2's widths or the argument. The att.mask buffers are dropped."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise DataError(f"{path} {what}; give the .pth file the book's torch.save wrote")
    state = load_tensors(path)
    if isinstance(state, dict) and isinstance(state.get("model_state_dict"), dict):
        state = state["model_state_dict"]
    if isinstance(state, dict) and {"model", "config"} <= set(state):
        raise DataError(f"{path} is already a toolkit checkpoint; use it as it is")
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise DataError(f"{path} does not hold a state dict")
    # torch.compile'd models save their names under _orig_mod.
    state = {k.removeprefix("_orig_mod."): t for k, t in state.items()}
    for key in ("tok_emb.weight", "pos_emb.weight", "trf_blocks.0.att.W_query.weight"):
        if key not in state:
            raise DataError(f"{path} lacks {key}; it is not a state dict of the book's GPTModel")
    vocab, emb = _shape(state, "tok_emb.weight", path, 2)
    context = _shape(state, "pos_emb.weight", path, 2)[0]
    n_layers = 0
    while f"trf_blocks.{n_layers}.att.W_query.weight" in state:
        n_layers += 1
    heads = n_heads if n_heads is not None else infer_n_heads(emb)
    if heads is None:
        raise DataError(
            f"{path}: emb_dim {emb} is not one of GPT-2's widths, so the number of attention "
            f"heads cannot be inferred; pass it with --n-heads (n_heads=...)"
        )
    if heads < 1 or emb % heads:
        raise DataError(f"{path}: emb_dim {emb} is not divisible by n_heads {heads}")
    config = ModelConfig(
        vocab_size=vocab,
        context_length=context,
        emb_dim=emb,
        n_heads=heads,
        n_layers=n_layers,
        drop_rate=drop_rate,
        qkv_bias="trf_blocks.0.att.W_query.bias" in state,
        tie_embeddings=False,
        norm_placement="pre",
        attention="multihead",
        norm="layernorm",
        activation="gelu",
        positional="learned",
        init="default",
    )
    problem = value_problem(config)  # drop_rate, the one size given rather than read
    if problem:
        raise DataError(f"{path}: {problem}")
    expected = {k: tuple(t.shape) for k, t in meta_state_dict(config).items()}
    kept = {k: t for k, t in state.items() if not k.endswith(".att.mask")}
    missing, extra = sorted(set(expected) - set(kept)), sorted(set(kept) - set(expected))
    if missing or extra:
        names = ", ".join((missing or extra)[:3])
        raise DataError(
            f"{path} {'lacks' if missing else 'has unexpected'} tensors ({names}); it is not a "
            f"state dict of the book's GPTModel"
        )
    for key, shape in expected.items():
        if tuple(kept[key].shape) != shape:
            raise DataError(
                f"{path}: {key} has shape {tuple(kept[key].shape)}, expected {shape} for "
                f"emb_dim {emb}, vocab {vocab}, context {context}"
            )
    return config, {k: kept[k] for k in expected}


def _shape(state: dict[str, Any], key: str, path: Path, ndim: int) -> tuple[int, ...]:
    tensor = state[key]
    if getattr(tensor, "ndim", None) != ndim:
        raise DataError(f"{path}: {key} is not a {ndim}-d tensor")
    return tuple(tensor.shape)


def export_book(
    source: nn.Module | dict[str, Any] | str | os.PathLike[str], path: str | os.PathLike[str]
) -> dict[str, Any]:
    """Write the book's state dict (its names, the att.mask buffers, an untied out_head) with
    torch.save, atomically. Returns the book's config dict (GPT_CONFIG_124M's keys) to build
    its GPTModel with. A model without biases (model.bias = false) gets zero ones: the same
    function, as the book's GPTModel always has them."""
    config, state = exportable(source, "book")
    scale, shift = LAYERNORM_PARAMS[split_choice(config.norm)[0]]
    out: dict[str, torch.Tensor] = {}
    mask = torch.triu(torch.ones(config.context_length, config.context_length), diagonal=1)
    for key in _book_names(config):
        if key.endswith(".att.mask"):
            out[key] = mask  # one tensor; torch.save stores it once
            continue
        ours = key
        if key.endswith((".scale", ".shift")):
            ours = key.rsplit(".", 1)[0] + "." + (scale if key.endswith(".scale") else shift)
        out[key] = state[ours]
    out = standalone(out, keep_shared=frozenset({"mask"}))
    buffer = io.BytesIO()
    torch.save(out, buffer)
    write_atomic(Path(path).expanduser(), buffer.getvalue())
    return {
        "vocab_size": config.vocab_size,
        "context_length": config.context_length,
        "emb_dim": config.emb_dim,
        "n_heads": config.n_heads,
        "n_layers": config.n_layers,
        "drop_rate": config.drop_rate,
        "qkv_bias": config.qkv_bias,
    }


def _book_names(config: ModelConfig) -> list[str]:
    """The book's GPTModel state dict names, in its order."""
    names = ["tok_emb.weight", "pos_emb.weight"]
    for i in range(config.n_layers):
        b = f"trf_blocks.{i}."
        for part in ("W_query", "W_key", "W_value"):
            names.append(b + f"att.{part}.weight")
            if config.qkv_bias:
                names.append(b + f"att.{part}.bias")
        names += [b + "att.out_proj.weight", b + "att.out_proj.bias", b + "att.mask"]
        names += [b + f"ff.layers.{j}.{w}" for j in (0, 2) for w in ("weight", "bias")]
        names += [b + f"norm{j}.{w}" for j in (1, 2) for w in ("scale", "shift")]
    return [*names, "final_norm.scale", "final_norm.shift", "out_head.weight"]
