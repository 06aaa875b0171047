"""Cumulative variants: a [[variants]] entry that builds on an earlier one with `after`, so a spec
can walk from one recipe to another a change at a time.

    [[variants]]
    name = "gpt2"                    # the base settings

    [[variants]]
    name = "rope"
    after = "previous"               # gpt2's settings, then its own keys
    "model.positional" = "rope"

    [[variants]]
    name = "rmsnorm"
    after = "rope"                   # or name any variant listed before
    "model.norm" = "rmsnorm"

A variant after another gets that variant's keys (themselves cumulative: C after B after A has
A's, then B's, then C's), then its own on top; its own win. A key that chooses a component
replaces the earlier variant's options of that component, as it does over the base settings:
after {model.norm = "rmsnorm", model.norm.eps = 1e-6}, model.norm = "layernorm" is layernorm at
its default eps. `link` returns each variant with every key that differs from the base settings
(`overrides`, what validate.py resolves), the variant it builds on (`after`) and its own keys
(`own`). `after` may name only an explicit variant listed before: grid variants always vary the
base settings, and `after` is no grid axis. "previous" always means the entry just before, even
in a spec with a variant named "previous".

Not here: reading the table (parse.py), the `--set` overrides (applied to every variant's own
keys before `link`, so the command line still wins), validation (validate.py). Nothing else
resolves `after`: a run records it in config.json (read by toolkit.analysis.steps' report), and
its config hash is that of its settings alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from toolkit.api.registry import suggest
from toolkit.errors import SpecError
from toolkit.spec.schema import SLOTS, Variant

AFTER = "after"  # the [[variants]] key
PREVIOUS = "previous"  # after = "previous": the entry listed just before


def link(
    variants: list[Variant], afters: dict[str, Any], grid: Iterable[str], source: str
) -> list[Variant]:
    """The variants (in spec order) with their `after` resolved: afters maps a variant's name to
    the value of its `after` key; grid names the variants the grid made. An `after` that names
    no earlier explicit variant is a SpecError."""
    if not afters:
        return variants
    grid_names = set(grid)
    position = {v.name: i for i, v in enumerate(variants)}
    out: list[Variant] = []
    for i, variant in enumerate(variants):
        if variant.name not in afters:
            out.append(variant)
            continue
        parent = out[
            _parent_index(variant.name, afters[variant.name], i, position, grid_names, source)
        ]
        own = variant.overrides
        out.append(Variant(variant.name, merge(parent.overrides, own), parent.name, own))
    return out


def merge(earlier: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """An earlier variant's keys, then a variant's own (dotted keys): its own win, and a key
    that chooses a component drops the earlier options of that component.
    {'model.norm': 'rmsnorm', 'model.norm.eps': 1e-6}, {'model.norm': 'layernorm'}
    -> {'model.norm': 'layernorm'}."""
    chosen = [key for key in own if key in SLOTS]
    kept = {
        key: value
        for key, value in earlier.items()
        if key not in own and not any(key.startswith(f"{slot}.") for slot in chosen)
    }
    return {**kept, **own}


def _parent_index(
    name: str, after: Any, i: int, position: dict[str, int], grid: set[str], source: str
) -> int:
    where = f"{source}: variant {name!r}:"
    if not isinstance(after, str):
        raise SpecError(
            f'{where} after must be the name of an earlier variant or "previous", got {after!r}'
        )
    if after == PREVIOUS:
        if i == 0:
            raise SpecError(
                f'{where} after = "previous" on the first variant: nothing comes before it, '
                f"and it starts from the base settings already (a chain starts at the baseline "
                f"this way); leave after out"
            )
        return i - 1
    if after not in position:
        explicit = [n for n, j in position.items() if j < i]
        raise SpecError(
            f"{where} after {after!r} is not a variant{suggest(after, explicit)}; name one "
            f'listed before it ({", ".join(explicit) or "none"}) or "previous"'
        )
    if after in grid:
        raise SpecError(
            f"{where} after {after!r} names a grid variant; grid variants vary the base "
            f"settings only, so after may name a [[variants]] entry listed before this one"
        )
    if after == name:
        raise SpecError(
            f'{where} after names the variant itself; name an earlier one or "previous"'
        )
    if position[after] > i:
        raise SpecError(
            f"{where} after {after!r} names a variant listed after it; a variant builds only "
            f"on one listed before it (move {after!r} above {name!r})"
        )
    return position[after]
