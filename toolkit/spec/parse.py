"""Reading a spec: TOML text, `--set` overrides (applied by overrides.py), the top-level keys,
and the variants (a grid and/or an explicit list) expanded x seeds into runs, each checked by
validate.py.

A spec is data: nothing in it is evaluated. Every key, type, component name and option is
checked before any training, and an error names the file, the key (and the variant) and what
is allowed. Checks that need the tokenized corpus (context longer than the data) happen in the
sweep's preparation step, still before any training.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from toolkit.api.manager import Plugins, load_plugins
from toolkit.api.registry import check_type, suggest
from toolkit.errors import SpecError
from toolkit.names import RESERVED_FOLDERS, label, slug
from toolkit.spec import limits
from toolkit.spec.chains import AFTER, link
from toolkit.spec.ladder import ladder_variants, params_counter, parse_ladder, rung_variant
from toolkit.spec.matching import match_mode, match_params
from toolkit.spec.overrides import apply_overrides, flatten, flatten_grid, parse_override
from toolkit.spec.sampling_table import check_sampled_runs, sampling_ablation
from toolkit.spec.schema import (
    SECTIONS,
    SLOTS,
    TOP_LEVEL,
    RunSpec,
    Spec,
    Variant,
    as_choice,
    plugins_used,
)
from toolkit.spec.tune import check_tunable, overlap_warning, parse_tune
from toolkit.spec.validate import TEST_SPLIT_HOW, pairing_warnings, resolve, without_test_split

# -- loading ------------------------------------------------------------------------------


def load_spec(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    plugins: Plugins | None = None,
    extra_plugins: list[str] | tuple[str, ...] = (),
    max_runs: int = limits.DEFAULT_MAX_RUNS,
) -> Spec:
    """Read and validate a spec file. `overrides` are `--set` strings like "train.lr=1e-3"."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            raise SpecError(f"{path}: not a regular file (a device or a pipe); give a .toml file")
        with path.open("rb") as f:  # at most one byte past the limit, whatever stat says
            data = f.read(limits.MAX_SPEC_BYTES + 1)
        if len(data) > limits.MAX_SPEC_BYTES:
            size = path.stat().st_size
            raise SpecError(
                f"{path}: {max(size, len(data)):,} bytes; a spec is at most "
                f"{limits.MAX_SPEC_BYTES:,} (put data in files and name them in the spec)"
            )
        text = data.decode("utf-8")
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
    limits.check_text(text, str(path))
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
        max_runs=max_runs,
    )


def parse_spec(
    raw: dict[str, Any],
    source: str = "<spec>",
    overrides: list[str] | tuple[str, ...] = (),
    plugins: Plugins | None = None,
    extra_plugins: list[str] | tuple[str, ...] = (),
    default_name: str = "experiment",
    max_runs: int = limits.DEFAULT_MAX_RUNS,
) -> Spec:
    """Validate an already-parsed spec document (a dict as tomllib returns it); a spec of more
    than `max_runs` runs is refused before its variants are expanded."""
    if isinstance(overrides, str):  # each of its characters would read as one --set
        raise SpecError(
            f"overrides must be a list of 'KEY=VALUE' strings, e.g. [{overrides!r}]; got a str"
        )
    raw = copy.deepcopy(raw)
    unknown = sorted(set(raw) - TOP_LEVEL)
    if unknown:
        raise SpecError(
            f"{source}: unknown top-level key {unknown[0]!r}{suggest(unknown[0], TOP_LEVEL)}; "
            f"allowed: {', '.join(sorted(TOP_LEVEL))}"
        )
    notes = apply_overrides(raw, overrides, source)
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
    limits.check_name(name, source)
    description = _top(raw, "description", str, "", source)
    seeds = _top(raw, "seeds", list[int], [0], source)
    if not seeds:
        raise SpecError(f"{source}: seeds is empty; give at least one, e.g. seeds = [0]")
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"{source}: seeds {seeds} has duplicates; each seed runs once per variant")
    limits.check_seeds(seeds, f"{source}: seeds")
    limits.check_runs(raw, len(seeds), max_runs, source)
    plugin_modules = _top(raw, "plugins", list[str], [], source)
    for module in plugin_modules:
        if not all(part.isidentifier() for part in module.split(".")):
            raise SpecError(
                f"{source}: plugins: {module!r} is not a Python module name; give dotted "
                f'names such as plugins = ["my_plugins.norms"]'
            )

    if plugins is None:
        plugins = load_plugins(tuple(extra_plugins), source="extra_plugins")
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
    ladder = None
    counter = None
    match = match_mode(raw.get("match_params", False), source)
    if "ladder" in raw or match:
        counter = params_counter(base, source, plugins)
    first_baseline = baseline
    if "ladder" in raw:
        if "tune" in raw:
            raise SpecError(
                f"{source}: [tune] and [ladder] together are not supported yet; tune at one "
                f"size, then climb the ladder with the chosen settings"
            )
        ladder = parse_ladder(raw["ladder"], source)
        variants = ladder_variants(ladder, variants, baseline, base, source, counter)
        baseline = rung_variant(baseline, list(ladder.sizes)[-1])
        if len(variants) * len(seeds) > max_runs:
            raise SpecError(
                f"{source}: {len(variants) * len(seeds):,} runs (variants x sizes x seeds) is "
                f"more than the limit of {max_runs:,}; pass --max-runs "
                f"{len(variants) * len(seeds)} (max_runs= in Python) if you mean it"
            )
    if match:
        assert counter is not None

        def reference_of(name: str) -> str:
            """The variant a variant must match: the baseline, at its ladder size."""
            if ladder is None:
                return baseline
            return rung_variant(first_baseline, name.rsplit("@", 1)[1])

        active = match == "active"
        if active:
            counter = params_counter(base, source, plugins, active=True)
        variants, matched = match_params(variants, reference_of, counter, source, active)
        notes += matched

    resolved = {v.name: resolve(base, v, source, plugins) for v in variants}
    runs = [
        RunSpec(
            name,
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
    tokenizers = {json.dumps(r.data.tokenizer, sort_keys=True) for r in runs}
    if ladder is not None and ladder.metric.endswith("_loss") and len(tokenizers) > 1:
        bpb = ladder.metric.replace("_loss", "_bpb")
        raise SpecError(
            f"{source}: the ladder's variants use different tokenizers, whose losses per token "
            f"do not compare; set [ladder] metric = {bpb!r} (bits per byte)"
        )
    if ladder is not None and ladder.metric.startswith("test_"):
        missing = without_test_split(runs)
        if missing is not None:
            raise SpecError(
                f"{source}: [ladder] metric = {ladder.metric!r} fits the test split, which "
                f"variant {missing.variant} does not hold out: {TEST_SPLIT_HOW} (or fit val_loss)"
            )
    ablation = None
    if "sampling_ablation" in raw:
        ablation = sampling_ablation(raw["sampling_ablation"], source, plugins)
        check_sampled_runs(ablation, raw, runs, source)
    tune = parse_tune(raw["tune"], seeds, source) if "tune" in raw else None
    tuned_keys = tune.keys() if tune is not None else []
    for item in overrides:
        key = parse_override(item, source)[0]
        if key in tuned_keys:  # [tune] sets it on every variant: the value would go unused
            raise SpecError(
                f"--set {key}: [tune] chooses {key} for each variant, so this value would not "
                f"be used; set its candidates instead, e.g. --set 'tune.{key}=[...]'"
            )
    spec = Spec(
        name, source, description, seeds, plugin_modules, baseline, variants, runs, base,
        ablation, notes, tune, ladder=ladder,
        warnings=[*pairing_warnings(runs, plugins), *same_config_warnings(runs)],
    )  # fmt: skip
    if tune is not None:
        check_tunable(spec, plugins)
        overlap = overlap_warning(tune, seeds)
        if overlap:
            spec.warnings.append(overlap)
        n_tuning = tune.n_runs([v.name for v in variants])
        if n_tuning + len(runs) > max_runs:
            raise SpecError(
                f"{source}: {n_tuning + len(runs):,} runs ({n_tuning:,} tuning, {len(runs):,} "
                f"final) is more than the limit of {max_runs:,}; pass --max-runs "
                f"{n_tuning + len(runs)} (max_runs= in Python) if you mean it"
            )
    return spec


# -- helpers ------------------------------------------------------------------------------


def same_config_warnings(runs: list[RunSpec]) -> list[str]:
    """A warning per group of variants whose runs resolve to the same config (config_hash):
    a variant that sets a key to the base's value, or a component's option to its default
    ('layernorm' and {name = "layernorm", eps = 1e-5}), trains the same runs again. A warning,
    not an error: a baseline rerun under another name (a control), or variants that a --set
    made alike for a quick check, are done on purpose and their runs are valid; but a
    comparison between such variants measures nothing, which the warning says before any
    training."""
    twins: dict[str, dict[str, None]] = {}
    for r in runs:
        twins.setdefault(r.config_hash(), {})[r.variant] = None
    groups = dict.fromkeys(tuple(names) for names in twins.values() if len(names) > 1)
    warnings = []
    for names in groups:
        listed = ", ".join(map(repr, names[:-1])) + f" and {names[-1]!r}"
        warnings.append(
            f"variants {listed} resolve to the same config, so their runs are identical "
            f"(seed for seed); make them differ (a key set to the base's value, or an option "
            f"to its default, changes nothing) or drop all but one"
        )
    return warnings


def _top(raw: dict[str, Any], key: str, typ: Any, default: Any, source: str) -> Any:
    if key not in raw:
        return default
    return check_type(raw[key], typ, f"{source}: {key}", SpecError)


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
        out[key] = as_choice(value, dotted, source) if dotted in SLOTS else value
    return out


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
    afters: dict[str, Any] = {}  # variant name -> its `after` (toolkit.spec.chains)
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
        if AFTER in table:
            afters[name] = table.pop(AFTER)
        overrides = flatten(table)
        for key in overrides:
            _check_key(key, source, f"variant {name!r}:")
        variants.append(Variant(name, overrides))

    grid = raw.get("grid", {})
    if not isinstance(grid, dict):
        raise SpecError(f'{source}: grid must be a table ([grid] with "section.key" = [values])')
    axes = flatten_grid(grid)
    for key, values in axes.items():
        if key == AFTER:
            raise SpecError(
                f"{source}: [grid] cannot vary after: grid variants vary the base settings; "
                f'write the steps as [[variants]] with after = "previous" instead'
            )
        _check_key(key, source, "[grid]")
        if not isinstance(values, list) or not values:
            raise SpecError(
                f"{source}: [grid] {key!r} must be a non-empty list of values, got {values!r}"
            )
    grid_names = []
    if axes:
        labels = _axis_labels(list(axes))
        points: list[dict[str, Any]] = [{}]
        for key, values in axes.items():
            points = [{**p, key: v} for p in points for v in values]
        for point in points:
            name = ",".join(f"{labels[k]}={label(v)}" for k, v in point.items())
            variants.append(Variant(name, point))
            grid_names.append(name)

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
        if slug(v.name) in RESERVED_FOLDERS:
            raise SpecError(
                f"{source}: a variant named {v.name!r} would share the folder of "
                f"{RESERVED_FOLDERS[slug(v.name)]}; rename it"
            )
        if slug(v.name) in slugs:
            raise SpecError(
                f"{source}: variants {slugs[slug(v.name)]!r} and {v.name!r} would share the "
                f"folder {slug(v.name)!r}; rename one"
            )
        slugs[slug(v.name)] = v.name
    return link(variants, afters, grid_names, source)


def _axis_labels(keys: list[str]) -> dict[str, str]:
    """Shortest unambiguous label per axis: 'model.norm' -> 'norm' unless two axes end alike."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}
