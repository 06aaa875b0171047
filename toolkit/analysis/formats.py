"""How numbers read in every report: the terminal text, report.md and report.html share these,
so a number reads the same in all three.

    num(x, "+.4f")   pvalue(p)   si(count)   seconds(s)   fixed_width(view, left)

Not here: the tables and notes (text.py, sections.py) or writing files (render.py).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from toolkit.analysis.table import finite


def num(x: Any, spec: str) -> str:
    """x in a format spec, '-' when it is not a finite number."""
    return format(float(x), spec) if finite(x) else "-"


def pvalue(x: Any) -> str:
    """A p-value to 3 decimals, '<0.001' below that, '-' without a test."""
    if not finite(x):
        return "-"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def si(x: Any) -> str:
    """A count with an SI suffix: 1.23M, 456k."""
    if not finite(x):
        return "-"
    x = float(x)
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g}{suffix}"
    return f"{x:.3g}"


def seconds(x: Any) -> str:
    """A duration: 12.3s, or 4m05s from two minutes on."""
    if not finite(x):
        return "-"
    x = float(x)
    return f"{x:.1f}s" if x < 120 else f"{int(x // 60)}m{int(x % 60):02d}s"


def fixed_width(view: pd.DataFrame, left: tuple[str, ...]) -> str:
    """Columns padded to their widest cell: text columns left-aligned, numbers right-aligned."""
    cells = [list(map(str, view.columns)), *view.astype(str).values.tolist()]
    widths = [max(len(row[i]) for row in cells) for i in range(len(view.columns))]
    lines = []
    for row in cells:
        parts = [
            cell.ljust(w) if col in left else cell.rjust(w)
            for cell, w, col in zip(row, widths, view.columns, strict=True)
        ]
        lines.append(" ".join(parts).rstrip())
    return "\n".join(lines)
