"""One training run: build the model, the optimizer and learning-rate schedule the spec chooses
(AdamW with warm-up and cosine decay by default), gradient clipping, evaluation on fixed
batches, a generated sample, a checkpoint, and the run folder's files.

`train_run` reads top to bottom in four parts: `set_up` (device, model, data order, optimizer,
the run folder, and an interrupted run's state restored), `train_steps` (the loop), then the
sample and checkpoint, and `finish` (the summary, record.py). The training step is plain
PyTorch: no hook and no registry lookup inside the loop. Observers (`on_eval`) are called at
evaluation intervals only. Same seed, same losses on CPU: the seed fixes initialisation,
dropout and the data order. Not here: the run's state (state.py), what it records
(record.py), the sweep (toolkit.sweep), resuming's files (resume.py).

Under torchrun every process calls train_run with the same run (see distributed.py): the batch
of train.batch_size rows is the global one, each process trains on its contiguous share through
DistributedDataParallel, losses and evaluation sums are added up across processes, and rank 0
alone writes the run folder and calls the observers. A single process takes the same path with
every collective a no-op.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

from toolkit.api.contracts import RunInfo
from toolkit.api.manager import Plugins
from toolkit.data.batches import TrainBatches, eval_batches
from toolkit.data.resolve import check_vocab, tokenizer_record
from toolkit.data.tokens import TokenData
from toolkit.errors import ComponentError, one_line
from toolkit.files import to_json, write_atomic, write_json
from toolkit.inference.generate import generate
from toolkit.model.checkpoint import CHECKPOINT_FILE, load_initial_weights, save_checkpoint
from toolkit.model.gpt import build_model
from toolkit.model.probe import check_forward
from toolkit.spec.schema import RunSpec
from toolkit.training import distributed
from toolkit.training.budget import total_steps
from toolkit.training.optimizer import make_optimizer, make_schedule
from toolkit.training.record import aux_metrics, environment, finish, score_test
from toolkit.training.resume import (
    RESUME_FILE,
    read_resume_everywhere,
    saved_rng,
    truncate_metrics,
    write_resume_state,
)
from toolkit.training.state import Clock, Training
from toolkit.training.step import LossStep, evaluate_batches
from toolkit.training.throughput import (
    compiled,
    flops_per_token,
    resolve_device,
    resolve_precision,
)

# progress(step, total_steps, last_loss, metrics_or_None): the runner's display, not a hook.
Progress = Callable[[int, int, float, dict[str, float] | None], None]


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
    tr = set_up(run, data, tokenizer, folder, plugins)
    status, diverged_at = train_steps(tr, progress)
    # The checkpoint first: a sampler that fails must not cost the trained weights.
    if tr.world.main and status == "ok" and run.train.checkpoint:
        save_checkpoint(
            tr.config,
            tr.model.state_dict(),
            folder / CHECKPOINT_FILE,
            **tokenizer_record(run.data.tokenizer, tokenizer),
        )
    if tr.world.main and status == "ok" and run.sampling.max_new_tokens > 0:
        write_atomic(folder / "sample.txt", _sample(tr, tokenizer))
    columns = dict(columns or {})
    if status == "ok" and tr.test_eval is not None:
        columns.update(score_test(tr))
    return finish(tr, status, diverged_at, columns)


def set_up(
    run: RunSpec, data: TokenData, tokenizer: Any, folder: Path, plugins: Plugins
) -> Training:
    """Everything before the first step: the device, the model (initialised under the run's
    seed, or from model.init_from), the data order, the optimizer and schedule, the run
    folder's config.json and env.json, and an interrupted run's state restored."""
    t = run.train
    world = distributed.current()
    clock = Clock()
    if t.threads:
        torch.set_num_threads(t.threads)
    device = distributed.device_for(resolve_device(t.device), world)
    distributed.check_world(run, world, device)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 tensor cores for float32 matmuls
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(run.seed)
    config = run.model_config(data.vocab_size)
    check_vocab(tokenizer, config.vocab_size, "leave model.vocab_size unset to use the tokenizer's")
    model = build_model(config, plugins)
    if run.model.init_from:
        load_initial_weights(model, run.model.init_from)
    model = model.to(device)
    if world.active:  # the same initial weights everywhere, then each process its own dropout
        torch.manual_seed(distributed.mixed_seed(run.seed, world.rank))
    params, params_ne = model.num_params(), model.num_params(non_embedding=True)
    info = RunInfo(run.experiment, run.variant, run.seed, run.config(), folder, params, params_ne)

    folder.mkdir(parents=True, exist_ok=True)
    resume = read_resume_everywhere(folder, run.config_hash(), world, data.key)
    if world.main:
        stale = ["summary.json", "sample.txt", CHECKPOINT_FILE, "error.txt"]
        for name in stale if resume else [*stale, "metrics.jsonl", RESUME_FILE]:
            (folder / name).unlink(missing_ok=True)
        write_json(
            folder / "config.json",
            {
                **run.config(),
                "model_resolved": config.to_dict(),
                "config_hash": run.config_hash(),
                "data_key": data.key,  # the tokens it trains on: a changed corpus is noticed
            },
        )
        write_json(folder / "env.json", {**environment(device, run.seed), "world_size": world.size})

    context = config.context_length
    batches = TrainBatches(data.train, context, t.batch_size, run.seed, t.stride)
    steps = total_steps(run, batches.batches_per_epoch, flops_per_token(model))
    optimizer = make_optimizer(model, run, device, plugins)
    # Both splits are scored on the training stride grid (or as train.eval_windows says).
    where = {"stride": batches.stride, "windows": t.eval_windows}
    tr = Training(
        run=run,
        folder=folder,
        plugins=plugins,
        world=world,
        device=device,
        config=config,
        model=model,
        info=info,
        batches=batches,
        steps=steps,
        train_eval=eval_batches(data.train, context, t.batch_size, t.eval_batches, **where),
        val_eval=eval_batches(data.val, context, t.batch_size, t.eval_batches, **where),
        test_eval=(
            eval_batches(data.test, context, t.batch_size, t.eval_batches, **where, split="test")
            if len(data.test)
            else None
        ),
        # A copy: the cache's array may be read-only.
        token_bytes=torch.tensor(np.asarray(data.token_bytes), dtype=torch.long),
        optimizer=optimizer,
        schedule=torch.optim.lr_scheduler.LambdaLR(optimizer, make_schedule(run, steps, plugins)),
        clock=clock,
        precision=_precision(t.precision, device, resume),
        data_key=data.key,
    )
    if resume:
        _restore(tr, resume)
    if world.main:
        plugins.hook.on_run_start(run=info)
    tr.ddp = distributed.data_parallel(model, world, device)  # `model` in one process
    compile_steps(tr, t.compile)
    return tr


def compile_steps(tr: Training, compile: bool) -> None:
    """tr.step and tr.eval_step, compiled when `compile` says. In one process the whole
    LossStep (forward, cross-entropy, auxiliary losses) is one compiled module, for training
    and evaluation alike. Under DDP the compiled region is the DDP model alone (torch's DDP
    optimizer splits its graph at the gradient buckets), and evaluation never runs through the
    DDP wrapper, whose forward may join collectives while processes score different rows."""
    eager = LossStep(tr.ddp, tr.device, tr.precision, owner=tr.model)
    eval_eager = eager if tr.ddp is tr.model else LossStep(tr.model, tr.device, tr.precision)
    tr.step, tr.eval_step, tr.compiling = eager, eval_eager, False
    if not compile:
        return
    if tr.ddp is tr.model:
        step = compiled(eager)
        if step is not eager:
            tr.step = tr.eval_step = step
    else:
        model = compiled(tr.ddp)
        if model is not tr.ddp:
            tr.step = LossStep(model, tr.device, tr.precision, owner=tr.model)
            tr.eval_step = compiled(eval_eager)
    tr.compiling = tr.step is not eager


def _precision(asked: str, device: str, resume: dict[str, Any] | None) -> str:
    """train.precision resolved once for the whole run: an interrupted run goes on in the
    precision it began in (a later process could measure "auto" the other way), and under
    torchrun every process takes rank 0's choice."""
    if asked == "auto" and resume and resume.get("precision"):
        return resume["precision"]
    return distributed.broadcast_object(resolve_precision(device, asked))


def _restore(tr: Training, resume: dict[str, Any]) -> None:
    """Everything the next step depends on comes back exactly, so a resumed run ends with the
    same metrics as one never interrupted (on CPU, same seed)."""
    tr.model.load_state_dict(resume["model"])
    tr.optimizer.load_state_dict(resume["optimizer"])
    tr.schedule.load_state_dict(resume["schedule"])
    tr.batches.load_state(resume["batches"])
    torch.set_rng_state(saved_rng(resume, tr.world, tr.run.seed))
    tr.start_step, tr.resumed = resume["step"] + 1, True
    tr.clock.train_s, tr.clock.first_step_s = resume["train_s"], resume["first_step_s"]
    tr.clock.eval_s = resume.get("eval_s", 0.0)
    tr.clock.before = resume["elapsed_s"]
    if tr.world.main:  # the other processes return rank 0's summary: they need no `last`
        tr.last = truncate_metrics(tr.folder / "metrics.jsonl", resume["step"])


def train_steps(tr: Training, progress: Progress | None) -> tuple[str, int | None]:
    """The loop: a step, and every eval_interval steps (and at the end) an evaluation, its
    metrics line, a resume state and the on_eval observers. Returns (status, diverged_at)."""
    t, world, clock = tr.run.train, tr.world, tr.clock
    fallback_rng = torch.get_rng_state()  # to redo the first step eagerly if compiling fails
    metrics_file = None
    if world.main:
        mode = "a" if tr.resumed else "w"
        metrics_file = (tr.folder / "metrics.jsonl").open(mode, encoding="utf-8")
    tr.model.train()
    use_weights(tr.optimizer, "train")
    try:
        for step in range(tr.start_step, tr.steps + 1):
            tick = time.perf_counter()
            x, y = next(tr.batches)
            x = distributed.share(x, world).to(tr.device)
            y = distributed.share(y, world).to(tr.device)
            try:
                loss = _forward_backward(tr, x, y)
            except Exception as exc:
                if step != tr.start_step:
                    raise
                name_the_component(tr, x, exc)
                if not tr.compiling:
                    raise
                # torch.compile fails at the first call when a component cannot be compiled
                # (or no compiler is installed): say so once and train eagerly instead.
                print(
                    f"train.compile: torch.compile failed ({one_line(exc, 300)}); training eagerly",
                    file=sys.stderr,
                )
                compile_steps(tr, False)
                torch.set_rng_state(fallback_rng)
                tr.aux.clear()
                loss = _forward_backward(tr, x, y)
            if t.grad_clip > 0:
                nn.utils.clip_grad_norm_(tr.model.parameters(), t.grad_clip)
            tr.optimizer.step()
            tr.schedule.step()
            loss_value = loss.item()  # syncs, so the timing below is honest on GPUs too
            if world.active:  # the mean over processes, so all see the same (finite?) loss
                loss_value = distributed.all_reduce_sum([loss_value])[0] / world.size
            clock.train_s += time.perf_counter() - tick
            if step == 1:
                clock.first_step_s = clock.train_s
            if not math.isfinite(loss_value):
                return "diverged", step
            metrics = None
            if step % t.eval_interval == 0 or step == tr.steps:
                metrics = evaluate_and_save(tr, step, metrics_file)
            if progress and world.main:
                progress(step, tr.steps, loss_value, metrics)
    finally:
        if metrics_file is not None:
            metrics_file.close()
    return "ok", None


def name_the_component(tr: Training, x: torch.Tensor, exc: Exception) -> None:
    """When the first step fails, probe the model on that batch (one forward pass, RNG
    untouched) and raise a ComponentError naming the component at fault, if a component is;
    torch's own message ("mat1 and mat2 shapes cannot be multiplied") names none."""
    try:
        check_forward(tr.model, tr.plugins, x)
    except ComponentError as named:
        raise named from exc
    except Exception:
        return


def evaluate_and_save(tr: Training, step: int, metrics_file: TextIO | None) -> dict[str, Any]:
    """Score both splits' fixed batches, then (rank 0) append the metrics line, save the resume
    state (unless this is the last step) and call the on_eval observers."""
    world = tr.world
    tick = time.perf_counter()
    use_weights(tr.optimizer, "eval")  # after the last step they stay: the final model's
    scorer, token_bytes = tr.eval_step, tr.token_bytes
    train_loss, _ = evaluate_batches(scorer, tr.train_eval, token_bytes, tr.device, world=world)
    val_loss, val_bpb = evaluate_batches(scorer, tr.val_eval, token_bytes, tr.device, world=world)
    metrics = {
        "step": step,
        "tokens": step * tr.tokens_per_step,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_perplexity": math.exp(min(val_loss, 700.0)),
        "val_bpb": val_bpb,
        "lr": tr.schedule.get_last_lr()[0],
        "elapsed_s": tr.clock.elapsed(),
        "train_s": tr.clock.train_s,  # optimizer steps only (train.target_loss reads it)
        **aux_metrics(tr),
    }
    if step < tr.steps:
        use_weights(tr.optimizer, "train")  # before the resume state: it holds what trains
    tr.clock.eval_s += time.perf_counter() - tick
    # Every process's RNG state (dropout), so a resumed run draws the same masks.
    rngs = distributed.all_gather_object(torch.get_rng_state()) if step < tr.steps else []
    if world.main:
        assert metrics_file is not None
        metrics_file.write(to_json(metrics) + "\n")
        metrics_file.flush()
        if step < tr.steps:
            write_resume_state(tr.folder, {
                "config_hash": tr.run.config_hash(),
                "data_key": tr.data_key,
                "step": step,
                "model": tr.model.state_dict(),
                "optimizer": tr.optimizer.state_dict(),
                "schedule": tr.schedule.state_dict(),
                "batches": tr.batches.state(),
                "precision": tr.precision,  # "auto" as resolved: a resumed run keeps it
                "rng": rngs[0],
                **({"rng_ranks": rngs} if world.active else {}),
                "train_s": tr.clock.train_s,
                "first_step_s": tr.clock.first_step_s,
                "eval_s": tr.clock.eval_s,
                "elapsed_s": metrics["elapsed_s"],
            })  # fmt: skip
        tr.plugins.hook.on_eval(run=tr.info, step=step, metrics=metrics)
    tr.last = metrics
    return metrics


def use_weights(optimizer: torch.optim.Optimizer, mode: str) -> None:
    """The evaluation-weights contract (toolkit.api.contracts.EvaluationWeights): an optimizer
    with eval() and train() methods (schedule-free's) puts the weights to evaluate in the
    parameters with eval() and those that train with train(); `mode` names the call. Other
    optimizers have one set of weights: nothing to do."""
    switch = getattr(optimizer, mode, None)
    if callable(switch):
        switch()


def _forward_backward(tr: Training, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One step's gradients; returns the cross-entropy (what the progress shows and the
    divergence check reads). The auxiliary losses the forward left join the loss that is
    differentiated (inside tr.step), and their values are kept for the next metrics line."""
    loss, total, aux = tr.step(x, y)
    tr.optimizer.zero_grad(set_to_none=True)
    total.backward()
    for name, value in aux.items():
        tr.aux.setdefault(name, []).append(value.item())
    return loss


def _sample(tr: Training, tokenizer: Any) -> str:
    """The spec's prompt continued by the spec's sampler (seeded by the run's seed)."""
    run = tr.run
    sampler = tr.plugins.registry.build("sampler", run.sampling.sampler)
    prompt_ids = tokenizer.encode(run.sampling.prompt) or [tokenizer.eot_id]
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=tr.device)
    generator = torch.Generator(device=tr.device).manual_seed(run.seed)
    out = generate(
        tr.model,
        idx,
        run.sampling.max_new_tokens,
        sampler,
        tr.config.context_length,
        generator,
        tokenizer.eot_id,
    )
    return tokenizer.decode(out[0].tolist())
