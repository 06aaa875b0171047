"""What every figure of the toolkit shares: a matplotlib Figure on its own Agg canvas (no
display, no pyplot state, so drawing changes nothing for the caller's own plots), one colour per
variant, the size and resolution, axis labels named as the tables name the metrics, and the PNG
written whole or not at all. `FigureFile` is what a drawn figure returns: its path, title and
caption, for the report.

seaborn and matplotlib are imported inside the functions that draw, not here, for start-up cost
only: they are slow to import, and `ablate run` (which prints the table) and
write_report(figures=False) never draw. Not here: the figures themselves (figures.py for the
report's, heatmap.py for a grid's, scaling.py and phases.py for ladders and tuning).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.analysis.table import NAMES, UNITS
from toolkit.files import write_atomic

DPI = 110
WIDTH = 11.0  # inches


@dataclass
class FigureFile:
    path: Path
    title: str
    caption: str


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


def axis_label(metric: str) -> str:
    """'validation loss (nats/token)': the name and unit the tables use."""
    return f"{NAMES[metric]} ({UNITS[metric]})"
