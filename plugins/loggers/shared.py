"""What every tracker shares: the metrics logged once at the end, the resolved config as dotted
keys, a run's earlier evaluations, and the one-line warning of a logging error.

Tracker-neutral: nothing here imports a tracker's package. The trackers are the sibling
modules; the hooks that open and close them are in ``__init__``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from toolkit.errors import one_line

# Summary entries logged once, at the end (the per-evaluation metrics come from on_eval).
SUMMARY_METRICS = (
    "tokens_per_s", "mfu", "flops_per_token", "params", "params_non_embedding",
    "train_s", "eval_s", "wall_s",
)  # fmt: skip
FINAL_METRICS = ("train_loss", "val_loss", "val_perplexity", "val_bpb", *SUMMARY_METRICS)


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys to plain values. A component choice ({"name": "rmsnorm", "eps": 1e-6})
    gives its name under its own key (model.norm = rmsnorm) and its options below it
    (model.norm.eps = 1e-06), so variants compare on one column."""
    if isinstance(value, dict):
        if prefix and "name" in value:
            yield prefix, value["name"]
        for key, item in value.items():
            if prefix and key == "name":
                continue
            yield from flatten(item, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def text(value: Any) -> str:
    """A config value as text: strings as they are, the rest as JSON (null, true)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def limit(value: str, length: int) -> str:
    """At most `length` characters: ("abcdef", 5) -> "ab..."."""
    return value if len(value) <= length else value[: length - 3] + "..."


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numbers(record: dict[str, Any]) -> dict[str, int | float]:
    """An evaluation's metrics, less its step and anything not a number (a null loss)."""
    return {k: v for k, v in record.items() if k != "step" and is_number(v)}


def read_history(folder: Path) -> list[dict[str, Any]]:
    """The evaluations already in metrics.jsonl (none unless the run resumes)."""
    records = []
    try:
        lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            break
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def warn(name: str, exc: BaseException) -> bool:
    print(f"{name}: logging failed ({one_line(exc, 300)}); training goes on", file=sys.stderr)
    return True
