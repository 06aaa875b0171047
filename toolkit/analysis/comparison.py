"""`toolkit.compare(dirs)`: the comparison table of experiment folders, for scripts and notebooks.

    import toolkit

    table = toolkit.compare("runs/quickstart")            # one row per variant
    table = toolkit.compare(["runs/norms", "runs/acts"])   # several folders sharing a baseline
    table = toolkit.compare("runs/quickstart", correction="none")   # unadjusted verdicts
    table                                                  # in Jupyter: the report's table

The table is a pandas DataFrame of every statistic, unrounded (the columns: table.py), sorted
by the comparison metric with the baseline marked: what `ablate report` prints. Shown in a
notebook it renders as the report's Results section (the formatted table, with the steps and
task scores when there are any, and the notes on how to read it); anything computed from it
(a selection, a sort) is a plain DataFrame again.

Not here: the statistics (table.py), reading folders (load.py), report files (render.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from toolkit.analysis import phases, stats
from toolkit.analysis.load import load
from toolkit.analysis.render import comparison_html
from toolkit.analysis.stats import HOLM


class Comparison(pd.DataFrame):
    """compare()'s table: a DataFrame that a notebook shows as the report's formatted table."""

    @property
    def _constructor(self) -> type[pd.DataFrame]:
        return pd.DataFrame  # what is derived from it is an ordinary frame

    def _repr_html_(self) -> str:
        return comparison_html(self)


def compare(
    dirs: str | Path | Iterable[str | Path],
    baseline: str | None = None,
    *,
    correction: str = HOLM,
) -> Comparison:
    """The comparison table (one row per variant, see table.py) of one or several experiment
    folders sharing a baseline; baseline: compare against this variant instead. correction:
    "holm" (verdicts on Holm-adjusted p-values) or "none"."""
    stats.check_correction(correction)
    experiments = load(dirs, baseline)
    summary = phases.results(experiments, correction)
    table = Comparison(summary)
    table.attrs = dict(summary.attrs)
    return table


__all__ = ["Comparison", "compare"]
