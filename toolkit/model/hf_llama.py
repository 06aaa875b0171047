"""Hugging Face Llama folders out of the toolkit: the layout modern variants fit.

    export_hf_llama(source, folder)   writes config.json + model.safetensors that
                                      transformers.LlamaForCausalLM.from_pretrained loads
                                      (Qwen3ForCausalLM for a model with qk_norm)

A toolkit GPT is a Llama when it has RoPE, RMSNorm before each sub-block and at the end, a
SwiGLU feed-forward and no biases. Multi-head, grouped-query and multi-query attention all map
(num_key_value_heads), and so do a tied or untied head. With qk_norm (the `modern` recipe has
it) the same layout plus an RMS norm of each head's queries and keys is Qwen3's, so such a
model is written as Qwen3ForCausalLM. Qwen3 has one eps for every norm: the block norms' is
written, so the query/key norms' 1e-6 becomes it (1e-5 by default), a change of the logits far
below float32 export tolerance (the tests bound it by 1e-4). Everything else is refused with
one line naming it (`llama_problems`).

The one difference in the maths' layout is RoPE's pairing. The toolkit turns dimensions
(2i, 2i+1) of a head together; transformers' Llama turns (i, i + head_dim/2)
(`rotate_half`). Permuting each head's query and key rows to (0, 2, 4, ..., 1, 3, 5, ...)
makes the second pairing compute the first: scores q.k are sums over the same pairs, so the
attention, and every logit, is unchanged. Values and the output projection are not rotated
and keep their order. Not here: importing Llama folders, sharded exports, tokenizer files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from toolkit.api.registry import split_choice
from toolkit.errors import ComponentError
from toolkit.files import atomic_path, write_json
from toolkit.model.checkpoint import check_fits
from toolkit.model.config import ModelConfig
from toolkit.model.interop import model_and_state, standalone
from toolkit.names import label

LLAMA_HAS = (
    "multihead, sdpa, gqa or mqa attention (qk_norm: as Qwen3), rmsnorm placed pre, rope "
    "positions, a swiglu feed-forward, no biases (model.bias = false) and no logit_softcap"
)
LLAMA_ATTENTIONS = ("multihead", "sdpa", "gqa", "mqa")


def llama_problems(config: ModelConfig) -> list[str]:
    """The config's choices that transformers' Llama has no equivalent of."""
    problems = []
    attention, att_options = split_choice(config.attention)
    extra = [k for k, v in att_options.items() if k not in ("n_kv_heads", "qk_norm") and v]
    if attention not in LLAMA_ATTENTIONS or extra:
        problems.append(f"attention {label(config.attention)}")
    norm, norm_options = split_choice(config.norm)
    if norm != "rmsnorm" or set(norm_options) - {"eps"}:
        problems.append(f"norm {label(config.norm)}")
    if config.norm_placement != "pre":
        problems.append(f"norm_placement {config.norm_placement!r}")
    positional, pos_options = split_choice(config.positional)
    # theta is Llama's rope_theta; a partial RoPE (fraction < 1) has no equivalent there.
    extra = {k: v for k, v in pos_options.items() if k != "theta" and (k, v) != ("fraction", 1.0)}
    if positional != "rope" or extra:
        problems.append(f"positional {label(config.positional)}")
    if split_choice(config.activation)[0] != "swiglu":
        problems.append(f"activation {label(config.activation)}")
    if config.bias or config.qkv_bias:
        problems.append("biases (set model.bias = false)")
    if config.logit_softcap:
        problems.append(f"logit_softcap {config.logit_softcap:g}")
    return problems


def rope_pairs_halved(weight: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """Rows of a query or key projection (n_heads * head_dim, d) reordered within each head from
    the toolkit's interleaved RoPE pairs to transformers' halves (see the module docstring)."""
    order = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])
    rows = weight.view(n_heads, head_dim, -1)[:, order]
    return rows.reshape(n_heads * head_dim, -1)


def export_hf_llama(
    source: nn.Module | dict[str, Any] | str | os.PathLike[str], folder: str | os.PathLike[str]
) -> Path:
    """Write config.json and model.safetensors that transformers.LlamaForCausalLM loads
    (Qwen3ForCausalLM when the attention has qk_norm), from a model, a checkpoint dict or a
    checkpoint file / run folder. Returns folder. A model neither can represent is a one-line
    ComponentError naming what it lacks."""
    config, state = model_and_state(source)
    problems = llama_problems(config)
    if problems:
        raise ComponentError(f"Llama cannot represent {', '.join(problems)}; it has {LLAMA_HAS}")
    check_fits(config, state)
    d, hd = config.emb_dim, config.head_dim
    n_kv = state["trf_blocks.0.att.W_key.weight"].shape[0] // hd
    hidden = state["trf_blocks.0.ff.gate.weight"].shape[0]
    qk_norm = "trf_blocks.0.att.q_norm.weight" in state

    tensors: dict[str, torch.Tensor] = {"model.embed_tokens.weight": state["tok_emb.weight"]}
    for i in range(config.n_layers):
        h, ours = f"model.layers.{i}.", f"trf_blocks.{i}."
        att = ours + "att."
        tensors[h + "input_layernorm.weight"] = state[ours + "norm1.weight"]
        tensors[h + "post_attention_layernorm.weight"] = state[ours + "norm2.weight"]
        tensors[h + "self_attn.q_proj.weight"] = rope_pairs_halved(
            state[att + "W_query.weight"], config.n_heads, hd
        )
        tensors[h + "self_attn.k_proj.weight"] = rope_pairs_halved(
            state[att + "W_key.weight"], n_kv, hd
        )
        tensors[h + "self_attn.v_proj.weight"] = state[att + "W_value.weight"]
        if qk_norm:  # gains over head_dim, applied before RoPE: reordered like the rows
            for hf_norm, ours_norm in (("q_norm", "q_norm"), ("k_norm", "k_norm")):
                gain = state[att + f"{ours_norm}.weight"]
                tensors[h + f"self_attn.{hf_norm}.weight"] = rope_pairs_halved(
                    gain[:, None], 1, hd
                ).flatten()
        tensors[h + "self_attn.o_proj.weight"] = state[att + "out_proj.weight"]
        for hf_name, our_name in (("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down")):
            tensors[h + f"mlp.{hf_name}.weight"] = state[ours + f"ff.{our_name}.weight"]
    tensors["model.norm.weight"] = state["final_norm.weight"]
    if not config.tie_embeddings:
        tensors["lm_head.weight"] = state["out_head.weight"]
    tensors = standalone(tensors)

    theta = float(split_choice(config.positional)[1].get("theta", 10000.0))
    eps = float(split_choice(config.norm)[1].get("eps", 1e-5))
    hf_config = {
        "architectures": ["Qwen3ForCausalLM" if qk_norm else "LlamaForCausalLM"],
        "model_type": "qwen3" if qk_norm else "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": d,
        "intermediate_size": hidden,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": n_kv,
        "head_dim": hd,
        "hidden_act": "silu",
        "max_position_embeddings": config.context_length,
        "rms_norm_eps": eps,
        "rope_theta": theta,  # transformers 4.x
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},  # 5.x
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": config.dropout("attn"),
        "tie_word_embeddings": bool(config.tie_embeddings),
        "initializer_range": 0.02,
        "dtype": str(state["tok_emb.weight"].dtype).removeprefix("torch."),
        **({"use_sliding_window": False, "sliding_window": None} if qk_norm else {}),
    }
    folder = Path(folder).expanduser()
    with atomic_path(folder / "model.safetensors", suffix=".safetensors.tmp") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    write_json(folder / "config.json", hf_config)
    return folder
