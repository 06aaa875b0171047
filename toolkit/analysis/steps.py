"""The steps of cumulative variants (a spec's `after`, toolkit.spec.chains): what each variant
gains over the one it builds on, beside the running total against the baseline, the way
speed-run records are presented.

    summary = compare("runs/modern")     # table.summarize adds the step columns
    view = steps_view(summary)           # the chains' rows, in the order the spec lists them

For an experiment whose runs carry `after` (the variant a run's variant builds on, which
load.py reads from config.json) and `changes` (the keys it sets itself, `describe_keys`),
`add_steps` adds to the comparison table:

- after, changes: as the runs carry them ('' where a variant builds on nothing);
- delta_step: the difference the step's test estimates (as `delta` is against the baseline):
  the mean of the per-seed differences over the seeds both finished when it pairs them, else
  the variant's mean minus that of the variant it builds on. When every variant of a chain
  finished the same seeds, that is mean minus mean, and along a chain that starts at the
  baseline the steps add up to `delta`, the running total;
- test_step, p_step: `stats.compare_to_baseline` of the variant against the one it builds on:
  paired t on their shared seeds (at least 2), else Welch's t, else no test ("", NaN);
- delta_step_ci_low, delta_step_ci_high: the 95% interval of that test's difference: paired,
  mean(d) ± t(0.975, n - 1) · s_d / √n over the shared seeds; Welch, the difference of the means
  ± t(0.975, df) · √(s_a²/n_a + s_b²/n_b); NaN without a test. Either way it is an interval
  around delta_step.

summary.attrs["steps"] lists the variants of the chains (those built on another and those built
on) in the runs table's order, the spec's, where every variant comes after the one it builds on.
An experiment without `after` gets its table back unchanged: its reports do not change.

Not here: resolving `after` (toolkit.spec.chains), reading folders (load.py), the tests
(stats.py), text and report files (text.py, render.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from toolkit.analysis import stats
from toolkit.names import label

STEP_COLUMNS = (
    "after", "changes", "delta_step", "delta_step_ci_low", "delta_step_ci_high", "test_step",
    "p_step",
)  # fmt: skip


def describe_keys(overrides: Mapping[str, Any] | None) -> str:
    """Dotted keys as one line: {'model.norm': 'rmsnorm', 'train.lr': 0.001}
    -> 'model.norm=rmsnorm, train.lr=0.001'; '' for none."""
    return ", ".join(f"{key}={label(value)}" for key, value in (overrides or {}).items())


def links(table: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """variant -> (the variant it builds on, or '' for none; its changes), in the table's order,
    from the runs' `after` and `changes` columns (the first run that has one); {} when no
    variant builds on another."""
    if "after" not in table:
        return {}
    changes = table["changes"] if "changes" in table else pd.Series([None] * len(table))
    out: dict[str, tuple[str, str]] = {}
    for variant, after, keys in zip(table["variant"], table["after"], changes, strict=True):
        had = out.get(variant, ("", ""))
        out[variant] = (had[0] or _text(after), had[1] or _text(keys))
    return out if any(after for after, _ in out.values()) else {}


def step_test(
    variant: Mapping[Any, float], before: Mapping[Any, float], confidence: float = 0.95
) -> tuple[float, stats.TestResult, float, float]:
    """(delta_step, the test, CI low, CI high) of a variant against the one it builds on,
    both seed -> final metric: the difference compare_to_baseline estimates, its test, and
    the interval of that difference (see the module docstring)."""
    v = {s: float(x) for s, x in variant.items() if math.isfinite(float(x))}
    b = {s: float(x) for s, x in before.items() if math.isfinite(float(x))}
    test = stats.compare_to_baseline(v, b)
    delta = test.delta
    low = high = math.nan
    if test.test == stats.PAIRED:
        shared = sorted(set(v) & set(b))
        d = stats.describe([v[s] - b[s] for s in shared], confidence)
        low, high = d.ci_low, d.ci_high
    elif test.test == stats.WELCH:
        a, c = stats.describe(v.values()), stats.describe(b.values())
        half = stats.t_quantile(1 - (1 - confidence) / 2, test.df) * math.sqrt(
            a.std**2 / a.n + c.std**2 / c.n
        )
        low, high = test.delta - half, test.delta + half
    return delta, test, low, high


def add_steps(
    summary: pd.DataFrame,
    table: pd.DataFrame,
    per_seed: Mapping[str, Mapping[Any, float]],
    confidence: float = 0.95,
) -> pd.DataFrame:
    """The comparison table with STEP_COLUMNS and attrs["steps"] when some variant of the runs
    table builds on another; the table itself otherwise. per_seed: variant -> seed -> final
    comparison metric of its finished runs."""
    linked = links(table)
    if not linked or summary.empty:
        return summary
    rows = []
    for variant in summary["variant"]:
        after, changes = linked.get(variant, ("", ""))
        if after:
            delta, test, low, high = step_test(
                per_seed.get(variant, {}), per_seed.get(after, {}), confidence
            )
        else:
            delta, test, low, high = math.nan, None, math.nan, math.nan
        rows.append(
            {
                "after": after,
                "changes": changes,
                "delta_step": delta,
                "delta_step_ci_low": low,
                "delta_step_ci_high": high,
                "test_step": test.test if test else "",
                "p_step": test.p_value if test else math.nan,
            }
        )
    out = pd.concat([summary, pd.DataFrame(rows, index=summary.index)], axis=1)
    built_on = {after for after, _ in linked.values() if after}
    out.attrs = {
        **summary.attrs,
        "steps": [v for v, (after, _) in linked.items() if after or v in built_on],
    }
    return out


def steps_view(summary: pd.DataFrame) -> pd.DataFrame:
    """The rows of the chains' variants in the order of summary.attrs["steps"] (a summary read
    back from report_summary.csv: those with an `after`, or built on, in its order), with
    variant, baseline, after, changes, the step columns, delta and p_value; empty without
    chains."""
    if "delta_step" not in summary or summary.empty:
        return pd.DataFrame()
    order = summary.attrs.get("steps")
    if order is None:
        after = summary["after"].map(_text).tolist()
        built_on = set(after)
        order = [v for v, a in zip(summary["variant"], after, strict=True) if a or v in built_on]
    rows = summary.set_index("variant", drop=False)
    order = [v for v in order if v in rows.index]
    columns = ["variant", "baseline", *STEP_COLUMNS, "delta", "p_value"]
    return rows.loc[order, columns].reset_index(drop=True)


def _text(value: Any) -> str:
    """A cell as text: '' for a missing one (None or NaN)."""
    return value if isinstance(value, str) else ""
