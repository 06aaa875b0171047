"""The comparison table as terminal text: what `ablate report` and `ablate run` print.

    from toolkit.analysis.text import report

    summary, text = report("runs/quickstart")    # (the table, the text); writes nothing

`format_summary(summary)` lays the table out in fixed-width columns (the baseline marked '*'),
with notes on units, tests, which p-value the verdicts read (Holm-adjusted or not), what the
sweep could resolve, the A/A check of the baseline and any outlier seed; `report(dir)` reads a
folder and adds a title and the runs still missing. The number formats here (`num`, `pvalue`,
`si`, `seconds`) and the notes (`resolution_text`, `correction_text`, `aa_text`,
`outlier_lines`) are shared with report.md and report.html, so a number reads the same in all
three.

Not here: the statistics (table.py), reading folders (load.py), writing files (render.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.analysis import phases
from toolkit.analysis.load import Experiments, load
from toolkit.analysis.stats import HOLM, OUTLIER_ALPHA
from toolkit.analysis.steps import steps_view
from toolkit.analysis.table import ALPHA, UNITS, finite, summarize
from toolkit.sweep.results import TASK_PREFIX


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


def resolution_text(summary: pd.DataFrame, markdown: bool = False) -> str:
    """The minimum detectable difference in words (markdown: for the report, under its own
    heading; else for the terminal)."""
    res = summary.attrs.get("resolution")
    if not res:
        return ""
    metric, unit = res["metric"], UNITS[res["metric"]]
    code = (lambda s: f"`{s}`") if markdown else (lambda s: s)
    lead = "" if markdown else "What the sweep could resolve: "
    if not finite(res["sd"]):
        body = (
            "nothing yet. With one finished seed per variant there is no estimate of the "
            "seed-to-seed noise, so no difference can be called significant; run at least 2 "
            "seeds (3 or more to resolve small effects)."
        )
    elif res["sd"] == 0:
        which = (
            "the differences to the baseline are the same on every seed"
            if res["paired"]
            else "every seed of a variant gives the same value"
        )
        body = (
            f"nothing: {which} ({metric} spread 0), so a t-test has no noise estimate and "
            f"gives no p-value; check that the seeds reach the runs."
        )
    else:
        how = (
            f"the pooled std of the per-seed differences to the baseline, {res['df']} df"
            if res["paired"]
            else f"the pooled within-variant std, {res['df']} df"
        )
        spread = (
            f"with {res['n']} seeds per variant and a seed-to-seed spread of {res['sd']:.4f} "
            f"{unit} in {metric} ({how})"
        )
        if not finite(res["mde"]):
            body = (
                f"{spread}, too few variants have 2 or more seeds for a test; no difference "
                f"can be called significant."
            )
        else:
            test = "a paired t-test" if res["paired"] else "a two-sample t-test"
            formula, df = (
                ("λ · s_diff / √n", "n-1") if res["paired"] else ("λ · s · √(2/n)", "2n-2")
            )
            pct = f" ({res['mde_pct']:.2f}% of the baseline)" if finite(res["mde_pct"]) else ""
            body = (
                f"{spread}, {test} at α = {res['alpha']:g} detects a true difference with "
                f"{res['power']:.0%} power when it is at least about {res['mde']:.4f} {unit}"
                f"{pct}. 'No significant difference' here means none larger than that, not none "
                f"at all. Formula: MDE = {code(formula)}, λ the noncentrality at which a t-test "
                f"with {df} df has that power (noncentral t)."
            )
    return lead + body if lead else body[0].upper() + body[1:]


def correction_text(summary: pd.DataFrame, markdown: bool = False) -> str:
    """Which p-value the verdicts read: Holm-adjusted over the comparisons with the baseline
    (correction "holm"), or p as it is ("none", with how many would pass by chance); '' when
    nothing was tested."""
    alpha = summary.attrs.get("alpha", ALPHA)
    k = int(summary["p_value"].map(finite).sum()) if "p_value" in summary else 0
    if not k:
        return ""
    bold = (lambda s: f"**{s}**") if markdown else (lambda s: s)
    code = (lambda s: f"`{s}`") if markdown else (lambda s: s)
    if summary.attrs.get("correction", HOLM) == HOLM:
        return (
            f"{bold('verdict')}: better or worse when the Holm-adjusted p ({bold('p Holm')}: "
            f"Holm-Bonferroni over the {k} comparisons with the baseline, so that the chance of "
            f"any false verdict in the table is at most {alpha:g}) is below {alpha:g}, "
            f"else n.s.; {code('ablate report --correction none')} bases them on p alone."
        )
    return (
        f"{bold('verdict')}: better or worse when p < {alpha:g}, else n.s. p is not corrected "
        f"for multiple comparisons (correction none): with {k} comparisons, about "
        f"{alpha * k:.2g} would fall under {alpha:g} by chance if no variant differed."
    )


def seed_span(seeds: list[Any]) -> str:
    """Seeds as a range when they run on without a gap: [0, 1, 2] -> '0-2', [0, 2] -> '0, 2'."""
    whole = len(seeds) > 1 and all(isinstance(s, int) for s in seeds)
    if whole and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def aa_text(summary: pd.DataFrame) -> str:
    """The A/A check of the baseline in one line ('' below 4 baseline seeds)."""
    check = summary.attrs.get("aa_check")
    if not check:
        return ""
    metric = summary.attrs.get("metric", "val_loss")
    alpha = summary.attrs.get("alpha", ALPHA)
    head = (
        f"A/A check: baseline seeds {seed_span(check['first'])} vs "
        f"{seed_span(check['second'])}: Δ {num(check['delta'], '+.4f')} {UNITS[metric]}"
    )
    if not finite(check["p_value"]):
        return f"{head}, no p-value (no spread in either half)."
    head += f", p {pvalue(check['p_value'])} ({check['test']})"
    if not check["alarm"]:
        return f"{head}; as expected, two halves of one configuration do not differ."
    return (
        f"{head}: warning, two halves of one configuration differ at p < {alpha:g}. That "
        f"happens by chance in {alpha:.0%} of sweeps; otherwise the seeds vary more, or less "
        f"independently, than the t-tests assume (runs on other hardware or code versions?), "
        f"so read the p-values with care."
    )


def outlier_lines(summary: pd.DataFrame, markdown: bool = False) -> list[str]:
    """One line per outlier seed: the variant, seed and value, and the run to look at."""
    metric = summary.attrs.get("metric", "val_loss")
    counts = dict(zip(summary["variant"], summary["ok"], strict=True)) if not summary.empty else {}
    code = (lambda s: f"`{s}`") if markdown else (lambda s: s)
    lines = []
    for o in summary.attrs.get("outliers", []):
        n = counts.get(o["variant"], 0)
        lines.append(
            f"outlier: {code(o['variant'])} seed {o['seed']} has {metric} {o['value']:.4f}, far "
            f"from the mean of its other seeds, {o['others_mean']:.4f} (deleted-residual "
            f"t = {o['t']:.1f}, p = {o['p_value']:.2g} < {OUTLIER_ALPHA:g}/{n}); look at that "
            f"run (its curves, log and config) before trusting {code(o['variant'])}'s mean and p."
        )
    return lines


TUNED_NOTE = (
    "tuned: every variant trained at its own settings, chosen on the validation split "
    "(tuning.csv); the comparison is on the held-out test split, which no choice saw."
)


def format_summary(summary: pd.DataFrame, title: str = "") -> str:
    """A fixed-width table for the terminal; the baseline is marked with '*'."""
    if summary.empty:
        return f"{title}\n(no finished runs yet)" if title else "(no finished runs yet)"
    metric = summary.attrs.get("metric", "val_loss")
    second = {"val_bpb": "val_loss", "test_loss": "val_loss", "test_bpb": "val_bpb"}.get(
        metric, "val_bpb"
    )
    records = summary.to_dict("records")
    columns: dict[str, list[str]] = {
        "": ["*" if r["baseline"] else "" for r in records],
        "variant": [r["variant"] + ("" if r["causal"] else " [non-causal]") for r in records],
        "seeds": [f"{r['ok']}/{r.get('seeds_asked', r['runs'])}" for r in records],
        metric: [f"{num(r[f'{metric}_mean'], '.4f')} ± {num(r[f'{metric}_std'], '.4f')}"
                 for r in records],
        "95% CI": [
            f"[{num(r.get(f'{metric}_ci_low'), '.4f')}, {num(r.get(f'{metric}_ci_high'), '.4f')}]"
            if finite(r.get(f"{metric}_ci_low"))
            else "-"
            for r in records
        ],
        "Δ vs base": [num(r.get("delta"), "+.4f") for r in records],
        "Δ %": [num(r.get("delta_pct"), "+.2f") for r in records],
        "p": [pvalue(r.get("p_value")) for r in records],
        "p Holm": [pvalue(r.get("p_holm")) for r in records],
        "verdict": [r.get("verdict") or "-" for r in records],
        "test": [(r.get("test") or "-") if finite(r.get("p_value")) else "-" for r in records],
        "ppl": [num(r["val_perplexity_mean"], ".2f") for r in records],
        second: [num(r[f"{second}_mean"], ".4f") for r in records],
        "params": [num(r["params"], ",.0f") for r in records],
        "FLOP/token": [si(r.get("flops_per_token")) for r in records],
        "tokens/s": [num(r["tokens_per_s"], ",.0f") for r in records],
        "wall": [seconds(r.get("wall_s")) for r in records],
        "flags": [_flags_without_causal(r.get("flags", "")) for r in records],
    }  # fmt: skip
    if summary.attrs.get("correction", HOLM) != HOLM:
        del columns["p Holm"]
    if "params_active" in summary and summary["params_active"].notna().any():
        # A mixture of experts: what a token uses, beside what the model holds.
        active = [num(r.get("params_active"), ",.0f") for r in records]
        columns = {
            new: value
            for key, value in columns.items()
            for new, value in (
                [(key, value), ("active", active)] if key == "params" else [(key, value)]
            )
        }
    body = _fixed_width(pd.DataFrame(columns), left=("", "variant", "verdict", "test", "flags"))
    notes = [
        f"* baseline. mean ± sample std over seeds; 95% CI: t-interval of the mean. Δ: mean minus "
        f"the baseline's; p: two-sided t-test of {metric} against the baseline (paired by seed "
        f"when they share seeds, else Welch), '-' with one seed. val_loss: nats/token; "
        f"ppl = exp(loss); val_bpb: bits per UTF-8 byte; FLOP/token: training FLOPs, "
        f"6 x (matrix params, head included) + 12 x layers x emb_dim x context; wall: per run."
    ]
    notes.append(correction_text(summary))
    if metric.startswith("test_"):
        notes.append(TUNED_NOTE)
    resolution = resolution_text(summary)
    if resolution and summary["ok"].max() > 0:
        notes.append(resolution)
    notes.append(aa_text(summary))
    notes.extend(outlier_lines(summary))
    if metric == "val_bpb":
        notes.append(
            "The variants use different tokenizers, so they are compared by val_bpb: loss and "
            "perplexity are per token and do not compare across vocabularies."
        )
    if not summary["causal"].all():
        notes.append(
            "[non-causal]: the attention sees the tokens it predicts; its loss is not a language "
            "model's loss."
        )
    if summary["flags"].str.contains("eval windows").any():
        notes.append(
            "eval windows: this variant's losses were scored on other evaluation windows than "
            "the baseline's (train.eval_windows), so its Δ and p compare two measurements; "
            "train both with the same train.eval_windows."
        )
    if summary["flags"].str.contains("precision").any():
        notes.append(f"precision: {PRECISION_NOTE}")
    gaps = [r for r in records if finite(r.get("gap_mean"))]
    negative = [r["variant"] for r in gaps if r["gap_mean"] < 0]
    if negative:
        which = "every variant" if len(negative) == len(gaps) else ", ".join(negative[:3])
        which += f" and {len(negative) - 3} more" if 3 < len(negative) < len(gaps) else ""
        notes.append(
            f"val_loss below train_loss (mean, {which}) is no bug: both are scored the same "
            f"way (evaluation mode, no dropout, fixed windows), but validation is held-out "
            f"text (data.val_fraction), a different text that can simply be easier, and "
            f"a sample of windows is noisy (more: train.eval_batches); overfitting shows as "
            f"val_loss above train_loss."
        )
    return "\n".join(filter(None, [title, body, *notes]))


def _flags_without_causal(flags: Any) -> str:
    parts = [f for f in str(flags or "").split(", ") if f and f != "non-causal"]
    return ", ".join(parts)


def _fixed_width(view: pd.DataFrame, left: tuple[str, ...]) -> str:
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


def _title(experiments: Experiments) -> str:
    runs = experiments.runs
    failed = int((runs["status"] != "ok").sum()) if not runs.empty else 0
    kind = "experiment" if len(experiments.parts) == 1 else "experiments"
    return f"{kind} {experiments.name}: {len(runs)} of {experiments.expected} runs recorded" + (
        f", {failed} not ok" if failed else ""
    )


def _missing_text(experiments: Experiments, limit: int = 20) -> str:
    missing = experiments.missing
    if not missing:
        return ""
    lines = [
        f"missing {len(missing)} of {experiments.expected} runs (still running or interrupted; "
        f"run the same `ablate run` command to continue):"
    ]
    for m in missing[:limit]:
        lines.append(f"  {m['variant']} seed={m['seed']}: {m['state']}")
    if len(missing) > limit:
        lines.append(f"  ... and {len(missing) - limit} more (report.md lists all)")
    return "\n".join(lines)


def terminal_text(
    experiments: Experiments, summary: pd.DataFrame, sections: Sequence[phases.Section] = ()
) -> str:
    """The table under its title, the steps of cumulative variants, the lines of a tuned
    sweep's or a ladder's sections, then the runs still missing: what `ablate report`
    prints."""
    parts = [
        format_summary(summary, _title(experiments)), format_steps(summary), format_tasks(summary)
    ]  # fmt: skip
    parts += ["\n".join(s.lines) for s in sections]
    parts.append(_missing_text(experiments))
    return "\n".join(filter(None, parts))


def report(out_dir: str | Path, *, correction: str = HOLM) -> tuple[pd.DataFrame, str]:
    """Summarize an experiment folder; returns (summary table, printable text). Writes
    nothing (write_report writes the files). correction: "holm" or "none" (see table.py)."""
    experiments = load(out_dir)
    summary = summarize(
        phases.comparable_runs(experiments), experiments.baseline, asked=experiments.asked,
        correction=correction,
    )  # fmt: skip
    sections = [
        phases.tuning(experiments, None), phases.scaling(experiments, None),
        phases.target(experiments),
    ]  # fmt: skip
    return summary, terminal_text(experiments, summary, sections)


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
    body = _fixed_width(view, left=("", "variant", "after", "changes"))
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
    "the losses'. Higher is better for accuracies, lower for perplexities and bits per byte."
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
    body = _fixed_width(view, left=("", "variant"))
    return "\n".join(["scores after training:", body, TASKS_NOTE, *settings_warnings(summary)])


# What a "precision" flag means (toolkit.analysis.table), in the text and rendered reports.
PRECISION_NOTE = (
    "the variant's runs trained in another precision than the baseline's, or in two across "
    'seeds (train.precision, what "auto" resolved to), so its Δ and p may be the precision\'s; '
    "train both in one named precision."
)


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
