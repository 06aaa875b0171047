"""The comparison table of an experiment: one row per variant, its statistics over seeds, and
what the sweep could resolve.

    from toolkit.analysis.table import summarize

    table = summarize(runs)                      # pandas.DataFrame, one row per variant
    table = summarize(runs, correction="none")   # verdicts on unadjusted p-values

`summarize(runs)` builds, from a tidy runs table (`toolkit.sweep.results.collect`), the table
`ablate report` prints, sorted by the comparison metric (metric.comparison_metric(): mean final
validation loss; bits per byte when the variants use different tokenizers; the test split's
when runs were tuned; a ladder's own metric; ties by name), the baseline marked.
`toolkit.compare(dirs)` (comparison.py) does it from experiment folders. Columns:

- variant, experiment, baseline (bool), seeds_asked (runs the spec lists), runs (recorded),
  ok (finished runs: the n of every statistic)
- for m in val_loss, val_perplexity, val_bpb, gap (val_loss - train_loss at the end):
  m_mean, m_std (sample std, n - 1), m_ci_low, m_ci_high (95% t-interval of the mean), except
  that perplexity, exp(loss), has exp of the loss's mean and interval (the seeds' geometric
  mean; an interval of perplexities that cannot fall below 1) beside its seeds' std;
  train_loss_mean
- delta_val_loss, delta_val_bpb: the difference to the baseline the test estimates
  (`stats.difference`): over the seeds both finished when the test pairs them, the mean of the
  per-seed differences; else mean minus the baseline's mean. With the same finished seeds on
  both sides, that is mean minus mean either way. delta, delta_pct: the same for the
  comparison metric (delta_pct in % of the baseline's mean over those seeds)
- test ("paired t" on the seeds shared with the baseline, "Welch t", or "" when a side has a
  single seed), pairs (seeds the test paired), statistic, df, p_value (two-sided; NaN without
  a test), p_holm (p_value Holm-adjusted over the family of every comparison with the baseline
  in the table), verdict ("better" or "worse" when the p the correction picks, p_holm by
  default or p_value with correction="none", is below α; "n.s." when it is not; "" without a
  test), mde (minimum detectable difference of this comparison, see below)
- params, params_non_embedding, flops_per_token, tokens_per_s, train_s, wall_s (means per run)
- params_active, params_active_non_embedding: the parameters one token uses (a mixture of
  experts counts its top_k experts), when some run in the table records them; a variant whose
  runs do not (a dense model) uses all of its. NaN when no run records them
- causal, eval_windows (which windows its losses were scored on, train.eval_windows: "grid" or
  "spread", joined by "+" when its seeds differ), precision (what its runs trained in, "auto"
  resolved, joined the same way; "" when no run records it), diverged, failed (counts), flags
  (text: non-causal, eval windows or a precision other than the baseline's or mixed across
  seeds, diverged or failed runs, finished runs without a finite score (left out of every
  statistic), fewer finished seeds than asked, outlier seeds;
  non-embedding parameters (active ones when the table has them) or FLOPs per token more than
  2% off the baseline's); outlier_seeds (text: the seeds
  `stats.outliers` flags in the comparison metric, "3" or "3, 7"; "" for none)
- for each lm-evaluation-harness score the runs hold (`ablate eval-tasks`; a column
  "task:<task>/<metric>" of the runs table), after every other column: _mean, _std, _ci_low,
  _ci_high, _n and, against the baseline, _delta, _p and _p_holm (toolkit.analysis.tasks);
  summary.attrs["task_settings_differ"]: task -> the ways it was scored, for each task whose
  runs were scored differently: its means mix them
- after, changes, delta_step, delta_step_ci_low, delta_step_ci_high, test_step, p_step: only
  when some variant builds on another (a spec's `after`): toolkit.analysis.steps

`summary.attrs` holds "metric" (the comparison metric), "named_metric" (the one summarize()
was given, a ladder's; None), "tokenizers_differ" (bool), "tuned" (tuned_runs(): "all", "some" or "none"), "baseline", "correction" ("holm" or "none"), "alpha", "resolution" (what the sweep
could resolve: sd, df, n, paired, mde, mde_pct, alpha, power), "outliers" (one dict per
flagged seed: variant, seed, value, others_mean, t, df, p_value) and "aa_check" (the A/A
check of the baseline: first and second, the seeds of each half; test, delta, statistic, df,
p_value, alarm (p < α); None below 4 baseline seeds).

Formulas (toolkit.analysis.stats has them written out):

- 95% CI: mean ± t(0.975, n - 1) · s / √n.
- Paired t-test (variant and baseline share ≥ 2 seeds; a seed fixes the initialisation and the
  data order, so runs with the same seed are paired): d = variant - baseline per shared seed,
  t = mean(d) / (s_d / √n), df = n - 1. Else Welch's t-test (each side ≥ 2 seeds). Else none.
- Holm-Bonferroni: the m comparisons with a p-value are one family; with p_(1) ≤ ... ≤ p_(m),
  p_holm_(i) = max_{j ≤ i} min(1, (m - j + 1) · p_(j)). Verdicts at p_holm < α are wrong
  anywhere in the table with probability at most α; at p_value < α, one of k null comparisons
  comes out "significant" with probability up to 1 - (1 - α)^k.
- Minimum detectable difference (α = 0.05, power 0.8), with s the seed-to-seed spread pooled
  across variants (of the per-seed differences to the baseline when the design is paired):
  the δ at which the t-test's power from the noncentral t is 0.8, δ = λ · s · k with
  paired: λ for df = n - 1, k = 1/√n; unpaired: λ for df = 2n - 2, k = √(2/n).
- Outlier seeds: a seed whose deleted residual (its distance to the mean of its variant's other
  seeds, in units of the seed-to-seed std pooled over every variant without it) has p < 0.01/n
  in a variant of n ≥ 3 seeds; a clean variant is flagged with probability at most 1%.
- A/A check: the baseline's seeds, sorted, first half against second half, Student's t-test;
  p < α there is a false alarm (both halves are one configuration).

FLOPs per token, parameters and throughput are what each run recorded in its summary.json (FLOPs
per token: toolkit.training.throughput, 6 x the weights of every matrix product, the LM head
included, + 12 x n_layers x emb_dim x context_length); the table never recomputes them from a
config, so it cannot disagree with results.csv.

Not here: the minimum detectable difference (resolution.py), reading folders (load.py), text for
the terminal (text.py), report files (render.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from toolkit.analysis import stats, tasks
from toolkit.analysis.metric import comparison_metric, tokenizers_differ, tuned_runs
from toolkit.analysis.resolution import row_mde, sweep_resolution
from toolkit.analysis.stats import HOLM
from toolkit.analysis.steps import add_steps
from toolkit.sweep.results import is_window_loss, task_columns

METRICS = ("val_loss", "val_perplexity", "val_bpb", "test_loss", "test_bpb")
# How each metric is named and measured, in the table, the report and the figures alike.
UNITS = {
    "val_loss": "nats/token",
    "train_loss": "nats/token",
    "val_perplexity": "exp(nats)",
    "val_bpb": "bits/byte",
    "test_loss": "nats/token",
    "test_bpb": "bits/byte",
    "gap": "nats/token",
}
NAMES = {
    "val_loss": "validation loss",
    "val_perplexity": "validation perplexity",
    "val_bpb": "validation bits per byte",
    "test_loss": "test loss",
    "test_bpb": "test bits per byte",
}
# A variant whose non-embedding parameters or FLOPs per token differ from the baseline's by
# more than this fraction is flagged: part of its Δ may be its size, not its idea.
MISMATCH = 0.02
ALPHA, POWER, CONFIDENCE = 0.05, 0.8, 0.95
# The verdict of a comparison (every comparison metric here is lower-is-better).
BETTER, WORSE, NOT_SIGNIFICANT = "better", "worse", "n.s."


def summarize(
    table: pd.DataFrame,
    baseline: str | None = None,
    *,
    asked: dict[str, int] | None = None,
    alpha: float = ALPHA,
    power: float = POWER,
    confidence: float = CONFIDENCE,
    correction: str = HOLM,
    metric: str | None = None,
) -> pd.DataFrame:
    """One row per variant over its finished (status ok) runs, sorted by the comparison metric
    (mean final validation loss; bits per byte when tokenizers differ), ties by name. See the
    module docstring for the columns. baseline defaults to the variant whose runs are marked
    baseline; asked maps variant -> runs the spec lists (default: runs recorded); correction
    picks the p-value the verdicts read: "holm" (p_holm) or "none" (p_value); metric: the
    comparison metric the experiment names (a ladder's), else comparison_metric() picks."""
    stats.check_correction(correction)
    if table.empty:
        return pd.DataFrame()
    table = table.reset_index(drop=True)
    if baseline is None and "baseline" in table:
        marked = table.loc[table["baseline"].fillna(False).astype(bool), "variant"]
        baseline = marked.iloc[0] if len(marked) else None
    chosen, metric = metric, comparison_metric(table, metric)
    asked = asked or {}
    scored = task_columns(table)

    values: dict[str, dict[str, dict[Any, float]]] = {}  # variant -> column -> seed -> value
    rows = []
    for variant, group in table.groupby("variant", sort=True):
        group = group.sort_values("seed", kind="stable")
        ok = group[group["status"] == "ok"]
        per_seed = {c: _by_seed(ok, c) for c in (*METRICS, "train_loss")}
        per_seed["gap"] = {
            s: v - per_seed["train_loss"][s]
            for s, v in per_seed["val_loss"].items()
            if s in per_seed["train_loss"]
        }
        values[variant] = per_seed
        status = group["status"].fillna("missing")
        causal = _column(group, "causal").dropna()
        row: dict[str, Any] = {
            "variant": variant,
            "experiment": _first(group, "experiment"),
            "baseline": variant == baseline,
            "seeds_asked": int(asked.get(variant, len(group))),
            "runs": len(group),
            "ok": len(ok),
        }
        for column in (*METRICS, "gap"):
            d = stats.describe(per_seed[column].values(), confidence)
            row |= {
                f"{column}_mean": d.mean,
                f"{column}_std": d.std,
                f"{column}_ci_low": d.ci_low,
                f"{column}_ci_high": d.ci_high,
            }
        row |= _perplexity(per_seed["val_loss"], per_seed["val_perplexity"], confidence)
        row["train_loss_mean"] = _mean(per_seed["train_loss"].values())
        for column in scored:
            per_seed[column] = _by_seed(ok, column)
            row |= tasks.described(column, per_seed[column], confidence)
        row |= {
            "params": _first(group, "params"),
            "params_non_embedding": _first(group, "params_non_embedding"),
            "params_active": _first(group, "params_active"),
            "params_active_non_embedding": _first(group, "params_active_non_embedding"),
            "flops_per_token": _first(group, "flops_per_token"),
            "tokens_per_s": _mean(_column(ok, "tokens_per_s")),
            "train_s": _mean(_column(ok, "train_s")),
            "wall_s": _mean(_column(group, "wall_s")),
            "causal": bool(causal.astype(bool).all()) if len(causal) else True,
            # Of the finished runs: a failed one scored nothing (and records neither).
            "eval_windows": "+".join(sorted(set(_column(ok, "eval_windows").dropna()))),
            "precision": "+".join(sorted(set(_column(ok, "precision").dropna()))),
            "diverged": int((status == "diverged").sum()),
            "failed": int((status == "failed").sum()),
            "other": int((~status.isin(["ok", "diverged", "failed"])).sum()),
            # Finished runs without a finite score (a last step that left NaN weights).
            "unscored": int(
                (~np.isfinite(pd.to_numeric(_column(ok, metric), errors="coerce"))).sum()
            ),
        }
        rows.append(row)

    summary = _active_params(pd.DataFrame(rows))
    base = values.get(baseline) if baseline is not None else None
    resolution = sweep_resolution(values, baseline, metric, alpha, power)
    extra = []
    for row in rows:
        mine = values[row["variant"]]
        out: dict[str, Any] = {}
        for m in dict.fromkeys(("val_loss", "val_bpb", metric)):
            out[f"delta_{m}"] = stats.difference(mine[m], base[m])[0] if base else math.nan
        out["delta"] = out[f"delta_{metric}"]
        base_mean = stats.difference(mine[metric], base[metric])[1] if base else math.nan
        out["delta_pct"] = 100 * out["delta"] / base_mean if base_mean else math.nan
        if base is None or row["baseline"]:
            test = stats.TestResult("", 0, math.nan, math.nan, math.nan, math.nan)
        else:
            test = stats.compare_to_baseline(mine[metric], base[metric])
        out |= {
            "test": test.test,
            "pairs": test.n if test.test == stats.PAIRED else 0,
            "statistic": test.statistic,
            "df": test.df,
            "p_value": test.p_value,
            "mde": row_mde(test, mine[metric], base, metric, resolution, alpha, power),
        }
        extra.append(out)
    summary = pd.concat([summary, pd.DataFrame(extra)], axis=1)
    # Across tokenizers a window score's loss is per token of different tokens: its bits per
    # byte compare (as the losses' own comparison does), its loss is described but not tested.
    tested = [c for c in scored if not (tokenizers_differ(table) and is_window_loss(c))]
    versus = tasks.compared(list(summary["variant"]), baseline, values, tested)
    for column in set(scored) - set(tested):
        for stat in ("delta", "p", "p_holm"):
            versus[f"{column}_{stat}"] = math.nan
    summary = pd.concat([summary, versus.set_axis(summary.index)], axis=1)
    summary["p_holm"] = stats.holm(summary["p_value"])
    verdict_p = stats.adjust(summary["p_value"], correction)
    summary["verdict"] = [
        _verdict(p, t, alpha) for p, t in zip(verdict_p, summary["statistic"], strict=True)
    ]
    found = stats.outliers({v: per[metric] for v, per in values.items()})
    summary["outlier_seeds"] = [
        ", ".join(str(o.seed) for o in found if o.group == v) for v in summary["variant"]
    ]
    base_rows = summary[summary["baseline"]].to_dict("records")
    summary["flags"] = [
        _flags(r, base_rows[0] if base_rows else None) for r in summary.to_dict("records")
    ]
    summary = summary.drop(columns=["other", "unscored"])
    order = [
        "variant", "experiment", "baseline", "seeds_asked", "runs", "ok",
        *[f"{m}_{s}" for m in METRICS for s in ("mean", "std", "ci_low", "ci_high")],
        "train_loss_mean", "gap_mean", "gap_std", "gap_ci_low", "gap_ci_high",
        "delta_val_loss", "delta_val_bpb", "delta", "delta_pct",
        "test", "pairs", "statistic", "df", "p_value", "p_holm", "verdict", "mde",
        "params", "params_non_embedding", "params_active", "params_active_non_embedding",
        "flops_per_token", "tokens_per_s", "train_s", "wall_s",
        "causal", "eval_windows", "precision", "diverged", "failed", "outlier_seeds", "flags",
        *[f"{c}_{s}" for c in scored for s in tasks.STATS],
    ]  # fmt: skip
    summary = summary[order]
    summary["_key"] = summary[f"{metric}_mean"]
    summary = summary.sort_values(["_key", "variant"], na_position="last", kind="stable")
    summary = summary.drop(columns="_key").reset_index(drop=True)
    summary = add_steps(summary, table, {v: p[metric] for v, p in values.items()}, confidence)
    summary.attrs["metric"] = metric
    summary.attrs["tuned"] = tuned_runs(table)
    summary.attrs["named_metric"] = chosen  # the metric the experiment named, or None
    summary.attrs["tokenizers_differ"] = tokenizers_differ(table)
    summary.attrs["baseline"] = baseline
    summary.attrs["correction"] = correction
    summary.attrs["alpha"] = alpha
    summary.attrs["resolution"] = resolution
    summary.attrs["outliers"] = [
        {"variant": o.group, "seed": _plain(o.seed), "value": o.value,
         "others_mean": o.others_mean, "t": o.t, "df": o.df, "p_value": o.p_value}
        for o in found
    ]  # fmt: skip
    summary.attrs["aa_check"] = _aa_check(base[metric] if base is not None else {}, alpha)
    summary.attrs["task_settings_differ"] = tasks.settings_differ(table)
    return summary


def _perplexity(
    loss: dict[Any, float], perplexity: dict[Any, float], confidence: float
) -> dict[str, float]:
    """Perplexity is exp(loss): its mean is exp of the mean loss (the seeds' geometric mean)
    and its interval the loss interval's exp, never below 1 as a t-interval of the seeds'
    perplexities can be; std is the spread of the seeds' perplexities."""
    d = stats.describe(loss.values(), confidence)
    if not d.n:  # no loss recorded: the runs' own perplexities, if any
        return {}
    return {
        "val_perplexity_mean": math.exp(d.mean),
        "val_perplexity_std": stats.describe(perplexity.values()).std,
        "val_perplexity_ci_low": math.exp(d.ci_low) if finite(d.ci_low) else math.nan,
        "val_perplexity_ci_high": math.exp(d.ci_high) if finite(d.ci_high) else math.nan,
    }


def _active_params(summary: pd.DataFrame) -> pd.DataFrame:
    """The active parameter columns, NaN unless some run recorded them (a mixture of experts);
    then a variant without them (a dense model) uses every parameter it has."""
    for column in ("params_active", "params_active_non_embedding"):
        recorded = pd.to_numeric(summary[column], errors="coerce")
        whole = pd.to_numeric(summary[column.replace("_active", "")], errors="coerce")
        summary[column] = recorded.fillna(whole) if recorded.notna().any() else recorded
    return summary


def _verdict(p: float, statistic: float, alpha: float) -> str:
    if not finite(p):
        return ""
    if p >= alpha:
        return NOT_SIGNIFICANT
    return BETTER if statistic < 0 else WORSE


def _plain(seed: Any) -> Any:
    """A seed as a plain int when it is a whole number (pandas hands back numpy integers)."""
    return int(seed) if isinstance(seed, (int, np.integer)) else seed


def _aa_check(baseline: dict[Any, float], alpha: float) -> dict[str, Any] | None:
    check = stats.aa_check(baseline)
    if check is None:
        return None
    r = check.result
    return {
        "first": [_plain(s) for s in check.first],
        "second": [_plain(s) for s in check.second],
        "test": r.test,
        "delta": r.delta,
        "statistic": r.statistic,
        "df": r.df,
        "p_value": r.p_value,
        "alarm": bool(finite(r.p_value) and r.p_value < alpha),
    }


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame:
        return pd.Series([], dtype=float)
    return frame[name]


def _first(frame: pd.DataFrame, name: str) -> Any:
    column = _column(frame, name).dropna()
    return column.iloc[0] if len(column) else None


def finite(x: Any) -> bool:
    """A number that is neither NaN nor infinite (None and text are not numbers)."""
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _mean(values: Iterable[Any]) -> float:
    x = [float(v) for v in values if finite(v)]
    return float(np.mean(x)) if x else math.nan


def _by_seed(ok: pd.DataFrame, column: str) -> dict[Any, float]:
    """seed -> value of the finished runs (the mean if a seed appears twice)."""
    if column not in ok or ok.empty:
        return {}
    values = pd.to_numeric(ok[column], errors="coerce")
    frame = pd.DataFrame({"seed": ok["seed"].to_numpy(), "v": values.to_numpy()}).dropna()
    means = frame.groupby("seed", sort=True)["v"].mean()
    return {s: float(v) for s, v in means.items() if math.isfinite(v)}


def _flags(row: dict[str, Any], base: dict[str, Any] | None) -> str:
    flags = []
    if not row["causal"]:
        flags.append("non-causal")
    # Losses scored on other windows than the baseline's (or on two kinds across seeds) are
    # another measurement: say so rather than compare them silently.
    if "+" in row["eval_windows"] or (
        base is not None and row["eval_windows"] != base["eval_windows"]
    ):
        flags.append(f"eval windows: {row['eval_windows']}")
    # Likewise runs trained in another precision (train.precision, "auto" as each run resolved
    # it): a difference in loss may be the precision's.
    mine, theirs = row["precision"], base["precision"] if base is not None else ""
    if "+" in mine or (mine and theirs and mine != theirs):
        flags.append(f"precision: {mine}")
    # With a mixture of experts in the table, sizes compare by the parameters a token uses
    # (what match_params = "active" matches); the totals stay in the params columns.
    if finite(row["params_active_non_embedding"]):
        size = ("params_active_non_embedding", "active params")
    else:
        size = ("params_non_embedding", "params")
    for column, what in (size, ("flops_per_token", "FLOP/token")):
        mine, theirs = row[column], base[column] if base is not None else None
        if finite(mine) and finite(theirs) and theirs and abs(mine / theirs - 1) > MISMATCH:
            flags.append(f"{what} {100 * (mine / theirs - 1):+.1f}%")
    if row["diverged"]:
        flags.append(f"{row['diverged']} diverged")
    if row["failed"]:
        flags.append(f"{row['failed']} failed")
    if row["other"]:
        flags.append(f"{row['other']} other status")
    if row["unscored"]:
        flags.append(f"{row['unscored']} finished without a finite score")
    if row["outlier_seeds"]:
        many = "," in row["outlier_seeds"]
        flags.append(f"outlier seed{'s' if many else ''} {row['outlier_seeds']}")
    if row["ok"] < row["seeds_asked"]:
        flags.append(f"{row['ok']}/{row['seeds_asked']} seeds")
    return ", ".join(flags)
