"""`--set KEY=VALUE` on the command line: parsing one, and applying it to a spec's raw document
before validation. The command line wins over the spec: a key the grid varies becomes an axis
of one value, a key variants set is taken out of them, an option of a component the grid or
variants choose is set in each choice, data.path replaces a corpus (and data.corpus a path), and
`grid.KEY=[...]` sets a grid axis. A component set to the one the spec chose keeps the spec's
options for it; another starts from its own defaults (a note says which options that drops).
Each says what it changed beyond its own key, as notes.

    key, value = parse_override("train.lr=1e-3")       # ('train.lr', 0.001)
    notes = apply_override(raw, key, value, source)    # raw: the TOML document, changed in place
    notes = apply_overrides(raw, ["model.norm.eps=0.5", "model.norm=rmsnorm"], source)
    # every --set in turn, a component before its options: rmsnorm with eps 0.5, in either order

Also the dotted-key views of tables that parsing and overriding share (flatten, flatten_grid).
Not here: reading the spec and expanding its variants (parse.py).
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

from toolkit.api.registry import suggest
from toolkit.errors import SpecError
from toolkit.names import label
from toolkit.spec import limits
from toolkit.spec.chains import AFTER
from toolkit.spec.schema import SLOTS, TOP_LEVEL, as_choice, default

# The first characters of TOML values that are never bare words: an array, an inline table, a
# basic or a literal string.
TOML_OPENERS = ("[", "{", '"', "'")


def parse_override(item: str, source: str = "--set") -> tuple[str, Any]:
    """'train.lr=1e-3' -> ('train.lr', 0.001); values are TOML values, bare words are strings:
    'model.norm=rmsnorm' -> ('model.norm', 'rmsnorm'); 'seeds=[1,2]' -> ('seeds', [1, 2]).
    A value that opens like a TOML array, table or quoted string but does not parse
    ('seeds=[0,') is an error: as a bare word it would pass on as the string '[0,'."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=1e-3")
    limits.check_text(f"{key} = {text}", f"--set {key[:40]}")
    text = text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if text[:1] in TOML_OPENERS:
            why = str(exc).split(" (at ", 1)[0]  # its position is in "v = ...", not the value
            if why.startswith("Expected newline or end of document"):
                why = "something follows the value"
            raise SpecError(
                f"--set {key}: {text!r} is not a valid TOML value ({why}); write an array or "
                f"table whole, e.g. --set 'seeds=[0, 1]', and a string that starts with "
                f"[, {{ or a quote in TOML quotes: --set '{key}=\"...\"'"
            ) from None
        value = text
    return key, value


def apply_overrides(
    raw: dict[str, Any], items: list[str] | tuple[str, ...], source: str
) -> list[str]:
    """Apply --set strings to the raw document in their order, except that a component chosen
    on the command line comes before the options set for it there, whatever their order:
    `--set model.norm.eps=0.5 --set model.norm=rmsnorm` is rmsnorm with eps 0.5, as the
    reverse order is. Returns the notes of apply_override."""
    ordered: list[tuple[str, Any]] = []
    for item in items:
        key, value = parse_override(item, source)
        at = len(ordered)
        if key in SLOTS:  # before the first option of this slot already in the list
            at = next((i for i, (k, _) in enumerate(ordered) if k.startswith(f"{key}.")), at)
        ordered.insert(at, (key, value))
    notes = []
    for i, (key, value) in enumerate(ordered):
        later = {k for k, _ in ordered[i + 1 :]}
        notes += apply_override(raw, key, value, source, later)
    return notes


def apply_override(
    raw: dict[str, Any], dotted: str, value: Any, source: str, later: set[str] | None = None
) -> list[str]:
    """Apply one --set to the raw document, before validation. The command line wins over
    the spec: a key the grid varies becomes an axis of one value, a key variants set is
    taken out of them, and data.path replaces a corpus (and data.corpus a path).
    `grid.KEY=[...]` sets a grid axis. A component choice set to the component the spec
    chose keeps the options the spec gave it; another component starts from its own
    defaults, and a note names the options that drops (unless `later`, the keys of --set
    still to come, sets them again). Returns notes on what changed beyond the key itself."""
    parts = dotted.split(".")
    if parts[0] == "grid":
        return _set_axis(raw, dotted, value, source)
    if parts[0] == "tune":  # tune."train.lr" as tune.train.lr: [tune] reads both as one key
        parts = [p for part in _key_parts(dotted) for p in part.split(".")]
    settable = TOP_LEVEL - {"grid", "variants", "sampling_ablation"}
    if parts[0] not in settable:
        if parts[0] in TOP_LEVEL:
            instead = (
                ""
                if parts[0] == "sampling_ablation"
                else 'set a grid axis instead (--set \'grid."model.norm"=["layernorm",'
                '"rmsnorm"]\') or '
            )
            raise SpecError(
                f"--set {dotted}: {parts[0]!r} cannot be set from the command line; "
                f"{instead}edit {source}"
            )
        raise SpecError(
            f"--set {dotted}: unknown key {parts[0]!r}{suggest(parts[0], settable)}; "
            f"settable: {', '.join(sorted(settable))}, grid.KEY"
        )
    if len(parts) == 1:
        raw[dotted] = value
        return []
    node = raw.setdefault(parts[0], {})
    if not isinstance(node, dict):
        raise SpecError(f"--set {dotted}: {parts[0]!r} in {source} is not a table")
    notes = []
    if dotted in ("data.path", "data.corpus"):
        other = "corpus" if dotted == "data.path" else "path"
        if node.pop(other, None) is not None:
            notes.append(f"--set {dotted} replaces data.{other} of {source}")
    slot = ".".join(parts[:2])
    given = value  # the grid and variants take it as given (their choices are their own)
    if dotted in SLOTS and parts[1] in node:
        value, dropped = _over_choice(node[parts[1]], value, dotted, later or set())
        if dropped:
            (option, was), *_ = dropped.items()
            notes.append(
                f"--set {dotted}={label(value)} replaces {label(node[parts[1]])} of "
                f"{source}, dropping its option(s) {', '.join(dropped)}; to keep {option}, "
                f"add --set {dotted}.{option}={label(was)}"
            )
    if slot in SLOTS and len(parts) > 2:
        node[parts[1]] = as_choice(node.get(parts[1], default(slot)), slot, source)
        node = node[parts[1]]
        parts = parts[1:]
    for depth, part in enumerate(parts[1:-1], 2):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError(
                f"--set {dotted}: {'.'.join(parts[:depth])!r} in {source} is "
                f"{json.dumps(node)}, not a table, so it has no key {parts[depth]!r}"
            )
    node[parts[-1]] = value
    return notes + _override_variants(raw, dotted, given, source)


def _over_choice(
    previous: Any, value: Any, dotted: str, later: set[str]
) -> tuple[Any, dict[str, Any]]:
    """A component choice set over the spec's: (the value to set, the spec's options it drops).
    The same component keeps the spec's options (the command line's own win): 'rmsnorm' over
    {name = "rmsnorm", eps = 0.5} -> ({'name': 'rmsnorm', 'eps': 0.5}, {}). Another one starts
    from its own defaults, as options belong to a component: 'rmsnorm' over {name =
    "layernorm", eps = 0.5} -> ('rmsnorm', {'eps': 0.5}). Options that `later` sets again are
    not dropped; a value that is no choice is left for validation to name."""

    def named(v: Any) -> bool:
        return isinstance(v, str) or (isinstance(v, dict) and isinstance(v.get("name"), str))

    if not (named(previous) and named(value)):
        return value, {}
    old, new = as_choice(previous, dotted, ""), as_choice(value, dotted, "")
    if old["name"] == new["name"]:
        return {**old, **new}, {}
    dropped = {
        k: v
        for k, v in old.items()
        if k != "name" and k not in new and f"{dotted}.{k}" not in later
    }
    return value, dropped


def _set_axis(raw: dict[str, Any], dotted: str, value: Any, source: str) -> list[str]:
    """--set grid.KEY=[...] or grid."KEY"=[...]: that grid axis, replaced or added."""
    axis = ".".join(_key_parts(dotted)[1:])  # grid."model.norm" and grid.model.norm alike
    if not axis:
        raise SpecError(f"--set {dotted}: name the axis, e.g. --set 'grid.\"model.norm\"=[...]'")
    if not isinstance(value, list) or not value:
        raise SpecError(
            f"--set {dotted}: a grid axis is a non-empty list of values, e.g. "
            f'--set \'grid."{axis}"=["layernorm","rmsnorm"]\''
        )
    grid = raw.get("grid", {})
    if not isinstance(grid, dict):
        raise SpecError(f"--set {dotted}: grid in {source} is not a table")
    axes = flatten_grid(grid)
    replaced = axis in axes
    axes[axis] = value
    raw["grid"] = axes
    verb = "replaces the grid axis" if replaced else "adds the grid axis"
    return [f"--set {dotted} {verb} {axis!r} of {source}"]


def _key_parts(dotted: str) -> list[str]:
    """A TOML dotted key's parts, quotes read as TOML reads them: 'grid."model.norm".x' ->
    ['grid', 'model.norm', 'x']; a key TOML cannot read is split at its dots."""
    try:
        node: Any = tomllib.loads(f"{dotted} = 0")
    except tomllib.TOMLDecodeError:
        return [p.strip().strip("\"'") for p in dotted.split(".")]
    parts = []
    while isinstance(node, dict):
        (key, node), *_ = node.items()
        parts.append(key)
    return parts


def _override_variants(raw: dict[str, Any], dotted: str, value: Any, source: str) -> list[str]:
    """The command line wins over the spec's variants too: a grid axis of this key becomes
    this one value, variants' settings of the key are dropped, and an option set under a
    component choice that the grid or variants choose is set in each of their choices."""
    notes = []
    grid = raw.get("grid")
    if isinstance(grid, dict):
        axes = flatten_grid(grid)
        for axis, values in axes.items():
            if axis == dotted:
                axes[axis] = [value]
                notes.append(
                    f"--set {dotted} replaces the grid axis {axis!r} of {source} with one value"
                )
            elif axis in SLOTS and dotted.startswith(f"{axis}.") and isinstance(values, list):
                option = dotted[len(axis) + 1 :]
                axes[axis] = [{**as_choice(v, axis, source), option: value} for v in values]
                notes.append(
                    f"--set {dotted} sets {option!r} in every choice of grid axis {axis!r}"
                )
        raw["grid"] = axes
    variants = raw.get("variants")
    if isinstance(variants, list):
        changed = []
        for i, table in enumerate(variants):
            if not isinstance(table, dict):
                continue
            flat = flatten({k: v for k, v in table.items() if k not in ("name", AFTER)})
            if dotted in flat:
                del flat[dotted]
            elif any(key in SLOTS and dotted.startswith(f"{key}.") for key in flat):
                key = next(k for k in flat if k in SLOTS and dotted.startswith(f"{k}."))
                flat[key] = {**as_choice(flat[key], key, source), dotted[len(key) + 1 :]: value}
            else:
                continue
            after = {AFTER: table[AFTER]} if AFTER in table else {}
            variants[i] = {"name": table.get("name"), **after, **flat}
            changed.append(str(table.get("name")))
        if changed:
            notes.append(
                f"--set {dotted} overrides what variant(s) {', '.join(changed)} of {source} set"
            )
    return notes


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model': {'norm': 'rmsnorm'}} -> {'model.norm': 'rmsnorm'}. Quoted dotted keys are kept
    whole; a component choice ({name = ..., ...}) is a leaf."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in SLOTS:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def flatten_grid(grid: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in grid.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_grid(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat
