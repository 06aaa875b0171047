"""The report files of an experiment: report.md, a self-contained report.html, the figures and
the data behind them.

    from toolkit.analysis.render import write_report

    result = write_report("runs/quickstart", out="reports/qs")   # report.md, report.html, ...
    print(result.text)                                           # the terminal table
    result.summary.attrs["aa_check"]                             # the A/A check, as a dict

`write_report(dirs, out=None)` writes into out (default: the experiment folder; for several
folders, report-<a>+<b> next to the first): report.md, report.html (figures embedded as PNG, no
scripts, nothing fetched), figures/*.png, and the data behind them: report_runs.csv (one row per
run), report_summary.csv (the table of toolkit.analysis.table) and report_curves.csv (one row
per evaluation). The report is built once as a list of blocks and rendered twice, to Markdown
and to HTML (markup.py), so the two never say different things.

Not here: the statistics (table.py), the figures themselves (figures.py), the terminal text
(text.py), reading folders (load.py).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.analysis import phases
from toolkit.analysis.figures import make_figures
from toolkit.analysis.formats import num, pvalue, seconds, si
from toolkit.analysis.load import Experiments, load, load_curves
from toolkit.analysis.markup import html_blocks, render_html, render_markdown, scoped_css
from toolkit.analysis.plotting import FigureFile
from toolkit.analysis.sections import TASKS_NOTE, settings_warnings, step_cells, task_cells
from toolkit.analysis.stats import HOLM, OUTLIER_ALPHA, check_correction
from toolkit.analysis.table import NAMES, UNITS, finite
from toolkit.analysis.text import (
    PRECISION_NOTE,
    aa_text,
    correction_text,
    metric_notes,
    outlier_lines,
    resolution_text,
    terminal_text,
)
from toolkit.errors import ToolkitError
from toolkit.files import write_atomic


@dataclass
class Report:
    """What write_report wrote, and the table and terminal text it wrote them from."""

    folder: Path
    markdown: Path
    html: Path
    figures: list[Path]
    summary: pd.DataFrame
    text: str


def default_out(dirs: Sequence[Path]) -> Path:
    """One folder: the folder itself. Several: report-<a>+<b> next to the first."""
    if len(dirs) == 1:
        return dirs[0]
    return dirs[0].parent / ("report-" + "+".join(d.name for d in dirs))


def write_report(
    dirs: str | Path | Iterable[str | Path],
    out: str | Path | None = None,
    *,
    figures: bool = True,
    correction: str = HOLM,
    baseline: str | None = None,
) -> Report:
    """Write report.md, report.html, figures/*.png, report_runs.csv, report_summary.csv and
    report_curves.csv into out (default: the experiment folder; for several folders,
    report-<a>+<b> next to the first). correction: the p-value the verdicts read, "holm"
    (Holm-adjusted) or "none"; baseline: compare against this variant instead of the spec's.
    Everything is checked before anything is written."""
    check_correction(correction)
    experiments = load(dirs, baseline)
    summary = phases.results(experiments, correction)
    curves = load_curves(experiments.runs)
    folder = Path(out) if out is not None else default_out([p.folder for p in experiments.parts])
    if folder.exists() and not folder.is_dir():
        raise ToolkitError(f"report folder {folder} is a file; choose another with --out")
    try:
        (folder / "figures").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolkitError(
            f"cannot write the report to {folder} ({exc.strerror}); choose another folder "
            f"with --out (out= in Python)"
        ) from None

    made: list[FigureFile] = []
    if figures and not summary.empty:
        made = make_figures(
            experiments.runs,
            summary,
            curves,
            [(p.name, p.axes, p.compared(experiments.baseline)) for p in experiments.parts],
            folder / "figures",
        )
    where = folder / "figures" if figures else None
    sections = [
        phases.tuning(experiments, where), phases.scaling(experiments, where),
        phases.target(experiments),
    ]  # fmt: skip
    made += [f for s in sections for f in s.figures]
    write_atomic(folder / "report_runs.csv", experiments.runs.to_csv(index=False))
    write_atomic(folder / "report_summary.csv", summary.to_csv(index=False))
    write_atomic(folder / "report_curves.csv", curves.to_csv(index=False))
    doc = _document(experiments, summary, made, [b for s in sections for b in s.blocks])
    md, page = folder / "report.md", folder / "report.html"
    write_atomic(md, render_markdown(doc))
    write_atomic(page, render_html(doc, folder, title=f"Ablation report: {experiments.name}"))
    text = terminal_text(experiments, summary, sections)
    return Report(folder, md, page, [f.path for f in made], summary, text)


# A report is a list of blocks rendered twice, to Markdown and to HTML:
# ("h1"|"h2"|"h3", text), ("p", text), ("ul", [text]), ("table", header, rows, align, bold rows),
# ("img", path relative to the report, alt text). Text may hold `code` and **bold**; a table
# cell may hold line breaks.


def _document(
    experiments: Experiments,
    summary: pd.DataFrame,
    figures: list[FigureFile],
    sections: list[tuple] = (),
) -> list[tuple]:
    metric = summary.attrs.get("metric", "val_loss")
    doc: list[tuple] = [("h1", f"Ablation report: {experiments.name}")]
    for part in experiments.parts:
        if part.experiment.get("description"):
            doc.append(("p", f"**{part.name}**: {part.experiment['description']}"))
    sources = ", ".join(f"`{p.folder}`" for p in experiments.parts)
    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    doc.append(
        ("p", f"{len(experiments.runs)} of {experiments.expected} runs recorded, from "
              f"{sources}. Generated {when}.")
    )  # fmt: skip
    if len(experiments.parts) > 1:
        shared = experiments.parts[0].baseline
        against = (
            ""
            if experiments.baseline == shared
            else f" Every variant is compared with `{experiments.baseline}` (--baseline)."
        )
        doc.append(
            (
                "p",
                f"The experiments share the baseline `{shared}` (the same training config): its "
                f"runs are pooled by seed and every other variant is named "
                f"`experiment/variant`.{against}",
            )
        )
    if summary.empty:
        doc.append(("p", "No finished runs yet."))
    else:
        why = ""
        budgets = sorted(set(experiments.runs.get("budget", pd.Series(dtype=str)).dropna()))
        if budgets:
            why += f" Budget per run: `{'`, `'.join(budgets)}`."
        doc.append(
            (
                "p",
                f"Variants are sorted by mean final {NAMES[metric]} ({UNITS[metric]}), lower "
                f"is better; the baseline is in bold.{why}",
            )
        )
        doc.append(("h2", "Results"))
        doc.append(_results_table(summary))
        doc.append(("ul", _table_notes(summary)))
        doc += _steps_blocks(summary)
        doc += _tasks_blocks(summary)
        doc += sections
        doc.append(("h2", "What the sweep could resolve"))
        doc.append(("p", resolution_text(summary, markdown=True)))
        if summary.attrs.get("aa_check"):
            doc.append(("p", aa_text(summary)))
    if experiments.missing:
        doc.append(("h2", "Missing runs"))
        doc.append(
            (
                "p",
                f"{len(experiments.missing)} of the {experiments.expected} runs that experiment.json lists "
                f"have no summary.json yet: the sweep is still running or was interrupted (the "
                f"same `ablate run` command continues it). The table uses the runs that "
                f"finished.",
            )
        )
        doc.append(
            (
                "ul",
                [f"`{m['variant']}` seed {m['seed']}: {m['state']} (`{m['folder']}`)"
                 for m in experiments.missing],
            )
        )  # fmt: skip
    if figures:
        doc.append(("h2", "Figures"))
        for fig in figures:
            doc.append(("h3", fig.title))
            doc.append(("img", f"figures/{fig.path.name}", fig.title))
            doc.append(("p", fig.caption))
    doc.append(("h2", "Method"))
    doc.append(("ul", _method_notes()))
    doc.append(("h2", "Data"))
    doc.append(
        (
            "ul",
            [
                "`report_runs.csv`: one row per recorded run (the columns of results.csv, plus "
                "`run_dir`).",
                "`report_summary.csv`: the table above, one row per variant, every statistic "
                "unrounded.",
                "`report_curves.csv`: one row per evaluation of every run (step, tokens, train "
                "and validation loss, perplexity, bits per byte, learning rate, elapsed time).",
                "`figures/`: the figures as PNG files.",
            ],
        )
    )
    return doc


def _results_table(summary: pd.DataFrame) -> tuple:
    metric = summary.attrs.get("metric", "val_loss")
    others = [m for m in ("val_loss", "val_perplexity", "val_bpb") if m != metric]
    labels = {
        "val_loss": "val loss", "val_perplexity": "perplexity", "val_bpb": "bits/byte",
        "test_loss": "test loss", "test_bpb": "test bits/byte",
    }  # fmt: skip
    spec = {"val_loss": ".4f", "val_perplexity": ".3f", "val_bpb": ".4f", "test_loss": ".4f"}
    spec["test_bpb"] = ".4f"

    def stat(r: dict[str, Any], m: str) -> str:
        text = f"{num(r[f'{m}_mean'], spec[m])} ± {num(r[f'{m}_std'], spec[m])}"
        if finite(r[f"{m}_ci_low"]):
            text += f"\n[{num(r[f'{m}_ci_low'], spec[m])}, {num(r[f'{m}_ci_high'], spec[m])}]"
        return text

    holm = summary.attrs.get("correction", HOLM) == HOLM
    header = [
        "variant", "seeds", f"{labels[metric]} ({UNITS[metric]})", "Δ vs baseline", "p (test)",
        *(["p Holm"] if holm else []), "verdict", "detectable Δ", *[labels[m] for m in others],
        "params", "FLOP/token", "tokens/s", "wall time", "flags",
    ]  # fmt: skip
    align = ["l", "r", "r", "r", "r", *(["r"] if holm else []), "l", "r",
             *["r"] * len(others), "r", "r", "r", "r", "l"]  # fmt: skip
    rows, bold = [], set()
    for i, r in enumerate(summary.to_dict("records")):
        if r["baseline"]:
            bold.add(i)
        delta = (
            f"{num(r['delta'], '+.4f')}\n({num(r['delta_pct'], '+.2f')}%)"
            if finite(r["delta"])
            else "-"
        )
        p = f"{pvalue(r['p_value'])}\n{r['test']}" if finite(r["p_value"]) else "-"
        params = f"{num(r['params'], ',.0f')}\n{num(r['params_non_embedding'], ',.0f')} non-emb."
        if finite(r.get("params_active")):
            params += f"\n{num(r['params_active'], ',.0f')} active"
        rows.append(
            [
                r["variant"] + (" (baseline)" if r["baseline"] else ""),
                f"{r['ok']}/{r['seeds_asked']}",
                stat(r, metric),
                delta,
                p,
                *([pvalue(r["p_holm"])] if holm else []),
                r["verdict"] or "-",
                num(r["mde"], ".4f"),
                *[stat(r, m) for m in others],
                params,
                si(r["flops_per_token"]),
                num(r["tokens_per_s"], ",.0f"),
                seconds(r["wall_s"]),
                r["flags"] or "",
            ]
        )
    return ("table", header, rows, align, bold)


def _table_notes(summary: pd.DataFrame) -> list[str]:
    metric = summary.attrs.get("metric", "val_loss")
    notes = [
        "Each statistic is over the finished seeds of a variant: mean ± sample std (n - 1), "
        "and below it the 95% confidence interval of the mean (t-interval, "
        "`mean ± t(0.975, n-1) · s / √n`). **seeds** is finished / asked.",
        f"**Δ vs baseline**: mean {metric} minus the baseline's, over the seeds the test "
        "compares (the mean of the per-seed differences when it pairs them), and in % of the "
        "baseline's mean there. "
        "**p**: two-sided t-test against the baseline: `paired t` on the seeds both have "
        "(a seed fixes the initialisation and the data order), `Welch t` when they share "
        "fewer than two seeds, `-` when either side has one seed (no estimate of the noise).",
        correction_text(summary, markdown=True),
        "**detectable Δ**: the smallest true difference this comparison detects with 80% power "
        "at α = 0.05 (see below).",
        "**params**: unique parameters (a tied head counted once), and without the token and "
        "positional embeddings. **FLOP/token**: training FLOPs per token as the run recorded "
        "it, `6 · (weights of every matrix product, the LM head included) + 12 · n_layers · "
        "emb_dim · context_length`. **tokens/s**: training throughput (evaluation and the "
        "first step left out), mean over seeds. **wall time**: per run, mean.",
    ]
    notes += [note[0].upper() + note[1:] for note in metric_notes(summary)]
    if not summary["causal"].all():
        notes.append(
            "**non-causal**: the attention sees the tokens it predicts; its loss is not a "
            "language model's loss."
        )
    if summary["flags"].str.contains("eval windows").any():
        notes.append(
            "**eval windows**: the variant's losses were scored on other evaluation windows "
            "than the baseline's (`train.eval_windows`), so its Δ and p compare two "
            "measurements; train both with the same setting."
        )
    if summary["flags"].str.contains("precision").any():
        notes.append(f"**precision**: {PRECISION_NOTE}")
    if (summary["flags"] != "").any():
        notes.append(
            "**flags**: diverged runs (non-finite loss) and failed runs (error.txt in the run "
            "folder) are left out of the statistics; `k/n seeds` means fewer finished seeds "
            "than the spec asks; `outlier seed` names a seed far from the variant's other seeds "
            "(see below), which stays in the statistics."
        )
    notes.extend(line[0].upper() + line[1:] for line in outlier_lines(summary, markdown=True))
    return [n for n in notes if n]


def _steps_blocks(summary: pd.DataFrame) -> list[tuple]:
    """The steps of cumulative variants (a spec's `after`, toolkit.analysis.steps): a heading,
    the table and its notes; nothing for an experiment without them."""
    header, rows, baseline = step_cells(summary)
    if not rows:
        return []
    metric = summary.attrs.get("metric", "val_loss")
    rows = [[r[0] + (" (baseline)" if i in baseline else ""), *r[1:]] for i, r in enumerate(rows)]
    return [
        ("h2", "Steps"),
        (
            "p",
            f"The variants that build on another (`after` in the spec) and those they build on, "
            f"in the spec's order: what each changes, what that step gains in {NAMES[metric]} "
            f"({UNITS[metric]}; negative is better), and the running total against the baseline.",
        ),
        ("table", header, rows, ["l", "l", "l", "r", "r", "r", "r"], baseline),
        (
            "ul",
            [
                f"**Δ step**: mean {metric} minus the mean of the variant it builds on "
                "(**after**), over their finished seeds. **95% CI** and **p**: the interval of "
                "that difference and a two-sided t-test of it: `paired t` on the seeds both "
                "have, `Welch t` when they share fewer than two, `-` when either has one seed. "
                "These p-values are not adjusted for multiple comparisons.",
                "**changes**: the keys the variant sets itself; for one that builds on no "
                "other, what it sets over the spec's base settings.",
                "**running total**: Δ against the baseline, as in the results table. Along a "
                "chain that starts at the baseline the steps add up to it (differences of "
                "means; each step has its own interval and test).",
            ],
        ),
    ]


def _tasks_blocks(summary: pd.DataFrame) -> list[tuple]:
    """The scores computed after training (`ablate eval-tasks`, `ablate eval --context`): a
    heading, the table and its note; nothing when no run was scored."""
    header, rows, baseline = task_cells(summary)
    if not rows:
        return []
    rows = [[r[0] + (" (baseline)" if i in baseline else ""), *r[1:]] for i, r in enumerate(rows)]
    return [
        ("h2", "Scores after training"),
        ("table", header, rows, ["l", *["r"] * (len(header) - 1)], baseline),
        ("p", TASKS_NOTE),
        *[("p", f"**{line}**") for line in settings_warnings(summary)],
    ]


def _method_notes() -> list[str]:
    return [
        "Final metrics are those of the last evaluation of each run, on the same fixed "
        'windows for every run: by default (`train.eval_windows = "grid"`) windows on the '
        "training stride grid of each split, every one when they fit in `eval_batches` "
        "batches, else that many spread evenly along it; the train loss thus scores windows "
        "the model trained on. Loss: mean token cross-entropy (nats). Perplexity: exp(loss). "
        "Bits per byte: total cross-entropy / (ln 2 · UTF-8 bytes of the targets).",
        "Paired t-test: `d = variant - baseline` per shared seed, "
        "`t = mean(d) / (s_d / √n)`, `df = n - 1`.",
        "Welch's t-test: `t = (m_a - m_b) / √(s_a²/n_a + s_b²/n_b)`, Welch-Satterthwaite "
        "`df = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1))`.",
        "Holm-Bonferroni (the default verdicts; `ablate report --correction none` turns it "
        "off): the m comparisons with the baseline that have a p-value are one family; sorted "
        "`p_(1) ≤ ... ≤ p_(m)`, `p_holm_(i) = max_{j ≤ i} min(1, (m - j + 1) · p_(j))`. "
        "The chance that any verdict in the table is a false alarm is then at most α.",
        "Minimum detectable difference (α = 0.05 two-sided, power 0.8), exact from the "
        "noncentral t: the δ with `P(T'(df, λ) > c) + P(T'(df, -λ) > c) = 0.8`, "
        "`c = t(1-α/2, df)`; paired `λ = δ · √n / s_diff`, `df = n-1`; unpaired "
        "`λ = δ / (s · √(1/n_a + 1/n_b))`, `df = n_a+n_b-2` (Student's test: Welch's has less "
        "power with few seeds a side); s is pooled across variants: "
        "`√(Σ(n_i-1)s_i² / Σ(n_i-1))`.",
        "Outlier seeds (variants with 3 or more seeds): seed i's deleted residual "
        "`t_i = (x_i - m_-i) / (s_-i · √(1 + 1/(n-1)))`, with `m_-i` the mean of the "
        "variant's other seeds and `s_-i` the seed-to-seed std pooled over every variant with "
        "seed i left out; flagged when `2 · P(T_df > |t_i|) < "
        f"{OUTLIER_ALPHA:g} / n`, so a variant without an outlier is flagged with probability "
        f"at most {OUTLIER_ALPHA:.0%} (when the seeds are normal with one spread).",
        "A/A check (a baseline with 4 or more seeds): its seeds in sorted order, the first "
        "half against the second, by Student's two-sample t-test. Both halves are runs of one "
        "configuration, so p < α is a false alarm; more than the expected one in 20 means the "
        "seed-to-seed noise is not what the t-tests assume.",
        "FLOPs per token (Kaplan et al. 2020), forward and backward: `6 · (weights of every "
        "matrix product, the LM head included) + 12 · n_layers · emb_dim · context_length`, "
        "as each run recorded it in summary.json (computed by `toolkit.training.throughput` "
        "from the built model, so the report and results.csv agree).",
    ]


# The report's table styles, scoped to one element: a notebook shares its page with others.
_SCOPED_CSS = scoped_css(".ablate-comparison", ("table", "th", "td", "tr", "code"))


def comparison_html(summary: pd.DataFrame) -> str:
    """The Results section of the report for one comparison table (toolkit.compare): the
    formatted table, the steps and task scores when it has them, and the notes that say how to
    read it; an HTML fragment with its own scoped styles, as a notebook shows it."""
    if summary.empty:
        doc: list[tuple] = [("p", "No finished runs yet.")]
    else:
        doc = [_results_table(summary), *_steps_blocks(summary), *_tasks_blocks(summary)]
        doc.append(("ul", _table_notes(summary)))
        doc.append(("p", resolution_text(summary, markdown=True)))
    return (
        f'<div class="ablate-comparison">\n<style>\n{_SCOPED_CSS}\n</style>\n'
        f"{html_blocks(doc)}\n</div>"
    )
