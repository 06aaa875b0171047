"""Whether a finished run's folder is what its run wrote: the integrity a rerun and
`ablate verify` check.

A run records in summary.json the sha256 of its checkpoint.pt and metrics.jsonl (`digests`),
and of the summary's own content (`digests["scores"]`: its test scores and perplexities have
no metrics.jsonl line), and its final scores, which are its last evaluation's. `problems(folder)` lists what no longer
agrees: a file missing, a file whose bytes changed (corrupt, truncated or edited), a summary
whose scores are not its metrics' last line (a hand-edited summary.json), a config.json that
is not JSON or not this run's, or a summary that is not the run experiment.json records. Folders written before
digests were recorded are checked on their scores alone. Cheap: two hashes and a JSON line per
run. Not here: what to do about it (the runner retrains; `ablate verify` reports).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from toolkit.files import SELF_DIGEST, digest, read_json, self_digest

# What experiment.json records of a run, which its summary.json repeats.
IDENTITY = ("variant", "seed", "config_hash")
# summary.json key -> the key of the metrics.jsonl record it repeats
SCORES = {
    "steps": "step",
    "tokens": "tokens",
    "train_loss": "train_loss",
    "val_loss": "val_loss",
    "val_bpb": "val_bpb",
}


def problems(folder: Path, expected: dict[str, Any] | None = None) -> list[str]:
    """What is wrong with a finished run's folder, in words; empty when it is intact.
    expected: what experiment.json records for the folder (variant, seed, config_hash), which
    its summary.json must repeat."""
    summary = read_json(folder / "summary.json")
    if not isinstance(summary, dict):
        return ["summary.json is missing or not JSON"]
    found = []
    differ = [k for k in IDENTITY if k in (expected or {}) and summary.get(k) != expected[k]]
    if differ:
        found.append(
            f"summary.json's {', '.join(differ)} not what experiment.json records for this "
            f"folder (edited, or another run's)"
        )
    if not isinstance(summary.get("status"), str):
        found.append("summary.json has no status")
    config = read_json(folder / "config.json")
    if not isinstance(config, dict):
        found.append("config.json is missing or not JSON")
    elif "config_hash" in config and config["config_hash"] != summary.get("config_hash"):
        found.append("config.json is not this run's (its config_hash is not summary.json's)")
    digests = summary.get("digests")
    if isinstance(digests, dict):
        for name, expected in digests.items():
            if name == SELF_DIGEST:
                if self_digest(summary) != expected:
                    found.append("summary.json is not the summary the run wrote (edited?)")
                continue
            path = folder / name
            if not path.is_file():
                found.append(f"{name} is missing")
            elif digest(path) != expected:
                found.append(f"{name} is not the file the run wrote (corrupt or edited)")
    if summary.get("status") == "ok":
        last = _last_record(folder / "metrics.jsonl")
        if last is None:
            found.append("metrics.jsonl has no evaluation")
        else:
            differ = [
                k for k, m in SCORES.items() if m in last and not _same(summary.get(k), last[m])
            ]
            if differ:
                found.append(
                    f"summary.json's {', '.join(differ)} differ from the last evaluation in "
                    f"metrics.jsonl (edited?)"
                )
    return found


def _last_record(path: Path) -> dict[str, Any] | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None
    return None


def _same(a: Any, b: Any) -> bool:
    """Equal scores; None, NaN and null are all 'no score'."""

    def missing(x: Any) -> bool:
        return x is None or (isinstance(x, float) and math.isnan(x))

    if missing(a) or missing(b):
        return missing(a) and missing(b)
    return a == b
