"""Experiment specs: load a TOML file, apply `--set` overrides, validate every key, and expand
the variants (a grid and/or an explicit list) x seeds into runs.

A spec is data: nothing in it is evaluated. Every key, type, component name and option is
checked here, before any training, and an error names the file, the key (and the variant) and
what is allowed. Checks that need the tokenized corpus (context longer than the data) happen in
the runner's preparation step, still before any training. Not here: building models or data.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import tomllib
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from toolkit.errors import SpecError, ToolkitError
from toolkit.model import (
    COMPONENT_SLOTS,
    NORM_PLACEMENTS,
    PRESETS,
    Choice,
    ModelConfig,
    count_params,
    split_choice,
)
from toolkit.plugins import Plugins, load_plugins
from toolkit.registry import check_type, suggest
from toolkit.throughput import PRECISIONS


@dataclass
class DataSpec:
    corpus: Choice = "pydoc"  # a registered corpus; `ablate list corpus`
    path: str | None = None  # shortcut for corpus = {name = "files", path = "..."}
    tokenizer: Choice = "gpt2"
    val_fraction: float = 0.1  # last fraction of the characters held out for validation


@dataclass
class ModelSpec(ModelConfig):
    """[model]: every ModelConfig field (see toolkit/model.py), smaller defaults, and a preset."""

    vocab_size: int | None = None  # None: the tokenizer's vocabulary size
    context_length: int = 256
    emb_dim: int = 128
    n_heads: int = 4
    n_layers: int = 4
    preset: str | None = None  # fills the sizes; keys set in the spec override it
    # Start from a checkpoint (a checkpoint.pt, or a run folder holding one): its config is the
    # base, like a preset; keys set here may change what keeps the weights' shapes.
    init_from: str | None = None


@dataclass
class TrainSpec:
    batch_size: int = 8
    max_steps: int | None = None  # the budget: exactly one of max_steps, max_tokens, epochs
    max_tokens: int | None = None
    epochs: float | None = None
    lr: float = 4e-4  # peak learning rate (AdamW)
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.1  # on matrices and embeddings only, not on norms and biases
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    stride: int | None = None  # step between training windows; None: context_length
    eval_interval: int = 50  # evaluate every N optimizer steps (and at the end)
    eval_batches: int = 10  # fixed batches per evaluation, per split
    device: str = "auto"  # cuda, then mps, then cpu; or name one
    precision: str = "fp32"  # or "bf16-mixed": bfloat16 autocast on CPU and GPU
    compile: bool = False  # torch.compile the model (falls back to eager, saying why)
    peak_tflops: float | None = None  # hardware peak for MFU; None: measured at the start
    threads: int | None = None  # torch CPU threads; None: torch's default
    checkpoint: bool = True  # save the final weights to checkpoint.pt


@dataclass
class SamplingSpec:
    sampler: Choice = "top-k"
    prompt: str = "The "
    max_new_tokens: int = 100


SECTIONS: dict[str, type] = {
    "data": DataSpec,
    "model": ModelSpec,
    "train": TrainSpec,
    "sampling": SamplingSpec,
}
# Keys whose value is a component choice, and the registry kind they choose from.
SLOTS: dict[str, str] = {
    **{f"model.{slot}": kind for slot, kind in COMPONENT_SLOTS.items()},
    "data.tokenizer": "tokenizer",
    "data.corpus": "corpus",
    "sampling.sampler": "sampler",
}
TOP_LEVEL = {
    "name", "description", "seeds", "plugins", "baseline", "grid", "variants", "sampling_ablation",
    *SECTIONS,
}  # fmt: skip
BUDGET_KEYS = ("max_steps", "max_tokens", "epochs")
# Far beyond any model trained with this toolkit, and low enough that validation (which builds
# every variant on the meta device) never hangs on a typo such as n_layers = 1200000.
LIMITS = {"context_length": 1 << 20, "emb_dim": 1 << 16, "n_heads": 1 << 10, "n_layers": 1 << 10}
DEFAULT_MAX_STEPS = 200


@dataclass
class RunSpec:
    """One training run: a variant of an experiment with one seed, fully resolved."""

    experiment: str
    variant: str
    seed: int
    overrides: dict[str, Any]  # dotted key -> value: what makes this variant differ from the base
    data: DataSpec
    model: ModelSpec
    train: TrainSpec
    sampling: SamplingSpec

    @property
    def folder(self) -> str:
        """Run folder relative to the experiment's output folder: `<variant>/seed-<n>`."""
        return f"{slug(self.variant)}/seed-{self.seed}"

    def config(self) -> dict[str, Any]:
        """The resolved config as plain data (what config.json holds)."""
        return {
            "experiment": self.experiment,
            "variant": self.variant,
            "seed": self.seed,
            "overrides": self.overrides,
            **{name: asdict(getattr(self, name)) for name in SECTIONS},
        }

    def config_hash(self) -> str:
        """Identifies what is trained (not what it is called): same hash, same results."""
        body = {name: asdict(getattr(self, name)) for name in SECTIONS} | {"seed": self.seed}
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[
            :16
        ]

    def model_config(self, vocab_size: int) -> ModelConfig:
        return to_model_config(self.model, vocab_size)

    def choices(self) -> dict[str, str]:
        """Component names by slot, e.g. {'attention': 'sdpa', 'norm': 'rmsnorm', ...}."""
        return {key.split(".")[1]: split_choice(self.get(key))[0] for key in SLOTS}

    def get(self, dotted: str) -> Any:
        section, key = dotted.split(".", 1)
        return getattr(getattr(self, section), key)


@dataclass
class Variant:
    name: str
    overrides: dict[str, Any]


@dataclass
class Spec:
    """A validated experiment: what to vary, over which seeds, and the base config."""

    name: str
    path: str
    description: str
    seeds: list[int]
    plugins: list[str]
    baseline: str
    variants: list[Variant]
    runs: list[RunSpec]  # variant x seed, seed-major so an interrupted sweep has whole seeds
    base: dict[str, Any] = field(repr=False)  # the normalized base document (after --set)
    sampling_ablation: Any = None  # a toolkit.sampling_ablation.SamplingAblation, if asked for

    def run_named(self, variant: str, seed: int) -> RunSpec:
        return next(r for r in self.runs if r.variant == variant and r.seed == seed)

    def axes(self) -> list[str]:
        """Dotted keys that some variant overrides (the columns a comparison varies)."""
        seen: dict[str, None] = {}
        for v in self.variants:
            seen.update(dict.fromkeys(v.overrides))
        return list(seen)


# -- loading ------------------------------------------------------------------------------


def load_spec(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    plugins: Plugins | None = None,
    extra_plugins: list[str] | tuple[str, ...] = (),
) -> Spec:
    """Read and validate a spec file. `overrides` are `--set` strings like "train.lr=1e-3"."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder, not a spec file (give a .toml file)") from None
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the spec as UTF-8"
        ) from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec ({exc.strerror})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: TOML syntax error: {exc}") from None
    return parse_spec(
        raw,
        source=str(path),
        overrides=overrides,
        plugins=plugins,
        extra_plugins=extra_plugins,
        default_name=path.stem,
    )


def parse_spec(
    raw: dict[str, Any],
    source: str = "<spec>",
    overrides: list[str] | tuple[str, ...] = (),
    plugins: Plugins | None = None,
    extra_plugins: list[str] | tuple[str, ...] = (),
    default_name: str = "experiment",
) -> Spec:
    """Validate an already-parsed spec document (a dict as tomllib returns it)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, value = parse_override(item, source)
        _set_raw(raw, key, value, source)
    unknown = sorted(set(raw) - TOP_LEVEL)
    if unknown:
        raise SpecError(
            f"{source}: unknown top-level key {unknown[0]!r}{suggest(unknown[0], TOP_LEVEL)}; "
            f"allowed: {', '.join(sorted(TOP_LEVEL))}"
        )
    for section in SECTIONS:
        if not isinstance(raw.get(section, {}), dict):
            raise SpecError(
                f"{source}: {section!r} must be a table ([{section}]), got {raw[section]!r}"
            )

    name = _top(raw, "name", str, default_name, source)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=-]*", name):
        raise SpecError(
            f"{source}: name {name!r} may hold only letters, digits and . _ + = - "
            f"(it names the output folder)"
        )
    description = _top(raw, "description", str, "", source)
    seeds = _top(raw, "seeds", list[int], [0], source)
    if not seeds:
        raise SpecError(f"{source}: seeds is empty; give at least one, e.g. seeds = [0]")
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"{source}: seeds {seeds} has duplicates; each seed runs once per variant")
    plugin_modules = _top(raw, "plugins", list[str], [], source)

    if plugins is None:
        plugins = load_plugins(tuple(extra_plugins))
    for module in plugin_modules:
        plugins.load_module(module, source=f"spec {source}")

    base = {
        section: _normalize_section(section, raw.get(section, {}), source) for section in SECTIONS
    }
    variants = _expand_variants(raw, source)
    baseline = _top(raw, "baseline", str, variants[0].name, source)
    names = [v.name for v in variants]
    if baseline not in names:
        raise SpecError(
            f"{source}: baseline {baseline!r} is not a variant{suggest(baseline, names)}; "
            f"variants: {', '.join(names)}"
        )

    resolved = {v.name: _resolve(base, v, source, plugins) for v in variants}
    runs = [
        RunSpec(name, v.name, seed, v.overrides, **copy.deepcopy(resolved[v.name]))
        for seed in seeds
        for v in variants
    ]
    ablation = None
    if "sampling_ablation" in raw:
        from toolkit import sampling_ablation

        ablation = sampling_ablation.parse(raw["sampling_ablation"], source, plugins)
    return Spec(
        name, source, description, seeds, plugin_modules, baseline, variants, runs, base, ablation
    )


def parse_override(item: str, source: str = "--set") -> tuple[str, Any]:
    """'train.lr=1e-3' -> ('train.lr', 0.001); values are TOML values, bare words are strings:
    'model.norm=rmsnorm' -> ('model.norm', 'rmsnorm'); 'seeds=[1,2]' -> ('seeds', [1, 2])."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=1e-3")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return key, value


# -- helpers ------------------------------------------------------------------------------


def _top(raw: dict[str, Any], key: str, typ: Any, default: Any, source: str) -> Any:
    if key not in raw:
        return default
    return check_type(raw[key], typ, f"{source}: {key}", SpecError)


def _set_raw(raw: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    """Apply one --set to the raw document, before validation."""
    parts = dotted.split(".")
    if parts[0] not in TOP_LEVEL - {"grid", "variants", "sampling_ablation"}:
        raise SpecError(f"--set {dotted}: unknown key {parts[0]!r}{suggest(parts[0], TOP_LEVEL)}")
    if len(parts) == 1:
        raw[dotted] = value
        return
    node = raw.setdefault(parts[0], {})
    if not isinstance(node, dict):
        raise SpecError(f"--set {dotted}: {parts[0]!r} in {source} is not a table")
    slot = ".".join(parts[:2])
    if slot in SLOTS and len(parts) > 2:
        node[parts[1]] = _as_choice(node.get(parts[1], _default(slot)), slot, source)
        node = node[parts[1]]
        parts = parts[1:]
    for part in parts[1:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _default(dotted: str) -> Any:
    section, key = dotted.split(".", 1)
    return next(f.default for f in fields(SECTIONS[section]) if f.name == key)


def _as_choice(value: Any, where: str, source: str) -> dict[str, Any]:
    """A component choice in its long form: 'rmsnorm' -> {'name': 'rmsnorm'}."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict):
        if not isinstance(value.get("name"), str):
            raise SpecError(
                f'{source}: {where} needs a component name, e.g. {{name = "...", ...}}; got {value!r}'
            )
        return dict(value)
    raise SpecError(
        f'{source}: {where} must be a component name or {{name = "...", option = ...}}, got {value!r}'
    )


def _normalize_section(section: str, table: dict[str, Any], source: str) -> dict[str, Any]:
    """Check a section's keys and put component choices in their long form."""
    allowed = [f.name for f in fields(SECTIONS[section])]
    out = {}
    for key, value in table.items():
        if key not in allowed:
            raise SpecError(
                f"{source}: [{section}] unknown key {key!r}{suggest(key, allowed)}; "
                f"allowed: {', '.join(allowed)}"
            )
        dotted = f"{section}.{key}"
        out[key] = _as_choice(value, dotted, source) if dotted in SLOTS else value
    return out


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model': {'norm': 'rmsnorm'}} -> {'model.norm': 'rmsnorm'}. Quoted dotted keys are kept
    whole; a component choice ({name = ..., ...}) is a leaf."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in SLOTS:
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _check_key(dotted: str, source: str, where: str) -> None:
    """A variant or grid key must name a spec field, or an option under a component choice."""
    parts = dotted.split(".")
    if parts[0] not in SECTIONS or len(parts) < 2:
        raise SpecError(
            f"{source}: {where} key {dotted!r} must start with one of "
            f"{', '.join(s + '.' for s in SECTIONS)} (e.g. 'model.norm')"
        )
    allowed = [f.name for f in fields(SECTIONS[parts[0]])]
    if parts[1] not in allowed:
        raise SpecError(
            f"{source}: {where} key {dotted!r}: [{parts[0]}] has no key {parts[1]!r}"
            f"{suggest(parts[1], allowed)}; allowed: {', '.join(allowed)}"
        )
    if (len(parts) > 2 and ".".join(parts[:2]) not in SLOTS) or len(parts) > 3:
        raise SpecError(
            f"{source}: {where} key {dotted!r} is too deep; only component choices take "
            f"options (e.g. 'model.norm.eps')"
        )


def _expand_variants(raw: dict[str, Any], source: str) -> list[Variant]:
    variants: list[Variant] = []
    explicit = raw.get("variants", [])
    if not isinstance(explicit, list) or not all(isinstance(v, dict) for v in explicit):
        raise SpecError(
            f'{source}: variants must be a list of tables ([[variants]] with name = "...")'
        )
    for i, table in enumerate(explicit):
        table = dict(table)
        name = table.pop("name", None)
        if not isinstance(name, str) or not name.strip():
            raise SpecError(f'{source}: variant #{i + 1} needs a name (name = "...")')
        overrides = _flatten(table)
        for key in overrides:
            _check_key(key, source, f"variant {name!r}:")
        variants.append(Variant(name, overrides))

    grid = raw.get("grid", {})
    if not isinstance(grid, dict):
        raise SpecError(f'{source}: grid must be a table ([grid] with "section.key" = [values])')
    axes = _flatten_grid(grid)
    for key, values in axes.items():
        _check_key(key, source, "[grid]")
        if not isinstance(values, list) or not values:
            raise SpecError(
                f"{source}: [grid] {key!r} must be a non-empty list of values, got {values!r}"
            )
    if axes:
        labels = _axis_labels(list(axes))
        points: list[dict[str, Any]] = [{}]
        for key, values in axes.items():
            points = [{**p, key: v} for p in points for v in values]
        for point in points:
            name = ",".join(f"{labels[k]}={_label(v)}" for k, v in point.items())
            variants.append(Variant(name, point))

    if not variants:
        variants.append(Variant("base", {}))
    seen: set[str] = set()
    for v in variants:
        if v.name in seen:
            raise SpecError(
                f"{source}: two variants are named {v.name!r}; variant names must be unique"
            )
        seen.add(v.name)
    slugs: dict[str, str] = {}
    for v in variants:
        if slug(v.name) in slugs:
            raise SpecError(
                f"{source}: variants {slugs[slug(v.name)]!r} and {v.name!r} would share the "
                f"folder {slug(v.name)!r}; rename one"
            )
        slugs[slug(v.name)] = v.name
    return variants


def _flatten_grid(grid: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in grid.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten_grid(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _axis_labels(keys: list[str]) -> dict[str, str]:
    """Shortest unambiguous label per axis: 'model.norm' -> 'norm' unless two axes end alike."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


def _label(value: Any) -> str:
    """How a value reads in a variant name: {'name': 'top-k', 'k': 5} -> 'top-k(k=5)'."""
    if isinstance(value, dict):
        opts = ",".join(f"{k}={_label(v)}" for k, v in value.items() if k != "name")
        return f"{value.get('name', '?')}({opts})" if opts else str(value.get("name", "?"))
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_label(v) for v in value) + "]"
    return str(value)


def slug(name: str) -> str:
    """A variant name as a safe folder name: 'lr=1e-3,norm=rms/x' -> 'lr=1e-3,norm=rms_x'."""
    s = re.sub(r"[^A-Za-z0-9._=,+-]", "_", name).strip(".")
    return s or "_"


def _resolve(
    base: dict[str, Any], variant: Variant, source: str, plugins: Plugins
) -> dict[str, Any]:
    """Base + a variant's overrides -> validated section dataclasses."""
    doc = copy.deepcopy(base)
    where = f"{source}: variant {variant.name!r}:" if variant.overrides else f"{source}:"
    # Parents before children, so {'model.attention': 'gqa', 'model.attention.n_kv_heads': 2}
    # sets the component, then its option.
    for dotted in sorted(variant.overrides, key=lambda k: k.count(".")):
        value = variant.overrides[dotted]
        parts = dotted.split(".")
        section = doc[parts[0]]
        slot = ".".join(parts[:2])
        if len(parts) == 2:
            section[parts[1]] = _as_choice(value, dotted, source) if slot in SLOTS else value
        else:
            choice = section.setdefault(parts[1], _as_choice(_default(slot), slot, source))
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
        if not isinstance(init_from, str):
            raise SpecError(f"{where} model.init_from must be a path (a string), got {init_from!r}")
        from toolkit.train import checkpoint_path, load_checkpoint

        try:
            base = load_checkpoint(checkpoint_path(init_from))["config"]
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
        name, options = split_choice(_as_choice(getattr(sections[section], key), dotted, where))
        component = plugins.registry.get(kind, name)
        resolved = component.check_options(options, where=f"{dotted} {name!r}")
        setattr(sections[section], key, {"name": name, **resolved} if resolved else name)
    _check_values(sections, where)
    # Build the sampler and count the model's parameters on the meta device: a factory that
    # rejects its options fails now, not after an hour of training.
    name, options = split_choice(sections["sampling"].sampler)
    plugins.registry.get("sampler", name).build(**options)
    count_params(to_model_config(sections["model"], 256), plugins)
    return sections


def to_model_config(model: ModelSpec, vocab_size: int) -> ModelConfig:
    """The [model] section as what build_model takes; vocab_size fills an unset one."""
    m = asdict(model)
    for key in ("preset", "init_from"):
        m.pop(key)
    m["vocab_size"] = m["vocab_size"] or vocab_size
    return ModelConfig(**m)


def _typed(cls: type, table: dict[str, Any], where: str, section: str) -> Any:
    hints = typing.get_type_hints(cls)
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

    for key, most in LIMITS.items():
        value = getattr(m, key)
        need(value >= 1, f"model.{key} must be at least 1, got {value}")
        need(value <= most, f"model.{key} = {value} is beyond what this toolkit builds (<= {most})")
    need(
        m.vocab_size is None or 1 <= m.vocab_size <= 1 << 24,
        f"model.vocab_size must be between 1 and {1 << 24}, got {m.vocab_size}",
    )
    need(
        m.emb_dim % m.n_heads == 0,
        f"model.emb_dim ({m.emb_dim}) must be divisible by model.n_heads ({m.n_heads}); "
        f"e.g. n_heads = {max(h for h in range(1, m.n_heads + 1) if m.emb_dim % h == 0)}",
    )
    for key in ("drop_rate", "drop_rate_emb", "drop_rate_attn", "drop_rate_resid"):
        rate = getattr(m, key)
        need(rate is None or 0 <= rate < 1, f"model.{key} must be in [0, 1), got {rate}")
    need(
        m.norm_placement in NORM_PLACEMENTS,
        f"model.norm_placement must be one of {', '.join(NORM_PLACEMENTS)}, "
        f"got {m.norm_placement!r}",
    )
    need(
        0 < d.val_fraction < 1,
        f"data.val_fraction must be between 0 and 1 (exclusive), got {d.val_fraction}",
    )
    budgets = [k for k in BUDGET_KEYS if getattr(t, k) is not None]
    need(len(budgets) <= 1, f"train: give one budget, not {' and '.join(budgets)}")
    if not budgets:
        t.max_steps = DEFAULT_MAX_STEPS
    for key in ("max_steps", "max_tokens", "epochs"):
        value = getattr(t, key)
        need(value is None or value > 0, f"train.{key} must be positive, got {value}")
    for key in ("batch_size", "eval_interval", "eval_batches"):
        need(getattr(t, key) >= 1, f"train.{key} must be at least 1, got {getattr(t, key)}")
    need(t.stride is None or t.stride >= 1, f"train.stride must be at least 1, got {t.stride}")
    need(t.threads is None or t.threads >= 1, f"train.threads must be at least 1, got {t.threads}")
    need(t.lr > 0, f"train.lr must be positive, got {t.lr}")
    need(0 <= t.min_lr_ratio <= 1, f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}")
    need(t.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {t.warmup_steps}")
    need(t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}")
    need(t.grad_clip >= 0, f"train.grad_clip must be >= 0 (0 is off), got {t.grad_clip}")
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
    need(g.max_new_tokens >= 0, f"sampling.max_new_tokens must be >= 0, got {g.max_new_tokens}")
