"""A training run's state between set-up and summary (`Training`) and where its time went
(`Clock`): what loop.py builds and steps, and record.py summarizes. Not here: building it
(loop.set_up) or saving it for a resume (resume.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolkit.api.contracts import RunInfo
from toolkit.api.manager import Plugins
from toolkit.data.batches import TrainBatches
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import GPT
from toolkit.spec.schema import RunSpec
from toolkit.training.distributed import World
from toolkit.training.step import Batches, LossStep


@dataclass
class Clock:
    """Where a run's time went; an interrupted run's part carries over when it resumes."""

    started: float = field(default_factory=time.perf_counter)  # this process's start
    before: float = 0.0  # wall seconds of the interrupted part
    train_s: float = 0.0  # in training steps (evaluation excluded)
    first_step_s: float = 0.0  # one-time set-up (allocations, thread pools) lands in step 1
    eval_s: float = 0.0

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.started


@dataclass
class Training:
    """One run between set-up and summary: what the loop reads and changes."""

    run: RunSpec
    folder: Path
    plugins: Plugins
    world: World
    device: str
    config: ModelConfig
    model: GPT
    info: RunInfo
    batches: TrainBatches
    steps: int
    train_eval: Batches
    val_eval: Batches
    test_eval: Batches | None  # None: the data holds out no test split
    token_bytes: torch.Tensor
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    clock: Clock
    start_step: int = 1
    resumed: bool = False
    last: dict[str, Any] = field(default_factory=dict)  # the latest evaluation's metrics
    # Each auxiliary loss's values since the last evaluation (GPT.gather_aux_losses), by name.
    aux: dict[str, list[float]] = field(default_factory=dict)
    precision: str = "fp32"  # train.precision, "auto" resolved (throughput.resolve_precision)
    data_key: str = ""  # the token data's cache key: equal keys, identical token arrays
    ddp: nn.Module | None = None  # the model in DDP (the model itself in one process)
    # What a step runs (forward, loss and auxiliary losses) and what evaluation runs: compiled
    # when train.compile says, and the same module in one process.
    step: LossStep | None = None
    eval_step: LossStep | None = None
    compiling: bool = False  # train.compile took effect (until a fallback to eager)

    @property
    def tokens_per_step(self) -> int:
        return self.run.train.batch_size * self.config.context_length  # the global batch
