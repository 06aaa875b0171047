"""Which metric a comparison reads, from the runs it compares.

    comparison_metric(runs, chosen)   "val_loss"; "val_bpb" across tokenizers; the test split's
                                      when runs were tuned; or what the experiment names (a
                                      ladder's metric)
    tokenizers_differ(runs)           more than one tokenizer: losses per token do not compare
    tuned_runs(runs)                  "all", "some" or "none" of the runs tuned ([tune])

The table (table.py), the report's notes (text.py) and the ladder's section (phases.py) read
these, so they agree on the metric and on why. Not here: the statistics of the comparison.
"""

from __future__ import annotations

import pandas as pd


def comparison_metric(table: pd.DataFrame, chosen: str | None = None) -> str:
    """The metric the table compares: `chosen` when the experiment names one (a ladder's
    `metric`); else 'val_loss', or 'val_bpb' when the runs use different tokenizers (loss is
    per token and only bits per byte compares across vocabularies). When some runs were tuned
    ([tune]), their settings were chosen on the validation split, which would flatter them, so
    the held-out test split reports ('test_loss' or 'test_bpb') if every finished run has a
    score there; if some do not (an untuned folder without a test split beside a tuned one),
    validation it is, and tuned_runs() lets the report say what that means."""
    if chosen:
        return chosen
    kind = "bpb" if tokenizers_differ(table) else "loss"
    if tuned_runs(table) == "none":
        return f"val_{kind}"
    ok = table[table["status"] == "ok"] if "status" in table else table
    test = f"test_{kind}"
    scored = test in ok and pd.to_numeric(ok[test], errors="coerce").notna().all()
    return test if scored else f"val_{kind}"


def tokenizers_differ(table: pd.DataFrame) -> bool:
    """Whether the runs use more than one tokenizer: their losses per token do not compare."""
    return "tokenizer" in table and table["tokenizer"].dropna().nunique() > 1


def tuned_runs(table: pd.DataFrame) -> str:
    """'all' when every run in the table was tuned ([tune]: its settings chosen on the
    validation split), 'some' when some were (a report of a tuned and an untuned folder),
    'none' otherwise."""
    if "tuned" not in table or not len(table):
        return "none"
    tuned = table["tuned"].fillna(False).astype(bool)
    return "all" if tuned.all() else "some" if tuned.any() else "none"
