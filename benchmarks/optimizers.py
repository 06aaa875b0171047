"""What each registered optimizer's step costs on this machine: `python benchmarks/optimizers.py`.

Times optimizer.step() alone (gradients fixed, nothing else) on the speed benchmark's model
(emb_dim 256, 6 layers, 8 heads, context 256, vocab 4096: 6.9M parameters), as each optimizer
is built for a run (toolkit.training.optimizer.make_optimizer, weight decay on the matrices),
and the memory its state holds after a step, in bytes per parameter; muon twice, with its
Newton-Schulz iterations in bfloat16 (torch's, the default) and in float32 (ns_dtype). Rounds step every
optimizer in turn, because other load moves single timings by tens of percent: a step time is
the median over rounds and a ratio to AdamW the median of each round's own ratio. The share of
a training step it takes comes from `--step-ms` (a training step's time, for example from
`benchmarks/run.py --only training`: batch 8 x 256 tokens / its fp32 tokens/s). Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from toolkit.api.manager import Plugins  # noqa: E402
from toolkit.model.config import ModelConfig  # noqa: E402
from toolkit.model.gpt import build_model  # noqa: E402
from toolkit.spec.parse import parse_spec  # noqa: E402
from toolkit.training.optimizer import make_optimizer  # noqa: E402

CONFIG = {"vocab_size": 4096, "context_length": 256, "emb_dim": 256, "n_heads": 8, "n_layers": 6}


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in the optimizer's state (moments, iterates, step counters)."""
    return sum(
        v.numel() * v.element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if isinstance(v, torch.Tensor)
    )


def build(choice: Any, plugins: Plugins) -> tuple[torch.optim.Optimizer, int]:
    """(the optimizer `ablate run` builds for train.optimizer = choice on the benchmark model,
    with every gradient set, and the model's parameter count)."""
    doc = {"name": "bench", "model": CONFIG, "train": {"optimizer": choice, "max_steps": 1}}
    run = parse_spec(doc, plugins=plugins).runs[0]
    torch.manual_seed(0)
    model = build_model(ModelConfig(**CONFIG), plugins)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    return make_optimizer(model, run, "cpu", plugins), sum(p.numel() for p in model.parameters())


def time_step(optimizer: torch.optim.Optimizer, steps: int) -> float:
    """Seconds per optimizer.step(), over `steps` steps."""
    tick = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - tick) / steps


def ratios(times: dict[str, list[float]], base: str) -> dict[str, float]:
    """Each optimizer's median over rounds of its step time / the base's in the same round."""
    return {
        name: statistics.median(t / b for t, b in zip(rounds, times[base], strict=True))
        for name, rounds in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every optimizer (5)")
    parser.add_argument("--steps", type=int, default=10, help="steps timed per round (10)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--step-ms", type=float, help="a training step's ms, for the share")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    plugins = Plugins()
    choices: dict[str, Any] = {name: name for name in plugins.registry.names("optimizer")}
    if "muon" in choices:  # its Newton-Schulz steps in float32 too (bfloat16 by default)
        choices["muon/float32"] = {"name": "muon", "ns_dtype": "float32"}
    names = list(choices)
    built = {name: build(choices[name], plugins) for name in names}
    for optimizer, _ in built.values():
        optimizer.step()  # state allocated, kernels warm
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            times[name].append(time_step(built[name][0], args.steps))
    relative = ratios(times, "adamw")
    print(
        f"optimizer.step() on {built['adamw'][1]:,} parameters, {torch.get_num_threads()} "
        f"threads, median of {args.rounds} rounds of {args.steps} steps"
    )
    share = "  % of a step" if args.step_ms else ""
    print(f"{'optimizer':<14} {'ms/step':>8} {'x adamw':>8} {'state B/param':>14}{share}")
    for name in names:
        optimizer, n = built[name]
        ms = statistics.median(times[name]) * 1e3
        line = f"{name:<14} {ms:>8.2f} {relative[name]:>8.2f} {state_bytes(optimizer) / n:>14.2f}"
        if args.step_ms:
            line += f"  {100 * ms / args.step_ms:>11.1f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
