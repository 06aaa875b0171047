"""One training run: build the model, AdamW with warm-up and cosine decay, gradient clipping,
evaluation on fixed batches, a generated sample, a checkpoint, and the run folder's files.

The training step is plain PyTorch: no hook and no registry lookup inside the loop. Observers
(`on_eval`) are called at evaluation intervals only. Same seed, same losses on CPU: the seed
fixes initialisation, dropout and the data order. Not here: the sweep (runner.py).

Under torchrun every process calls train_run with the same run (see distributed.py): the batch
of train.batch_size rows is the global one, each process trains on its contiguous share through
DistributedDataParallel, losses and evaluation sums are added up across processes, and rank 0
alone writes the run folder and calls the observers. A single process takes the same path with
every collective a no-op.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from toolkit import __version__
from toolkit.api.contracts import RunInfo
from toolkit.api.manager import Plugins
from toolkit.api.registry import split_choice
from toolkit.data.tokens import TokenData, TrainBatches, eval_batches
from toolkit.errors import DataError, SpecError, ToolkitError, one_line
from toolkit.files import write_atomic, write_json
from toolkit.inference.generate import generate
from toolkit.model.checkpoint import CHECKPOINT_FILE, load_initial_weights, save_checkpoint
from toolkit.model.gpt import build_model
from toolkit.spec.schema import RunSpec
from toolkit.training import distributed
from toolkit.training.distributed import World
from toolkit.training.throughput import flops_per_token, peak_flops, resolve_device

# progress(step, total_steps, last_loss, metrics_or_None): the runner's display, not a hook.
Progress = Callable[[int, int, float, dict[str, float] | None], None]


def total_steps(run: RunSpec, batches_per_epoch: int) -> int:
    """The budget in optimizer steps: max_steps, or max_tokens / tokens per step, or
    epochs x batches per epoch (rounded up)."""
    t = run.train
    if t.max_tokens is not None:
        return max(1, math.ceil(t.max_tokens / (t.batch_size * run.model.context_length)))
    if t.epochs is not None:
        return max(1, math.ceil(t.epochs * batches_per_epoch))
    return t.max_steps


def lr_at(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at a 0-based step: linear warm-up, then cosine to min_ratio.
    lr_at(0, 100, 10, 0.1) -> 0.1;  lr_at(99, 100, 0, 0.1) -> ~0.1."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, run: RunSpec, device: str) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices and embeddings (dim >= 2) only, not norms or biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": run.train.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # The fused CUDA kernel updates every parameter in one launch; same maths.
    fused = {"fused": True} if device.startswith("cuda") else {}
    return torch.optim.AdamW(groups, lr=run.train.lr, betas=tuple(run.train.betas), **fused)


def autocast(device: str, precision: str) -> torch.autocast:
    """bfloat16 autocast for "bf16-mixed" (weights, optimizer and loss stay float32)."""
    return torch.autocast(
        device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16-mixed"
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    token_bytes: torch.Tensor,
    device: str,
    precision: str = "fp32",
    *,
    world: World | None = None,
) -> tuple[float, float]:
    """(mean cross-entropy in nats per token, bits per UTF-8 byte) over fixed batches. Given a
    `world` of several processes, each scores its share of every batch's rows (as many as it
    trains on, so memory is no worse than training's) and the sums are added up across
    processes: every process gets what one process scoring every row would."""
    world = world or World()
    was_training = model.training
    model.eval()
    nats, tokens, n_bytes = 0.0, 0, 0
    for x, y in batches:
        x, y = _share(x, world), _share(y, world)
        if not len(y):  # a last batch with fewer rows than processes
            continue
        x, y = x.to(device), y.to(device)
        with autocast(device, precision):
            logits = model(x)
        nats += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
        tokens += y.numel()
        n_bytes += int(token_bytes[y.cpu()].sum())
    model.train(was_training)
    if world.active:
        nats, tokens, n_bytes = distributed.all_reduce_sum([nats, tokens, n_bytes])
    return nats / tokens, nats / (math.log(2) * max(1, n_bytes))


def train_run(
    run: RunSpec,
    data: TokenData,
    tokenizer: Any,
    folder: Path,
    plugins: Plugins,
    progress: Progress | None = None,
    columns: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one run, writing its folder; returns the summary (also in summary.json). Under
    torchrun every process calls it with the same arguments and gets rank 0's summary."""
    t = run.train
    world = distributed.current()
    started = time.perf_counter()
    if t.threads:
        torch.set_num_threads(t.threads)
    device = _device(t.device, world)
    check_world(run, world)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 tensor cores for float32 matmuls
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(run.seed)
    config = run.model_config(data.vocab_size)
    if config.vocab_size < data.vocab_size:
        raise DataError(
            f"model.vocab_size ({config.vocab_size}) is smaller than the tokenizer's "
            f"vocabulary ({data.vocab_size}); leave it unset to use the tokenizer's"
        )
    model = build_model(config, plugins)
    if run.model.init_from:
        load_initial_weights(model, run.model.init_from)
    model = model.to(device)
    if world.active:  # the same initial weights everywhere, then each process its own dropout
        torch.manual_seed(_seed(run.seed, world.rank))
    params, params_ne = model.num_params(), model.num_params(non_embedding=True)
    info = RunInfo(run.experiment, run.variant, run.seed, run.config(), folder, params, params_ne)

    folder.mkdir(parents=True, exist_ok=True)
    resume = _read_resume_everywhere(folder, run.config_hash(), world)
    if world.main:
        stale = ["summary.json", "sample.txt", "checkpoint.pt", "error.txt"]
        for name in stale if resume else [*stale, "metrics.jsonl", RESUME_FILE]:
            (folder / name).unlink(missing_ok=True)
        write_json(
            folder / "config.json",
            {**run.config(), "model_resolved": config.to_dict(), "config_hash": run.config_hash()},
        )
        write_json(folder / "env.json", {**environment(device, run.seed), "world_size": world.size})

    context = config.context_length
    batches = TrainBatches(data.train, context, t.batch_size, run.seed, t.stride)
    steps = total_steps(run, batches.batches_per_epoch)
    train_eval = eval_batches(data.train, context, t.batch_size, t.eval_batches)
    val_eval = eval_batches(data.val, context, t.batch_size, t.eval_batches)
    token_bytes = torch.tensor(
        np.asarray(data.token_bytes), dtype=torch.long
    )  # a copy: may be read-only
    optimizer = make_optimizer(model, run, device)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, steps, t.warmup_steps, t.min_lr_ratio)
    )
    train_s, status, diverged_at, last = 0.0, "ok", None, {}
    first_step_s = 0.0  # one-time set-up (allocations, thread pools) lands in step 1
    eval_s = 0.0
    start_step, elapsed_before = 1, 0.0
    if resume:
        # Everything the next step depends on comes back exactly, so a resumed run ends with
        # the same metrics as one never interrupted (on CPU, same seed).
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        batches.load_state(resume["batches"])
        torch.set_rng_state(_saved_rng(resume, world, run.seed))
        start_step = resume["step"] + 1
        train_s, first_step_s = resume["train_s"], resume["first_step_s"]
        eval_s = resume.get("eval_s", 0.0)
        elapsed_before = resume["elapsed_s"]
        if world.main:  # the other processes return rank 0's summary: they need no `last`
            last = _truncate_metrics(folder / "metrics.jsonl", resume["step"])
    if world.main:
        plugins.hook.on_run_start(run=info)
    ddp = _data_parallel(model, world, device)  # `model` itself in a single process
    step_model = _compiled(ddp) if t.compile else ddp
    eval_model = _eval_model(model, ddp, step_model)
    fallback_rng = torch.get_rng_state()  # to redo step 1 eagerly if compiling fails there

    metrics_file = None
    if world.main:
        metrics_file = (folder / "metrics.jsonl").open("a" if resume else "w", encoding="utf-8")
    tokens_per_step = t.batch_size * context  # the global batch: every process's rows
    model.train()
    try:
        for step in range(start_step, steps + 1):
            tick = time.perf_counter()
            x, y = next(batches)
            x, y = _share(x, world).to(device), _share(y, world).to(device)
            try:
                loss = _forward_backward(step_model, optimizer, x, y, device, t.precision)
            except Exception as exc:
                if step_model is ddp or step != start_step:
                    raise
                # torch.compile fails at the first call when a component cannot be compiled
                # (or no compiler is installed): say so once and train eagerly instead.
                print(
                    f"train.compile: torch.compile failed ({one_line(exc, 300)}); training eagerly",
                    file=sys.stderr,
                )
                step_model, eval_model = ddp, model
                torch.set_rng_state(fallback_rng)
                loss = _forward_backward(step_model, optimizer, x, y, device, t.precision)
            if t.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            schedule.step()
            loss_value = loss.item()  # syncs, so the timing below is honest on GPUs too
            if world.active:  # the mean over processes, so all see the same (finite?) loss
                loss_value = distributed.all_reduce_sum([loss_value])[0] / world.size
            train_s += time.perf_counter() - tick
            if step == 1:
                first_step_s = train_s
            if not math.isfinite(loss_value):
                status, diverged_at = "diverged", step
                break
            metrics = None
            if step % t.eval_interval == 0 or step == steps:
                eval_tick = time.perf_counter()
                train_loss, _ = evaluate(
                    eval_model, train_eval, token_bytes, device, t.precision, world=world
                )
                val_loss, val_bpb = evaluate(
                    eval_model, val_eval, token_bytes, device, t.precision, world=world
                )
                metrics = {
                    "step": step,
                    "tokens": step * tokens_per_step,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "val_perplexity": math.exp(min(val_loss, 700.0)),
                    "val_bpb": val_bpb,
                    "lr": schedule.get_last_lr()[0],
                    "elapsed_s": elapsed_before + time.perf_counter() - started,
                }
                eval_s += time.perf_counter() - eval_tick
                # Every process's RNG state (dropout), so a resumed run draws the same masks.
                rngs = distributed.all_gather_object(torch.get_rng_state()) if step < steps else []
                if world.main:
                    metrics_file.write(json.dumps(metrics) + "\n")
                    metrics_file.flush()
                    if step < steps:
                        write_resume_state(folder, {
                            "config_hash": run.config_hash(),
                            "step": step,
                            "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "schedule": schedule.state_dict(),
                            "batches": batches.state(),
                            "rng": rngs[0],
                            **({"rng_ranks": rngs} if world.active else {}),
                            "train_s": train_s,
                            "first_step_s": first_step_s,
                            "eval_s": eval_s,
                            "elapsed_s": metrics["elapsed_s"],
                        })  # fmt: skip
                    plugins.hook.on_eval(run=info, step=step, metrics=metrics)
                last = metrics
            if progress and world.main:
                progress(step, steps, loss_value, metrics)
    finally:
        if metrics_file is not None:
            metrics_file.close()

    if world.main and status == "ok" and run.sampling.max_new_tokens > 0:
        sample = _sample(model, run, tokenizer, plugins, context, device)
        write_atomic(folder / "sample.txt", sample)
    if world.main and status == "ok" and t.checkpoint:
        save_checkpoint(config, model.state_dict(), folder / CHECKPOINT_FILE)

    attention = split_choice(run.model.attention)[0]
    tokens_per_s = _throughput(diverged_at or steps, tokens_per_step, train_s, first_step_s)
    flops = flops_per_token(model)
    peak = t.peak_tflops * 1e12 if t.peak_tflops else peak_flops(device, t.precision)
    summary = {
        "experiment": run.experiment,
        "variant": run.variant,
        "seed": run.seed,
        "status": status,
        **run.choices(),
        "causal": bool(plugins.registry.get("attention", attention).facts.get("causal")),
        "params": params,
        "params_non_embedding": params_ne,
        "steps": last.get("step", diverged_at or 0),
        "tokens": last.get("tokens", 0),
        "train_loss": last.get("train_loss"),
        "val_loss": last.get("val_loss"),
        "val_perplexity": last.get("val_perplexity"),
        "val_bpb": last.get("val_bpb"),
        "tokens_per_s": tokens_per_s,
        "flops_per_token": flops,
        "mfu": flops * tokens_per_s / (peak * world.size) if tokens_per_s else None,
        "peak_flops": peak,  # of one device
        "device": device,
        "precision": t.precision,
        "world_size": world.size,
        "compiled": step_model is not ddp,
        "train_s": train_s,
        "eval_s": eval_s,
        "wall_s": elapsed_before + time.perf_counter() - started,
        **({"resumed_at_step": start_step - 1} if resume else {}),
        "config_hash": run.config_hash(),
        **({"diverged_at_step": diverged_at} if diverged_at else {}),
        **(columns or {}),
    }
    if world.main:
        write_json(folder / "summary.json", summary)
        (folder / RESUME_FILE).unlink(missing_ok=True)  # finished: the summary and weights remain
    # Rank 0's summary everywhere; waiting for it also keeps every process here until
    # summary.json is written.
    summary = distributed.broadcast_object(summary)
    if world.main:
        plugins.hook.on_run_end(run=info, summary=summary)
    return summary


def environment(device: str, seed: int) -> dict[str, Any]:
    """What env.json records: versions, machine, device and seed."""
    return {
        "toolkit": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "seed": seed,
    }


def check_world(run: RunSpec, world: World) -> None:
    """A run can be split across the processes of `world`: its global batch divides evenly
    among them, and its device is one each process can have its own of (not mps)."""
    if not world.active:
        return
    if run.train.batch_size % world.size:
        raise SpecError(
            f"variant {run.variant!r}: train.batch_size ({run.train.batch_size}) is the global "
            f"batch and must divide evenly among the {world.size} processes; use a multiple of "
            f"{world.size}"
        )
    if resolve_device(run.train.device).startswith("mps"):
        raise SpecError(
            "train.device mps cannot be shared by several processes; use cpu or cuda with torchrun"
        )


def _device(name: str, world: World) -> str:
    """resolve_device, with each process of a multi-process run on its own GPU (the one
    torchrun's LOCAL_RANK names), whatever index the spec gives."""
    device = resolve_device(name)
    if world.active and device.startswith("cuda"):
        return f"cuda:{world.local_rank}"
    return device


def _seed(*words: int) -> int:
    """A seed mixed from several integers (the run's seed, a rank, ...); any ints work."""
    return int(np.random.SeedSequence([w % 2**64 for w in words]).generate_state(1)[0])


def _share(batch: torch.Tensor, world: World) -> torch.Tensor:
    """This process's contiguous share of a batch's rows: all of them in a single process."""
    return batch.tensor_split(world.size)[world.rank] if world.active else batch


def _data_parallel(model: nn.Module, world: World, device: str) -> nn.Module:
    """The model in DistributedDataParallel, which averages gradients across processes during
    backward; the model itself in a single process."""
    if not world.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    # Buffers (attention masks, rotary tables) are the same everywhere and training changes
    # none, so they are not re-sent at every forward; torch 2.13 renamed that switch.
    options = inspect.signature(DistributedDataParallel).parameters
    no_resend = "forward_sync_buffers" if "forward_sync_buffers" in options else "broadcast_buffers"
    device_ids = [torch.device(device).index] if device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=device_ids, **{no_resend: False})


def _eval_model(model: nn.Module, ddp: nn.Module, step_model: nn.Module) -> nn.Module:
    """The module evaluation runs: compiled when training is, and never the DDP wrapper, whose
    forward may join collectives while processes score different rows."""
    if step_model is ddp:  # eager
        return model
    return step_model if ddp is model else _compiled(model)


def _read_resume_everywhere(folder: Path, config_hash: str, world: World) -> dict[str, Any] | None:
    """read_resume_state in every process, which must agree. Returning also means every
    process has read resume.pt, so rank 0 may delete it (or other stale files) after."""
    resume = read_resume_state(folder, config_hash)
    seen = distributed.all_gather_object(resume["step"] if resume else None)
    if len(set(seen)) > 1:
        raise ToolkitError(
            f"{folder}: the processes see different resume states (steps {seen}); the output "
            f"folder must be on a filesystem that every node shares"
        )
    return resume


def _saved_rng(resume: dict[str, Any], world: World, seed: int) -> torch.Tensor:
    """This process's RNG state from a resume state. One saved by another number of processes
    gives rank 0 the saved main state and the others fresh streams (from seed, rank, step)."""
    states = resume.get("rng_ranks")
    if world.active and states is not None and len(states) == world.size:
        return states[world.rank]
    if world.main:
        return resume["rng"]
    return torch.Generator().manual_seed(_seed(seed, world.rank, resume["step"])).get_state()


def _forward_backward(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    device: str,
    precision: str,
) -> torch.Tensor:
    with autocast(device, precision):
        logits = model(x)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return loss


def _compiled(model: nn.Module) -> nn.Module:
    try:
        return torch.compile(model)
    except Exception as exc:  # e.g. an unsupported Python or platform
        print(
            f"train.compile: torch.compile unavailable ({one_line(exc, 300)}); training eagerly",
            file=sys.stderr,
        )
        return model


RESUME_FILE = "resume.pt"


def write_resume_state(folder: Path, state: dict[str, Any]) -> None:
    """Save what resuming needs (tensors and plain data only), atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(folder / RESUME_FILE, buffer.getvalue())


def read_resume_state(folder: Path, config_hash: str) -> dict[str, Any] | None:
    """The saved state of an interrupted run of this exact config, or None. A state file that
    does not load (or belongs to another config) is ignored: the run starts over."""
    path = folder / RESUME_FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception:
        return None
    if not isinstance(state, dict) or state.get("config_hash") != config_hash:
        return None
    return state


def resumable_step(folder: Path, config_hash: str) -> int | None:
    """The step an interrupted run of this config would resume after, if any."""
    state = read_resume_state(folder, config_hash)
    return state["step"] if state else None


def _truncate_metrics(path: Path, step: int) -> dict[str, Any]:
    """Keep the metrics lines up to `step` (a killed run may have written later ones, or half
    a line); return the last kept record."""
    kept: list[dict[str, Any]] = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                break
            if record.get("step", 0) > step:
                break
            kept.append(record)
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept[-1] if kept else {}


def _throughput(
    steps: int, tokens_per_step: int, train_s: float, first_step_s: float
) -> float | None:
    """Training tokens per second of step time, leaving out the first step (set-up costs that a
    longer run would not repeat) when there are others."""
    if steps > 1 and train_s > first_step_s:
        return (steps - 1) * tokens_per_step / (train_s - first_step_s)
    return steps * tokens_per_step / train_s if train_s else None


def _sample(
    model: nn.Module, run: RunSpec, tokenizer: Any, plugins: Plugins, context: int, device: str
) -> str:
    """The spec's prompt continued by the spec's sampler (seeded by the run's seed)."""
    name, options = split_choice(run.sampling.sampler)
    sampler = plugins.registry.get("sampler", name).build(**options)
    prompt_ids = tokenizer.encode(run.sampling.prompt) or [tokenizer.eot_id]
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(run.seed)
    out = generate(
        model, idx, run.sampling.max_new_tokens, sampler, context, generator, tokenizer.eot_id
    )
    return tokenizer.decode(out[0].tolist())
