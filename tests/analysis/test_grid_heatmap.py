"""The grid heatmap says what its colours do not: which cells differ significantly from the
baseline (the others are hatched and marked n.s.) and how wide a range the colour scale spans."""

from __future__ import annotations

import math

import matplotlib.image
import pandas as pd
import pytest

from toolkit.analysis.figures import make_figures
from toolkit.analysis.heatmap import NOT_SIGNIFICANT, grid_heatmap
from toolkit.analysis.load import load
from toolkit.analysis.table import summarize
from toolkit.files import write_json

# norm x act -> final val_loss per seed; seeds are shared, so each is a paired t-test.
CELLS = {
    ("ln", "gelu"): [2.2600, 2.2620, 2.2610],  # the baseline
    ("ln", "relu"): [2.2640, 2.2650, 2.2645],  # p = 0.007: significant
    ("rms", "gelu"): [2.2575, 2.2610, 2.2590],  # p = 0.053: not significant
    ("rms", "relu"): [2.3000],  # one seed: no test, so not shown significant either
}


def runs_table(cells: dict[tuple[str, ...], list[float]], axes=("norm", "act"), prefix=""):
    rows, first = [], next(iter(cells))  # the first cell is the baseline
    for key, values in cells.items():
        variant = ",".join(f"{a}={v}" for a, v in zip(axes, key, strict=True))
        for seed, x in enumerate(values):
            rows.append(
                {"variant": prefix + variant, "seed": seed, "status": "ok", "val_loss": x,
                 "train_loss": x + 0.01, "val_perplexity": math.exp(x), "val_bpb": x / math.log(2),
                 "params": 1000, "params_non_embedding": 800, "tokens_per_s": 100.0,
                 "wall_s": 1.0, "causal": True, "baseline": key == first,
                 **dict(zip(axes, key, strict=True))}
            )  # fmt: skip
    return pd.DataFrame(rows)


def cell_marks(fig) -> dict[tuple[str, str], tuple[bool, str]]:
    """(row label, column label) -> (hatched?, the cell's annotation) as drawn."""
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    columns = [t.get_text() for t in ax.get_xticklabels()]
    hatched = {
        (rows[int(p.get_y())], columns[int(p.get_x())])
        for p in ax.patches
        if p.get_gid() == NOT_SIGNIFICANT and p.get_hatch()
    }
    notes = {
        (rows[int(t.get_position()[1])], columns[int(t.get_position()[0])]): t.get_text()
        for t in ax.texts
    }
    return {cell: (cell in hatched, notes[cell]) for cell in notes}


def test_exactly_the_cells_not_shown_to_differ_are_marked():
    runs = runs_table(CELLS)
    summary = summarize(runs)
    p = summary.set_index("variant")["p_holm"]  # what the verdicts read by default
    assert p["norm=ln,act=relu"] < 0.05 < p["norm=rms,act=gelu"]  # what the cells claim
    assert math.isnan(p["norm=rms,act=relu"])
    fig, _, caption = grid_heatmap(runs, "q", "norm", "act", ["norm", "act"], "val_loss", summary)
    marks = cell_marks(fig)
    assert {cell for cell, (hatched, _) in marks.items() if hatched} == {
        ("rms", "gelu"),
        ("rms", "relu"),
    }
    assert {cell for cell, (_, text) in marks.items() if NOT_SIGNIFICANT in text} == {
        ("rms", "gelu"),
        ("rms", "relu"),
    }
    assert marks[("ln", "gelu")] == (False, "2.2610\nn=3\nbaseline")
    assert marks[("ln", "relu")] == (False, "2.2645\nn=3")
    legend = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert legend == [
        "n.s.: not significantly different from the baseline (two-sided t-test, "
        "Holm-adjusted p ≥ 0.05, or no test)"
    ]
    assert "hatched cells marked n.s." in caption


def test_the_title_states_the_range_the_colour_spans():
    runs = runs_table(CELLS)
    fig, title, caption = grid_heatmap(
        runs, "q", "norm", "act", ["norm", "act"], "val_loss", summarize(runs)
    )
    span = "2.2592–2.3000 nats/token (range 0.0408)"
    assert fig.axes[0].get_title().endswith(f"\ncolour: val_loss {span}")
    assert span in caption and title == "q: validation loss by norm × act"


def test_cells_averaging_several_variants_count_the_significant_ones():
    # A third axis: each norm x act cell averages two variants (seq = short, long).
    cells = {
        (n, a, s): [x + (0.05 if s == "long" and (n, a) == ("ln", "relu") else 0.0) for x in xs]
        for (n, a), xs in CELLS.items()
        for s in ("short", "long")
    }
    cells[("ln", "gelu", "long")] = [2.2600, 2.2630, 2.2610]  # beside the baseline: n.s.
    runs = runs_table(cells, axes=("norm", "act", "seq"))
    summary = summarize(runs)
    fig, _, _ = grid_heatmap(runs, "q", "norm", "act", ["norm", "act", "seq"], "val_loss", summary)
    marks = cell_marks(fig)
    # The baseline's cell: its other variant does not differ.
    assert marks[("ln", "gelu")] == (True, "2.2612\nn=6\nn.s.\n(+ baseline)")
    assert marks[("ln", "relu")][1].endswith("n=6")  # both differ: no mark
    assert marks[("rms", "gelu")] == (True, "2.2592\nn=6\nn.s.")
    assert fig.legends[0].get_texts()[0].get_text().startswith("n.s.: ")


def test_one_of_two_significant_is_counted_not_hatched():
    cells = {(n, a, s): xs for (n, a), xs in CELLS.items() for s in ("short", "long")}
    cells[("ln", "relu", "long")] = [2.2600, 2.2635, 2.2590]  # n.s., beside a significant one
    runs = runs_table(cells, axes=("norm", "act", "seq"))
    fig, _, _ = grid_heatmap(
        runs, "q", "norm", "act", ["norm", "act", "seq"], "val_loss", summarize(runs)
    )
    hatched, text = cell_marks(fig)[("ln", "relu")]
    assert not hatched and text.endswith("\n1/2 sig.")
    key = fig.legends[0].get_texts()[0].get_text()
    assert key.endswith("\nk/m sig.: k of the m variants the cell averages differ significantly")


def test_combined_folders_find_their_variants_in_the_summary():
    # Two folders combined: the summary names the grid's variants '<experiment>/<variant>'.
    runs = runs_table(CELLS)
    named = runs.copy()
    named.loc[~named["baseline"], "variant"] = "q/" + named.loc[~named["baseline"], "variant"]
    summary = summarize(named)
    fig, _, _ = grid_heatmap(runs, "q", "norm", "act", ["norm", "act"], "val_loss", summary)
    hatched = {cell for cell, (h, _) in cell_marks(fig).items() if h}
    assert hatched == {("rms", "gelu"), ("rms", "relu")}


def test_another_baseline_is_the_one_cell_marked_baseline(tmp_path):
    # `ablate report --baseline`: the folder's spec baseline is a variant like any other.
    folder = tmp_path / "q"
    runs = runs_table(CELLS)
    for variant, group in runs.groupby("variant"):
        for _, r in group.iterrows():
            out = folder / variant / f"seed-{r['seed']}"
            out.mkdir(parents=True)
            write_json(out / "summary.json", {**r.to_dict(), "config_hash": variant})
    experiment = {"name": "q", "baseline": "norm=ln,act=gelu", "axes": ["norm", "act"]}
    write_json(folder / "experiment.json", experiment)
    chosen = "norm=rms,act=gelu"
    experiments = load(folder, chosen)
    summary = summarize(experiments.runs, experiments.baseline)
    (part,) = experiments.parts
    fig, _, _ = grid_heatmap(
        part.compared(chosen), "q", "norm", "act", ["norm", "act"], "val_loss", summary
    )
    marks = cell_marks(fig)
    assert [cell for cell, (_, text) in marks.items() if "baseline" in text] == [("rms", "gelu")]
    verdict = summary.set_index("variant").loc["norm=ln,act=gelu", "verdict"]
    assert marks[("ln", "gelu")] == (verdict == NOT_SIGNIFICANT, "2.2610\nn=3\n" + verdict)


def test_cells_the_summary_does_not_compare_are_left_unmarked():
    # A ladder compares its largest size only: the smaller sizes' cells were never tested.
    cells = {(n, a, s): xs for (n, a), xs in CELLS.items() for s in ("big", "small")}
    runs = runs_table(cells, axes=("norm", "act", "size"))
    compared = runs[runs["size"] == "big"]
    fig, _, _ = grid_heatmap(
        runs, "q", "norm", "size", ["norm", "act", "size"], "val_loss", summarize(compared)
    )
    marks = cell_marks(fig)
    assert marks[("rms", "small")] == (False, marks[("rms", "small")][1])
    assert not marks[("rms", "small")][1].endswith(NOT_SIGNIFICANT)
    assert marks[("rms", "big")][0]  # compared there, and no variant of it differs


@pytest.mark.slow
@pytest.mark.parametrize("seeds", [1, 3])
def test_the_heatmap_file_still_draws(tmp_path, seeds):
    runs = runs_table({k: v[:seeds] for k, v in CELLS.items()})
    summary = summarize(runs)
    made = make_figures(runs, summary, pd.DataFrame(), [("q", ["norm", "act"], runs)], tmp_path)
    (grid,) = [f for f in made if f.path.name.startswith("grid-")]
    assert matplotlib.image.imread(grid.path).shape[0] > 300
    assert "range" in grid.caption
