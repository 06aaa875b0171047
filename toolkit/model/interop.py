"""Weights in and out of the toolkit: Hugging Face GPT-2 folders and the book's state dicts.

    import_hf_gpt2(folder)          -> (ModelConfig, state_dict)  config.json + model.safetensors
                                                                   (or pytorch_model.bin)
    import_book(path, n_heads=...)  -> (ModelConfig, state_dict)  the book's torch.save(state_dict)
    export_hf_gpt2(source, folder)  writes config.json + model.safetensors for GPT2LMHeadModel
    export_book(source, path)       writes the book's state dict (att.mask buffers included)
    save_checkpoint(config, state_dict, path)   {"model", "config"}, atomically
    load_imported(config, state_dict, plugins)          -> a GPT with those weights (strict)

and the commands `ablate import` and `ablate export` (add_parser / cmd_import / cmd_export).

The names line up because the toolkit's GPT uses the book's module names. GPT-2 differs in
three ways that the mapping undoes: its Conv1D layers store weights transposed relative to
nn.Linear ((in, out) rather than (out, in)); one c_attn layer holds the query, key and value
projections side by side (in that order along its 3d output axis); and its head is tied to the
token embedding (lm_head may be absent from the file). The imported model is the toolkit's
`sdpa` attention (the book's multi-head maths, fused), the book's `layernorm` with GPT-2's eps,
`gelu` (the tanh approximation, GPT-2's "gelu_new"), learned positions, pre-norm blocks.

Reading is frugal: model.safetensors is memory-mapped and read one tensor at a time
(safetensors' safe_open), pytorch_model.bin is loaded with torch.load(mmap=True,
weights_only=True), so there is never a second full copy of the weights besides the result.
Only tensors and plain data are ever unpickled.

What cannot be exported is refused with one line naming the components: GPT-2 (and the book)
have multi-head attention without qk_norm, LayerNorm before each sub-block, learned positions and
a 4x feed-forward with GELU (GPT-2 also takes exact GELU and ReLU). A model without qkv biases
is exported exactly, with zero biases.

Not here: evaluation (evaluate.py), training from imported weights (model.init_from, spec.py),
other Hugging Face architectures, sharded exports, tokenizer files. torch, numpy and
safetensors are imported on first use, so building the command line parser stays cheap.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.api.registry import split_choice
from toolkit.errors import ComponentError, DataError, ToolkitError, one_line
from toolkit.model.checkpoint import check_fits, load_tensors, locate_checkpoint, read_checkpoint
from toolkit.names import label

if TYPE_CHECKING:
    import torch
    from torch import nn

    from toolkit.model.config import ModelConfig

    StateDict = dict[str, torch.Tensor]

# GPT-2's widths and their head counts (gpt2, -medium, -large, -xl): a book state dict does not
# record n_heads, but these four sizes do.
GPT2_HEADS = {768: 12, 1024: 16, 1280: 20, 1600: 25}
# Hugging Face activation_function -> the toolkit's activation; gelu_pytorch_tanh is the same
# tanh approximation as gelu_new, computed by torch.
HF_ACTIVATIONS = {
    "gelu_new": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "gelu": "gelu-exact",
    "relu": "relu",
}
TO_HF_ACTIVATION = {"gelu": "gelu_new", "gelu-exact": "gelu", "relu": "relu"}
# Norm components with LayerNorm's maths, and the names of their two parameters.
LAYERNORM_PARAMS = {"layernorm": ("scale", "shift"), "torch-layernorm": ("weight", "bias")}
BOOK_EPS = 1e-5  # the book's LayerNorm hard-codes it
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def infer_n_heads(emb_dim: int) -> int | None:
    """GPT-2's head count for its widths (768 -> 12, 1024 -> 16, 1280 -> 20, 1600 -> 25)."""
    return GPT2_HEADS.get(emb_dim)


# -- Hugging Face GPT-2 -> toolkit ----------------------------------------------------------
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
    from toolkit.model.config import ModelConfig

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
    if hf.get("n_inner") not in (None, 4 * emb):
        problems.append(f"n_inner {hf['n_inner']} (the toolkit's feed-forward is 4 x n_embd)")
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
    )


Take = Callable[[str], "torch.Tensor"]


@contextlib.contextmanager
def _hf_tensors(folder: Path) -> Iterator[tuple[Path, list[str], Take]]:
    """(the weights file, its tensor names, a function reading one tensor by name)."""
    single, index, binary = (folder / name for name in HF_WEIGHTS)
    if single.is_file() or index.is_file():
        try:
            from safetensors import safe_open
        except ImportError:
            raise DataError(
                f"{folder} holds safetensors weights; install safetensors (pip install "
                f"safetensors) to read them"
            ) from None
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
        state[ours + "ff.layers.0.weight"] = linear(h + "mlp.c_fc.weight", d, 4 * d)
        state[ours + "ff.layers.0.bias"] = get(h + "mlp.c_fc.bias", (4 * d,))
        state[ours + "ff.layers.2.weight"] = linear(h + "mlp.c_proj.weight", 4 * d, d)
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


# -- the book's GPT -> toolkit --------------------------------------------------------------
def import_book(
    path: str | os.PathLike[str], *, n_heads: int | None = None, drop_rate: float = 0.1
) -> tuple[ModelConfig, StateDict]:
    """Read a state dict saved from the book's GPTModel (torch.save(model.state_dict(), ...),
    or the book's {"model_state_dict": ..., "optimizer_state_dict": ...}). Sizes come from the
    shapes; n_heads from GPT-2's widths or the argument. The att.mask buffers are dropped."""
    from toolkit.model.config import ModelConfig

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
    expected = _expected_shapes(config)
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


def _expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The state dict of the model a config builds, as {name: shape}, computed on the meta
    device (nothing allocated)."""
    import torch

    from toolkit.model.gpt import build_model

    with torch.device("meta"):
        model = build_model(config)
    return {k: tuple(t.shape) for k, t in model.state_dict().items()}


# -- toolkit -> Hugging Face GPT-2 / the book -----------------------------------------------
def export_hf_gpt2(
    source: nn.Module | dict[str, Any] | str | os.PathLike[str], folder: str | os.PathLike[str]
) -> Path:
    """Write config.json and model.safetensors that transformers.GPT2LMHeadModel.from_pretrained
    loads, from a model, a checkpoint dict or a checkpoint file / run folder. Returns folder."""
    import torch

    config, state = _source(source)
    problems = _unrepresentable(config, book=False)
    if problems:
        raise ComponentError(
            f"GPT-2 cannot represent {', '.join(problems)}; it has multihead/sdpa attention "
            f"without qk_norm, layernorm or torch-layernorm placed pre, learned positions and "
            f"gelu, gelu-exact or relu"
        )
    check_fits(config, state)

    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ToolkitError(
            "exporting to hf-gpt2 needs safetensors: pip install safetensors"
        ) from None
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
    tensors = _standalone(tensors)

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
        "n_inner": None,
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
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "model.safetensors"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".model.", suffix=".safetensors.tmp")
    os.close(fd)
    try:
        # Streamed to a temp file, then renamed: no in-memory copy of the file, no half file.
        save_file(tensors, tmp, metadata={"format": "pt"})
        os.chmod(tmp, 0o644)
        os.replace(tmp, weights)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    from toolkit.files import write_json

    write_json(folder / "config.json", hf_config)
    return folder


def export_book(
    source: nn.Module | dict[str, Any] | str | os.PathLike[str], path: str | os.PathLike[str]
) -> dict[str, Any]:
    """Write the book's state dict (its names, the att.mask buffers, an untied out_head) with
    torch.save, atomically. Returns the book's config dict (GPT_CONFIG_124M's keys) to build
    its GPTModel with."""
    import torch

    config, state = _source(source)
    problems = _unrepresentable(config, book=True)
    if problems:
        raise ComponentError(
            f"the book's GPT cannot represent {', '.join(problems)}; it has multihead "
            f"attention without qk_norm, layernorm (eps 1e-5) placed pre, learned positions "
            f"and gelu"
        )
    check_fits(config, state)
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
    out = _standalone(out, keep_shared=frozenset({"mask"}))
    buffer = io.BytesIO()
    torch.save(out, buffer)
    from toolkit.files import write_atomic

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


def _standalone(
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


def _unrepresentable(config: ModelConfig, *, book: bool) -> list[str]:
    """The config's components that GPT-2 (or the book's GPT) has no equivalent of."""

    problems = []
    attention, att_options = split_choice(config.attention)
    if attention not in ("multihead", "sdpa") or any(att_options.values()):
        problems.append(f"attention {label(config.attention)}")
    norm, norm_options = split_choice(config.norm)
    extra = set(norm_options) - {"eps"}
    if (
        norm not in LAYERNORM_PARAMS
        or extra
        or (book and norm_options.get("eps", BOOK_EPS) != BOOK_EPS)
    ):
        problems.append(f"norm {label(config.norm)}")
    if config.norm_placement != "pre":
        problems.append(f"norm_placement {config.norm_placement!r}")
    positional, pos_options = split_choice(config.positional)
    if positional != "learned" or pos_options:
        problems.append(f"positional {label(config.positional)}")
    activation, act_options = split_choice(config.activation)
    allowed = ("gelu",) if book else tuple(TO_HF_ACTIVATION)
    if activation not in allowed or act_options:
        problems.append(f"activation {label(config.activation)}")
    return problems


def _source(source: Any) -> tuple[ModelConfig, StateDict]:
    """(ModelConfig, state dict) of a GPT module, a checkpoint dict, or a checkpoint file /
    run folder."""
    from toolkit.model.config import ModelConfig

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


__all__ = [
    "GPT2_HEADS",
    "export_book",
    "export_hf_gpt2",
    "hf_config_to_model_config",
    "import_book",
    "import_hf_gpt2",
    "infer_n_heads",
]
