"""match_params = true: every variant as big as its baseline, by the width of its feed-forward.

A variant that adds or removes parameters (grouped-query attention, an untied head, a bias)
differs from its baseline in two ways at once: its idea and its size. With `match_params` at
the top of a spec, each such variant gets `model.ffn_hidden` set to the width whose
non-embedding parameters (as runs record them) come closest to the baseline's. Parameters
grow linearly with the hidden width, so two counts on the meta device give the slope and the
width is solved for, then rounded. A variant within half a hidden unit's parameters of the
baseline is left as it is (the gated units already match at 8d/3); one that sets
model.ffn_hidden itself is left as it is; one whose feed-forward ignores the width (an
activation option hidden_mult, a plugin that does not read ffn_hidden) is an error. FLOPs per
token follow the parameters only roughly; the report flags what still differs.

match_params = "active" matches the parameters one token uses instead (a mixture of experts
counts its top_k experts: toolkit.model.gpt, `active_fraction`), so a dense feed-forward and a
mixture of experts compare at the same compute per token; "total" is the same as true.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from toolkit.errors import SpecError
from toolkit.spec.schema import Variant

KEY = "model.ffn_hidden"
MODES = ("total", "active")  # what match_params matches, besides true (total) and false
_PROBE = (64, 128)  # two widths to measure the slope at


def match_mode(value: Any, where: str) -> str | None:
    """A spec's match_params as what it matches: "total", "active" or None (off)."""
    if isinstance(value, bool):
        return "total" if value else None
    if value in MODES:
        return value
    raise SpecError(
        f'{where}: match_params must be true, false, "total" (the same as true) or "active" '
        f"(the parameters one token uses), got {value!r}"
    )


def match_params(
    variants: list[Variant],
    reference_of: Callable[[str], str],
    params_at: Callable[[Variant, dict[str, Any]], int],
    where: str,
    active: bool = False,
) -> tuple[list[Variant], list[str]]:
    """The variants with model.ffn_hidden set where needed, and a note per change.
    `reference_of(name)` names the variant each must match (the baseline, or the baseline at
    the same ladder size); `params_at(variant, extra_keys)` counts non-embedding parameters
    (active ones when `active`, which the notes then say)."""
    what = "active non-embedding" if active else "non-embedding"
    by_name = {v.name: v for v in variants}
    out, notes = [], []
    for v in variants:
        reference = by_name[reference_of(v.name)]
        if v.name == reference.name or KEY in v.overrides:
            out.append(v)
            continue
        target = params_at(reference, {})
        now = params_at(v, {})
        low, high = (params_at(v, {"ffn_hidden": h}) for h in _PROBE)
        slope = (high - low) / (_PROBE[1] - _PROBE[0])
        if slope <= 0:
            raise SpecError(
                f"{where}: match_params: variant {v.name!r}'s feed-forward ignores "
                f"model.ffn_hidden (an activation option hidden_mult, or a plugin that does not "
                f"read it), so its size cannot be matched; set its width yourself"
            )
        if abs(now - target) < slope / 2:
            out.append(v)
            continue
        width = round(_PROBE[0] + (target - low) / slope)
        if width < 1:
            raise SpecError(
                f"{where}: match_params: variant {v.name!r} has {now:,} {what} parameters "
                f"and {reference.name!r} {target:,}; even the narrowest feed-forward leaves it "
                f"larger, so it cannot be matched"
            )
        matched = Variant(v.name, {**v.overrides, KEY: width}, v.after, v.own)
        got = params_at(matched, {})
        notes.append(
            f"match_params: {v.name} gets model.ffn_hidden = {width}: {got:,} {what} "
            f"parameters against {reference.name}'s {target:,} (it had {now:,})"
        )
        out.append(matched)
    return out, notes
