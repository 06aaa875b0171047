"""Resuming an interrupted run exactly: what is saved at each evaluation (`resume.pt`) and how
it comes back.

Everything the next step depends on is saved: weights, optimizer, learning-rate schedule, the
position in the data, every process's random state, and the clocks. A run resumed from it ends
with the metrics of a run never interrupted (on CPU, same seed). A state file that does not
load, or that belongs to another config, is ignored: the run starts over. Not here: when to
save (loop.py) or which runs a sweep skips (toolkit.sweep.runner).
"""

from __future__ import annotations

import io
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from toolkit.errors import ToolkitError, one_line
from toolkit.files import to_json, write_atomic
from toolkit.training import distributed
from toolkit.training.distributed import World, mixed_seed

RESUME_FILE = "resume.pt"


def write_resume_state(folder: Path, state: dict[str, Any]) -> None:
    """Save what resuming needs (tensors and plain data only), atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(folder / RESUME_FILE, buffer.getvalue())


def read_resume_state(folder: Path, config_hash: str) -> dict[str, Any] | None:
    """The saved state of an interrupted run of this exact config, or None."""
    return _load(folder, config_hash)[0]


def _load(
    folder: Path, config_hash: str, data_key: str | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """(the saved state, or None; why a resume.pt that is there cannot be used, or None).
    data_key: the token data's cache key, which a state recording another was not saved on."""
    path = folder / RESUME_FILE
    if not path.exists():
        return None, None
    try:
        with warnings.catch_warnings():  # torch warns before it refuses a foreign pickle
            warnings.simplefilter("ignore")
            state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        return None, f"{path} cannot be read ({one_line(exc, 120)})"
    if not isinstance(state, dict) or "step" not in state:
        return None, f"{path} is not a resume state"
    if state.get("config_hash") != config_hash:
        return None, f"{path} belongs to another config"
    if data_key is not None and state.get("data_key", data_key) != data_key:
        return None, f"{path} was saved on other data (the corpus changed since)"
    return state, None


def resumable_step(folder: Path, config_hash: str) -> int | None:
    """The step an interrupted run of this config would resume after, if any."""
    state = read_resume_state(folder, config_hash)
    return state["step"] if state else None


def read_resume_everywhere(
    folder: Path, config_hash: str, world: World, data_key: str | None = None
) -> dict[str, Any] | None:
    """read_resume_state in every process, which must agree. Returning also means every
    process has read resume.pt, so rank 0 may delete it (or other stale files) after. A state
    saved on other token data (its data_key) is not resumed: the run starts over."""
    resume, problem = _load(folder, config_hash, data_key)
    if problem and world.main:
        print(f"{problem}; the run starts over from step 0", file=sys.stderr)
    seen = distributed.all_gather_object(resume["step"] if resume else None)
    if len(set(seen)) > 1:
        raise ToolkitError(
            f"{folder}: the processes see different resume states (steps {seen}); the output "
            f"folder must be on a filesystem that every node shares"
        )
    return resume


def saved_rng(resume: dict[str, Any], world: World, seed: int) -> torch.Tensor:
    """This process's RNG state from a resume state. One saved by another number of processes
    gives rank 0 the saved main state and the others fresh streams (from seed, rank, step)."""
    states = resume.get("rng_ranks")
    if world.active and states is not None and len(states) == world.size:
        return states[world.rank]
    if world.main:
        return resume["rng"]
    return torch.Generator().manual_seed(mixed_seed(seed, world.rank, resume["step"])).get_state()


def truncate_metrics(path: Path, step: int) -> dict[str, Any]:
    """Keep the metrics lines up to `step` (a killed run may have written later ones, or half
    a line); return the last kept record. Evaluations up to `step` that are missing or cut off
    are reported in one line: the resumed run goes on without them."""
    kept: list[dict[str, Any]] = []
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            if not kept or kept[-1]["step"] < step:
                print(
                    f"{path}: line {number} is cut off or garbled; the evaluations after step "
                    f"{kept[-1]['step'] if kept else 0} up to {step} are lost",
                    file=sys.stderr,
                )
            break
        if record["step"] > step:
            break
        kept.append(record)
    write_atomic(path, "".join(to_json(r) + "\n" for r in kept))
    return kept[-1] if kept else {}
