"""Sweep wall time by executor: `python benchmarks/executors.py [--runs N] [--steps S] [--no-ray]`.

Trains the same sweep (the quick start's model: micro preset, byte tokenizer, batch 16, N runs
of S steps) with the local, processes and ray executors, in fresh output folders, and prints
for each: wall time, runs per minute, the summed training+evaluation time of its runs, and the
fixed cost per run (starting a worker, importing torch, loading the cached tokens): wall x
slots - summed run time, divided by the runs. It also checks that the three executors logged
the same validation losses. Not a test: it passes or fails nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from toolkit.api.manager import Plugins  # noqa: E402
from toolkit.data.encode import usable_cores  # noqa: E402
from toolkit.spec.parse import parse_spec  # noqa: E402
from toolkit.sweep.runner import run  # noqa: E402


def sweep_doc(runs: int, steps: int, threads: int | None) -> dict:
    return {
        "name": "bench-executors",
        "seeds": list(range(runs // 2)),
        "data": {"corpus": "pydoc", "tokenizer": "bytes"},
        "model": {"preset": "micro", "attention": "sdpa", "drop_rate": 0.0},
        "train": {
            "batch_size": 16,
            "max_steps": steps,
            "eval_interval": steps,
            "eval_batches": 4,
            "lr": 2e-3,
            **({"threads": threads} if threads else {}),
        },
        "sampling": {"max_new_tokens": 0},
        "grid": {"model.norm": ["layernorm", "rmsnorm"]},
    }


def measure(name: str, executor: dict, doc: dict, out: Path, slots: int) -> dict:
    plugins = Plugins(autoload=False)
    spec = parse_spec(doc, plugins=plugins)
    tick = time.perf_counter()
    table = run(spec, out / name, plugins=plugins, progress=False, executor=executor)
    wall = time.perf_counter() - tick
    busy = float((table["train_s"] + table["eval_s"]).sum())
    n = len(table)
    return {
        "executor": name,
        "wall_s": wall,
        "runs_per_min": 60 * n / wall,
        "run_s": busy,
        "fixed_per_run_s": max(0.0, (wall * slots - busy) / n),
        "val_loss": table["val_loss"].round(10).tolist(),
        "status": sorted(set(table["status"])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="runs in the sweep (even)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args(argv)
    cores = usable_cores()
    # One thread per run everywhere, so the losses can be compared bit for bit; the local
    # executor also runs with torch's default threads, which is what a user gets by default.
    single = sweep_doc(args.runs, args.steps, threads=1)
    default = sweep_doc(args.runs, args.steps, threads=None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        rows.append(measure("local", {"name": "local"}, default, out, 1))
        rows.append(measure("local-1-thread", {"name": "local"}, single, out, 1))
        rows.append(measure("processes", {"name": "processes", "jobs": cores}, single, out, cores))
        if not args.no_ray:
            import ray

            ray.init(num_cpus=cores, include_dashboard=False, logging_level="warning")
            try:
                rows.append(measure("ray", {"name": "ray"}, single, out, cores))
            finally:
                ray.shutdown()
    print(f"{args.runs} runs x {args.steps} steps, micro preset, {cores} cores")
    print(f"{'executor':<16}{'wall s':>8}{'runs/min':>10}{'run s':>8}{'fixed s/run':>13}")
    for r in rows:
        print(
            f"{r['executor']:<16}{r['wall_s']:>8.1f}{r['runs_per_min']:>10.2f}"
            f"{r['run_s']:>8.1f}{r['fixed_per_run_s']:>13.2f}  {','.join(r['status'])}"
        )
    same = {r["executor"]: r["val_loss"] for r in rows if r["executor"] != "local"}
    reference = same["local-1-thread"]
    agree = all(losses == reference for losses in same.values())
    print(f"same val_loss on every executor at 1 thread per run: {'yes' if agree else 'NO'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
