"""The shape of an experiment spec: its sections as dataclasses (every key, its type and its
default), the run a variant x seed resolves to, and the spec as a whole. Plain data: nothing
here reads files, loads plugins or builds models (parse.py and validate.py do).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from toolkit.api.contracts import TrainConfig
from toolkit.api.manager import Plugins
from toolkit.api.registry import Choice, split_choice
from toolkit.errors import SpecError
from toolkit.model.config import COMPONENT_SLOTS, ModelConfig
from toolkit.names import run_folder

# Training precisions: "fp32", bfloat16 autocast with float32 weights and optimizer, or "auto":
# the faster of the two on the run's device (toolkit.training.throughput.resolve_precision).
PRECISIONS = ("fp32", "bf16-mixed", "auto")
# train.weight_decay_on: which parameters weight decay applies to (DECAY_TARGETS, from
# toolkit.api.contracts). The train keys that feed the schedule's options of the same names,
# unless train.schedule's table sets them (validate.py moves a table's value to the train key).
SCHEDULE_KEYS = ("warmup_steps", "min_lr_ratio")

# Keys added after runs were first recorded, and the value every run recorded before the key
# existed was trained or evaluated with. A run at that value hashes as it did before the key
# existed (so older folders resume and skip as they did), and an older config.json reads as
# holding it (`with_legacy_values`), so a rerun or a report names what changed.
LEGACY_VALUES: dict[str, Any] = {
    "train.weight_decay_on": "matrices",
    "train.eval_windows": "spread",
    "data.split": "characters",
    "data.test_fraction": 0.0,
    "data.val_documents": None,
    "data.test_documents": None,
    "model.ffn_hidden": None,
    "model.bias": True,
    "model.logit_softcap": None,
    "model.z_loss": 0.0,
    "model.recipe": None,
    "train.max_flops": None,
    "train.target_loss": None,
    # Recorded as validated: a choice with no options of its own is its bare name (adamw has
    # none; cosine's are SCHEDULE_KEYS, which are recorded as the train keys).
    "train.optimizer": "adamw",
    "train.schedule": "cosine",
}

# Options components gained after runs were first recorded, by slot, and the value every run
# before had: a choice records such an option only away from that value (when that value is
# the component's default too), so older runs keep their hashes and records.
LEGACY_OPTIONS: dict[str, dict[str, Any]] = {
    "model.norm": {"bias": True},
    "model.init": {"zero_residual": False},
    "model.attention": {"gate": False, "sinks": False},
    "model.positional": {"fraction": 1.0},
    "train.optimizer": {"ns_dtype": "bfloat16"},
}


@dataclass
class DataSpec:
    corpus: Choice = "pydoc"  # a registered corpus; `ablate list corpus`
    path: str | None = None  # shortcut for corpus = {name = "files", path = "..."}
    tokenizer: Choice = "gpt2"
    split: str = "characters"  # or "documents": whole documents, by a hash of their names
    val_fraction: float = 0.1  # held out for validation: the last characters, or documents
    test_fraction: float = 0.0  # held out for test, after validation; 0: no test split
    val_documents: int | None = None  # split = "documents": this many, instead of a fraction
    test_documents: int | None = None


@dataclass
class ModelSpec(ModelConfig):
    """[model]: every ModelConfig field (see toolkit/model/gpt.py), smaller defaults, and a preset."""

    vocab_size: int | None = None  # None: the tokenizer's vocabulary size
    context_length: int = 256
    emb_dim: int = 128
    n_heads: int = 4
    n_layers: int = 4
    preset: str | None = None  # fills the sizes; keys set in the spec override it
    # Fills the component choices (toolkit/spec/recipes.py: "gpt2", "modern"), [train]'s
    # optimizer and schedule too; keys set in the spec override it.
    recipe: str | None = None
    # Start from a checkpoint (a checkpoint.pt, or a run folder holding one): its config is the
    # base, like a preset; keys set here may change what keeps the weights' shapes.
    init_from: str | None = None


@dataclass
class TrainSpec:
    batch_size: int = 8
    # The budget: one of max_steps, max_tokens, epochs, max_flops (training FLOPs, from the
    # FLOPs per token the model's run records: every variant spends the same compute).
    max_steps: int | None = None
    max_tokens: int | None = None
    epochs: float | None = None
    max_flops: float | None = None
    # Record the tokens, FLOPs and seconds each run needed to first reach this validation loss
    # (at evaluation granularity: eval_interval); training goes on to the budget.
    target_loss: float | None = None
    optimizer: Choice = "adamw"  # a registered optimizer; `ablate list optimizer`
    schedule: Choice = "cosine"  # a registered lr schedule; `ablate list schedule`
    lr: float = 4e-4  # peak learning rate (the optimizer's; the schedule multiplies it)
    min_lr_ratio: float = 0.1  # a decaying schedule ends at lr * min_lr_ratio
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.1
    weight_decay_on: str = "matrices"  # matrices and embeddings, not norms and biases; or "all"
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    stride: int | None = None  # step between training windows; None: context_length
    eval_interval: int = 50  # evaluate every N optimizer steps (and at the end)
    eval_batches: int = 10  # fixed batches per evaluation, per split
    eval_windows: str = "grid"  # on the training stride grid; "spread": any offset (older runs)
    device: str = "auto"  # cuda, then mps, then cpu; or name one
    precision: str = "fp32"  # "bf16-mixed": bfloat16 autocast on CPU and GPU; "auto": faster
    compile: bool = False  # torch.compile the model (falls back to eager, saying why)
    peak_tflops: float | None = None  # hardware peak for MFU; None: measured at the start
    threads: int | None = None  # torch CPU threads; None: torch's default
    checkpoint: bool = True  # save the final weights to checkpoint.pt

    def optimizer_config(self, device: str) -> TrainConfig:
        """What the optimizer factory receives: these settings, and where the model is."""
        betas = (float(self.betas[0]), float(self.betas[1]))
        return TrainConfig(self.lr, betas, self.weight_decay, self.weight_decay_on, device)


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
    "train.optimizer": "optimizer",
    "train.schedule": "schedule",
}
TOP_LEVEL = {
    "name", "description", "seeds", "plugins", "baseline", "grid", "variants", "sampling_ablation",
    "tune", "ladder", "match_params", *SECTIONS,
}  # fmt: skip
BUDGET_KEYS = ("max_steps", "max_tokens", "epochs", "max_flops")
# Far beyond any model trained with this toolkit, and low enough that validation (which builds
# every variant on the meta device) never hangs on a typo such as n_layers = 1200000.
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
    # A cumulative variant ([[variants]] after = ...): the variant it builds on, and the keys it
    # sets itself on top of that one's. Recorded in config.json for reports; not in the hash.
    after: str | None = None
    own_overrides: dict[str, Any] | None = None
    # The plugin modules, loaded by name (a spec's plugins, --plugin), that registered the
    # components it chooses (plugins_used): its checkpoint opens later (ablate generate, eval)
    # only with them loaded again. Recorded in config.json when there are any; not in the hash.
    plugins: list[str] = field(default_factory=list)

    @property
    def folder(self) -> str:
        """Run folder relative to the experiment's output folder: `<variant>/seed-<n>`."""
        return run_folder(self.variant, self.seed)

    def config(self) -> dict[str, Any]:
        """The resolved config as plain data (what config.json holds)."""
        return {
            "experiment": self.experiment,
            "variant": self.variant,
            "seed": self.seed,
            "overrides": self.overrides,
            **({"after": self.after, "own_overrides": self.own_overrides} if self.after else {}),
            **({"plugins": list(self.plugins)} if self.plugins else {}),
            **{name: asdict(getattr(self, name)) for name in SECTIONS},
        }

    def config_hash(self) -> str:
        """Identifies what is trained (not what it is called, nor what it builds on): same
        hash, same results. Keys at their LEGACY_VALUES are left out, so the hash is the one
        runs had before they existed."""
        body: dict[str, Any] = {name: asdict(getattr(self, name)) for name in SECTIONS}
        for dotted, value in LEGACY_VALUES.items():
            section, key = dotted.split(".")
            if body[section].get(key) == value:
                del body[section][key]
        body["seed"] = self.seed
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[
            :16
        ]

    def model_config(self, vocab_size: int) -> ModelConfig:
        return to_model_config(self.model, vocab_size)

    def choices(self) -> dict[str, str]:
        """Component names by slot, e.g. {'attention': 'sdpa', 'norm': 'rmsnorm', ...}."""
        return {key.split(".")[1]: split_choice(self.get(key))[0] for key in SLOTS}

    def get(self, dotted: str) -> Any:
        """A key's value: "train.lr", or a component's option, "train.optimizer.momentum"
        (None when the choice has no such option)."""
        section, key, *option = dotted.split(".", 2)
        value = getattr(getattr(self, section), key)
        return split_choice(value)[1].get(option[0]) if option else value


@dataclass
class Variant:
    name: str
    overrides: dict[str, Any]  # dotted key -> value: everything that differs from the base
    after: str | None = None  # the variant it builds on (after = ...; toolkit.spec.chains)
    own: dict[str, Any] | None = None  # with after: the keys it sets itself


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
    sampling_ablation: Any = (
        None  # a toolkit.inference.sampling_ablation.SamplingAblation, if asked for
    )
    notes: list[str] = field(default_factory=list)  # what --set changed beyond one key
    tune: Any = None  # a toolkit.spec.tune.Tune when the spec has a [tune] table
    ladder: Any = None  # a toolkit.spec.ladder.Ladder when the spec has a [ladder] table
    tuned: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant -> chosen point
    warnings: list[str] = field(default_factory=list)  # valid, but likely not what was meant

    @property
    def samples_only(self) -> bool:
        """A sampling ablation of runs trained elsewhere ([sampling_ablation] runs): the spec
        trains nothing."""
        return self.sampling_ablation is not None and bool(self.sampling_ablation.runs)

    def run_named(self, variant: str, seed: int) -> RunSpec:
        return next(r for r in self.runs if r.variant == variant and r.seed == seed)

    def axes(self) -> list[str]:
        """Dotted keys that some variant overrides (the columns a comparison varies)."""
        seen: dict[str, None] = {}
        for v in self.variants:
            seen.update(dict.fromkeys(v.overrides))
        return list(seen)


@dataclass
class SamplingAblation:
    samplers: list[Any]  # component choices: "greedy" or {name = "top-p", p = 0.9}
    runs: list[str] = field(default_factory=list)  # empty: the spec's own runs
    seeds: list[int] = field(default_factory=lambda: [0])
    n_prompts: int = 8
    prompt_tokens: int = 32
    max_new_tokens: int = 64


def plugins_used(run: RunSpec, plugins: Plugins) -> list[str]:
    """The modules loaded by name (a spec's plugins, --plugin) that registered a component the
    run chooses, in slot order: ['my_norms'] for model.norm = "my-rms" from `--plugin
    my_norms`. Not named: built-ins and installed (entry-point) plugins, which load by
    themselves, and a plugin added as a Python object, which has no module name to give."""
    used: dict[str, None] = {}
    for dotted, kind in SLOTS.items():
        name = split_choice(run.get(dotted))[0]
        if (kind, name) not in plugins.registry:
            continue
        plugin = plugins.registry.get(kind, name).plugin
        door = plugins.info[plugin].source if plugin in plugins.info else "object"
        if door not in ("builtin", "object") and not door.startswith("entry point"):
            used[plugin] = None
    return list(used)


def with_legacy_values(config: dict[str, Any]) -> dict[str, Any]:
    """A run's recorded config (config.json) with every key it predates filled in with the
    value it was trained with (LEGACY_VALUES); a copy, the sections copied too."""
    out = dict(config)
    for dotted, value in LEGACY_VALUES.items():
        section, key = dotted.split(".")
        if isinstance(out.get(section), dict) and key not in out[section]:
            out[section] = {**out[section], key: value}
    return out


def to_model_config(model: ModelSpec, vocab_size: int) -> ModelConfig:
    """The [model] section as what build_model takes; vocab_size fills an unset one."""
    m = asdict(model)
    for key in ("preset", "recipe", "init_from"):
        m.pop(key)
    m["vocab_size"] = m["vocab_size"] or vocab_size
    return ModelConfig(**m)


def default(dotted: str) -> Any:
    section, key = dotted.split(".", 1)
    return next(f.default for f in fields(SECTIONS[section]) if f.name == key)


def as_choice(value: Any, where: str, source: str) -> dict[str, Any]:
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
