"""The heatmap of an experiment with several axes: the mean final metric for each pair of
values of two axes, its colour range in the title, and the cells that do not differ
significantly from the baseline hatched and marked "n.s." (the summary's verdict column:
Holm-adjusted p by default, see table.py), so a strong colour over a small spread does not read
as a strong effect. make_figures (figures.py) draws one per pair of axes.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd

from toolkit.analysis.plotting import WIDTH, axis_label, new_figure
from toolkit.analysis.stats import HOLM
from toolkit.analysis.table import ALPHA, BETTER, NAMES, NOT_SIGNIFICANT, UNITS, WORSE

# Cells that do not differ significantly from the baseline: hatched, and the table's
# NOT_SIGNIFICANT in their annotation.
HATCH, HATCH_COLOR = "///", "0.5"


def grid_heatmap(
    table: pd.DataFrame,
    experiment: str,
    a: str,
    b: str,
    axes: list[str],
    metric: str,
    summary: pd.DataFrame,
) -> tuple[Any, str, str] | None:
    """The heatmap of the mean final metric per pair of values of axes a and b. A cell whose
    variants none differ from the baseline (summary's verdict: its p_holm, or p_value with
    correction "none", below α; no test counts as not shown to differ) is hatched and annotated
    "n.s.", so a strong colour over a small spread does not read as a strong effect; the title
    states the range the colour spans."""
    import seaborn as sns
    from matplotlib.patches import Patch, Rectangle

    ok = table[table["status"] == "ok"].copy() if "status" in table else table
    if ok.empty or a not in ok or b not in ok:
        return None
    ok[metric] = pd.to_numeric(ok[metric], errors="coerce")
    rows_key, cols_key = ok[a].astype(str), ok[b].astype(str)
    frame = pd.DataFrame({a: rows_key, b: cols_key, "v": ok[metric]})
    mean = frame.pivot_table(index=a, columns=b, values="v", aggfunc="mean", sort=False)
    if mean.shape[0] < 2 and mean.shape[1] < 2:
        return None
    count = frame.pivot_table(index=a, columns=b, values="v", aggfunc="count", sort=False)
    count = count.reindex_like(mean)
    marks = _significance_marks(ok, rows_key, cols_key, mean, experiment, summary)
    annot = np.empty(mean.shape, dtype=object)
    for i, j in itertools.product(range(mean.shape[0]), range(mean.shape[1])):
        x, n = mean.iat[i, j], count.iat[i, j]
        lines = [f"{x:.4f}" if np.isfinite(x) else "", f"n={int(n)}" if np.isfinite(n) else ""]
        annot[i, j] = "\n".join(filter(None, [*lines, marks[i][j]]))
    width = min(WIDTH, 3.2 + 2.0 * mean.shape[1])
    fig = new_figure(width, 2.6 + 1.1 * mean.shape[0])
    ax = fig.subplots()
    sns.heatmap(
        mean, annot=annot, fmt="", cmap="viridis_r", linewidths=0.5, ax=ax,
        cbar_kws={"label": f"mean final {axis_label(metric)}"},
    )  # fmt: skip
    for i, j in itertools.product(range(mean.shape[0]), range(mean.shape[1])):
        if marks[i][j].startswith(NOT_SIGNIFICANT):
            ax.add_patch(
                Rectangle(
                    (j, i), 1, 1, fill=False, hatch=HATCH, edgecolor=HATCH_COLOR, linewidth=0,
                    gid=NOT_SIGNIFICANT,
                )
            )  # fmt: skip
    ax.set_xlabel(b)
    ax.set_ylabel(a)
    ax.tick_params(axis="x", labelrotation=0)
    ax.tick_params(axis="y", labelrotation=0)
    others = [x for x in axes if x not in (a, b)]
    over = "seeds" + (f" and {', '.join(others)}" if others else "")
    title = f"{experiment}: {NAMES[metric]} by {a} × {b}"
    values = mean.to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    unit = UNITS[metric]
    span = (
        f"{values.min():.4f}–{values.max():.4f} {unit} (range {np.ptp(values):.4f})"
        if values.size
        else "no finite values"
    )
    ax.set_title(f"{title}\n(mean over {over}; lower is better)\ncolour: {metric} {span}")
    alpha = summary.attrs.get("alpha", ALPHA)
    which = "Holm-adjusted p" if summary.attrs.get("correction", HOLM) == HOLM else "p"
    key = (
        f"{NOT_SIGNIFICANT}: not significantly different from the baseline (two-sided t-test, "
        f"{which} ≥ {alpha:g}, or no test)"
    )
    if any(" sig." in m for row in marks for m in row):
        key += "\nk/m sig.: k of the m variants the cell averages differ significantly"
    fig.legend(
        handles=[Patch(facecolor="none", edgecolor=HATCH_COLOR, hatch=HATCH, label=key)],
        loc="outside lower center", frameon=False, fontsize="small",
    )  # fmt: skip
    caption = (
        f"Mean final {NAMES[metric]} of experiment {experiment} for each pair of values of {a} "
        f"(rows) and {b} (columns), averaged over {over}; n is the number of finished runs in "
        f"the cell. Darker is worse. The colour spans only the cells' own range, {span}, so a "
        f"small spread is coloured as strongly as a large one: hatched cells marked "
        f"{NOT_SIGNIFICANT} do not differ significantly from the baseline (two-sided t-test: "
        f"significant at {which} < {alpha:g}; no test, e.g. with one seed, counts as not "
        f"significant)"
        + (
            f"; a cell averaging several variants is marked {NOT_SIGNIFICANT} when none of "
            f"them differs, k/m sig. when k of its m do."
            if others
            else "."
        )
    )
    return fig, title, caption


def _significance_marks(
    ok: pd.DataFrame,
    rows_key: pd.Series,
    cols_key: pd.Series,
    mean: pd.DataFrame,
    experiment: str,
    summary: pd.DataFrame,
) -> list[list[str]]:
    """Per heatmap cell: "baseline" for the baseline's own cell, "n.s." when none of its
    other variants differs from the baseline (the summary's verdict), "k/m sig." when k of m
    do, "" when all do, when none of them is in the summary (a ladder's smaller sizes: never
    tested) or with an empty summary; "\n(+ baseline)" after that when the cell averages the
    baseline with other variants. The grid's runs are named as the summary names them
    (load.Part.compared), their "baseline" column marking the summary's baseline."""
    marks = [[""] * mean.shape[1] for _ in range(mean.shape[0])]
    if summary.empty or "variant" not in ok:
        return marks
    verdicts = dict(zip(summary["variant"], summary["verdict"], strict=True))
    baseline = summary.attrs.get("baseline")
    is_base = ok["baseline"].fillna(False).astype(bool) if "baseline" in ok else None
    cells: dict[tuple[str, str], set[str]] = {}
    for index, variant in ok["variant"].items():
        name = str(variant)
        if baseline is not None and (name == baseline or (is_base is not None and is_base[index])):
            name = baseline
        elif name not in verdicts and f"{experiment}/{name}" in verdicts:
            name = f"{experiment}/{name}"
        cells.setdefault((rows_key[index], cols_key[index]), set()).add(name)
    for i, row in enumerate(mean.index):
        for j, column in enumerate(mean.columns):
            names = cells.get((str(row), str(column)), set())
            tested = [n for n in names if n != baseline and n in verdicts]
            significant = sum(verdicts.get(n) in (BETTER, WORSE) for n in tested)
            if not tested:
                marks[i][j] = "baseline" if baseline in names else ""
                continue
            if significant == 0:
                marks[i][j] = NOT_SIGNIFICANT
            elif significant < len(tested):
                marks[i][j] = f"{significant}/{len(tested)} sig."
            if baseline in names:
                marks[i][j] = "\n".join(filter(None, [marks[i][j], "(+ baseline)"]))
    return marks
