"""Checking a variant's resolved sections against the registry and the toolkit's limits: every
component name and option, every value's range, and the model built on the meta device, so a
mistake fails before any training. The [sampling_ablation] table is sampling_table.py's.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
import typing
from dataclasses import asdict
from typing import Any

import torch

from toolkit.api.contracts import DECAY_TARGETS, check_optimizer
from toolkit.api.manager import Plugins
from toolkit.api.registry import Component, check_type, split_choice, suggest
from toolkit.data.batches import EVAL_WINDOWS
from toolkit.data.resolve import holdout_of
from toolkit.errors import DataError, SpecError, ToolkitError, one_line
from toolkit.model.checkpoint import locate_checkpoint, read_checkpoint
from toolkit.model.config import NORM_PLACEMENTS, PRESETS, ModelConfig, value_problem
from toolkit.model.gpt import build_model
from toolkit.spec import limits
from toolkit.spec.recipes import with_recipe
from toolkit.spec.schema import (
    BUDGET_KEYS,
    DEFAULT_MAX_STEPS,
    LEGACY_OPTIONS,
    PRECISIONS,
    SCHEDULE_KEYS,
    SLOTS,
    DataSpec,
    ModelSpec,
    RunSpec,
    SamplingSpec,
    TrainSpec,
    Variant,
    as_choice,
    default,
    to_model_config,
)


def resolve(
    base: dict[str, Any], variant: Variant, source: str, plugins: Plugins
) -> dict[str, Any]:
    """Base + a variant's overrides -> validated section dataclasses."""
    where = f"{source}: variant {variant.name!r}:" if variant.overrides else f"{source}:"
    recipe = variant.overrides.get("model.recipe", base["model"].get("recipe"))
    doc = copy.deepcopy(with_recipe(base, recipe, where))
    # Parents before children, so {'model.attention': 'gqa', 'model.attention.n_kv_heads': 2}
    # sets the component, then its option.
    for dotted in sorted(variant.overrides, key=lambda k: k.count(".")):
        value = variant.overrides[dotted]
        parts = dotted.split(".")
        section = doc[parts[0]]
        slot = ".".join(parts[:2])
        if len(parts) == 2:
            section[parts[1]] = as_choice(value, dotted, source) if slot in SLOTS else value
        else:
            choice = section.setdefault(parts[1], as_choice(default(slot), slot, source))
            choice[parts[2]] = value
    try:
        return _validate(doc, where, plugins)
    except SpecError:
        raise
    except ToolkitError as exc:
        raise SpecError(f"{where} {exc}") from None


def _validate(doc: dict[str, Any], where: str, plugins: Plugins) -> dict[str, Any]:
    data_doc = doc["data"]
    if "path" in data_doc and data_doc["path"] is not None:
        if "corpus" in data_doc:
            raise SpecError(
                f"{where} [data] give either path (local text files) or corpus, not both"
            )
        data_doc = {**data_doc, "corpus": {"name": "files", "path": data_doc["path"]}}
    model_doc = dict(doc["model"])
    preset_name = model_doc.get("preset")
    if preset_name is not None:
        if not isinstance(preset_name, str) or preset_name not in PRESETS:
            raise SpecError(
                f"{where} [model] unknown preset {preset_name!r}{suggest(str(preset_name), PRESETS)}; "
                f"choose one of: {', '.join(PRESETS)}"
            )
        model_doc = {**PRESETS[preset_name], **model_doc}
    init_from = model_doc.get("init_from")
    if init_from is not None:
        if preset_name is not None:
            raise SpecError(f"{where} [model] give either preset or init_from, not both")
        if model_doc.get("recipe") is not None:
            raise SpecError(
                f"{where} [model] give either recipe or init_from, not both: the checkpoint's "
                f"components are the base (set single keys to change some)"
            )
        if not isinstance(init_from, str):
            raise SpecError(f"{where} model.init_from must be a path (a string), got {init_from!r}")
        try:
            base = read_checkpoint(locate_checkpoint(init_from)[0])["config"]
        except ToolkitError as exc:
            raise SpecError(f"{where} model.init_from: {exc}") from None
        model_doc = {**base, **model_doc}
    sections = {
        "data": _typed(DataSpec, data_doc, where, "data"),
        "model": _typed(ModelSpec, model_doc, where, "model"),
        "train": _typed(TrainSpec, doc["train"], where, "train"),
        "sampling": _typed(SamplingSpec, doc["sampling"], where, "sampling"),
    }
    # Component names and options, against the registry.
    for dotted, kind in SLOTS.items():
        section, key = dotted.split(".")
        name, options = split_choice(as_choice(getattr(sections[section], key), dotted, where))
        component = plugins.registry.get(kind, name)
        resolved = component.check_options(options, where=f"{dotted} {name!r}")
        for option, old in LEGACY_OPTIONS.get(dotted, {}).items():
            known = component.options.get(option)
            if known is not None and known.default == old and resolved.get(option) == old:
                del resolved[option]
        if dotted == "train.schedule":
            resolved = _schedule_keys(component, options, resolved, doc["train"], sections, where)
        setattr(sections[section], key, {"name": name, **resolved} if resolved else name)
    _check_values(sections, where)
    # Build and call the sampler, build the optimizer and the schedule, and count the model's
    # parameters on the meta device: a factory that rejects its options fails now, not after
    # an hour of training.
    problem = sampler_problem(plugins, json.dumps(sections["sampling"].sampler))
    if problem:
        raise SpecError(f"{where} sampling.sampler: {problem}")
    t = sections["train"]
    model = json.dumps(asdict(to_model_config(sections["model"], 256)), default=str)
    _builds(plugins, model, json.dumps(t.optimizer), t.weight_decay_on)
    _schedule_runs(plugins, t, where)
    return sections


def _schedule_keys(
    component: Component,
    options: dict[str, Any],
    resolved: dict[str, Any],
    train_doc: dict[str, Any],
    sections: dict[str, Any],
    where: str,
) -> dict[str, Any]:
    """train.warmup_steps and train.min_lr_ratio feed the schedule's options of those names:
    a value the schedule's table gives moves to the train key (so the run records it once, and
    hashes as the same setting made with the train key), unless [train] sets that key to
    another value, which is an error. Returns the schedule's other options."""
    train = sections["train"]
    for key in SCHEDULE_KEYS:
        if key not in component.options:
            continue  # this schedule has no such option: the train key is not used
        value = resolved.pop(key)
        if key not in options:
            continue  # the train key's value (or its default) feeds it
        if key in train_doc and getattr(train, key) != value:
            raise SpecError(
                f"{where} train.schedule sets {key} = {value!r} and train.{key} = "
                f"{getattr(train, key)!r}; set it in one place"
            )
        setattr(train, key, value)
    return resolved


@functools.lru_cache(maxsize=1024)
def _builds(plugins: Plugins, config: str, optimizer: str, weight_decay_on: str) -> None:
    """Build a model config's model on the meta device, and the chosen optimizer over its
    parameters, once per architecture, optimizer choice and weight_decay_on: a grid over 10,000
    learning rates builds one model. The optimizer is given [train]'s default lr, betas and
    weight decay (a spec's own are checked by _check_values), never stepped, and checked as a
    run checks it (check_optimizer: its type, its groups' lr, every parameter in one group)."""
    with torch.device("meta"):
        model = build_model(ModelConfig.from_dict(json.loads(config)), plugins)
    train = TrainSpec(weight_decay_on=weight_decay_on)
    name, options = split_choice(json.loads(optimizer))
    component = plugins.registry.get("optimizer", name)
    optimizer = component.build(model, train.optimizer_config("meta"), **options)
    check_optimizer(optimizer, model, f"optimizer {name!r} (plugin {component.plugin!r})")


# The logits a sampler is called on once at validation: a few rows over a small vocabulary.
SAMPLER_PROBE = (2, 16)  # (B, V)


@functools.lru_cache(maxsize=1024)
def sampler_problem(plugins: Plugins, choice: str) -> str | None:
    """What is wrong with a sampler choice (JSON) when called once as generation calls it, on
    seeded logits SAMPLER_PROBE with a seeded torch.Generator, or None; once per distinct
    choice. The contract (toolkit.api.kinds): next token ids (B, 1), torch.int64, in [0, V),
    the logits left unchanged. A factory that rejects its options raises a ComponentError.
    Also for [sampling_ablation]'s samplers (sampling_table.py)."""
    name, options = split_choice(json.loads(choice))
    component = plugins.registry.get("sampler", name)
    sampler = component.build(**options)
    who = f"sampler {name!r} (plugin {component.plugin!r})"
    if not callable(sampler):
        return (
            f"{who} built {type(sampler).__name__}, which is not callable; its factory must "
            f"return the sampler"
        )
    b, v = SAMPLER_PROBE
    logits = torch.randn(b, v, generator=torch.Generator().manual_seed(0))
    given = logits.clone()
    called = f"called on logits ({b}, {v})"
    try:
        with torch.random.fork_rng(devices=[]):  # one drawing from the global RNG: left as it was
            ids = sampler(given, torch.Generator().manual_seed(0))
    except Exception as exc:
        return f"{who} raised when {called}: {one_line(exc, 200)}"
    want = f"a sampler returns the next token ids, ({b}, 1) torch.int64 in [0, {v})"
    if not isinstance(ids, torch.Tensor):
        return f"{who} returned {type(ids).__name__}, not a tensor, when {called}; {want}"
    if tuple(ids.shape) != (b, 1) or ids.dtype != torch.int64:
        return f"{who} returned {tuple(ids.shape)} {ids.dtype} when {called}; {want}"
    if ((ids < 0) | (ids >= v)).any():
        return f"{who} returned ids {ids.flatten().tolist()} when {called}; {want}"
    if not torch.equal(given, logits):
        return f"{who} changed the logits it was given in place; it must leave them as they are"
    return None


def _schedule_runs(plugins: Plugins, t: TrainSpec, where: str) -> None:
    """The chosen schedule at the first and last steps of a run of train.max_steps (1 when the
    budget is set otherwise: the steps are not known before the data is): a factory that
    rejects its options, or returns something other than a finite number >= 0, fails now."""
    problem = _schedule_problem(
        plugins, json.dumps(t.schedule), t.warmup_steps, t.min_lr_ratio, t.max_steps or 1
    )
    if problem:
        raise SpecError(f"{where} {problem}")


def without_test_split(runs: list[RunSpec]) -> RunSpec | None:
    """The first of `runs` that holds out no test split (data.test_fraction, test documents
    or test shards), or None: a spec that reports on the test split needs one in every run."""
    for r in runs:
        corpus = r.data.corpus
        if not (holdout_of(r.data).has_test or (isinstance(corpus, dict) and corpus.get("test"))):
            return r
    return None


TEST_SPLIT_HOW = (
    'set data.test_fraction (e.g. 0.05), or data.test_documents with data.split = "documents"'
)


def pairing_warnings(runs: list[RunSpec], plugins: Plugins) -> list[str]:
    """A warning per optimizer registered with the fact `schedules` (the schedules it is meant
    for) that some variants run with another schedule, naming them: valid, as an ablation of
    the pairing may be the point, but more often a spec that kept its base schedule."""
    found: dict[tuple[str, str], dict[str, None]] = {}
    for r in runs:
        optimizer, schedule = split_choice(r.train.optimizer)[0], split_choice(r.train.schedule)[0]
        meant = plugins.registry.get("optimizer", optimizer).facts.get("schedules")
        if meant and schedule not in meant:
            found.setdefault((optimizer, schedule), {})[r.variant] = None
    warnings = []
    for (optimizer, schedule), variants in found.items():
        meant = " or ".join(
            map(repr, plugins.registry.get("optimizer", optimizer).facts["schedules"])
        )
        who = (
            f"variant {next(iter(variants))} runs"
            if len(variants) == 1
            else f"variants {', '.join(variants)} run"
        )
        warnings.append(
            f"train.optimizer {optimizer!r} is meant to run with train.schedule {meant}, but "
            f"{who} it with {schedule!r}; set train.schedule there unless that pairing is what "
            f"you compare"
        )
    return warnings


@functools.lru_cache(maxsize=1024)
def _schedule_problem(
    plugins: Plugins, choice: str, warmup_steps: int, min_lr_ratio: float, total: int
) -> str | None:
    """What is wrong with a schedule's multipliers at steps 0 and total, or None; once per
    distinct setting (a factory that raises raises a ComponentError)."""
    name, options = split_choice(json.loads(choice))
    component = plugins.registry.get("schedule", name)
    fed = {"warmup_steps": warmup_steps, "min_lr_ratio": min_lr_ratio}
    options.update({k: fed[k] for k in SCHEDULE_KEYS if k in component.options})
    for step in (0, total):
        value = component.build(step, total, **options)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            problem = "not a number >= 0"
        elif not math.isfinite(value):
            problem = "not a finite number"
        else:
            continue
        return (
            f"train.schedule {name!r} (plugin {component.plugin!r}) returned {value!r} at step "
            f"{step} of {total}, {problem}"
        )
    return None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A section's field types, resolved once (typing.get_type_hints is slow)."""
    return typing.get_type_hints(cls)


def _typed(cls: type, table: dict[str, Any], where: str, section: str) -> Any:
    hints = _hints(cls)
    values = {}
    for key, value in table.items():
        if key not in hints:
            allowed = list(hints)
            raise SpecError(
                f"{where} [{section}] unknown key {key!r}{suggest(key, allowed)}; allowed: {', '.join(allowed)}"
            )
        if f"{section}.{key}" in SLOTS:
            values[key] = value
        else:
            values[key] = check_type(value, hints[key], f"{where} {section}.{key}", SpecError)
    return cls(**values)


def _check_values(s: dict[str, Any], where: str) -> None:
    m, t, d, g = s["model"], s["train"], s["data"], s["sampling"]

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise SpecError(f"{where} {message}")

    problem = value_problem(m)  # sizes, vocabulary and dropout rates: build_model's rule too
    need(problem is None, str(problem))
    need(
        m.emb_dim % m.n_heads == 0,
        f"model.emb_dim ({m.emb_dim}) must be divisible by model.n_heads ({m.n_heads}); "
        f"e.g. n_heads = {max(h for h in range(1, m.n_heads + 1) if m.emb_dim % h == 0)}",
    )
    need(
        m.ffn_hidden is None or (isinstance(m.ffn_hidden, int) and m.ffn_hidden >= 1),
        f"model.ffn_hidden must be a whole number >= 1 (the feed-forward's hidden width), got "
        f"{m.ffn_hidden}",
    )
    need(
        m.norm_placement in NORM_PLACEMENTS,
        f"model.norm_placement must be one of {', '.join(NORM_PLACEMENTS)}, "
        f"got {m.norm_placement!r}",
    )
    need(
        m.logit_softcap is None or (math.isfinite(m.logit_softcap) and m.logit_softcap > 0),
        f"model.logit_softcap must be a positive number (Gemma 2 uses 30), or left out for no "
        f"capping; got {m.logit_softcap}",
    )
    need(
        math.isfinite(m.z_loss) and m.z_loss >= 0,
        f"model.z_loss must be 0 (off) or positive (PaLM uses 1e-4), got {m.z_loss}",
    )
    need(
        m.bias or not m.qkv_bias,
        "model.bias = false removes every bias, yet model.qkv_bias = true asks for some; drop "
        "one of them",
    )
    try:
        holdout_of(d)
    except DataError as exc:
        need(False, str(exc))
    budgets = [k for k in BUDGET_KEYS if getattr(t, k) is not None]
    need(len(budgets) <= 1, f"train: give one budget, not {' and '.join(budgets)}")
    if not budgets:
        t.max_steps = DEFAULT_MAX_STEPS
    for key in BUDGET_KEYS:
        value = getattr(t, key)
        need(
            value is None or (math.isfinite(value) and value > 0),
            f"train.{key} must be a positive, finite number, got {value}",
        )
    need(
        t.target_loss is None or (math.isfinite(t.target_loss) and t.target_loss > 0),
        f"train.target_loss must be a positive validation loss (nats per token), got "
        f"{t.target_loss}",
    )
    for key in ("batch_size", "eval_interval", "eval_batches"):
        need(getattr(t, key) >= 1, f"train.{key} must be at least 1, got {getattr(t, key)}")
    need(t.stride is None or t.stride >= 1, f"train.stride must be at least 1, got {t.stride}")
    need(t.threads is None or t.threads >= 1, f"train.threads must be at least 1, got {t.threads}")
    need(math.isfinite(t.lr) and t.lr > 0, f"train.lr must be positive and finite, got {t.lr}")
    need(0 <= t.min_lr_ratio <= 1, f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}")
    need(t.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {t.warmup_steps}")
    need(
        math.isfinite(t.weight_decay) and t.weight_decay >= 0,
        f"train.weight_decay must be a finite number >= 0, got {t.weight_decay}",
    )
    need(
        math.isfinite(t.grad_clip) and t.grad_clip >= 0,
        f"train.grad_clip must be a finite number >= 0 (0 is off), got {t.grad_clip}",
    )
    need(
        t.weight_decay_on in DECAY_TARGETS,
        f"train.weight_decay_on must be one of {', '.join(DECAY_TARGETS)}, "
        f"got {t.weight_decay_on!r}",
    )
    need(
        t.eval_windows in EVAL_WINDOWS,
        f"train.eval_windows must be one of {', '.join(EVAL_WINDOWS)}, got {t.eval_windows!r}",
    )
    need(
        len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas),
        f"train.betas must be two numbers in [0, 1), got {t.betas}",
    )
    need(
        t.device in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", t.device),
        f"train.device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {t.device!r}",
    )
    need(
        t.precision in PRECISIONS,
        f"train.precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}",
    )
    need(
        t.peak_tflops is None or t.peak_tflops > 0,
        f"train.peak_tflops must be positive, got {t.peak_tflops}",
    )
    need(
        0 <= g.max_new_tokens <= limits.MAX_NEW_TOKENS,
        f"sampling.max_new_tokens must be from 0 to {limits.MAX_NEW_TOKENS:,}, got "
        f"{g.max_new_tokens}",
    )
