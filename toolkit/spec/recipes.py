"""Recipes: named sets of component choices that make a model of a kind, beside the presets that
make it a size. `[model] recipe = "modern"` with `preset = "gpt2-small"` is a modern model at
GPT-2 small's size; any key the spec sets itself wins over both.

A recipe fills the [model] and [train] keys the spec leaves out, before a variant's overrides
apply (so `model.attention.qk_norm = false` changes the recipe's attention, not the default
one), and over a preset's non-size keys (GPT-2's presets tie the head and keep biases; the
modern recipe does neither). Not here: the presets (toolkit.model.config) and checking the
values (validate.py checks a recipe's keys as if the spec had written them).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from toolkit.api.registry import suggest
from toolkit.errors import SpecError


@dataclass(frozen=True)
class Recipe:
    description: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    "gpt2": Recipe(
        "the toolkit's defaults, GPT-2's design: learned positions, LayerNorm, GELU, "
        "multi-head attention, biases, dropout 0.1, AdamW with warm-up and cosine decay",
        model={
            "positional": "learned",
            "norm": "layernorm",
            "activation": "gelu",
            "attention": "multihead",
            "bias": True,
            "drop_rate": 0.1,
        },
        train={"optimizer": "adamw", "schedule": "cosine"},
    ),
    "modern": Recipe(
        "Llama-style: RoPE, RMSNorm, SwiGLU, QK-norm, no biases, an untied head, no dropout, "
        "AdamW with warm-up, stable and decay (WSD)",
        model={
            "positional": "rope",
            "norm": "rmsnorm",
            "activation": "swiglu",
            "attention": {"name": "sdpa", "qk_norm": True},
            "bias": False,
            "qkv_bias": False,
            "tie_embeddings": False,
            "drop_rate": 0.0,
        },
        train={"optimizer": "adamw", "schedule": "wsd"},
    ),
}


def with_recipe(doc: dict[str, Any], name: Any, where: str) -> dict[str, Any]:
    """The spec document (sections as tomllib gives them) with the recipe's keys filled in
    where the document leaves them out; a copy. `name` None: the document as it is."""
    if name is None:
        return doc
    if not isinstance(name, str) or name not in RECIPES:
        raise SpecError(
            f"{where} [model] unknown recipe {name!r}{suggest(str(name), RECIPES)}; choose one "
            f"of: {', '.join(RECIPES)}"
        )
    recipe = RECIPES[name]
    out = dict(doc)
    for section, keys in (("model", recipe.model), ("train", recipe.train)):
        out[section] = {**copy.deepcopy(keys), **doc.get(section, {})}
    return out
