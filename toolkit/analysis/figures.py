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
  the mean final metric per pair of axes (heatmap.py).

Not here: the numbers the figures show (table.py computes them, stats.py the intervals), what
every figure shares (plotting.py: canvas, colours, PNG files) and where the figures go in the
report (render.py). Metric names and units come from table.py, so an axis label and a table
header never disagree. seaborn is imported where a figure is drawn (start-up cost: see
plotting.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.analysis import stats
from toolkit.analysis.heatmap import grid_heatmap
from toolkit.analysis.plotting import (
    WIDTH,
    FigureFile,
    axis_label,
    new_figure,
    palette,
    save_figure,
)
from toolkit.analysis.table import NAMES
from toolkit.names import slug


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
                drawn = grid_heatmap(table, experiment, a, b, axes, metric, summary)
                if drawn is not None:
                    name = slug(f"grid-{experiment}-{a}-x-{b}")
                    made += _save(folder, name, *drawn)
    return made


def _save(folder: Path, name: str, fig: Any, title: str, caption: str) -> list[FigureFile]:
    return [save_figure(fig, folder / f"{name}.png", title, caption)]


def _save(folder: Path, name: str, fig: Any, title: str, caption: str) -> list[FigureFile]:
    return [save_figure(fig, folder / f"{name}.png", title, caption)]


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
        ax.set_ylabel(axis_label(metric))
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
    ax.set_xlabel(f"final {axis_label(metric)}, lower is better")
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
    axes[0].set_ylabel(f"final {axis_label(metric)}")
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
