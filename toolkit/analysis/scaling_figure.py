"""The figure of a scaling ladder: loss against training compute on log-log axes, every run, each
variant's fitted curve (dashed past the computes it trained), the band of its bootstrap refits
and its compute multiplier in the legend.

    ladder_figure(table, ladder_summary(table, ...), "figures/scaling.png", baseline="base")

Not here: the fits, multipliers and bootstrap it draws (scaling.py, curves.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.analysis.curves import ScalingFit, loss_at
from toolkit.analysis.plotting import WIDTH, FigureFile, new_figure, palette, save_figure
from toolkit.analysis.scaling import compute_multiplier, expanded_tail, ladder_runs


def ladder_figure(
    table: pd.DataFrame,
    summary_or_fits: pd.DataFrame | Mapping[str, ScalingFit],
    path: Path | str,
    *,
    baseline: str | None = None,
    target_flops: float | None = None,
) -> FigureFile:
    """Loss against compute on log-log axes: every run, each variant's curve (dashed beyond the
    computes it trained, up to target_flops) and, from a ladder_summary, the band of its
    bootstrap refits (pointwise, at the quantiles of the multipliers' expanded interval:
    scaling.expanded_tail) and its multiplier in the legend. From a mapping
    variant -> ScalingFit: no bands, multipliers against `baseline` when given. Writes a PNG and
    returns its plotting.FigureFile (path, title, caption)."""
    import seaborn as sns
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

    runs = ladder_runs(table)
    if isinstance(summary_or_fits, pd.DataFrame):
        summary = summary_or_fits[summary_or_fits["kind"].notna()]
        fits = {
            r.variant: ScalingFit(r.kind, r.E, r.A, r.alpha, r.runs, r.computes, r.r2)
            for r in summary.itertuples()
        }
        attrs = summary_or_fits.attrs
        baseline = baseline or attrs.get("baseline")
        target_flops = target_flops or attrs.get("target_flops")
        bands = attrs.get("bootstrap", {})
        seeds, confidence = attrs.get("seeds", {}), attrs.get("confidence", 0.95)
        legend_m = {
            r.variant: (r.multiplier, r.multiplier_low, r.multiplier_high)
            for r in summary.itertuples()
        }
    else:
        fits, bands, legend_m = dict(summary_or_fits), {}, {}
        seeds, confidence = {}, 0.95
        if baseline in fits:
            at = float(runs.loc[runs["variant"] == baseline, "compute"].max())
            legend_m = {
                v: (compute_multiplier(f, fits[baseline], at), math.nan, math.nan)
                for v, f in fits.items()
            }
    order = [v for v in fits if v == baseline] + [v for v in fits if v != baseline]
    colors = palette(order)
    low = float(runs["compute"].min()) / 1.5
    high = max(float(runs["compute"].max()), target_flops or 0.0) * 1.5
    grid = np.geomspace(low, high, 200)
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        fig = new_figure(WIDTH * 0.8, 6.0)
        ax = fig.subplots()
        for v in order:
            color, fit = colors[v], fits[v]
            mine = runs[runs["variant"] == v]
            ax.scatter(mine["compute"], mine["loss"], color=color, s=16, alpha=0.55, lw=0)
            edge = float(mine["compute"].max()) if len(mine) else high
            inside = grid <= edge * 1.0001
            ax.plot(
                grid[inside],
                loss_at(fit, grid[inside]),
                color=color,
                lw=1.8,
                label=_name(v, baseline, legend_m.get(v)),
            )
            ax.plot(grid[~inside], loss_at(fit, grid[~inside]), color=color, lw=1.5, ls="--")
            if bands.get(v):
                p = np.asarray(bands[v])
                with np.errstate(over="ignore", invalid="ignore"):
                    curves = p[:, :1] + np.exp(np.log(p[:, 1:2]) - p[:, 2:3] * np.log(grid))
                tail = expanded_tail(confidence, seeds.get(v, 2))
                lo_band, hi_band = np.nanquantile(
                    curves, [tail, 1 - tail], axis=0, method="inverted_cdf"
                )
                ax.fill_between(grid, lo_band, hi_band, color=color, alpha=0.15, lw=0)
        if target_flops:
            ax.axvline(target_flops, color="0.4", lw=1, ls=":")
            ax.annotate(
                f"target {target_flops:.3g}", (target_flops, 1), xycoords=("data", "axes fraction"),
                xytext=(-4, -4), textcoords="offset points", ha="right", va="top", fontsize="small",
            )  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(low, high)
        # The runs and the curves (not the bands, which may fan out) set the loss axis; its ticks
        # are at round losses, as a loss range rarely spans a decade.
        shown = np.concatenate(
            [runs["loss"].to_numpy(), *(loss_at(f, grid) for f in fits.values())]
        )
        shown = shown[np.isfinite(shown) & (shown > 0)]
        y_low, y_high = float(shown.min()) / 1.03, float(shown.max()) * 1.03
        ax.set_ylim(y_low, y_high)
        ax.yaxis.set_major_locator(FixedLocator(MaxNLocator(nbins=6).tick_values(y_low, y_high)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training compute (FLOPs)")
        ax.set_ylabel("final loss")
        handles, labels = ax.get_legend_handles_labels()
        legend_title = "variant"
        if any(not math.isnan(m[0]) for m in legend_m.values()):
            at_text = f"{float(runs.loc[runs['variant'] == baseline, 'compute'].max()):.3g}"
            legend_title += f": compute multiplier at {at_text} FLOPs"
            if bands:
                legend_title += f" [{confidence:.0%} bootstrap interval]"
        fig.legend(
            handles, labels, loc="outside lower center", ncol=min(2, len(labels)), frameon=False,
            title=legend_title,
        )  # fmt: skip
        title = "Loss against training compute"
        band = f"; bands: {confidence:.0%} bootstrap intervals" if bands else ""
        fig.suptitle(f"{title}\n(fit L = E + A·C^−α; dashed: extrapolated{band})")
    caption = (
        "Final loss of every run against its training compute, both axes logarithmic, with each "
        "variant's fitted curve L = E + A·C^−α (a pure power law where too few sizes were "
        "trained), solid over the computes it trained and dashed beyond"
        + (
            f"; bands give the loss's {confidence:.0%} interval at each compute from the "
            "curves refitted to seeds resampled within each size, expanded for few seeds as "
            "the multipliers' intervals are. The legend gives each variant's compute multiplier at the baseline's largest "
            "compute: how many times more compute the baseline needs to reach the same loss."
            if bands
            else "."
        )
    )
    return save_figure(fig, Path(path), title, caption)


def _name(variant: str, baseline: str | None, m: tuple[float, float, float] | None) -> str:
    if variant == baseline:
        return f"{variant} (baseline)"
    if m is None or math.isnan(m[0]):
        return variant
    text = f"{variant}: {_times(m[0])}"
    if not math.isnan(m[1]):
        text += f" [{_times(m[1])}, {_times(m[2])}]"
    return text


def _times(m: float) -> str:
    return "∞×" if m == math.inf else f"{m:.2f}×"
