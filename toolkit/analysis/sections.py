"""The report's tables after the main one, as cells shared by the terminal text, report.md and
report.html: the steps along cumulative variants (a spec's `after`; toolkit.analysis.steps),
and the scores computed after training (lm-eval tasks from `ablate eval-tasks`, losses in
other windows from `ablate eval --context`; toolkit.analysis.tasks describes them).

    header, rows, baseline_rows = step_cells(summary)     format_steps(summary)
    header, rows, baseline_rows = task_cells(summary)     format_tasks(summary)

Not here: the main table and its notes (text.py), number formats (formats.py).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from toolkit.analysis.formats import fixed_width, num, pvalue
from toolkit.analysis.steps import steps_view
from toolkit.analysis.table import finite
from toolkit.sweep.results import TASK_PREFIX

# -- the steps of cumulative variants (a spec's `after`; toolkit.analysis.steps) ----------------


def step_cells(summary: pd.DataFrame) -> tuple[list[str], list[list[str]], set[int]]:
    """The steps table as text, shared with report.md and report.html: header, one row per
    variant of a chain in the spec's order, and the rows of the baseline; no rows without one."""
    records = steps_view(summary).to_dict("records")
    header = ["variant", "after", "changes", "Δ step", "95% CI", "p", "running total"]
    rows = [
        [
            r["variant"],
            r["after"] or "-",
            r["changes"] or "-",
            num(r["delta_step"], "+.4f"),
            f"[{num(r['delta_step_ci_low'], '+.4f')}, {num(r['delta_step_ci_high'], '+.4f')}]"
            if finite(r["delta_step_ci_low"])
            else "-",
            pvalue(r["p_step"]),
            num(r["delta"], "+.4f"),
        ]
        for r in records
    ]
    return header, rows, {i for i, r in enumerate(records) if r["baseline"]}


def format_steps(summary: pd.DataFrame) -> str:
    """The steps table for the terminal, with what its columns mean; '' without a chain."""
    header, rows, baseline = step_cells(summary)
    if not rows:
        return ""
    metric = summary.attrs.get("metric", "val_loss")
    view = pd.DataFrame(
        [["*" if i in baseline else "", *row] for i, row in enumerate(rows)], columns=["", *header]
    )
    note = (
        f"Δ step: mean {metric} minus that of the variant it builds on (after), with the 95% CI "
        f"and p of a t-test against it (paired by seed when they share seeds, else Welch; '-' "
        f"with one seed; p not adjusted for multiple comparisons); running total: Δ vs base. "
        f"From the baseline, the steps of a chain add up to its running total."
    )
    body = fixed_width(view, left=("", "variant", "after", "changes"))
    return "\n".join([f"steps, each variant against the one it builds on ({metric}):", body, note])


# -- scores after training: lm-eval tasks (ablate eval-tasks), other windows (eval --context) --
TASKS_NOTE = (
    "Scores computed after training: lm-evaluation-harness tasks (ablate eval-tasks), and "
    "split@N, the loss (nats/token) and bits per byte on that split in windows of N tokens "
    "(ablate eval --context; lower is better). Mean ± sample std over the finished "
    "seeds scored, (n) when fewer seeds than the variant's finished runs were scored; '-' "
    "where no run of the variant was scored. [Δ, p]: the mean minus the baseline's, and the "
    "two-sided p-value of the losses' test (paired t on shared seeds, else Welch; none with "
    "one seed), Holm-adjusted over every task comparison in the table, a family apart from "
    "the losses' (bits per byte counted with its loss where it is the loss rescaled). Higher is better for accuracies, lower for perplexities and bits per byte."
)


def task_cells(summary: pd.DataFrame) -> tuple[list[str], list[list[str]], set[int]]:
    """The task scores as text, shared with report.md and report.html: header (variant, then
    one column per task metric), one row per variant in the table's order, and the rows of the
    baseline; no header and no rows when no run was scored."""
    scored = [c[: -len("_mean")] for c in summary.columns if _is_task_mean(c)]
    if summary.empty or not scored:
        return [], [], set()
    records = summary.to_dict("records")
    rows = []
    for r in records:
        cells = [r["variant"]]
        for column in scored:
            mean, std, n = r[f"{column}_mean"], r[f"{column}_std"], r[f"{column}_n"]
            if not finite(mean):
                cells.append("-")
                continue
            cell = _score(mean) + (f" ± {_score(std)}" if finite(std) else "")
            cell += f" ({int(n)})" if int(n) < int(r["ok"]) else ""
            delta, p_holm = r.get(f"{column}_delta"), r.get(f"{column}_p_holm")
            if finite(delta):
                versus = f"Δ {_score(delta, '+')}"
                versus += f", p {pvalue(p_holm)}" if finite(p_holm) else ""
                cell += f" [{versus}]"
            cells.append(cell)
        rows.append(cells)
    header = ["variant", *[c[len(TASK_PREFIX) :] for c in scored]]
    return header, rows, {i for i, r in enumerate(records) if r["baseline"]}


def format_tasks(summary: pd.DataFrame) -> str:
    """The task scores for the terminal, with what they mean; '' when no run was scored."""
    header, rows, baseline = task_cells(summary)
    if not rows:
        return ""
    view = pd.DataFrame(
        [["*" if i in baseline else "", *row] for i, row in enumerate(rows)], columns=["", *header]
    )
    body = fixed_width(view, left=("", "variant"))
    return "\n".join(["scores after training:", body, TASKS_NOTE, *settings_warnings(summary)])


def settings_warnings(summary: pd.DataFrame) -> list[str]:
    """A line for each task whose runs were scored in different ways: its means mix them."""
    return [
        f"WARNING: {task} was scored in {len(ways)} ways ({'; '.join(ways)}), so its means "
        f"mix them; score every run again with one command"
        for task, ways in summary.attrs.get("task_settings_differ", {}).items()
    ]


def _score(x: float, sign: str = "") -> str:
    """Four decimals for accuracies and bits, four significant digits for perplexities; sign
    "+" writes it for positive numbers too."""
    return num(x, sign + (".4f" if abs(x) < 10 else ".4g"))


def _is_task_mean(column: Any) -> bool:
    return isinstance(column, str) and column.startswith(TASK_PREFIX) and column.endswith("_mean")
