"""Run folders and the tidy results table.

Every run writes a self-describing folder (`<variant>/seed-<n>/` under the experiment's output
folder): config.json (resolved config), env.json (versions, device, seed), metrics.jsonl (one
line per evaluation), sample.txt, checkpoint.pt and, last, summary.json. Files are written
atomically (toolkit.files), so a killed process never leaves half a file. The table
`results.csv` is rebuilt from run folders alone by `collect()`.

Scores computed after training are kept beside the summary, in tasks.json: per task, its
metrics, how many samples (or tokens) were scored, the settings, and the sha256 of the
checkpoint they scored. Two kinds: lm-evaluation-harness tasks (`ablate eval-tasks`; with
standard errors, and few-shot examples, limit and lm-eval version as settings), and losses in
windows of another length (`ablate eval DIR --context`: the task "val@512" holds the loss and
bits per byte of the val split in 512-token windows, with the corpus and tokenizer as
settings). `collect()` adds them as columns "task:<task>/<metric>" while that checkpoint is
still the run's (a run trained again drops its old scores from the table).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.files import read_json, write_atomic, write_json
from toolkit.spec.schema import LEGACY_VALUES

RESULT_COLUMNS = [
    "experiment", "variant", "seed", "status", "baseline",
    "attention", "norm", "activation", "positional", "tokenizer", "sampler", "causal",
    "params", "params_non_embedding", "steps", "tokens",
    "train_loss", "val_loss", "val_perplexity", "val_bpb", "eval_windows",
    "tokens_per_s", "flops_per_token", "mfu", "train_s", "wall_s", "config_hash", "tuned",
]  # fmt: skip
# summary.json keys that are about the run's files, not results.
NOT_IN_TABLE = ("digests",)
# Measured columns: a null in summary.json (a NaN or infinite score: toolkit.files.to_json) is
# NaN here, so the column stays numeric.
NUMERIC_COLUMNS = [
    "params", "params_non_embedding", "steps", "tokens",
    "train_loss", "val_loss", "val_perplexity", "val_bpb",
    "tokens_per_s", "flops_per_token", "mfu", "train_s", "wall_s",
]  # fmt: skip
# Measured columns only some runs have (a test split, a target loss): numeric when present.
OPTIONAL_NUMERIC = [
    "test_loss", "test_perplexity", "test_bpb", "flops",
    "target_loss", "target_step", "target_tokens", "target_flops", "target_s",
]  # fmt: skip


TASKS_FILE = "tasks.json"
TASK_PREFIX = "task:"
TASK_SETTINGS = "task_settings"  # the column of how each task was scored
SETTINGS_SHOWN = ("num_fewshot", "limit", "lm_eval")  # what makes two scores incomparable
WINDOW_KIND = "window"  # an entry of `ablate eval --context`: a loss in longer windows
WINDOW_SETTINGS_SHOWN = ("corpus", "tokenizer")  # the split and length are in its name


def task_column(task: str, metric: str) -> str:
    """The results column of a task's metric: task:<task>/<metric>."""
    return f"{TASK_PREFIX}{task}/{metric}"


def record_task_scores(
    run_dir: str | Path, scores: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    """Merge lm-eval scores (toolkit.inference.lm_tasks.evaluate_tasks) into the run folder's
    tasks.json, atomically: a task scored again replaces its entry, other tasks stay. Returns
    what the file now holds."""
    return _merge_scores(
        Path(run_dir),
        {
            task: {
                "metrics": metrics,
                "stderr": scores.get("stderr", {}).get(task, {}),
                "samples": scores.get("samples", {}).get(task),
                "settings": {**settings, "lm_eval": scores.get("lm_eval")},
            }
            for task, metrics in scores["tasks"].items()
        },
    )


def window_task(split: str, context: int) -> str:
    """The name a loss in windows of `context` tokens on `split` is recorded under: val@512."""
    return f"{split}@{context}"


def record_window_scores(
    run_dir: str | Path,
    split: str,
    context: int,
    metrics: dict[str, float],
    tokens: int,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """Merge one `ablate eval --context` score (metrics: loss and bpb of `split` in windows of
    `context` tokens, over `tokens` tokens) into the run folder's tasks.json as the task
    window_task(split, context), beside any lm-eval scores; settings: the corpus and tokenizer
    scored. Returns what the file now holds."""
    entry = {
        "kind": WINDOW_KIND,
        "metrics": metrics,
        "samples": tokens,
        "settings": {**settings, "split": split, "context": context},
    }
    return _merge_scores(Path(run_dir), {window_task(split, context): entry})


def _merge_scores(folder: Path, entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """tasks.json with `entries` (task -> entry) put in, each stamped with the checkpoint it
    scored (the run's checkpoint.pt digest in summary.json), written atomically."""
    summary = read_json(folder / "summary.json")
    digests = summary.get("digests") if isinstance(summary, dict) else None
    checkpoint = digests.get("checkpoint.pt") if isinstance(digests, dict) else None
    held = read_json(folder / TASKS_FILE)
    tasks = dict(held["tasks"]) if isinstance(held, dict) and "tasks" in held else {}
    for task, entry in entries.items():
        tasks[task] = {**entry, "checkpoint_sha256": checkpoint}
    data = {"tasks": dict(sorted(tasks.items()))}
    write_json(folder / TASKS_FILE, data)
    return data


def task_scores(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The task columns of one run: the scores in its tasks.json computed on the checkpoint
    its summary.json names (all of them when the summary records no digest), and
    TASK_SETTINGS: how each task was scored, as text ({task: "num_fewshot=..., limit=...,
    lm_eval=..."} in JSON), so runs scored differently can be told apart."""
    held = read_json(run_dir / TASKS_FILE)
    if not isinstance(held, dict) or not isinstance(held.get("tasks"), dict):
        return {}
    digests = summary.get("digests")
    current = digests.get("checkpoint.pt") if isinstance(digests, dict) else None
    columns: dict[str, Any] = {}
    how: dict[str, str] = {}
    own = _own_tokenizer(run_dir)
    for task, entry in held["tasks"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("metrics"), dict):
            continue
        if current is not None and entry.get("checkpoint_sha256") != current:
            continue  # scored on an earlier training of this run
        for metric, value in entry["metrics"].items():
            columns[task_column(task, metric)] = value
        settings = entry.get("settings") if isinstance(entry.get("settings"), dict) else {}
        if entry.get("kind") == WINDOW_KIND and own and settings.get("tokenizer") == own:
            # Each run scored with its own tokenizer is one way, in a grid over tokenizers too.
            settings = {**settings, "tokenizer": "the run's own"}
        shown = WINDOW_SETTINGS_SHOWN if entry.get("kind") == WINDOW_KIND else SETTINGS_SHOWN
        # A window score of another split than the run's own says so; the run's own, nothing.
        shown += ("val_fraction",) if "val_fraction" in settings else ()
        how[task] = ", ".join(f"{k}={settings.get(k)}" for k in shown)
    if how:
        columns[TASK_SETTINGS] = json.dumps(how, sort_keys=True)
    return columns


def _own_tokenizer(run_dir: Path) -> str | None:
    """The name of the tokenizer a run trained with (its config.json), or None."""
    config = read_json(run_dir / "config.json")
    data = config.get("data") if isinstance(config, dict) else None
    choice = data.get("tokenizer") if isinstance(data, dict) else None
    name = choice.get("name") if isinstance(choice, dict) else choice
    return name if isinstance(name, str) else None


def is_window_loss(column: str) -> bool:
    """Whether a task column is a window score's loss (`ablate eval --context`): per token
    of the run's own tokenizer, so it compares only between runs of one tokenizer."""
    task, _, metric = column.removeprefix(TASK_PREFIX).rpartition("/")
    return column.startswith(TASK_PREFIX) and "@" in task and metric == "loss"


def task_columns(table: pd.DataFrame) -> list[str]:
    """The task score columns of a results table, in order."""
    return sorted(c for c in table.columns if isinstance(c, str) and c.startswith(TASK_PREFIX))


def collect(out_dir: str | Path) -> pd.DataFrame:
    """The tidy table of an experiment folder: one row per run that has a summary.json
    (finished, diverged or failed) and belongs to the experiment's current spec (same variant,
    seed and config hash as experiment.json lists), columns RESULT_COLUMNS then one per varied
    key."""
    out = Path(out_dir)
    rows = []
    for summary_path in sorted(out.glob("*/seed-*/summary.json")):
        summary = read_json(summary_path)
        if isinstance(summary, dict):
            row = {k: v for k, v in summary.items() if k not in NOT_IN_TABLE}
            rows.append(row | task_scores(summary_path.parent, summary))
    experiment = read_json(out / "experiment.json") or {}
    expected = {(r["variant"], r["seed"]): r["config_hash"] for r in experiment.get("runs", [])}
    if expected:
        # Folders left by an earlier version of the spec (other variants, other configs) stay on
        # disk but are not part of this experiment's table.
        rows = [
            r
            for r in rows
            if expected.get((r.get("variant"), r.get("seed"))) == r.get("config_hash")
        ]
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    extra = [c for c in table.columns if c not in RESULT_COLUMNS]
    for column in RESULT_COLUMNS:
        if column not in table:
            table[column] = None
    # A tuned sweep's final runs: their settings were chosen on the validation split, so the
    # comparison reads the test split (analysis.metric.comparison_metric).
    table["tuned"] = bool(experiment.get("tune"))
    # Which variant is the baseline is the experiment's to say, as it is now: a run's own
    # summary keeps what it was when that run trained (a ladder that grew a size since, a
    # spec whose baseline changed).
    if isinstance(experiment.get("baseline"), str):
        table["baseline"] = table["variant"] == experiment["baseline"]
    # Runs recorded before train.eval_windows existed were scored on the windows it names.
    table["eval_windows"] = table["eval_windows"].fillna(LEGACY_VALUES["train.eval_windows"])
    optional = [c for c in OPTIONAL_NUMERIC if c in table] + task_columns(table)
    for column in NUMERIC_COLUMNS + optional:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    order = {name: i for i, name in enumerate(experiment.get("variants", []))}
    table["_order"] = table["variant"].map(lambda v: order.get(v, len(order)))
    table = table.sort_values(["_order", "seed"], kind="stable").drop(columns="_order")
    extra = [c for c in extra if c not in task_columns(table)] + task_columns(table)
    return table[RESULT_COLUMNS + extra].reset_index(drop=True)


def write_table(out_dir: str | Path) -> pd.DataFrame:
    """Rebuild results.csv from the run folders (atomically) and return the table."""
    table = collect(out_dir)
    write_atomic(Path(out_dir) / "results.csv", table.to_csv(index=False))
    return table
