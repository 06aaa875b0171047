"""The [sampling_ablation] table, checked before anything trains: its keys, every sampler built
with its options and called once on dummy logits, the counts and seeds, and what it needs of
the spec around it (a spec naming runs trained elsewhere trains nothing; its own runs' context
holds the prompts and what is written after them). Sampling itself:
toolkit/inference/sampling_ablation.py.
"""

from __future__ import annotations

import json
from typing import Any

from toolkit.api.manager import Plugins
from toolkit.api.registry import check_type, split_choice, suggest
from toolkit.errors import SpecError
from toolkit.names import label
from toolkit.spec import limits
from toolkit.spec.schema import RunSpec, SamplingAblation
from toolkit.spec.validate import sampler_problem

SAMPLING_ABLATION_KEYS = (
    "runs",
    "samplers",
    "seeds",
    "n_prompts",
    "prompt_tokens",
    "max_new_tokens",
)


def sampling_ablation(raw: Any, source: str, plugins: Plugins) -> SamplingAblation:
    """Validate a [sampling_ablation] table; every sampler is built and called once
    (validate.sampler_problem) to check its options and what it returns."""
    where = f"{source}: [sampling_ablation]"
    if not isinstance(raw, dict):
        raise SpecError(f"{where} must be a table")
    unknown = sorted(set(raw) - set(SAMPLING_ABLATION_KEYS))
    if unknown:
        raise SpecError(
            f"{where} unknown key {unknown[0]!r}{suggest(unknown[0], SAMPLING_ABLATION_KEYS)}; "
            f"allowed: {', '.join(SAMPLING_ABLATION_KEYS)}"
        )
    samplers = raw.get("samplers")
    if not isinstance(samplers, list) or not samplers:
        raise SpecError(
            f'{where} samplers must be a non-empty list, e.g. ["greedy", '
            f'{{ name = "top-p", p = 0.9 }}]'
        )

    resolved = []
    for choice in samplers:
        if not (
            isinstance(choice, str)
            or (isinstance(choice, dict) and isinstance(choice.get("name"), str))
        ):
            raise SpecError(
                f'{where} each sampler is a name or {{name = "...", ...}}, got {choice!r}'
            )
        name, options = split_choice(choice)
        try:
            component = plugins.registry.get("sampler", name)
            checked = {"name": name, **component.check_options(options)} if options else name
            problem = sampler_problem(plugins, json.dumps(checked))
        except Exception as exc:
            raise SpecError(f"{where} {exc}") from None
        if problem:
            raise SpecError(f"{where} samplers: {problem}")
        resolved.append(checked)
    labels = [label(s) for s in resolved]
    if len(set(labels)) != len(labels):
        raise SpecError(f"{where} samplers lists the same sampler twice")
    ablation = SamplingAblation(
        samplers=resolved,
        runs=check_type(raw.get("runs", []), list[str], f"{where} runs", SpecError),
        seeds=check_type(raw.get("seeds", [0]), list[int], f"{where} seeds", SpecError),
        n_prompts=check_type(raw.get("n_prompts", 8), int, f"{where} n_prompts", SpecError),
        prompt_tokens=check_type(
            raw.get("prompt_tokens", 32), int, f"{where} prompt_tokens", SpecError
        ),
        max_new_tokens=check_type(
            raw.get("max_new_tokens", 64), int, f"{where} max_new_tokens", SpecError
        ),
    )
    for key in ("n_prompts", "prompt_tokens", "max_new_tokens"):
        if getattr(ablation, key) < 1:
            raise SpecError(f"{where} {key} must be at least 1, got {getattr(ablation, key)}")
    if ablation.n_prompts > limits.MAX_PROMPTS:
        raise SpecError(
            f"{where} n_prompts must be at most {limits.MAX_PROMPTS:,} (they are continued in one "
            f"batch), got {ablation.n_prompts:,}"
        )
    if not ablation.seeds or len(set(ablation.seeds)) != len(ablation.seeds):
        raise SpecError(f"{where} seeds must be a non-empty list of distinct integers")
    limits.check_seeds(ablation.seeds, f"{where} seeds")
    return ablation


def check_sampled_runs(
    ablation: SamplingAblation, raw: dict[str, Any], runs: list[RunSpec], source: str
) -> None:
    """What a sampling ablation needs of the spec around it, checked before anything trains:
    naming runs trained elsewhere, the spec trains nothing, so it has no variants, tuning or
    ladder to ignore; sampling its own runs, every run's context holds a prompt and what is
    written after it (the model scores it all)."""
    where = f"{source}: [sampling_ablation]"
    if ablation.runs:
        extra = [key for key in ("grid", "variants", "tune", "ladder") if key in raw]
        if extra:
            raise SpecError(
                f"{where} runs names models trained elsewhere, so this spec trains nothing "
                f"and its [{extra[0]}] would go unused; remove one or the other"
            )
        return
    need = ablation.prompt_tokens + ablation.max_new_tokens
    for r in runs:
        if r.model.context_length < need:
            raise SpecError(
                f"{where} prompt_tokens + max_new_tokens = {need} exceeds variant "
                f"{r.variant!r}'s model.context_length ({r.model.context_length}); shorten "
                f"them so the model scores all it wrote"
            )
