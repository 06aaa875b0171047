"""[ladder]: every variant at several model sizes, so a comparison can say whether a change
holds as models grow, and what it is worth in compute.

    [ladder]
    sizes = ["nano", "micro", { emb_dim = 192, n_layers = 5, n_heads = 6 }]
    tokens_per_param = 20          # or tokens = 2e6 (every size) or tokens = [1e6, 2e6, 4e6]
    target_flops = 1e15            # extrapolate the compute multiplier to this (optional)
    metric = "val_loss"            # the loss the curves fit; "test_loss" with a test split

A size is a preset's emb_dim, n_layers and n_heads (its context length is not taken: the spec's
context length holds at every size) or a table of those three. `ladder_variants` turns each
variant into one per size, named "VARIANT@micro" (or "VARIANT@d192-L5-h6"), each with the
size's keys and a token budget (train.max_tokens) in place of the spec's budget. With
tokens_per_param, a size's budget is that many tokens per non-embedding parameter of the
baseline at that size (the `params_non_embedding` its runs record: without token and position
embeddings, with an untied head), the same for every variant, so the variants of one size see
the same tokens and each run's compute (its recorded FLOPs) is what the curves are fitted
against. Not here: the fits (toolkit/analysis/curves.py) and the compute multiplier
(toolkit/analysis/scaling.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from toolkit.api.manager import Plugins
from toolkit.errors import SpecError
from toolkit.model.config import PRESETS
from toolkit.model.gpt import count_params
from toolkit.spec.schema import BUDGET_KEYS, Variant, to_model_config
from toolkit.spec.validate import resolve

SIZE_KEYS = ("emb_dim", "n_layers", "n_heads")
METRICS = ("val_loss", "val_bpb", "test_loss", "test_bpb")
OPTIONS = ("sizes", "tokens_per_param", "tokens", "target_flops", "metric")


@dataclass
class Ladder:
    sizes: dict[str, dict[str, int]]  # label -> {emb_dim, n_layers, n_heads}, smallest first
    tokens_per_param: float | None = None
    tokens: list[int] | None = None  # one per size, when given directly
    target_flops: float | None = None
    metric: str = "val_loss"

    def to_dict(self) -> dict[str, Any]:
        return {
            "sizes": self.sizes, "tokens_per_param": self.tokens_per_param,
            "tokens": self.tokens, "target_flops": self.target_flops, "metric": self.metric,
        }  # fmt: skip


def rung_variant(variant: str, size: str) -> str:
    """The name of a variant at one size of the ladder: 'swiglu@micro'."""
    return f"{variant}@{size}"


def _number(value: Any) -> bool:
    """A positive, finite number (not a bool)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def parse_ladder(raw: Any, where: str) -> Ladder:
    """The [ladder] table, checked."""
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: ladder must be a table ([ladder]), got {raw!r}")
    unknown = sorted(set(raw) - set(OPTIONS))
    if unknown:
        raise SpecError(
            f"{where}: [ladder] has no key {unknown[0]!r}; its keys: {', '.join(OPTIONS)}"
        )
    sizes_raw = raw.get("sizes")
    if not isinstance(sizes_raw, list) or len(sizes_raw) < 2:
        raise SpecError(
            f"{where}: [ladder] sizes must list at least 2 sizes (3 or more to fit a curve), e.g. "
            f'sizes = ["nano", "micro", "mini"]; got {sizes_raw!r}'
        )
    sizes: dict[str, dict[str, int]] = {}
    for size in sizes_raw:
        if isinstance(size, str):
            if size not in PRESETS:
                raise SpecError(
                    f"{where}: [ladder] size {size!r} is not a preset; give one of "
                    f"{', '.join(PRESETS)}, or a table {{emb_dim = 192, n_layers = 5, n_heads = 6}}"
                )
            name, keys = size, {k: PRESETS[size][k] for k in SIZE_KEYS}
        elif (
            isinstance(size, dict)
            and set(size) == set(SIZE_KEYS)
            and all(
                isinstance(size[k], int) and not isinstance(size[k], bool) and size[k] >= 1
                for k in SIZE_KEYS
            )
        ):
            keys = {k: size[k] for k in SIZE_KEYS}
            name = f"d{keys['emb_dim']}-L{keys['n_layers']}-h{keys['n_heads']}"
        else:
            raise SpecError(
                f"{where}: [ladder] size {size!r} must be a preset name or a table of whole "
                f"numbers emb_dim, n_layers and n_heads"
            )
        if name in sizes:
            raise SpecError(f"{where}: [ladder] lists size {name!r} twice")
        sizes[name] = keys
    per_param, tokens = raw.get("tokens_per_param"), raw.get("tokens")
    if (per_param is None) == (tokens is None):
        raise SpecError(
            f"{where}: [ladder] needs one budget per size: tokens_per_param = 20, or tokens = "
            f"N (every size) or a list of one N per size"
        )
    if per_param is not None and not _number(per_param):
        raise SpecError(
            f"{where}: [ladder] tokens_per_param must be a positive, finite number, got {per_param!r}"
        )
    if tokens is not None:
        tokens = tokens if isinstance(tokens, list) else [tokens] * len(sizes)
        if len(tokens) != len(sizes) or not all(_number(t) for t in tokens):
            raise SpecError(
                f"{where}: [ladder] tokens must be a positive, finite number or a list of {len(sizes)} "
                f"(one per size), got {raw['tokens']!r}"
            )
        tokens = [int(t) for t in tokens]
        if min(tokens) < 1:
            raise SpecError(
                f"{where}: [ladder] tokens must be at least 1 token per size, got {raw['tokens']!r}"
            )
    target = raw.get("target_flops")
    if target is not None and not _number(target):
        raise SpecError(
            f"{where}: [ladder] target_flops must be a positive, finite number, got {target!r}"
        )
    metric = raw.get("metric", "val_loss")
    if metric not in METRICS:
        raise SpecError(
            f"{where}: [ladder] metric must be one of {', '.join(METRICS)}, got {metric!r}"
        )
    order = sorted(sizes, key=lambda n: (sizes[n]["emb_dim"] ** 2 * sizes[n]["n_layers"], n))
    if tokens is not None:  # keep each budget with its size
        tokens = [tokens[list(sizes).index(n)] for n in order]
    return Ladder({n: sizes[n] for n in order}, per_param, tokens, target, metric)


def ladder_variants(
    ladder: Ladder,
    variants: list[Variant],
    baseline: str,
    base: dict[str, Any],
    where: str,
    params_at: Any,
) -> list[Variant]:
    """Every variant at every size, smallest size first. `params_at(variant, size_keys)` gives
    the non-embedding parameters of a variant at a size (the baseline's set the budgets)."""
    budgets = dict.fromkeys(BUDGET_KEYS)  # the spec's own budget gives way to the ladder's
    by_name = {v.name: v for v in variants}
    clash = [
        k for v in variants for k in v.overrides if k.split(".", 1)[1] in SIZE_KEYS + BUDGET_KEYS
    ]
    if clash:
        raise SpecError(
            f"{where}: a variant sets {clash[0]}, which [ladder] sets at every size; take it out "
            f"of the variant (a variant may change anything but the size and the budget)"
        )
    out = []
    for i, (size, keys) in enumerate(ladder.sizes.items()):
        if ladder.tokens is not None:
            tokens = ladder.tokens[i]
        else:
            assert ladder.tokens_per_param is not None
            tokens = round(ladder.tokens_per_param * params_at(by_name[baseline], keys))
            if tokens < 1:
                raise SpecError(
                    f"{where}: [ladder] tokens_per_param {ladder.tokens_per_param} gives size "
                    f"{size!r} {tokens} tokens to train on; give at least one token per size"
                )
        for v in variants:
            overrides = {
                **v.overrides,
                **{f"model.{k}": n for k, n in keys.items()},
                **{f"train.{k}": None for k in budgets},
                "train.max_tokens": tokens,
            }
            out.append(Variant(rung_variant(v.name, size), overrides, v.after, v.own))
    return out


def params_counter(base: dict[str, Any], where: str, plugins: Plugins, active: bool = False) -> Any:
    """params_at(variant, size_keys) for ladder_variants and match_params: a variant's
    non-embedding parameters at a size (active: those one token uses, for a mixture of
    experts), counted on the meta device (no memory), with the vocabulary of the variant's
    own tokenizer (an untied head counts as non-embedding)."""
    vocabs: dict[str, int] = {}

    def params_at(variant: Variant, keys: dict[str, int]) -> int:
        sized = {**variant.overrides, **{f"model.{k}": n for k, n in keys.items()}}
        resolved = resolve(base, Variant(variant.name, sized), where, plugins)
        tokenizer = resolved["data"].tokenizer
        name = json.dumps(tokenizer, sort_keys=True, default=str)
        if name not in vocabs:
            vocabs[name] = plugins.registry.build("tokenizer", tokenizer).vocab_size
        config = to_model_config(resolved["model"], vocabs[name])
        return count_params(config, plugins, active=active)[1]

    return params_at
