"""The comparison: per variant, mean +- std over seeds, delta against the baseline, sorted.

`summarize()` turns the tidy results table into one row per variant; `format_summary()` prints
it for a terminal. Not here (yet): significance tests, figures, Markdown/HTML reports.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from toolkit.errors import ToolkitError
from toolkit.results import collect, read_json


def comparison_metric(table: pd.DataFrame) -> str:
    """'val_loss', or 'val_bpb' when the runs use different tokenizers: loss is per token and
    only bits per byte compares across vocabularies."""
    if "tokenizer" in table and table["tokenizer"].dropna().nunique() > 1:
        return "val_bpb"
    return "val_loss"


def summarize(table: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """One row per variant over its finished (status ok) runs, sorted by the comparison metric
    (mean validation loss; bits per byte when tokenizers differ).

    Columns: variant, baseline (bool), runs, ok, val_loss_mean, val_loss_std, delta_val_loss
    (mean minus the baseline's), val_perplexity_mean, val_bpb_mean, val_bpb_std, delta_val_bpb,
    train_loss_mean, params, params_non_embedding, tokens_per_s, causal. std is the sample
    standard deviation (n - 1), NaN with one seed. `summary.attrs["metric"]` names the metric.
    """
    if table.empty:
        return pd.DataFrame()
    if baseline is None and "baseline" in table and table["baseline"].any():
        baseline = table.loc[table["baseline"].astype(bool), "variant"].iloc[0]
    rows = []
    for variant, group in table.groupby("variant", sort=False):
        ok = group[group["status"] == "ok"]
        rows.append(
            {
                "variant": variant,
                "baseline": variant == baseline,
                "runs": len(group),
                "ok": len(ok),
                "val_loss_mean": ok["val_loss"].astype(float).mean(),
                "val_loss_std": ok["val_loss"].astype(float).std(ddof=1),
                "val_perplexity_mean": ok["val_perplexity"].astype(float).mean(),
                "val_bpb_mean": ok["val_bpb"].astype(float).mean(),
                "val_bpb_std": ok["val_bpb"].astype(float).std(ddof=1),
                "train_loss_mean": ok["train_loss"].astype(float).mean(),
                "params": group["params"].dropna().iloc[0]
                if group["params"].notna().any()
                else None,
                "params_non_embedding": group["params_non_embedding"].dropna().iloc[0]
                if group["params_non_embedding"].notna().any()
                else None,
                "tokens_per_s": ok["tokens_per_s"].astype(float).mean(),
                "causal": bool(group["causal"].dropna().all()) if "causal" in group else True,
            }
        )
    summary = pd.DataFrame(rows)
    for metric in ("val_loss", "val_bpb"):
        base = summary.loc[summary["baseline"], f"{metric}_mean"]
        summary[f"delta_{metric}"] = summary[f"{metric}_mean"] - (
            base.iloc[0] if len(base) else float("nan")
        )
    metric = comparison_metric(table)
    summary = summary.sort_values(f"{metric}_mean", na_position="last", kind="stable")
    summary = summary.reset_index(drop=True)
    summary.attrs["metric"] = metric
    return summary


def format_summary(summary: pd.DataFrame, title: str = "") -> str:
    """A fixed-width table for the terminal; the baseline is marked with '*'."""
    if summary.empty:
        return f"{title}\n(no finished runs yet)" if title else "(no finished runs yet)"

    def num(x: float, spec: str) -> str:
        return "-" if pd.isna(x) else format(x, spec)

    by_bpb = summary.attrs.get("metric") == "val_bpb"
    columns: dict[str, list[str]] = {
        "": ["*" if b else "" for b in summary["baseline"]],
        "variant": [
            v + ("" if c else " [non-causal]")
            for v, c in zip(summary["variant"], summary["causal"], strict=True)
        ],
        "seeds": [f"{o}/{r}" for o, r in zip(summary["ok"], summary["runs"], strict=True)],
    }
    first, second = ("val_bpb", "val_loss") if by_bpb else ("val_loss", "val_bpb")
    columns[first] = [
        f"{num(m, '.4f')} ± {num(s, '.4f')}"
        for m, s in zip(summary[f"{first}_mean"], summary[f"{first}_std"], strict=True)
    ]
    columns["Δ vs base"] = [num(d, "+.4f") for d in summary[f"delta_{first}"]]
    columns[second] = [num(x, ".4f") for x in summary[f"{second}_mean"]]
    columns["ppl"] = [num(x, ".2f") for x in summary["val_perplexity_mean"]]
    columns["train_loss"] = [num(x, ".4f") for x in summary["train_loss_mean"]]
    columns["params"] = [num(x, ",.0f") for x in summary["params"]]
    columns["tokens/s"] = [num(x, ",.0f") for x in summary["tokens_per_s"]]
    body = _fixed_width(pd.DataFrame(columns), left=("", "variant"))
    notes = [
        "* baseline. mean ± sample std over seeds. val_loss: nats/token; ppl = exp(loss); "
        "val_bpb: bits per UTF-8 byte."
    ]
    if by_bpb:
        notes.append(
            "The variants use different tokenizers, so they are compared by val_bpb: loss and "
            "perplexity are per token and do not compare across vocabularies."
        )
    if not summary["causal"].all():
        notes.append(
            "[non-causal]: the attention sees the tokens it predicts; its loss is not a language "
            "model's loss."
        )
    return "\n".join(filter(None, [title, body, *notes]))


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


def report(out_dir: str | Path) -> tuple[pd.DataFrame, str]:
    """Summarize an experiment folder; returns (summary table, printable text)."""
    out = Path(out_dir)
    if not out.is_dir():
        raise ToolkitError(f"{out} is not a folder; give the output folder of `ablate run`")
    experiment = read_json(out / "experiment.json")
    table = collect(out)
    if experiment is None and table.empty:
        raise ToolkitError(
            f"{out} holds no experiment (no experiment.json or run folders); "
            f"give the folder `ablate run` wrote, e.g. runs/quickstart"
        )
    experiment = experiment or {}
    summary = summarize(table, experiment.get("baseline"))
    expected = len(experiment.get("runs", [])) or len(table)
    failed = int((table["status"] != "ok").sum()) if not table.empty else 0
    title = (
        f"experiment {experiment.get('name', out.name)}: {len(table)} of {expected} runs recorded"
        + (f", {failed} not ok" if failed else "")
    )
    return summary, format_summary(summary, title)
