"""Run folders and the tidy results table.

Every run writes a self-describing folder (`<variant>/seed-<n>/` under the experiment's output
folder): config.json (resolved config), env.json (versions, device, seed), metrics.jsonl (one
line per evaluation), sample.txt, checkpoint.pt and, last, summary.json. Files are written
atomically (temp file, then rename), so a killed process never leaves half a file. The table
`results.csv` is rebuilt from run folders alone by `collect()`.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

RESULT_COLUMNS = [
    "experiment", "variant", "seed", "status", "baseline",
    "attention", "norm", "activation", "positional", "tokenizer", "sampler", "causal",
    "params", "params_non_embedding", "steps", "tokens",
    "train_loss", "val_loss", "val_perplexity", "val_bpb",
    "tokens_per_s", "flops_per_token", "mfu", "train_s", "wall_s", "config_hash",
]  # fmt: skip


@dataclass
class RunInfo:
    """What observer hooks receive about a run."""

    experiment: str
    variant: str
    seed: int
    config: dict[str, Any]  # the resolved config, as in config.json
    folder: Path
    params: int
    params_non_embedding: int


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a whole file or nothing: a temp file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it private; results and reports are for sharing
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing or not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def environment(device: str, seed: int) -> dict[str, Any]:
    import numpy
    import torch

    from toolkit import __version__

    return {
        "toolkit": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "seed": seed,
    }


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
            rows.append(summary)
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
    order = {name: i for i, name in enumerate(experiment.get("variants", []))}
    table["_order"] = table["variant"].map(lambda v: order.get(v, len(order)))
    table = table.sort_values(["_order", "seed"], kind="stable").drop(columns="_order")
    return table[RESULT_COLUMNS + extra].reset_index(drop=True)


def write_table(out_dir: str | Path) -> pd.DataFrame:
    """Rebuild results.csv from the run folders (atomically) and return the table."""
    table = collect(out_dir)
    write_atomic(Path(out_dir) / "results.csv", table.to_csv(index=False))
    return table
