"""The comparison: per variant, mean +- std over seeds, delta against the baseline, sorted.

`summarize()` turns the tidy results table into one row per variant; `format_summary()` prints
it for a terminal. Not here (yet): significance tests, figures, Markdown/HTML reports.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from toolkit.errors import ToolkitError
from toolkit.results import collect, read_json


def summarize(table: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """One row per variant over its finished (status ok) runs, sorted by mean validation loss.

    Columns: variant, baseline (bool), runs, ok, val_loss_mean, val_loss_std, delta_val_loss
    (mean minus the baseline's), val_perplexity_mean, val_bpb_mean, train_loss_mean, params,
    params_non_embedding, tokens_per_s, causal. std is the sample standard deviation (n - 1),
    NaN with one seed.
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
    base = summary.loc[summary["baseline"], "val_loss_mean"]
    summary["delta_val_loss"] = summary["val_loss_mean"] - (
        base.iloc[0] if len(base) else float("nan")
    )
    return summary.sort_values("val_loss_mean", na_position="last", kind="stable").reset_index(
        drop=True
    )


def format_summary(summary: pd.DataFrame, title: str = "") -> str:
    """A fixed-width table for the terminal; the baseline is marked with '*'."""
    if summary.empty:
        return f"{title}\n(no finished runs yet)" if title else "(no finished runs yet)"

    def num(x: float, spec: str) -> str:
        return "-" if pd.isna(x) else format(x, spec)

    view = pd.DataFrame(
        {
            "": ["*" if b else "" for b in summary["baseline"]],
            "variant": summary["variant"]
            + ["" if c else " [non-causal]" for c in summary["causal"]],
            "seeds": [f"{o}/{r}" for o, r in zip(summary["ok"], summary["runs"], strict=True)],
            "val_loss": [
                f"{num(m, '.4f')} ± {num(s, '.4f')}"
                for m, s in zip(summary["val_loss_mean"], summary["val_loss_std"], strict=True)
            ],
            "Δ vs base": [num(d, "+.4f") for d in summary["delta_val_loss"]],
            "ppl": [num(x, ".2f") for x in summary["val_perplexity_mean"]],
            "bpb": [num(x, ".3f") for x in summary["val_bpb_mean"]],
            "train_loss": [num(x, ".4f") for x in summary["train_loss_mean"]],
            "params": [num(x, ",.0f") for x in summary["params"]],
            "tokens/s": [num(x, ",.0f") for x in summary["tokens_per_s"]],
        }
    )
    body = _fixed_width(view, left=("", "variant"))
    notes = (
        "* baseline. val_loss: mean ± sample std over seeds (nats/token); ppl = exp(loss); "
        "bpb: bits per UTF-8 byte."
    )
    return "\n".join(filter(None, [title, body, notes]))


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
