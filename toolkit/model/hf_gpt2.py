"""Hugging Face GPT-2 folders in and out of the toolkit.

    import_hf_gpt2(folder)          -> (ModelConfig, state_dict)  config.json + model.safetensors
                                                                   (or pytorch_model.bin)
    export_hf_gpt2(source, folder)  writes config.json + model.safetensors for GPT2LMHeadModel

GPT-2 differs from the toolkit's names in three ways that the mapping undoes: its Conv1D layers
store weights transposed relative to nn.Linear ((in, out) rather than (out, in)); one c_attn
layer holds the query, key and value projections side by side (in that order along its 3d
output axis); and its head is tied to the token embedding (lm_head may be absent from the
file). The imported model is the toolkit's `sdpa` attention (the book's multi-head maths,
fused), the book's `layernorm` with GPT-2's eps, `gelu` (the tanh approximation, GPT-2's
"gelu_new"), learned positions, pre-norm blocks. A model without qkv biases is exported exactly,
with zero biases; so is one without any bias (model.bias = false): GPT2LMHeadModel always has
them, so its linear biases and LayerNorm shifts are written as zeros, which add nothing.

Reading is frugal: model.safetensors is memory-mapped and read one tensor at a time
(safetensors' safe_open), pytorch_model.bin is loaded with torch.load(mmap=True,
weights_only=True), so there is never a second full copy of the weights besides the result.
Not here: other Hugging Face architectures, sharded exports, tokenizer files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from toolkit.api.registry import split_choice
from toolkit.errors import ComponentError, DataError, one_line
from toolkit.files import atomic_path, write_json
from toolkit.model.checkpoint import StateDict, load_tensors
from toolkit.model.config import ModelConfig
from toolkit.model.interop import (
    LAYERNORM_PARAMS,
    TO_HF_ACTIVATION,
    exportable,
    standalone,
)

# Hugging Face activation_function -> the toolkit's activation; gelu_pytorch_tanh is the same
# tanh approximation as gelu_new, computed by torch.
HF_ACTIVATIONS = {
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "gelu": "gelu-exact",
    "relu": "relu",
}
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def import_hf_gpt2(folder: str | os.PathLike[str]) -> tuple[ModelConfig, StateDict]:
    """Read a Hugging Face GPT-2 folder (config.json and model.safetensors, a sharded
    model.safetensors.index.json, or pytorch_model.bin) as (ModelConfig, toolkit state dict)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise DataError(
            f"{folder} {what}; give the folder holding a GPT-2 config.json and model.safetensors"
        )
    hf = _read_json(folder / "config.json", "a Hugging Face GPT-2 config")
    config = hf_config_to_model_config(hf, folder / "config.json")
    with _hf_tensors(folder) as (source, keys, take):
        state = _from_hf(config, source, keys, take)
    return config, state


def hf_config_to_model_config(hf: dict[str, Any], where: Path | str = "config.json") -> ModelConfig:
    """A GPT-2 config.json's keys as a ModelConfig; what the toolkit cannot build is an error."""
    if hf.get("model_type") != "gpt2":
        raise DataError(
            f"{where}: model_type is {hf.get('model_type')!r}, not 'gpt2'; only GPT-2 "
            f"checkpoints (GPT2LMHeadModel) can be imported"
        )

    def get(key: str, default: Any, kind: type | tuple[type, ...]) -> Any:
        value = hf.get(key, default)
        if value is None:
            value = default
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise DataError(
                f"{where}: {key} is {value!r}, not a {getattr(kind, '__name__', 'number')}"
            )
        return value

    number = (int, float)
    emb, heads = get("n_embd", 768, int), get("n_head", 12, int)
    context = get("n_positions", hf.get("n_ctx", 1024), int)
    sizes = {"vocab_size": get("vocab_size", 50257, int), "n_positions": context, "n_embd": emb,
             "n_head": heads, "n_layer": get("n_layer", 12, int)}  # fmt: skip
    bad = [f"{k} = {v}" for k, v in sizes.items() if v < 1]
    if bad or emb % heads:
        raise DataError(
            f"{where}: {', '.join(bad) or f'n_embd {emb} is not divisible by n_head {heads}'}; "
            f"this is not a valid GPT-2 config"
        )
    activation = get("activation_function", "gelu_new", str)
    problems = []
    if activation not in HF_ACTIVATIONS:
        problems.append(
            f"activation_function {activation!r} (supported: {', '.join(HF_ACTIVATIONS)})"
        )
    inner = hf.get("n_inner")
    if inner is not None and (isinstance(inner, bool) or not isinstance(inner, int) or inner < 1):
        problems.append(f"n_inner {inner!r} (a feed-forward width is a whole number >= 1)")
    if hf.get("scale_attn_weights", True) is not True:
        problems.append("scale_attn_weights = false")
    if hf.get("scale_attn_by_inverse_layer_idx", False):
        problems.append("scale_attn_by_inverse_layer_idx = true")
    if hf.get("add_cross_attention", False):
        problems.append("add_cross_attention = true")
    if problems:
        raise ComponentError(f"{where}: the toolkit has no equivalent of {'; '.join(problems)}")
    eps = float(get("layer_norm_epsilon", 1e-5, number))
    return ModelConfig(
        vocab_size=sizes["vocab_size"],
        context_length=context,
        emb_dim=emb,
        n_heads=heads,
        n_layers=sizes["n_layer"],
        drop_rate=float(get("resid_pdrop", 0.1, number)),
        drop_rate_emb=float(get("embd_pdrop", 0.1, number)),
        drop_rate_attn=float(get("attn_pdrop", 0.1, number)),
        qkv_bias=True,
        tie_embeddings=bool(get("tie_word_embeddings", True, bool)),
        norm_placement="pre",
        attention="sdpa",
        norm={"name": "layernorm", "eps": eps},
        activation=HF_ACTIVATIONS[activation],
        positional="learned",
        init="default",
        ffn_hidden=None if inner in (None, 4 * emb) else inner,
    )


Take = Callable[[str], "torch.Tensor"]


@contextlib.contextmanager
def _hf_tensors(folder: Path) -> Iterator[tuple[Path, list[str], Take]]:
    """(the weights file, its tensor names, a function reading one tensor by name)."""
    single, index, binary = (folder / name for name in HF_WEIGHTS)
    if single.is_file() or index.is_file():
        if single.is_file():
            shards = {single: None}
        else:
            weight_map = _read_json(index, "a safetensors index").get("weight_map")
            if not isinstance(weight_map, dict):
                raise DataError(f"{index} has no weight_map; it is not a safetensors index")
            shards = {folder / str(name): None for name in dict.fromkeys(weight_map.values())}
        with contextlib.ExitStack() as stack:
            owner: dict[str, Any] = {}
            for path in shards:
                try:
                    handle = stack.enter_context(safe_open(str(path), framework="pt", device="cpu"))
                except Exception as exc:  # missing shard, not a safetensors file, truncated
                    raise DataError(
                        f"cannot read {path} ({one_line(exc)}); it is not a complete "
                        f"safetensors file"
                    ) from None
                for key in handle.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
                    owner[key] = handle
            yield (
                (single if single.is_file() else index),
                list(owner),
                lambda k: owner[k].get_tensor(k),
            )
        return
    if binary.is_file():
        state = load_tensors(binary)
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise DataError(f"{binary} does not hold a state dict")
        yield binary, list(state), state.__getitem__
        return
    present = ", ".join(sorted(p.name for p in folder.iterdir())[:6]) or "nothing"
    raise DataError(
        f"{folder} has no model.safetensors or pytorch_model.bin (it holds {present}); give a "
        f"folder written by save_pretrained"
    )


def _from_hf(config: ModelConfig, source: Path, keys: list[str], take: Take) -> StateDict:
    """Map GPT-2's tensors to the toolkit's names, transposing Conv1D weights and splitting
    c_attn; every tensor is checked against the config's shapes."""
    prefix = "transformer." if any(k.startswith("transformer.") for k in keys) else ""
    names = set(keys)
    d, v, n = config.emb_dim, config.vocab_size, config.context_length
    inner = config.ffn_hidden or 4 * d
    layers = {
        int(m.group(1)) for k in keys if (m := re.match(rf"{re.escape(prefix)}h\.(\d+)\.", k))
    }
    if layers != set(range(config.n_layers)):
        found = max(layers) + 1 if layers else 0
        raise DataError(
            f"{source} holds {found} transformer blocks but config.json says n_layer = "
            f"{config.n_layers}; the weights and the config do not belong together"
        )

    def get(name: str, shape: tuple[int, ...], *, bare: bool = False) -> torch.Tensor:
        key = name if bare else prefix + name
        if key not in names:
            raise DataError(f"{source} lacks tensor {key}; it is not a GPT-2 checkpoint")
        tensor = take(key)
        if tuple(tensor.shape) != shape:
            raise DataError(
                f"{source}: tensor {key} has shape {tuple(tensor.shape)}, but config.json "
                f"implies {shape}; the weights and the config do not belong together"
            )
        return tensor

    def linear(name: str, d_in: int, d_out: int) -> torch.Tensor:
        # Conv1D stores (in, out); nn.Linear wants (out, in). contiguous(): a copy of this one
        # tensor, so the checkpoint does not hold transposed views.
        return get(name, (d_in, d_out)).t().contiguous()

    state: StateDict = {}
    wte = get("wte.weight", (v, d))
    state["tok_emb.weight"] = wte
    state["pos_emb.weight"] = get("wpe.weight", (n, d))
    for i in range(config.n_layers):
        h, ours = f"h.{i}.", f"trf_blocks.{i}."
        for hf_norm, our_norm in (("ln_1", "norm1"), ("ln_2", "norm2")):
            state[ours + f"{our_norm}.scale"] = get(h + f"{hf_norm}.weight", (d,))
            state[ours + f"{our_norm}.shift"] = get(h + f"{hf_norm}.bias", (d,))
        qkv = linear(h + "attn.c_attn.weight", d, 3 * d)  # (3d, d): queries, keys, values
        qkv_bias = get(h + "attn.c_attn.bias", (3 * d,))
        for j, part in enumerate(("W_query", "W_key", "W_value")):
            state[ours + f"att.{part}.weight"] = qkv[j * d : (j + 1) * d]
            state[ours + f"att.{part}.bias"] = qkv_bias[j * d : (j + 1) * d]
        state[ours + "att.out_proj.weight"] = linear(h + "attn.c_proj.weight", d, d)
        state[ours + "att.out_proj.bias"] = get(h + "attn.c_proj.bias", (d,))
        state[ours + "ff.layers.0.weight"] = linear(h + "mlp.c_fc.weight", d, inner)
        state[ours + "ff.layers.0.bias"] = get(h + "mlp.c_fc.bias", (inner,))
        state[ours + "ff.layers.2.weight"] = linear(h + "mlp.c_proj.weight", inner, d)
        state[ours + "ff.layers.2.bias"] = get(h + "mlp.c_proj.bias", (d,))
    state["final_norm.scale"] = get("ln_f.weight", (d,))
    state["final_norm.shift"] = get("ln_f.bias", (d,))
    if config.tie_embeddings:
        state["out_head.weight"] = wte  # one tensor, as in the tied model's own state dict
    else:
        if "lm_head.weight" not in names:
            raise DataError(
                f"{source} lacks lm_head.weight, which an untied model (tie_word_embeddings = "
                f"false) needs"
            )
        state["out_head.weight"] = get("lm_head.weight", (v, d), bare=True)
    return state


def export_hf_gpt2(
    source: nn.Module | dict[str, Any] | str | os.PathLike[str], folder: str | os.PathLike[str]
) -> Path:
    """Write config.json and model.safetensors that transformers.GPT2LMHeadModel.from_pretrained
    loads, from a model, a checkpoint dict or a checkpoint file / run folder. Returns folder.
    Biases a model lacks (qkv_bias = false, model.bias = false) are written as zeros: GPT-2
    always has them, and a zero bias computes the same function."""
    config, state = exportable(source, "gpt2")

    d = config.emb_dim
    norm_name, norm_options = split_choice(config.norm)
    scale, shift = LAYERNORM_PARAMS[norm_name]

    def conv1d(key: str) -> torch.Tensor:
        return state[key].t()  # (out, in) -> (in, out)

    p = "transformer."
    tensors: dict[str, torch.Tensor] = {
        p + "wte.weight": state["tok_emb.weight"],
        p + "wpe.weight": state["pos_emb.weight"],
    }
    for i in range(config.n_layers):
        h, ours = f"{p}h.{i}.", f"trf_blocks.{i}."
        for hf_norm, our_norm in (("ln_1", "norm1"), ("ln_2", "norm2")):
            tensors[h + f"{hf_norm}.weight"] = state[ours + f"{our_norm}.{scale}"]
            tensors[h + f"{hf_norm}.bias"] = state[ours + f"{our_norm}.{shift}"]
        parts = [ours + f"att.{name}" for name in ("W_query", "W_key", "W_value")]
        tensors[h + "attn.c_attn.weight"] = torch.cat([state[k + ".weight"] for k in parts]).t()
        if config.qkv_bias:
            tensors[h + "attn.c_attn.bias"] = torch.cat([state[k + ".bias"] for k in parts])
        else:  # exactly the same model: a zero bias adds nothing
            weight = state[parts[0] + ".weight"]
            tensors[h + "attn.c_attn.bias"] = weight.new_zeros(3 * d)
        tensors[h + "attn.c_proj.weight"] = conv1d(ours + "att.out_proj.weight")
        tensors[h + "attn.c_proj.bias"] = state[ours + "att.out_proj.bias"]
        tensors[h + "mlp.c_fc.weight"] = conv1d(ours + "ff.layers.0.weight")
        tensors[h + "mlp.c_fc.bias"] = state[ours + "ff.layers.0.bias"]
        tensors[h + "mlp.c_proj.weight"] = conv1d(ours + "ff.layers.2.weight")
        tensors[h + "mlp.c_proj.bias"] = state[ours + "ff.layers.2.bias"]
    tensors[p + "ln_f.weight"] = state[f"final_norm.{scale}"]
    tensors[p + "ln_f.bias"] = state[f"final_norm.{shift}"]
    if not config.tie_embeddings:
        tensors["lm_head.weight"] = state["out_head.weight"]
    tensors = standalone(tensors)

    dtype = str(state["tok_emb.weight"].dtype).removeprefix("torch.")
    eot = 50256 if config.vocab_size >= 50257 else None  # GPT-2's <|endoftext|>
    hf_config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_embd": d,
        "n_layer": config.n_layers,
        "n_head": config.n_heads,
        "n_inner": config.ffn_hidden,  # None: 4 x n_embd
        "activation_function": TO_HF_ACTIVATION[split_choice(config.activation)[0]],
        "layer_norm_epsilon": float(norm_options.get("eps", 1e-5)),
        "resid_pdrop": config.dropout("resid"),
        "embd_pdrop": config.dropout("emb"),
        "attn_pdrop": config.dropout("attn"),
        "tie_word_embeddings": bool(config.tie_embeddings),
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "initializer_range": 0.02,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "dtype": dtype,
    }
    folder = Path(folder).expanduser()
    # Streamed to a temp file, then renamed: no in-memory copy of the file, no half file.
    with atomic_path(folder / "model.safetensors", suffix=".safetensors.tmp") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    write_json(folder / "config.json", hf_config)
    return folder


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} not found; the folder does not hold {what}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} ({one_line(exc, 200)})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path} does not hold {what}")
    return value
