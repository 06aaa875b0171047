"""The contenders benchmarks/run.py times in its training rounds, each in four modes (fp32,
bf16 autocast, torch.compile, compile + bf16), and how a round times them:

    toolkit_contender(plugins, precision, compile)   what `ablate run` trains: LossStep, the
                                                      registry's AdamW, gradient clipping
    hand_written_contender(precision, compile)       benchmarks/minimal_gpt.py, its loss inside
                                                      the compiled region, torch's AdamW
    nanogpt_contender(load_nanogpt(PATH), ...)       a nanoGPT checkout's own model.py, run as
                                                      its train.py runs it
    time_steps(contender, steps)                     median seconds per step
    side_by_side(ours, theirs)                       the median of the rounds' own ratios

The fixed config (issue 7): emb_dim 256, 6 layers, 8 heads, context 256, vocab 4096, batch 8,
dropout 0. Not here: the rounds themselves and the table (run.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.minimal_gpt import MinimalGPT
from toolkit.api.manager import Plugins
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model
from toolkit.spec.parse import parse_spec
from toolkit.training.optimizer import make_optimizer
from toolkit.training.step import LossStep
from toolkit.training.throughput import autocast, compiled

CONFIG = dict(
    vocab_size=4096, context_length=256, emb_dim=256, n_heads=8, n_layers=6, drop_rate=0.0
)
BATCH = 8
GRAD_CLIP = 1.0  # both models clip, as train.grad_clip's default does
# (label, precision, compiled)
MODES = [
    ("fp32", "fp32", False),
    ("bf16", "bf16-mixed", False),
    ("compile", "fp32", True),
    ("compile + bf16", "bf16-mixed", True),
]


class HandWrittenLoss(nn.Module):
    """The hand-written GPT's forward and loss, one module so compiling takes both (as
    nanoGPT's model computes its loss inside forward)."""

    def __init__(self, model: nn.Module, precision: str) -> None:
        super().__init__()
        self.model, self.precision = model, precision

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast("cpu", self.precision):
            logits = self.model(x)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


class Contender:
    """One model in one mode: a loss function (compiled when the mode says), its parameters
    and optimizer, kept across rounds so compiling happens once."""

    def __init__(self, model: nn.Module, loss: nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer
        self.loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = loss
        self.first_s = 0.0  # the first call: compiling, for the compiled modes

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        loss = self.loss(x, y)
        loss = loss[1] if isinstance(loss, tuple) else loss  # LossStep: the differentiated one
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.optimizer.step()
        loss.item()


def toolkit_contender(plugins: Plugins, precision: str, compile: bool) -> Contender:
    """The toolkit's model with what `ablate run` builds around it: LossStep (compiled whole
    when train.compile says) and the spec's default optimizer from the registry."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**CONFIG, attention="sdpa"), plugins)
    run = parse_spec(
        {"name": "bench", "model": {"attention": "sdpa"}, "train": {"precision": precision}},
        plugins=plugins,
    ).runs[0]
    step = LossStep(model, "cpu", precision)
    return Contender(
        model, compiled(step) if compile else step, make_optimizer(model, run, "cpu", plugins)
    )


def hand_written_contender(precision: str, compile: bool) -> Contender:
    torch.manual_seed(0)
    c = CONFIG
    model = MinimalGPT(
        c["vocab_size"], c["context_length"], c["emb_dim"], c["n_heads"], c["n_layers"]
    )
    loss = HandWrittenLoss(model, precision)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)  # torch's default: foreach
    return Contender(model, torch.compile(loss) if compile else loss, optimizer)


class NanoGPTLoss(nn.Module):
    """nanoGPT's training forward as its train.py runs it: autocast around the (compiled)
    model, whose forward computes the loss when given targets."""

    def __init__(self, model: Callable, precision: str) -> None:
        super().__init__()
        self.model, self.precision = model, precision

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast("cpu", self.precision):
            return self.model(x, y)[1]


def load_nanogpt(folder: str) -> Any:
    """nanoGPT's model.py from a checkout, loaded by its path; a one-line SystemExit when
    `folder` holds none."""
    path = Path(folder).expanduser() / "model.py"
    if not path.is_file():
        raise SystemExit(
            f"benchmarks/run.py: --nanogpt {folder}: no model.py there; give the folder of a "
            "nanoGPT checkout (git clone https://github.com/karpathy/nanoGPT)"
        )
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks the module up there
    spec.loader.exec_module(module)
    return module


def nanogpt_contender(module: Any, precision: str, compile: bool) -> Contender:
    """nanoGPT's GPT at the benchmark's config (biases as GPT-2's, its head tied to the token
    embedding, as nanoGPT always does) with the optimizer its configure_optimizers gives on a
    CPU; what it prints goes nowhere."""
    torch.manual_seed(0)
    c = CONFIG
    config = module.GPTConfig(
        block_size=c["context_length"],
        vocab_size=c["vocab_size"],
        n_layer=c["n_layers"],
        n_head=c["n_heads"],
        n_embd=c["emb_dim"],
        dropout=0.0,
        bias=True,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        model = module.GPT(config)
        optimizer = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cpu")
    loss = NanoGPTLoss(torch.compile(model) if compile else model, precision)
    return Contender(model, loss, optimizer)


def time_steps(contender: Contender, steps: int) -> float:
    """Median seconds per step over `steps` steps (the first call of a fresh contender, which
    compiles or warms up, is timed apart)."""
    x = torch.randint(0, CONFIG["vocab_size"], (BATCH, CONFIG["context_length"]))
    y = torch.randint(0, CONFIG["vocab_size"], (BATCH, CONFIG["context_length"]))
    if not contender.first_s:
        tick = time.perf_counter()
        contender.step(x, y)
        contender.first_s = time.perf_counter() - tick
        contender.step(x, y)
    times = []
    for _ in range(steps):
        tick = time.perf_counter()
        contender.step(x, y)
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def side_by_side(ours: list[float], theirs: list[float]) -> float:
    """The median over rounds of theirs[r] / ours[r]: how many times faster `ours` is, from
    seconds measured side by side in each round. Load that drifts between rounds slows both
    alike and cancels in each round's ratio; a ratio of the two medians would not cancel it."""
    return statistics.median(t / o for o, t in zip(ours, theirs, strict=True))
