"""The comparison table as terminal text: what `ablate report` and `ablate run` print.

    from toolkit.analysis.text import report

    summary, text = report("runs/quickstart")    # (the table, the text); writes nothing

`format_summary(summary)` lays the table out in fixed-width columns (the baseline marked '*'),
with notes on units, tests, which p-value the verdicts read (Holm-adjusted or not), what the
sweep could resolve, the A/A check of the baseline and any outlier seed; `report(dir)` reads a
folder and adds a title, the runs still missing, and the tables after the main one (the steps
of cumulative variants, the scores after training: sections.py). The notes here
(`resolution_text`, `correction_text`, `aa_text`, `outlier_lines`) are shared with report.md
and report.html.

Not here: the statistics (table.py), number formats (formats.py), reading folders (load.py),
writing files (render.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.analysis import phases
from toolkit.analysis.formats import fixed_width, num, pvalue, seconds, si
from toolkit.analysis.load import Experiments, load
from toolkit.analysis.sections import format_steps, format_tasks
from toolkit.analysis.stats import HOLM, OUTLIER_ALPHA
from toolkit.analysis.table import ALPHA, UNITS, finite


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


def metric_note(summary: pd.DataFrame) -> str:
    """Why the table compares on its metric, when that is not plain validation loss or bits
    per byte: a tuned sweep's test split, some variants tuned and others not (the report of a
    tuned and an untuned folder), or a ladder's own metric. "" otherwise."""
    metric = summary.attrs.get("metric", "val_loss")
    tuned = summary.attrs.get("tuned", "none")
    test = metric.startswith("test_")
    if tuned == "all" and test:
        return TUNED_NOTE
    if tuned == "some" and test:
        return (
            "tuned: some variants trained at settings chosen on the validation split "
            "(tuning.csv), the others at their spec's; the comparison is on the held-out test "
            "split, which no choice saw."
        )
    if tuned != "none":
        return (
            f"tuned: the table compares {metric}, on the validation split, where some variants' "
            f"settings were chosen (tuning.csv), which flatters them; it does because some runs "
            f"hold out no test split. Give every spec data.test_fraction to compare on the test "
            f"split."
        )
    if summary.attrs.get("named_metric") and metric != "val_loss" and not _by_bytes(summary):
        split = "the held-out test split" if test else "the validation split"
        return f"{metric}: the metric the spec's [ladder] names, on {split}."
    return ""


def _by_bytes(summary: pd.DataFrame) -> bool:
    return summary.attrs.get("metric", "").endswith("_bpb") and bool(
        summary.attrs.get("tokenizers_differ")
    )


def metric_notes(summary: pd.DataFrame) -> list[str]:
    """What the terminal table, the report and the notebook view all say about the metric the
    table compares: metric_note(), and that different tokenizers are compared by bits per
    byte. Plain text; empty for a plain validation-loss comparison."""
    notes = [metric_note(summary)]
    if _by_bytes(summary):
        metric = summary.attrs["metric"]
        notes.append(
            f"The variants use different tokenizers, so they are compared by {metric}: loss and "
            f"perplexity are per token and do not compare across vocabularies."
        )
    return [n for n in notes if n]


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
    body = fixed_width(pd.DataFrame(columns), left=("", "variant", "verdict", "test", "flags"))
    notes = [
        f"* baseline. mean ± sample std over seeds; 95% CI: t-interval of the mean. Δ: mean minus "
        f"the baseline's, over the seeds the test compares (the mean of the per-seed differences "
        f"when it pairs them); p: two-sided t-test of {metric} against the baseline (paired by seed "
        f"when they share seeds, else Welch), '-' with one seed. val_loss: nats/token; "
        f"ppl = exp(loss); val_bpb: bits per UTF-8 byte; FLOP/token: training FLOPs, "
        f"6 x (matrix params, head included) + 12 x layers x emb_dim x context; wall: per run."
    ]
    notes.append(correction_text(summary))
    notes.extend(metric_notes(summary))
    resolution = resolution_text(summary)
    if resolution and summary["ok"].max() > 0:
        notes.append(resolution)
    notes.append(aa_text(summary))
    notes.extend(outlier_lines(summary))
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
    if summary.empty and not experiments.runs.empty:  # a ladder compares its largest size
        table = f"{_title(experiments)}\n(no finished run at the ladder's largest size yet)"
    else:
        table = format_summary(summary, _title(experiments))
    parts = [table, format_steps(summary), format_tasks(summary)]
    parts += ["\n".join(s.lines) for s in sections]
    parts.append(_missing_text(experiments))
    return "\n".join(filter(None, parts))


def report(
    out_dir: str | Path, *, correction: str = HOLM, baseline: str | None = None
) -> tuple[pd.DataFrame, str]:
    """Summarize an experiment folder; returns (summary table, printable text). Writes
    nothing (write_report writes the files). correction: "holm" or "none" (see table.py);
    baseline: compare against this variant instead of the spec's."""
    experiments = load(out_dir, baseline)
    summary = phases.results(experiments, correction)
    sections = [
        phases.tuning(experiments, None), phases.scaling(experiments, None),
        phases.target(experiments),
    ]  # fmt: skip
    return summary, terminal_text(experiments, summary, sections)


# What a "precision" flag means (toolkit.analysis.table), in the text and rendered reports.
PRECISION_NOTE = (
    "the variant's runs trained in another precision than the baseline's, or in two across "
    'seeds (train.precision, what "auto" resolved to), so its Δ and p may be the precision\'s; '
    "train both in one named precision."
)
