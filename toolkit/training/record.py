"""What a run records about itself: the environment (env.json), each auxiliary loss's mean
for the metrics lines, the final model's test-split score, and the summary (summary.json,
which rank 0 writes and every process returns). Not here: the loop and the metrics lines
(loop.py), the state it reads (state.py).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from typing import Any

import numpy as np
import torch

from toolkit import __version__
from toolkit.api.registry import split_choice
from toolkit.files import SELF_DIGEST, digest, self_digest, write_json
from toolkit.model.checkpoint import CHECKPOINT_FILE
from toolkit.model.gpt import GPT
from toolkit.spec.schema import BUDGET_KEYS
from toolkit.training import distributed
from toolkit.training.budget import time_to_target
from toolkit.training.resume import RESUME_FILE
from toolkit.training.state import Training
from toolkit.training.step import evaluate_batches
from toolkit.training.throughput import cpu_name, flops_per_token, peak_flops, tokens_per_second


def environment(device: str, seed: int) -> dict[str, Any]:
    """What env.json records: versions, machine, device and seed."""
    return {
        "toolkit": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "seed": seed,
    }


def score_test(tr: Training) -> dict[str, float]:
    """The final model on the test split's fixed windows (chosen as the validation split's
    are), once, after training: the figures a comparison reports when every choice was made
    on validation loss."""
    assert tr.test_eval is not None
    loss, bpb = evaluate_batches(
        tr.eval_step, tr.test_eval, tr.token_bytes, tr.device, world=tr.world
    )
    return {"test_loss": loss, "test_perplexity": math.exp(min(loss, 700.0)), "test_bpb": bpb}


def finish(
    tr: Training, status: str, diverged_at: int | None, columns: dict[str, Any]
) -> dict[str, Any]:
    """The run's summary.json (rank 0 writes it and calls on_run_end); every process returns it."""
    run, t, world, last = tr.run, tr.run.train, tr.world, tr.last
    attention = split_choice(run.model.attention)[0]
    tokens_per_s = tokens_per_second(
        diverged_at or tr.steps, tr.tokens_per_step, tr.clock.train_s, tr.clock.first_step_s
    )
    flops = flops_per_token(tr.model)
    peak = t.peak_tflops * 1e12 if t.peak_tflops else peak_flops(tr.device, tr.precision)
    summary = {
        "experiment": run.experiment,
        "variant": run.variant,
        "seed": run.seed,
        "status": status,
        **run.choices(),
        "causal": bool(tr.plugins.registry.get("attention", attention).facts.get("causal")),
        "params": tr.info.params,
        "params_non_embedding": tr.info.params_non_embedding,
        **active_params(tr.model),
        "steps": last.get("step", diverged_at or 0),
        "tokens": last.get("tokens", 0),
        "flops": last.get("tokens", 0) * flops,  # training FLOPs spent (the run's formula)
        # The budget every run of the sweep matched, e.g. "max_flops=2e+13".
        "budget": ", ".join(f"{k}={getattr(t, k):g}" for k in BUDGET_KEYS if getattr(t, k)),
        "train_loss": last.get("train_loss"),
        "val_loss": last.get("val_loss"),
        "val_perplexity": last.get("val_perplexity"),
        "val_bpb": last.get("val_bpb"),
        "eval_windows": t.eval_windows,  # which windows the losses were scored on
        "tokens_per_s": tokens_per_s,
        "flops_per_token": flops,
        "mfu": flops * tokens_per_s / (peak * world.size) if tokens_per_s else None,
        "peak_flops": peak,  # of one device
        "device": tr.device,
        "precision": tr.precision,  # what ran: "auto" resolved
        "world_size": world.size,
        "compiled": tr.compiling,
        "train_s": tr.clock.train_s,
        "first_step_s": tr.clock.first_step_s,  # set-up and, with train.compile, compiling
        "eval_s": tr.clock.eval_s,
        "wall_s": tr.clock.elapsed(),
        **({"resumed_at_step": tr.start_step - 1} if tr.resumed else {}),
        "config_hash": run.config_hash(),
        **({"diverged_at_step": diverged_at} if diverged_at else {}),
        # Each auxiliary loss at the last evaluation (its mean over the steps before it).
        **{k: v for k, v in last.items() if k.startswith("aux_")},
        **columns,
    }
    if world.main and t.target_loss is not None:
        lines = (tr.folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        summary.update(time_to_target(map(json.loads, lines), t.target_loss, flops))
    if world.main:
        # What the run wrote, so a rerun (toolkit.sweep.verify) can tell it is still intact.
        names = [CHECKPOINT_FILE, "metrics.jsonl"]
        summary["digests"] = {n: digest(tr.folder / n) for n in names if (tr.folder / n).is_file()}
        # ... and its own scores (test ones and perplexities have no metrics.jsonl line).
        summary["digests"][SELF_DIGEST] = self_digest(summary)
        write_json(tr.folder / "summary.json", summary)
        (tr.folder / RESUME_FILE).unlink(missing_ok=True)  # finished: summary and weights remain
    # Rank 0's summary everywhere; waiting for it also keeps every process here until
    # summary.json is written.
    summary = distributed.broadcast_object(summary)
    if world.main:
        tr.plugins.hook.on_run_end(run=tr.info, summary=summary)
    return summary


def active_params(model: GPT) -> dict[str, int]:
    """The parameters one token uses, total and non-embedding, for models where that is not
    all of them (a mixture of experts); nothing for the rest, so their summaries stay as they
    were."""
    active = model.num_params(active=True)
    if active == model.num_params():
        return {}
    return {
        "params_active": active,
        "params_active_non_embedding": model.num_params(non_embedding=True, active=True),
    }


def aux_metrics(tr: Training) -> dict[str, float]:
    """Each auxiliary loss's mean over the steps since the last evaluation, as `aux_<name>`
    (averaged over processes under torchrun), then forgotten; none when the model has none."""
    names = sorted(tr.aux)
    means = [sum(tr.aux[n]) / len(tr.aux[n]) for n in names]
    if tr.world.active:
        means = [v / tr.world.size for v in distributed.all_reduce_sum(means)]
    tr.aux.clear()
    return {f"aux_{name}": value for name, value in zip(names, means, strict=True)}
