"""GPU benchmark: `python benchmarks/gpu.py [--batch-size N] [--steps N] [--peak-tflops X] [--json FILE]`.

One command, under 10 minutes on one GPU, two measurements through the toolkit's own Python
API (`toolkit.run`, the default in-process executor):

1. gpt2-small (124M parameters, context 1024, sdpa attention, no dropout) trained in
   bf16-mixed with torch.compile on the built-in pydoc corpus in GPT-2 tokens: tokens/s, MFU
   against the GPU's published dense bf16 peak (PUBLISHED_PEAKS) and against the peak the run
   measured itself (summary.json's `mfu`), peak GPU memory, and the first step's time, which
   holds the compiling. The corpus is 139k tokens, so the run repeats it: the losses say
   nothing here, the speed does not depend on them.
2. The quick-start spec (experiments/quickstart.toml) on the same device: wall time and each
   variant's validation loss.

Prints one table; `--json FILE` also writes the figures. Without a GPU it says so and exits
with code 2, unless `--smoke` is given: a tiny config (the micro preset, context 64, 3 steps,
fp32, no compile) through the same functions, so the script itself can be checked on a CPU
(`--device cpu --smoke`). Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import toolkit  # noqa: E402
from toolkit.api.manager import Plugins  # noqa: E402
from toolkit.spec.parse import load_spec, parse_spec  # noqa: E402
from toolkit.spec.schema import Spec  # noqa: E402
from toolkit.training.optimizer import make_optimizer  # noqa: E402

QUICKSTART = ROOT / "experiments" / "quickstart.toml"

# Published dense (no sparsity) bf16 tensor-core peaks in TFLOPS, from NVIDIA's datasheets and
# architecture whitepapers; where a sheet prints only the with-sparsity figure, half of it. The
# first entry whose name is a whole word of torch.cuda.get_device_name() wins, so the more
# specific names come first ("H100 PCIe" before "H100"; whole words keep "A100" from matching
# "RTX A1000" and "L4" from matching "L40S"). None: the GPU has no bf16 tensor cores.
PUBLISHED_PEAKS: tuple[tuple[str, float | None, str], ...] = (
    ("H100 PCIe", 756.5, "H100 PCIe datasheet"),
    ("H100 NVL", 835.5, "H100 NVL datasheet"),
    ("H100", 989.5, "H100 SXM datasheet"),  # "NVIDIA H100 80GB HBM3" is the SXM part
    ("H200 NVL", 835.5, "H200 NVL datasheet"),
    ("H200", 989.5, "H200 SXM datasheet"),
    ("A100", 312.0, "A100 datasheet (40 and 80 GB, SXM and PCIe alike)"),
    ("A10G", 125.0, "the A10's datasheet (NVIDIA publishes none for AWS's A10G)"),
    ("A10", 125.0, "A10 datasheet"),
    ("L40S", 362.05, "L40S datasheet"),
    ("L40", 181.05, "L40 datasheet"),
    ("L4", 121.0, "L4 datasheet"),
    ("RTX 4090", 165.2, "Ada whitepaper, FP32 accumulate"),
    ("RTX 3090", 71.0, "Ampere GA102 whitepaper, FP32 accumulate"),
    ("V100", None, "V100 has no bf16 tensor cores (fp16: 125 TFLOPS SXM2, 112 PCIe)"),
)


def published_peak(device_name: str, override: float | None = None) -> tuple[float | None, str]:
    """(dense bf16 TFLOPS to measure MFU against, where the figure comes from): the override
    (--peak-tflops) when given, else PUBLISHED_PEAKS' figure, else None.
    "NVIDIA H100 80GB HBM3" -> (989.5, "H100 SXM datasheet")."""
    if override is not None:
        return override, "--peak-tflops"
    for name, tflops, source in PUBLISHED_PEAKS:
        if re.search(rf"\b{re.escape(name)}\b", device_name, re.IGNORECASE):
            return tflops, source
    return None, f"no published peak known for {device_name!r}: give --peak-tflops N"


@dataclass
class Setting:
    """What the benchmark trains: the full run, or the smoke run's tiny stand-in."""

    preset: str
    context_length: int
    batch_size: int
    steps: int
    precision: str
    compile: bool
    eval_batches: int
    quickstart_overrides: tuple[str, ...] = ()  # --set strings on top of the quick start


FULL = Setting("gpt2-small", 1024, 16, 300, "bf16-mixed", True, 2)
SMOKE = Setting(
    "micro", 64, 2, 3, "fp32", False, 1,
    ("seeds=[0]", "model.context_length=32", "train.batch_size=2", "train.max_steps=2",
     "train.warmup_steps=0", "train.eval_interval=2", "train.eval_batches=1",
     "sampling.max_new_tokens=4"),
)  # fmt: skip


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{device} ({platform.processor() or platform.machine()})"


def training_doc(s: Setting, device: str) -> dict[str, Any]:
    """The spec document of the timed run: one run, evaluated once at the end, no sample, no
    checkpoint (neither is part of a training step)."""
    return {
        "name": f"gpu-{s.preset}",
        "seeds": [0],
        "data": {"corpus": "pydoc", "tokenizer": "gpt2"},
        # sdpa: the fused (flash) attention kernel; no dropout, as speed runs train.
        "model": {
            "preset": s.preset,
            "context_length": s.context_length,
            "attention": "sdpa",
            "drop_rate": 0.0,
        },
        "train": {
            "device": device,
            "precision": s.precision,
            "compile": s.compile,
            "batch_size": s.batch_size,
            "max_steps": s.steps,
            "eval_interval": s.steps,
            "eval_batches": s.eval_batches,
            "checkpoint": False,
        },
        "sampling": {"max_new_tokens": 0},
    }


def speed_switches(spec: Spec, device: str, plugins: Plugins) -> dict[str, bool]:
    """What loop.py switched on: TF32 (read after the run) and a fused AdamW (the toolkit's
    optimizer factory called as the run calls it, on a probe layer on the same device)."""
    probe = torch.nn.Linear(2, 2).to(device)
    optimizer = make_optimizer(probe, spec.runs[0], device, plugins)
    return {
        "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "fused_adamw": bool(optimizer.defaults.get("fused")),
    }


def bench_training(
    s: Setting, device: str, peak_override: float | None, plugins: Plugins, out: Path
) -> dict[str, Any]:
    spec = parse_spec(training_doc(s, device), plugins=plugins)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    toolkit.run(spec, out, plugins=plugins, progress=False)
    memory = torch.cuda.max_memory_allocated(device) if cuda else None
    summary = json.loads((out / spec.runs[0].folder / "summary.json").read_text())
    name = device_name(device)
    peak, source = published_peak(name, peak_override)
    rate, fpt = summary["tokens_per_s"], summary["flops_per_token"]
    return {
        "device": device,
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        **{k: v for k, v in asdict(s).items() if k != "quickstart_overrides"},
        "compiled": summary["compiled"],
        **speed_switches(spec, device, plugins),
        "status": summary["status"],
        "params": summary["params"],
        "tokens_per_s": rate,
        "flops_per_token": fpt,
        "peak_tflops_published": peak,
        "peak_source": source,
        "mfu_published": fpt * rate / (peak * 1e12) if peak and rate else None,
        "mfu_measured": summary["mfu"],
        "peak_tflops_measured": summary["peak_flops"] / 1e12,
        "max_memory_allocated_bytes": memory,
        "first_step_s": summary["first_step_s"],  # compiling lands in step 1
        "train_s": summary["train_s"],
        "eval_s": summary["eval_s"],
        "run_wall_s": summary["wall_s"],
        "train_loss": summary["train_loss"],
        "val_loss": summary["val_loss"],
    }


def bench_quickstart(s: Setting, device: str, plugins: Plugins, out: Path) -> dict[str, Any]:
    overrides = [f"train.device={device}", *s.quickstart_overrides]
    spec = load_spec(QUICKSTART, overrides, plugins=plugins)
    tick = time.perf_counter()
    table = toolkit.run(spec, out, plugins=plugins, progress=False)
    wall = time.perf_counter() - tick
    by_variant = table.groupby("variant", sort=False)["val_loss"]
    return {
        "quickstart_wall_s": wall,
        "quickstart_train_s": float(table["train_s"].sum()),
        "quickstart_runs": len(table),
        "quickstart_seeds": len(spec.seeds),
        "quickstart_val_loss": {str(k): float(v) for k, v in by_variant.mean().items()},
    }


def no_device(device: str, smoke: bool) -> str | None:
    """Why this invocation cannot run (one line), or None."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        return (
            f"benchmarks/gpu.py: no CUDA GPU visible to torch {torch.__version__}; run it on a "
            f"GPU machine, or check the script with --device cpu --smoke"
        )
    if not device.startswith("cuda") and not smoke:
        return (
            f"benchmarks/gpu.py: the full benchmark trains gpt2-small on a GPU; "
            f"on --device {device} give --smoke (a tiny config that checks the script)"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N; cpu only with --smoke")
    parser.add_argument("--smoke", action="store_true", help="a tiny config: checks the script")
    parser.add_argument("--batch-size", type=int, help=f"sequences per step ({FULL.batch_size})")
    parser.add_argument("--steps", type=int, help=f"training steps ({FULL.steps})")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, for MFU")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    why = no_device(args.device, args.smoke)
    if why:
        print(why, file=sys.stderr)
        return 2
    base = SMOKE if args.smoke else FULL
    setting = Setting(**{
        **asdict(base),
        "batch_size": args.batch_size or base.batch_size,
        "steps": args.steps or base.steps,
    })  # fmt: skip
    plugins = Plugins(autoload=False)
    tick = time.perf_counter()
    results: dict[str, Any] = {"mode": "smoke" if args.smoke else "full"}
    with tempfile.TemporaryDirectory(prefix="ablate-gpu-bench-") as tmp:
        print(f"running: {setting.preset} training on {args.device} ...", file=sys.stderr)
        results.update(
            bench_training(setting, args.device, args.peak_tflops, plugins, Path(tmp) / "train")
        )
        print(f"running: quick-start spec on {args.device} ...", file=sys.stderr)
        results.update(bench_quickstart(setting, args.device, plugins, Path(tmp) / "quickstart"))
    results["total_wall_s"] = time.perf_counter() - tick
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def format_table(r: dict[str, Any]) -> str:
    mfu = "unknown" if r["mfu_published"] is None else f"{r['mfu_published']:.1%}"
    peak = r["peak_tflops_published"]
    memory = r["max_memory_allocated_bytes"]
    first = r["first_step_s"]
    compiled = "compiled" if r["compiled"] else "eager"
    if r["compile"] and not r["compiled"]:
        compiled = "eager: torch.compile failed, see stderr"
    rows = [
        ("device", r["device_name"], f"torch {r['torch']}, CUDA {r['cuda']}"),
        (
            "model",
            f"{r['preset']}, {r['params']:,} params",
            f"context {r['context_length']}, batch {r['batch_size']}, {r['steps']} steps",
        ),
        ("precision", r["precision"], compiled),
        (
            "TF32 / fused AdamW",
            f"{'on' if r['tf32'] else 'off'} / {'on' if r['fused_adamw'] else 'off'}",
            "TF32 set by the toolkit on CUDA; fused AdamW on CUDA and CPU",
        ),
        ("train tokens/s", f"{r['tokens_per_s']:,.0f}", "step 1 left out"),
        (
            "MFU, published bf16 peak",
            mfu,
            f"{peak:g} TFLOPS: {r['peak_source']}" if peak else r["peak_source"],
        ),
        (
            "MFU, measured matmul peak",
            f"{r['mfu_measured']:.1%}",
            f"{r['peak_tflops_measured']:,.2f} TFLOPS measured (summary.json's mfu)",
        ),
        (
            "peak memory",
            "n/a" if memory is None else f"{memory / 2**30:.2f} GiB",
            "torch.cuda.max_memory_allocated" if memory is not None else "CUDA only",
        ),
        (
            "first step",
            "n/a" if first is None else f"{first:.1f} s",
            "holds the compiling" if r["compiled"] else "set-up",
        ),
        ("training / evaluation", f"{r['train_s']:.1f} s / {r['eval_s']:.1f} s", ""),
        (
            "quick-start spec",
            f"{r['quickstart_wall_s']:.1f} s wall",
            f"{r['quickstart_runs']} runs, {r['quickstart_train_s']:.1f} s in steps",
        ),
    ]
    seeds = r["quickstart_seeds"]
    for variant, loss in r["quickstart_val_loss"].items():
        rows.append((f"  {variant}", f"{loss:.3f}", f"val loss, mean of {seeds} seed(s)"))
    rows.append(("total", f"{r['total_wall_s'] / 60:.1f} min", ""))
    width = max(len(a) for a, _, _ in rows)
    value = max(len(b) for _, b, _ in rows)
    return "\n".join(f"{a:<{width}}  {b:>{value}}  {c}".rstrip() for a, b, c in rows)


if __name__ == "__main__":
    raise SystemExit(main())
