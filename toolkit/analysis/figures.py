"""The report's figures, drawn with seaborn on matplotlib's Agg canvas (no display, no pyplot
state: each figure is its own matplotlib.figure.Figure, so importing this module changes
nothing for the caller's plots).

`make_figures(runs, summary, curves, grids, folder)` writes the PNG files and returns, for each,
its path, title and caption:

- curves.png: validation metric against training tokens seen, mean over seeds with a 95%
  t-interval band, the whole run and its second half zoomed in;
- final.png: final validation metric per variant, mean with its 95% t-interval and every seed;
- params.png: final validation metric against parameters (total and non-embedding);
- throughput.png: training tokens per second and wall time per run, per variant;
- gap.png: validation minus training loss, at the end per variant and during training;
- grid-<experiment>-<axis>-x-<axis>.png: for an experiment with several axes, one heatmap of
  the mean final metric per pair of axes, its colour range in the title and the cells that do
  not differ significantly from the baseline hatched and marked "n.s." (the summary's verdict
  column: Holm-adjusted p by default, see table.py).

Not here: the numbers the figures show (table.py computes them, stats.py the intervals) and
where the figures go in the report (render.py). Metric names and units come from table.py, so
an axis label and a table header never disagree.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.analysis import stats
from toolkit.analysis.stats import HOLM
from toolkit.analysis.table import ALPHA, BETTER, NAMES, UNITS, WORSE
from toolkit.files import write_atomic
from toolkit.names import slug

# seaborn and matplotlib are imported inside the functions that draw, not here, for start-up
# cost only: they are slow to import, and `ablate run` (which prints the table) and
# write_report(figures=False) never draw.
DPI = 110
WIDTH = 11.0  # inches
# A grid heatmap's cells that do not differ significantly from the baseline: hatched, and
# this in their annotation.
NOT_SIGNIFICANT = "n.s."
HATCH, HATCH_COLOR = "///", "0.5"


@dataclass
class FigureFile:
    path: Path
    title: str
    caption: str


def make_figures(
    runs: pd.DataFrame,
    summary: pd.DataFrame,
    curves: pd.DataFrame,
    grids: Sequence[tuple[str, list[str], pd.DataFrame]],
    folder: Path,
) -> list[FigureFile]:
    """Draw every figure the data allows into folder; see the module docstring."""
    import seaborn as sns

    metric = summary.attrs.get("metric", "val_loss")
    order = summary["variant"].tolist()
    colors = palette(order)
    ok = runs[runs["status"] == "ok"].copy() if not runs.empty else runs
    for column in (metric, "train_loss", "val_loss", "tokens_per_s", "wall_s"):
        if column in ok:
            ok[column] = pd.to_numeric(ok[column], errors="coerce")
    baseline = summary.attrs.get("baseline")
    context = {"order": order, "palette": colors, "metric": metric, "baseline": baseline}
    made: list[FigureFile] = []
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        if not curves.empty and metric in curves:
            done = curves[curves["status"] == "ok"] if "status" in curves else curves
            made += _save(folder, "curves", *_curves(done, context))
        if not ok.empty and ok[metric].notna().any():
            made += _save(folder, "final", *_final(ok, summary, context))
            made += _save(folder, "params", *_params(summary, context))
        if not ok.empty and ok["tokens_per_s"].notna().any():
            made += _save(folder, "throughput", *_throughput(ok, context))
        if not ok.empty and ok["train_loss"].notna().any():
            made += _save(folder, "gap", *_gap(ok, curves, context))
        for experiment, axes, table in grids:
            for a, b in itertools.combinations(axes, 2):
                drawn = _grid(table, experiment, a, b, axes, metric, summary)
                if drawn is not None:
                    name = slug(f"grid-{experiment}-{a}-x-{b}")
                    made += _save(folder, name, *drawn)
    return made


def palette(order: list[str]) -> dict[str, Any]:
    """A colour per name of `order`, the same name the same colour in every figure of a report."""
    import seaborn as sns

    colors = sns.color_palette("tab10" if len(order) <= 10 else "husl", len(order))
    return dict(zip(order, colors, strict=True))


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure (inches) on its own Agg canvas: no pyplot, no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: Path, title: str, caption: str) -> FigureFile:
    """`fig` as a PNG at `path`, written whole or not at all."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    write_atomic(path, buffer.getvalue())
    return FigureFile(path, title, caption)


def _save(folder: Path, name: str, fig: Any, title: str, caption: str) -> list[FigureFile]:
    return [save_figure(fig, folder / f"{name}.png", title, caption)]


def _label(metric: str) -> str:
    return f"{NAMES[metric]} ({UNITS[metric]})"


def _legend_below(fig: Any, ax: Any, order: list[str], baseline: str | None) -> None:
    """One legend naming the variants, under the axes, so it never covers data."""
    handles, labels = ax.get_legend_handles_labels()
    keep = [(h, lab) for h, lab in zip(handles, labels, strict=True) if lab in order]
    keep.sort(key=lambda hl: order.index(hl[1]))
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    if not keep:
        return
    names = [lab + (" (baseline)" if lab == baseline else "") for _, lab in keep]
    longest = max(len(n) for n in names)
    ncol = max(1, min(len(names), int(110 // (longest + 6))))
    fig.legend(
        [h for h, _ in keep], names, loc="outside lower center", ncol=ncol, title="variant",
        frameon=False,
    )  # fmt: skip


def _tick_names(ax: Any, order: list[str], baseline: str | None) -> None:
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels([v + (" (baseline)" if v == baseline else "") for v in order])


def _eng(ax: Any, axis: str = "x") -> None:
    """Counts as 200k, 1.5M (never for seconds: 200m would read as minutes)."""
    from matplotlib.ticker import EngFormatter

    getattr(ax, f"{axis}axis").set_major_formatter(EngFormatter(sep=""))


def _plain(ax: Any, axis: str = "y", span: float = 1e-3) -> None:
    """Plain tick labels (no '1e-13+2.1' offset) on an axis at least span wide, so that
    identical values do not blow rounding noise up to the whole axis."""
    from matplotlib.ticker import ScalarFormatter

    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    getattr(ax, f"{axis}axis").set_major_formatter(formatter)
    low, high = getattr(ax, f"get_{axis}lim")()
    if high - low < span:
        middle = (low + high) / 2
        getattr(ax, f"set_{axis}lim")(middle - span / 2, middle + span / 2)


def _curves(curves: pd.DataFrame, c: dict[str, Any]) -> tuple[Any, str, str]:
    import seaborn as sns

    metric, order = c["metric"], [v for v in c["order"] if v in set(curves["variant"])]
    data = curves[["variant", "seed", "tokens", metric]].copy()
    data[metric] = pd.to_numeric(data[metric], errors="coerce")
    data = data.dropna()
    fig = new_figure(WIDTH, 5.2)
    axes = fig.subplots(1, 2)
    late = data[data["tokens"] >= data["tokens"].max() / 2]
    panels = (
        (axes[0], data, stats.t_interval, "whole run, band = 95% t-interval over seeds"),
        (axes[1], late, None, "second half, means only (zoomed in)"),
    )
    for ax, part, errorbar, name in panels:
        sns.lineplot(
            data=part, x="tokens", y=metric, hue="variant", hue_order=order, palette=c["palette"],
            errorbar=errorbar, err_kws={"alpha": 0.12}, marker="o", markersize=4, ax=ax,
        )  # fmt: skip
        ax.set_xlabel("training tokens seen")
        ax.set_ylabel(_label(metric))
        ax.set_title(name)
        _eng(ax)
        _plain(ax)
    _legend_below(fig, axes[0], order, c["baseline"])
    if axes[1].get_legend() is not None:
        axes[1].get_legend().remove()
    title = f"{NAMES[metric].capitalize()} during training"
    fig.suptitle(f"{title} (mean over seeds)")
    caption = (
        f"Mean {NAMES[metric]} at each evaluation against the training tokens seen, one line per "
        f"variant (finished runs). Left: the whole run, the band is the 95% t-interval of the "
        f"mean across seeds (none with one seed). Right: the second half of training, means "
        f"only, so that close variants can be told apart."
    )
    return fig, title, caption


def _final(ok: pd.DataFrame, summary: pd.DataFrame, c: dict[str, Any]) -> tuple[Any, str, str]:
    from matplotlib.lines import Line2D

    metric, order = c["metric"], c["order"]
    fig = new_figure(WIDTH * 0.85, max(2.8, 0.5 * len(order) + 1.8))
    ax = fig.subplots()
    by = summary.set_index("variant")
    for i, v in enumerate(order):
        color = c["palette"][v]
        mean, lo, hi = (by.loc[v, f"{metric}_{s}"] for s in ("mean", "ci_low", "ci_high"))
        seeds = ok.loc[ok["variant"] == v, metric].dropna().to_numpy()
        if len(seeds):
            jitter = np.linspace(-0.12, 0.12, len(seeds)) if len(seeds) > 1 else np.zeros(1)
            ax.scatter(seeds, i + 0.22 + jitter * 0.5, s=18, color=color, alpha=0.55, zorder=2)
        if np.isfinite(lo):
            ax.errorbar(
                mean, i, xerr=[[mean - lo], [hi - mean]], fmt="D", color=color, capsize=4,
                markersize=7, zorder=3,
            )  # fmt: skip
        elif np.isfinite(mean):
            ax.plot(mean, i, "D", color=color, markersize=7, zorder=3)
    if c["baseline"] in by.index and np.isfinite(by.loc[c["baseline"], f"{metric}_mean"]):
        ax.axvline(by.loc[c["baseline"], f"{metric}_mean"], ls="--", color="0.4", lw=1)
    _tick_names(ax, order, c["baseline"])
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.set_xlabel(f"final {_label(metric)}, lower is better")
    _plain(ax, "x")
    ax.set_ylabel("")
    handles = [
        Line2D([], [], marker="D", color="0.2", ls="-", label="mean ± 95% t-interval"),
        Line2D([], [], marker="o", color="0.2", ls="", alpha=0.55, label="one seed"),
        Line2D([], [], color="0.4", ls="--", label="baseline mean"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
    title = f"Final {NAMES[metric]} per variant"
    ax.set_title(f"{title} (mean and 95% confidence interval over seeds)")
    caption = (
        f"Final {NAMES[metric]} of each variant: the diamond is the mean over seeds, the bar its "
        f"95% t-interval (none with one seed), the dots the seeds; the dashed line is the "
        f"baseline's mean."
    )
    return fig, title, caption


def _params(summary: pd.DataFrame, c: dict[str, Any]) -> tuple[Any, str, str]:
    metric, order = c["metric"], c["order"]
    fig = new_figure(WIDTH, 4.8)
    axes = fig.subplots(1, 2, sharey=True)
    columns = (
        ("params", "parameters, total (count)"),
        ("params_non_embedding", "non-embedding parameters (count)"),
    )
    for ax, (column, label) in zip(axes, columns, strict=True):
        xs = pd.to_numeric(summary.set_index("variant").loc[order, column], errors="coerce")
        finite = xs.dropna()
        log = len(finite) > 0 and finite.min() > 0 and finite.max() / finite.min() > 10
        lo_x, hi_x = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
        pad = max((hi_x - lo_x) * 0.15, abs(hi_x) * 0.002, 1.0)
        # Variants with the same count are spread sideways so their intervals do not hide
        # each other: by a small fraction of the axis (a factor on a log axis).
        step = 0.02 if log else (hi_x - lo_x + 2 * pad) * 0.02
        slot: dict[float, int] = {}
        same = finite.value_counts()
        for v in sorted(order):  # by name, so the sideways order says nothing about the loss
            r = summary[summary["variant"] == v].iloc[0]
            x, y = xs[v], r[f"{metric}_mean"]
            if not (np.isfinite(x) and np.isfinite(y)):
                continue
            j, k = slot.get(x, 0), int(same[x])
            slot[x] = j + 1
            offset = (j - (k - 1) / 2) * step
            shown = x * 10**offset if log else x + offset
            lo, hi = r[f"{metric}_ci_low"], r[f"{metric}_ci_high"]
            yerr = [[y - lo], [hi - y]] if np.isfinite(lo) else None
            ax.errorbar(
                shown, y, yerr=yerr, fmt="o", color=c["palette"][v], capsize=4, markersize=7,
                label=v, alpha=0.85,
            )  # fmt: skip
        if log:
            ax.set_xscale("log")
        else:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
            _eng(ax)
            ax.set_xlim(lo_x - pad - step * len(order) / 2, hi_x + pad + step * len(order) / 2)
        ax.set_xlabel(label)
    axes[0].set_ylabel(f"final {_label(metric)}")
    _plain(axes[0])
    _legend_below(fig, axes[0], order, c["baseline"])
    title = f"Final {NAMES[metric]} against parameters"
    fig.suptitle(f"{title} (mean and 95% t-interval over seeds)")
    caption = (
        f"Mean final {NAMES[metric]} of each variant against its parameter count: all unique "
        f"parameters (left) and without the token and positional embeddings (right), with the "
        f"95% t-interval over seeds. Variants with the same count are drawn slightly apart "
        f"sideways so that none hides another."
    )
    return fig, title, caption


def _throughput(ok: pd.DataFrame, c: dict[str, Any]) -> tuple[Any, str, str]:
    import seaborn as sns

    order = [v for v in c["order"] if v in set(ok["variant"])]
    fig = new_figure(WIDTH, max(2.8, 0.5 * len(order) + 1.8))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, column, label in (
        (axes[0], "tokens_per_s", "training throughput (tokens/s)"),
        (axes[1], "wall_s", "wall time per run (s)"),
    ):
        data = ok[["variant", column]].dropna()
        if data.empty:
            ax.set_visible(False)
            continue
        sns.barplot(
            data=data, y="variant", x=column, hue="variant", order=order, hue_order=order,
            palette=c["palette"], errorbar=None, alpha=0.75, ax=ax, legend=False,
        )  # fmt: skip
        sns.stripplot(
            data=data, y="variant", x=column, order=order, color="0.15", size=4, ax=ax,
            jitter=0.12,
        )  # fmt: skip
        ax.set_xlabel(label)
        ax.set_ylabel("")
        if column == "tokens_per_s":
            _eng(ax)
    _tick_names(axes[0], order, c["baseline"])
    title = "Throughput and wall time per variant"
    fig.suptitle(f"{title} (bars: mean over seeds, dots: one run each)")
    caption = (
        "Training tokens per second (step time only: evaluation and the first step are left "
        "out) and wall time of each run (training, evaluation, sampling and saving); bars are "
        "means over seeds, dots single runs. Timing is not seeded: the first run of a sweep "
        "and runs that share the machine with other work are slower, so compare throughput "
        "within one sweep, on one machine."
    )
    return fig, title, caption


def _gap(ok: pd.DataFrame, curves: pd.DataFrame, c: dict[str, Any]) -> tuple[Any, str, str]:
    import seaborn as sns

    order = [v for v in c["order"] if v in set(ok["variant"])]
    data = ok[["variant", "seed"]].copy()
    data["gap"] = ok["val_loss"] - ok["train_loss"]
    data = data.dropna()
    have_curves = not curves.empty and {"val_loss", "train_loss"} <= set(curves.columns)
    top = 0.5 * len(order) + 1.2
    fig = new_figure(WIDTH * 0.9, top + (4.2 if have_curves else 0.8))
    axes = fig.subplots(2, 1, height_ratios=[top, 3.4]) if have_curves else [fig.subplots()]
    ax = axes[0]
    sns.pointplot(
        data=data, y="variant", x="gap", hue="variant", order=order, hue_order=order,
        palette=c["palette"], errorbar=stats.t_interval, linestyle="none", markers="D",
        capsize=0.2, ax=ax, legend=False,
    )  # fmt: skip
    sns.stripplot(
        data=data, y="variant", x="gap", order=order, color="0.3", size=4, alpha=0.6, ax=ax
    )
    low, high = data["gap"].min(), data["gap"].max()
    if low - (high - low) <= 0 <= high + (high - low):  # zero only where it does not squash
        ax.axvline(0, color="0.4", lw=1, ls=":")
    _tick_names(ax, order, c["baseline"])
    ax.set_ylabel("")
    ax.set_xlabel("validation − training loss at the end (nats/token)")
    _plain(ax, "x")
    ax.set_title("At the end of training: mean, 95% t-interval over seeds, and each seed")
    if have_curves:
        ax = axes[1]
        done = curves[curves["status"] == "ok"] if "status" in curves else curves
        gap = done[["variant", "seed", "tokens"]].copy()
        gap["gap"] = pd.to_numeric(done["val_loss"], errors="coerce") - pd.to_numeric(
            done["train_loss"], errors="coerce"
        )
        sns.lineplot(
            data=gap.dropna(), x="tokens", y="gap", hue="variant", hue_order=order,
            palette=c["palette"], errorbar=None, marker="o", markersize=4, ax=ax,
        )  # fmt: skip
        ax.set_xlabel("training tokens seen")
        ax.set_ylabel("val − train loss\n(nats/token)")
        ax.set_title("During training: mean over seeds")
        _eng(ax)
        _plain(ax)
        _legend_below(fig, ax, order, c["baseline"])
    title = "Generalization gap: validation minus training loss"
    fig.suptitle(title)
    caption = (
        "Validation loss minus training loss, both measured on fixed evaluation batches with "
        "the model in evaluation mode. Above zero the model fits its training text better than "
        "unseen text, and overfitting makes the gap grow; below zero the validation text is "
        "simply easier than the training text."
    )
    return fig, title, caption


def _grid(
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
        cbar_kws={"label": f"mean final {_label(metric)}"},
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
    do, "" when all do (or with an empty summary); "\n(+ baseline)" after that when the cell
    averages the baseline with other variants. The grid's runs are named as in the experiment
    folder; the summary names them '<experiment>/<variant>' when several folders were
    combined."""
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
            tested = [n for n in names if n != baseline]
            significant = sum(verdicts.get(n) in (BETTER, WORSE) for n in tested)
            if not tested:
                marks[i][j] = "baseline" if names else ""
                continue
            if significant == 0:
                marks[i][j] = NOT_SIGNIFICANT
            elif significant < len(tested):
                marks[i][j] = f"{significant}/{len(tested)} sig."
            if baseline in names:
                marks[i][j] = "\n".join(filter(None, [marks[i][j], "(+ baseline)"]))
    return marks
