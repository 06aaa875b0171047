"""The report's sections for sweeps that are more than one comparison: the tuning phase of a
tuned sweep ([tune]) and the scaling fits of a ladder ([ladder]).

    comparable_runs(experiments)       the runs the Results table compares: for a ladder, its
                                       largest size only (a small model against a large
                                       baseline says nothing about the idea)
    results(experiments, correction)   the Results table itself: those runs summarized, on
                                       the ladder's metric for a ladder
    tuning(experiments, figures_dir)   Section: tuning.csv's table (mean validation metric of
                                       every variant x point, the choice marked), its edge
                                       warnings and a figure of the metric against the first
                                       tuned key, one line per variant
    target(experiments)                Section: what each variant needed to first reach
                                       train.target_loss (tokens, FLOPs, seconds)
    scaling(experiments, figures_dir)  Section: toolkit.analysis.scaling's ladder_summary of
                                       loss against training FLOPs per variant (compute
                                       multipliers with bootstrap intervals, crossings,
                                       warnings) and its log-log figure

A Section holds report blocks (render.py's format), figure files and terminal lines; empty for
a sweep without the phase. Not here: the fits (curves.py, scaling.py), choosing the points
(toolkit/sweep/tuning.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.analysis import scaling as fits
from toolkit.analysis.load import Experiments
from toolkit.analysis.metric import tokenizers_differ
from toolkit.analysis.plotting import FigureFile, new_figure, palette, save_figure
from toolkit.analysis.scaling_figure import ladder_figure
from toolkit.analysis.stats import HOLM
from toolkit.analysis.table import summarize
from toolkit.errors import ToolkitError
from toolkit.sweep.results import collect
from toolkit.sweep.tuning import TUNE_DIR, edge_text, near_tie

TUNING_FILE = "tuning.csv"  # written by toolkit.sweep.tuning into the experiment folder


@dataclass
class Section:
    blocks: list[tuple] = field(default_factory=list)
    figures: list[FigureFile] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # for the terminal


def _ladder(experiments: Experiments) -> dict[str, Any] | None:
    """The experiment's [ladder] table, its metric as the report uses it: bits per byte in
    place of a loss when the runs use different tokenizers, whose losses per token do not
    compare (a spec refuses that now; a folder trained before may still hold one)."""
    found = [p.experiment["ladder"] for p in experiments.parts if p.experiment.get("ladder")]
    if not found:
        return None
    ladder = dict(found[0])
    metric, runs = ladder.get("metric", "val_loss"), experiments.runs
    if metric.endswith("_loss") and tokenizers_differ(runs):
        ladder["metric"] = metric.removesuffix("_loss") + "_bpb"
    return ladder


def comparable_runs(experiments: Experiments) -> pd.DataFrame:
    """The runs the Results table compares (see the module docstring)."""
    ladder = _ladder(experiments)
    runs = experiments.runs
    if ladder is None or runs.empty:
        return runs
    largest = list(ladder["sizes"])[-1]
    baseline = str(experiments.baseline or "")
    if baseline and not baseline.endswith(f"@{largest}"):
        name = baseline.rsplit("@", 1)[0]
        raise ToolkitError(
            f"baseline {baseline!r} is not at the ladder's largest size, which the Results "
            f"table compares; give {name}@{largest}"
        )
    return runs[runs["variant"].astype(str).str.endswith(f"@{largest}")].reset_index(drop=True)


def results(experiments: Experiments, correction: str = HOLM) -> pd.DataFrame:
    """The Results table (table.summarize) of the comparable runs, every variant against the
    baseline, on the ladder's metric when the experiment is a ladder."""
    ladder = _ladder(experiments)
    return summarize(
        comparable_runs(experiments), experiments.baseline, asked=experiments.asked,
        correction=correction, metric=ladder.get("metric") if ladder else None,
    )  # fmt: skip


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def tuning(experiments: Experiments, figures_dir: Path | None) -> Section:
    """The tuning phase's section (see the module docstring)."""
    section = Section()
    for part in experiments.parts:
        tune = part.experiment.get("tune")
        path = part.folder / TUNING_FILE
        if not tune or not path.is_file():
            continue
        table = pd.read_csv(path)
        metric, keys = tune.get("metric", "val_loss"), tuned_keys(tune)
        section.blocks.append(("h2", f"Tuning ({part.name})"))
        section.blocks.append((
            "p",
            f"Each variant trained at every point of the grid on seed(s) "
            f"{', '.join(map(str, tune.get('seeds', [])))}; its point with the lowest mean "
            f"{metric} (in bold) is the one its final runs used. A point where a seed failed "
            f"or diverged counts as infinitely bad.",
        ))  # fmt: skip
        header = ["variant", *keys, f"mean {metric}", "seeds", "chosen"]
        rows, bold = [], set()
        for i, r in enumerate(table.to_dict("records")):
            if r["chosen"]:
                bold.add(i)
            rows.append([
                str(r["variant"]), *[_cell(r.get(k)) for k in keys], _num(r.get(metric), ".4f"),
                str(r["seeds"]), "yes" if r["chosen"] else "",
            ])  # fmt: skip
        section.blocks.append(
            ("table", header, rows, ["l"] * (len(keys) + 1) + ["r", "r", "l"], bold)
        )
        warnings = edge_warnings(table, tune) + tie_warnings(table, tune, part.folder)
        if warnings:
            section.blocks.append(("ul", warnings))
        section.lines += [
            f"tuned {r['variant']}: {r['point']}" for r in table.to_dict("records") if r["chosen"]
        ]
        section.lines += [f"warning: {w}" for w in warnings]
        if figures_dir is not None and keys:
            section.figures.append(tuning_figure(table, tune, part.name, figures_dir))
    return section


def tuned_keys(tune: dict[str, Any]) -> list[str]:
    """Every key some variant tuned: the shared grid's, then the variants' own grids'."""
    own = [k for grid in tune.get("variants", {}).values() for k in grid]
    return list(dict.fromkeys([*tune.get("values", {}), *own]))


def grid_of(tune: dict[str, Any], variant: str) -> dict[str, list[Any]]:
    """A variant's grid: its own ([tune.variants]) or the shared one."""
    return tune.get("variants", {}).get(variant, tune.get("values", {}))


def _cell(value: Any) -> str:
    """A tuning table cell: empty where the variant's grid has no such key."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def edge_warnings(table: pd.DataFrame, tune: dict[str, Any]) -> list[str]:
    """A line per variant whose chosen value of a numeric key is the smallest or largest tried."""
    out = []
    for r in table[table["chosen"].astype(bool)].to_dict("records"):
        for key, candidates in grid_of(tune, r["variant"]).items():
            numbers = [
                c for c in candidates if isinstance(c, int | float) and not isinstance(c, bool)
            ]
            if len(numbers) != len(candidates):
                continue
            value = _number(r[key])
            end = (
                "smallest" if value == min(numbers) else "largest" if value == max(numbers) else ""
            )
            if end:
                out.append(edge_text(str(r["variant"]), key, str(r[key]), end))
    return out


def tie_warnings(table: pd.DataFrame, tune: dict[str, Any], folder: Path) -> list[str]:
    """toolkit.sweep.tuning.near_tie for each variant of tuning.csv, from the tuning runs in
    folder/tune (their seeds' own values, which tuning.csv averages)."""
    metric, seeds = tune.get("metric", "val_loss"), tune.get("seeds", [])
    if len(seeds) < 2 or "point" not in table:
        return []
    runs = collect(folder / TUNE_DIR)
    if runs.empty or metric not in runs:
        return []
    runs = runs[(runs["status"] == "ok") & runs["seed"].isin(seeds)]
    out = []
    for variant, group in table.groupby("variant", sort=False):
        labels = [str(p) for p in group["point"]]
        scores = [x if math.isfinite(x) else math.inf for x in group[metric].map(_number)]
        per_seed = []
        for point in labels:
            mine = runs[runs["variant"] == f"{variant}@{point}"]
            by_seed = {seed: math.inf for seed in seeds}
            by_seed |= {s: _number(x) for s, x in zip(mine["seed"], mine[metric], strict=True)}
            per_seed.append({s: x if math.isfinite(x) else math.inf for s, x in by_seed.items()})
        out += near_tie(str(variant), labels, scores, per_seed, metric)
    return out


def tuning_figure(table: pd.DataFrame, tune: dict[str, Any], name: str, folder: Path) -> FigureFile:
    """The metric against the first key of each variant's grid, one line per variant (with
    several keys: the best over the others at each value), the chosen points ringed; variants
    whose grids start with different keys ([tune.variants]) get a panel per key."""
    metric = tune.get("metric", "val_loss")
    variants = list(dict.fromkeys(table["variant"]))
    by_key: dict[str, list[str]] = {}
    for variant in variants:
        by_key.setdefault(next(iter(grid_of(tune, variant))), []).append(variant)
    colors = palette(variants)
    fig = new_figure(6.4 * len(by_key) ** 0.5 + 1.6 * (len(by_key) - 1), 4.0)
    axes = fig.subplots(1, len(by_key), squeeze=False)[0]
    for ax, (key, mine_variants) in zip(axes, by_key.items(), strict=True):
        frame = table.assign(
            x=table[key].map(_number), y=pd.to_numeric(table[metric], errors="coerce")
        )
        for variant in mine_variants:
            mine = frame[frame["variant"] == variant]
            best = mine.groupby("x", sort=True)["y"].min()
            ax.plot(best.index, best.values, marker="o", color=colors[variant], label=variant)
            chosen = mine[mine["chosen"].astype(bool)]
            ax.scatter(
                chosen["x"], chosen["y"], s=160, facecolors="none", edgecolors=colors[variant]
            )
        xs = frame[frame["variant"].isin(mine_variants)]["x"].dropna()
        if len(xs) and xs.min() > 0 and xs.max() / xs.min() >= 10:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(f"mean {metric} (tuning seeds)")
        ax.legend(fontsize="small")
    keys = " and ".join(by_key)
    title = f"Tuning: {metric} against {keys} ({name})"
    caption = (
        f"Mean final {metric} over the tuning seeds at each {keys} tried, per variant; the "
        f"ringed point is each variant's choice. A choice at either end of the range may not be "
        f"the best."
    )
    return save_figure(fig, folder / f"tuning-{name}.png", title, caption)


def ladder_frame(runs: pd.DataFrame, ladder: dict[str, Any]) -> pd.DataFrame:
    """scaling.py's input from a ladder's runs: variant and size (from "VARIANT@SIZE"), seed,
    compute (the run's training FLOPs) and loss (the ladder's metric), finished runs only."""
    ok = runs[runs["status"] == "ok"]
    metric = ladder.get("metric", "val_loss")
    if ok.empty or metric not in ok:
        return pd.DataFrame(columns=["variant", "size", "seed", "compute", "loss"])
    names = ok["variant"].astype(str).str.rsplit("@", n=1)
    flops = ok["flops"] if "flops" in ok else ok["tokens"] * ok["flops_per_token"]
    frame = pd.DataFrame({
        "variant": names.str[0], "size": names.str[1], "seed": ok["seed"],
        "compute": pd.to_numeric(flops, errors="coerce"),
        "loss": pd.to_numeric(ok[metric], errors="coerce"),
    })  # fmt: skip
    return frame.dropna().reset_index(drop=True)


def scaling(experiments: Experiments, figures_dir: Path | None, n_boot: int = 1000) -> Section:
    """The ladder's section (see the module docstring)."""
    section = Section()
    ladder = _ladder(experiments)
    if ladder is None:
        return section
    frame = ladder_frame(experiments.runs, ladder)
    baseline = str(experiments.baseline or "").rsplit("@", 1)[0]
    section.blocks.append(("h2", "Scaling"))
    if frame.empty or baseline not in set(frame["variant"]):
        section.blocks.append(("p", "No finished runs of the baseline on the ladder yet."))
        return section
    target = ladder.get("target_flops")
    summary = fits.ladder_summary(frame, baseline, target_flops=target, n_boot=n_boot)
    metric = ladder.get("metric", "val_loss")
    section.blocks.append((
        "p",
        f"Every variant trained at {len(ladder['sizes'])} sizes ({', '.join(ladder['sizes'])}); "
        f"its final {metric} is fitted against the run's training FLOPs as "
        f"`L(C) = E + A · C^(-alpha)` (a pure power law `A · C^(-alpha)` with fewer than 4 "
        f"computes). The **compute multiplier** is the factor by which the baseline's compute "
        f"must grow to reach the variant's loss: above 1 the variant is better. Intervals: "
        f"{int(100 * summary.attrs.get('confidence', 0.95))}% expanded percentile bootstrap "
        f"over seeds within each size (simulated coverage: about 96% with 5 seeds per size, 94% "
        f"with 4, 89% with 3, 78% with 2; no interval with one).",
    ))  # fmt: skip
    header = ["variant", "fit", "alpha", "R²", "multiplier at largest", "at target", "crossings"]
    rows, bold = [], set()
    for i, r in enumerate(summary.to_dict("records")):
        if r["variant"] == baseline:
            bold.add(i)
        rows.append([
            r["variant"], r["kind"], _num(r["alpha"], ".3f"), _num(r["r2"], ".3f"),
            _multiplier(r["multiplier"], r["multiplier_low"], r["multiplier_high"]),
            _multiplier(r.get("target_multiplier"), r.get("target_multiplier_low"),
                        r.get("target_multiplier_high")),
            ", ".join(f"{c:.2g}" for c in r["crossings"]) or "-",
        ])  # fmt: skip
    section.blocks.append(("table", header, rows, ["l", "l", "r", "r", "r", "r", "l"], bold))
    warnings = [f"{r['variant']}: {w}" for r in summary.to_dict("records") for w in r["warnings"]]
    if warnings:
        section.blocks.append(("ul", warnings))
    section.lines.append("scaling (compute multiplier against the baseline; > 1 is better):")
    largest = list(ladder["sizes"])[-1]
    trained = set(frame.loc[frame["variant"] == baseline, "size"])
    where = "the largest size" if largest in trained else "the largest size trained so far"
    for r in summary.to_dict("records"):
        mult = _multiplier(r["multiplier"], r["multiplier_low"], r["multiplier_high"])
        line = f"  {r['variant']}: {mult} at {where}"
        if target:
            at = _multiplier(
                r.get("target_multiplier"), r.get("target_multiplier_low"),
                r.get("target_multiplier_high"),
            )  # fmt: skip
            line += f", {at} at {target:.2g} FLOPs"
        section.lines.append(f"{line} ({r['kind']} fit)")
    section.lines += [f"warning: {w}" for w in warnings]
    if figures_dir is not None:
        section.figures.append(
            ladder_figure(frame, summary, figures_dir / "scaling.png", baseline=baseline,
                                  target_flops=target)
        )  # fmt: skip
    return section


def target(experiments: Experiments) -> Section:
    """What each variant needed to reach train.target_loss: the mean tokens, training FLOPs and
    training seconds over the seeds that reached it, and the FLOPs against the baseline's."""
    section = Section()
    runs = experiments.runs
    if "target_loss" not in runs or runs["target_loss"].dropna().empty:
        return section
    ok = runs[runs["status"] == "ok"]
    goal = float(ok["target_loss"].dropna().iloc[0])
    rows_data = []
    for variant, group in ok.groupby("variant", sort=False):
        reached = group.dropna(subset=["target_flops"])
        rows_data.append((variant, len(reached), len(group), *(
            float(reached[c].mean()) if len(reached) else math.nan
            for c in ("target_tokens", "target_flops", "target_s")
        )))  # fmt: skip
    base = next((r for r in rows_data if r[0] == experiments.baseline), None)
    section.blocks.append(("h2", f"Time to target (validation loss {goal:g})"))
    section.blocks.append((
        "p",
        "The first evaluation at or below the target (checked every `train.eval_interval` "
        "steps): tokens, training FLOPs and training seconds, mean over the seeds that reached "
        "it; **FLOPs vs baseline** below 1 means the variant got there on less compute.",
    ))  # fmt: skip
    header = ["variant", "reached", "tokens", "FLOPs", "seconds", "FLOPs vs baseline"]
    rows, bold = [], set()
    section.lines.append(f"time to val_loss <= {goal:g} (mean over seeds that reached it):")
    for i, (variant, hit, n, tokens, flops, secs) in enumerate(rows_data):
        if variant == experiments.baseline:
            bold.add(i)
        ratio = flops / base[4] if base is not None and base[4] else math.nan
        cells = [f"{hit}/{n}", _num(tokens, ",.0f"), _num(flops, ".3g"), _num(secs, ".1f"),
                 _num(ratio, ".3f")]  # fmt: skip
        rows.append([str(variant), *cells])
        section.lines.append(
            f"  {variant}: {cells[0]} seeds, {cells[1]} tokens, {cells[2]} FLOPs, "
            f"{cells[3]} s, x{cells[4]} the baseline's FLOPs"
        )
    section.blocks.append(("table", header, rows, ["l", "r", "r", "r", "r", "r"], bold))
    return section


def _num(value: Any, spec: str) -> str:
    number = _number(value)
    return "-" if math.isnan(number) else format(number, spec)


def _multiplier(value: Any, low: Any, high: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"x{value:.2f}" if math.isfinite(value) else "x∞"
    if low is not None and not (isinstance(low, float) and math.isnan(low)):
        text += f" [{low:.2f}, {high:.2f}]"
    return text
