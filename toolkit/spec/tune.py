"""[tune]: every variant gets its own training settings, chosen on the validation split, before
it is compared.

    [tune]
    "train.lr" = { log_range = [1e-4, 3e-3], points = 5 }   # or a list: [1e-4, 3e-4, 1e-3]
    "train.warmup_steps" = [0, 50]                         # several keys: their product
    seeds = [1000]                                         # default: 1000, apart from the final seeds
    metric = "val_loss"                                    # or "val_bpb"

    [tune.variants.muon]                                   # a variant's own grid, in place
    "train.optimizer.muon_lr" = [0.01, 0.02, 0.04]          # of the one above

A tuned sweep has two phases. Tuning (`tuning_spec`): every variant x every point of the grid
x the tuning seeds (by default one seed the final runs do not use, so no final run is a
tuning run that won), as variants named "VARIANT@lr=0.001", in the output folder's tune/. Then
each variant's best point (the lowest mean metric over the tuning seeds; the first point on a
tie) is set on it (`tuned_spec`), and the spec trains as usual on all its seeds. Choosing on
validation loss and reporting it is biased upward in a variant's favour, so a tuned spec must
hold out a test split (data.test_fraction, or test documents or shards), on which the final runs
are reported. Not here: running the phases and choosing the points (toolkit/sweep/tuning.py).
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from toolkit.api.manager import Plugins
from toolkit.api.registry import suggest
from toolkit.errors import SpecError
from toolkit.names import label
from toolkit.spec.schema import RunSpec, Spec, Variant, plugins_used
from toolkit.spec.validate import TEST_SPLIT_HOW, resolve, without_test_split

# Training keys a tuning grid may vary: how a run learns, never how long (a budget would always
# tune to its largest value) or how it is measured; and the optimizer's and the schedule's own
# options ("train.optimizer.muon_lr"), checked against the component when a variant resolves.
TUNABLE = (
    "lr", "min_lr_ratio", "warmup_steps", "betas", "weight_decay", "weight_decay_on", "grad_clip",
)  # fmt: skip
TUNABLE_OPTIONS = ("optimizer", "schedule")
METRICS = ("val_loss", "val_bpb")
OPTIONS = ("seeds", "metric", "variants")
MAX_POINTS = 1000


@dataclass
class Tune:
    """The tuning grid: candidate values per dotted train key (in the order given), the seeds
    each point trains with, and the validation metric that chooses."""

    values: dict[str, list[Any]]
    seeds: list[int]
    metric: str = "val_loss"
    logs: set[str] = field(default_factory=set)  # keys given as log_range: plotted on a log axis
    # Variants' own grids, each in place of the shared one ([tune.variants.NAME]).
    variants: dict[str, dict[str, list[Any]]] = field(default_factory=dict)

    def values_for(self, variant: str | None = None) -> dict[str, list[Any]]:
        """The candidates a variant tries: its own grid where [tune.variants] gives one."""
        return self.variants.get(variant or "", self.values)

    def keys(self) -> list[str]:
        """Every key some variant tunes."""
        return list(dict.fromkeys([*self.values, *(k for v in self.variants.values() for k in v)]))

    def points(self, variant: str | None = None) -> list[dict[str, Any]]:
        """Every combination of a variant's candidates, the first key varying slowest."""
        values = self.values_for(variant)
        keys = list(values)
        return [
            dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values.values())
        ]

    def n_runs(self, variants: list[str]) -> int:
        """Tuning runs for these variants: each one's points x the tuning seeds."""
        return sum(len(self.points(v)) for v in variants) * len(self.seeds)

    def to_dict(self) -> dict[str, Any]:
        own = {"variants": self.variants} if self.variants else {}
        return {"values": self.values, "seeds": self.seeds, "metric": self.metric, **own}


# [tune]'s default tuning seed: one a spec's final seeds seldom reach, and the same whatever
# they are, so adding final seeds later (--set "seeds=[0,1,2,3]") keeps the tuning runs.
TUNE_SEED = 1000


def free_seed(seeds: list[int]) -> int:
    """The smallest seed from TUNE_SEED up that is not in `seeds` (1000 for [0, 1, 2])."""
    taken = set(seeds)
    return next(s for s in itertools.count(TUNE_SEED) if s not in taken)


def overlap_warning(tune: Tune, seeds: list[int]) -> str | None:
    """The warning for tuning seeds that are also final seeds, or None. Training is
    deterministic, so a variant's final run on such a seed is its winning tuning run, chosen
    for its low validation loss: its test loss is low by the same luck (by more the more points
    its grid has), and the variants with the larger grids gain the most. The final runs train
    anew either way, so other seeds cost nothing more."""
    shared = [s for s in tune.seeds if s in seeds]
    if not shared:
        return None
    which = ", ".join(map(str, shared))
    free = free_seed([*seeds, *tune.seeds])
    return (
        f"[tune] tunes on seeds the final runs use too ({which}): a variant's final run on such "
        f"a seed is the run that won its tuning, so its test loss is flattered by the choice; tune on seeds "
        f"the final runs do not use (e.g. seeds = [{free}], the default when seeds is left out), "
        f"which costs nothing more"
    )


def point_label(point: dict[str, Any]) -> str:
    """'lr=0.001,warmup_steps=10': a point as it reads in a variant name."""
    return ",".join(f"{key.split('.', 1)[1]}={label(value)}" for key, value in point.items())


def tune_variant(variant: str, point: dict[str, Any]) -> str:
    """The name of a variant's tuning run at a point: 'rmsnorm@lr=0.001'."""
    return f"{variant}@{point_label(point)}"


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        is_range = isinstance(value, dict) and ({"range", "log_range"} & set(value))
        if isinstance(value, dict) and not is_range and "." not in key:
            out.update(_flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def _candidates(key: str, value: Any, where: str) -> tuple[list[Any], bool]:
    """A key's candidate values from a list or a {range|log_range = [lo, hi], points = n}
    table; (values, given as a log range)."""
    if isinstance(value, list):
        if len(value) < 2:
            raise SpecError(
                f"{where}: [tune] {key} needs at least 2 values to choose from, got {value!r}"
            )
        if any(a == b for a, b in itertools.combinations(value, 2)):
            raise SpecError(f"{where}: [tune] {key} lists a value twice: {value!r}")
        return list(value), False
    if not isinstance(value, dict):
        raise SpecError(
            f"{where}: [tune] {key} must be a list of values or {{log_range = [lo, hi], points = n}}, "
            f"got {value!r}"
        )
    kind = "log_range" if "log_range" in value else "range"
    extra = sorted(set(value) - {kind, "points"})
    bounds, points = value.get(kind), value.get("points", 5)
    ok = isinstance(bounds, list) and len(bounds) == 2
    ok = ok and all(
        isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(b) for b in bounds
    )
    ok = ok and not extra and bounds[0] < bounds[1]
    if not ok:
        raise SpecError(
            f"{where}: [tune] {key} = {value!r}: give {kind} = [low, high], finite numbers with "
            f"low < high, and optionally points = n"
        )
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise SpecError(
            f"{where}: [tune] {key}: points must be a whole number >= 2, got {points!r}"
        )
    low, high = (float(b) for b in bounds)
    if kind == "log_range":
        if low <= 0:
            raise SpecError(
                f"{where}: [tune] {key}: log_range needs positive bounds, got {bounds!r}"
            )
        grid = [
            math.exp(math.log(low) + i * (math.log(high) - math.log(low)) / (points - 1))
            for i in range(points)
        ]
    else:
        grid = [low + i * (high - low) / (points - 1) for i in range(points)]
    if all(isinstance(b, int) for b in bounds):
        grid = [round(g) for g in grid]
    else:
        grid = [float(f"{g:.4g}") for g in grid]  # 0.000316 reads better than 0.00031622776
    unique = list(dict.fromkeys(grid))
    if len(unique) < 2:
        raise SpecError(f"{where}: [tune] {key} = {value!r} gives fewer than 2 distinct values")
    return unique, kind == "log_range"


def _grid(keys: dict[str, Any], logs: set[str], where: str) -> dict[str, list[Any]]:
    """Each tunable key's candidates (keys given as log ranges are added to `logs`)."""
    values: dict[str, list[Any]] = {}
    for key, value in keys.items():
        parts = key.split(".")
        plain = len(parts) == 2 and parts[1] in TUNABLE
        option = len(parts) == 3 and parts[1] in TUNABLE_OPTIONS
        if parts[0] != "train" or not (plain or option):
            raise SpecError(
                f"{where}: [tune] cannot tune {key!r}; it tunes how a run learns: "
                f"{', '.join(f'train.{k}' for k in TUNABLE)}, and the optimizer's and the "
                f"schedule's options (train.optimizer.NAME) (vary the model with a grid or "
                f"variants)"
            )
        values[key], is_log = _candidates(key, value, where)
        if is_log:
            logs.add(key)
    return values


def parse_tune(raw: Any, seeds: list[int], where: str) -> Tune:
    """The [tune] table, checked; its keys must be tunable train keys."""
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: tune must be a table ([tune]), got {raw!r}")
    options = {k: raw[k] for k in OPTIONS if k in raw}
    keys = _flatten({k: v for k, v in raw.items() if k not in OPTIONS})
    if not keys:
        raise SpecError(
            f'{where}: [tune] names no key to tune; e.g. "train.lr" = [1e-4, 3e-4, 1e-3]'
        )
    logs: set[str] = set()
    values = _grid(keys, logs, where)
    # By default one seed no final run uses: a final run on a tuning seed would be the very run
    # that won its variant's tuning, its test loss flattered by the choice (overlap_warning).
    tune_seeds = options.get("seeds", [free_seed(seeds)])
    if (
        not isinstance(tune_seeds, list)
        or not tune_seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in tune_seeds)
        or len(set(tune_seeds)) != len(tune_seeds)
    ):
        raise SpecError(
            f"{where}: [tune] seeds must be a non-empty list of distinct seeds, got {tune_seeds!r}"
        )
    metric = options.get("metric", "val_loss")
    if metric not in METRICS:
        raise SpecError(
            f"{where}: [tune] metric must be one of {', '.join(METRICS)} (the validation split "
            f"chooses; the test split reports), got {metric!r}"
        )
    own = options.get("variants", {})
    if not isinstance(own, dict) or not all(isinstance(t, dict) for t in own.values()):
        raise SpecError(
            f"{where}: [tune] variants must be tables of a variant's own candidates, e.g. "
            f'[tune.variants.sgd] "train.lr" = [0.1, 0.3]; got {own!r}'
        )
    by_variant = {
        variant: _grid(_flatten(table), logs, f"{where}: [tune.variants.{variant}]")
        for variant, table in own.items()
    }
    for variant, grid in by_variant.items():
        if not grid:
            raise SpecError(
                f"{where}: [tune.variants.{variant}] names no key to tune; give its grid, e.g. "
                f'"train.lr" = [0.1, 0.3], or leave the table out to use the shared one'
            )
    tune = Tune(values, tune_seeds, metric, logs, by_variant)
    for variant in ["", *by_variant]:
        if len(tune.points(variant)) > MAX_POINTS:
            raise SpecError(
                f"{where}: [tune] has {len(tune.points(variant)):,} points; at most {MAX_POINTS:,}"
            )
    return tune


def check_tunable(spec: Spec, plugins: Plugins) -> None:
    """A tuned spec's variants leave the tuned keys to [tune], hold out a test split, and take
    every point of their grids (an optimizer option the variant's optimizer lacks fails here,
    before anything trains)."""
    assert spec.tune is not None
    names = [v.name for v in spec.variants]
    for name in spec.tune.variants:
        if name not in names:
            raise SpecError(
                f"{spec.path}: [tune.variants] names {name!r}, which is not a variant"
                f"{suggest(name, names)}; the variants: {', '.join(names)}"
            )
    for v in spec.variants:
        clash = sorted(set(v.overrides) & set(spec.tune.values_for(v.name)))
        if clash:
            raise SpecError(
                f"{spec.path}: variant {v.name!r} sets {clash[0]}, which [tune] chooses for "
                f"every variant; take it out of the variant (or out of [tune])"
            )
    if without_test_split(spec.runs):
        raise SpecError(
            f"{spec.path}: [tune] chooses on the validation split, so results are reported "
            f"on a test split: {TEST_SPLIT_HOW}"
        )
    for v in spec.variants:
        for point in spec.tune.points(v.name):
            resolve(spec.base, Variant(v.name, {**v.overrides, **point}), spec.path, plugins)


def tuning_spec(spec: Spec, plugins: Plugins) -> Spec:
    """Phase one: every variant at every point of the grid, on the tuning seeds."""
    assert spec.tune is not None
    tune = spec.tune
    variants = [
        Variant(tune_variant(v.name, point), {**v.overrides, **point})
        for v in spec.variants
        for point in tune.points(v.name)
    ]
    baseline = tune_variant(spec.baseline, tune.points(spec.baseline)[0])
    return _spec_of(spec, variants, tune.seeds, plugins, baseline)


def tuned_spec(spec: Spec, chosen: dict[str, dict[str, Any]], plugins: Plugins) -> Spec:
    """Phase two: each variant at its chosen point, on all the spec's seeds."""
    variants = [
        Variant(v.name, {**v.overrides, **chosen[v.name]}, v.after, v.own) for v in spec.variants
    ]
    final = _spec_of(spec, variants, spec.seeds, plugins, spec.baseline)
    final.tuned = chosen
    return final


def _spec_of(
    spec: Spec, variants: list[Variant], seeds: list[int], plugins: Plugins, baseline: str
) -> Spec:
    resolved = {v.name: resolve(spec.base, v, spec.path, plugins) for v in variants}
    runs = [
        RunSpec(
            spec.name,
            v.name,
            seed,
            v.overrides,
            **copy.deepcopy(resolved[v.name]),
            after=v.after,
            own_overrides=v.own,
        )
        for seed in seeds
        for v in variants
    ]
    for r in runs:
        r.plugins = plugins_used(r, plugins)
    return Spec(
        spec.name, spec.path, spec.description, seeds, spec.plugins, baseline, variants, runs,
        spec.base, None, spec.notes, spec.tune,
    )  # fmt: skip
