"""How fast a model trains against what the hardware can do: FLOPs per token, the measured peak
of a matrix product, and model FLOPs utilisation (MFU).

FLOPs per token = 6 x (weights used in matrix products, the LM head included)
                  + 12 x n_layers x emb_dim x context_length
where a mixture of experts' weights count as much as one token uses (toolkit.model.gpt:
`active_fraction`), so FLOPs follow the active parameters, not the total.
(2 per multiply-add, x3 for forward and backward; the second term is the attention scores and
the weighted sum of values). The peak is measured, not looked up: a large matrix product in
the training precision, on the threads training uses. Not here: timing training itself
(loop.py) or the benchmark tables (benchmarks/). Also the speed switches a run can turn on:
bf16 autocast (`autocast`) and torch.compile with an eager fallback (`compiled`).
"""

from __future__ import annotations

import platform
import sys
import time

import torch
from torch import nn

from toolkit.errors import one_line
from toolkit.model.gpt import active_shares

# The dtype each precision (toolkit.spec.schema.PRECISIONS) computes matrix products in.
DTYPES = {"fp32": torch.float32, "bf16-mixed": torch.bfloat16}


def matmul_params(model: nn.Module) -> int:
    """Weights of every nn.Linear, each counted once (a tied head is a matrix product too) and
    as much as one token uses (active_shares)."""
    linears = {id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Linear)}
    share = active_shares(model)
    return round(sum(w.numel() * share.get(i, 1.0) for i, w in linears.items()))


def flops_per_token(model: nn.Module) -> float:
    """Training FLOPs per token of a built GPT (see the module docstring)."""
    c = model.config
    return 6.0 * matmul_params(model) + 12.0 * c.n_layers * c.emb_dim * c.context_length


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' if available, then 'mps', then 'cpu'; anything else as given."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


_PEAKS: dict[tuple[str, str, int], float] = {}


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC", say): Linux's /proc/cpuinfo "model name", else what
    `platform` knows. Hosts of one architecture differ in speed and in how they round the same
    sums, so runs and benchmarks record it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def peak_flops(device: str = "cpu", precision: str = "fp32", size: int | None = None) -> float:
    """matmul_flops(), measured once per process (and thread count) and kept."""
    key = (device, precision, torch.get_num_threads())
    if key not in _PEAKS:
        _PEAKS[key] = matmul_flops(device, precision, size)
    return _PEAKS[key]


def cpu_peak(precision: str, threads: int) -> float:
    """peak_flops() on the CPU with `threads` torch threads (this process's count is restored
    after): what a worker training on that many threads would measure, measured here."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return peak_flops("cpu", precision)
    finally:
        torch.set_num_threads(before)


def adopt_peaks(peaks: tuple[tuple[str, int, float], ...]) -> None:
    """Take CPU peaks measured by another process, (precision, threads, FLOP/s) each, as this
    process's own: a sweep measures them once before any worker starts (toolkit.sweep.jobs), so
    every run resolves "auto" the same way and reports MFU against the same figure."""
    for precision, threads, flops in peaks:
        _PEAKS[("cpu", precision, threads)] = flops


def matmul_flops(device: str = "cpu", precision: str = "fp32", size: int | None = None) -> float:
    """FLOP/s of a large square matrix product in the precision's dtype on `device`, the best
    of several repeats, measured now. Other load on the machine only lowers it, in bursts, so
    on a CPU it takes many short products (1024 x 1024, 24 of them, 0.3-0.7 s in float32 on
    2 cores) rather than a few long ones: on a shared 2-core host, eight fresh processes
    measured 157-187 GFLOP/s this way against 143-173 with four 2048 x 2048 products. A caller
    that can afford to measures again later and keeps the highest (benchmarks/run.py does).

    A CPU without native kernels for the dtype (bfloat16 on an AVX2-only CPU: 1 GFLOP/s
    against float32's 104 on a 2-core AMD EPYC) would take a minute over those 24 products; a
    probe a quarter the size sees that in milliseconds, and the measurement keeps to that size."""
    cuda = device.startswith("cuda")
    n = size or (8192 if cuda else 1024)
    repeats = 4 if cuda else 24
    if not cuda and size is None and _best_seconds(device, precision, n // 4, 2) * 64 > SLOW_S:
        n //= 4
    return 2.0 * n**3 / _best_seconds(device, precision, n, repeats)


# A CPU product of the default size slower than this (under 10 GFLOP/s) is measured at a quarter
# of the size: far below any native kernel, so the smaller size changes nothing that matters.
SLOW_S = 0.2


def _best_seconds(device: str, precision: str, n: int, repeats: int) -> float:
    """The fastest of `repeats` products of two n x n matrices of the precision's dtype."""
    dtype = DTYPES[precision]
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        tick = time.perf_counter()
        (a @ b).sum().item()  # .item() waits for the result on any device
        best = min(best, time.perf_counter() - tick)
    return best


# "auto" takes bfloat16 when its matrix products are at least this much faster than float32's:
# a margin, so that a host where the two are close does not flip between runs.
BF16_MARGIN = 1.25


def resolve_precision(device: str, precision: str) -> str:
    """train.precision with "auto" resolved: "bf16-mixed" on a CUDA device that supports
    bfloat16, and on a CPU whose measured bf16 matrix-product peak is BF16_MARGIN times its
    fp32 peak or more (measured once per process); "fp32" otherwise (MPS included)."""
    if precision != "auto":
        return precision
    kind = device.split(":")[0]
    if kind == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "fp32"
    if kind == "cpu":
        faster = peak_flops(device, "bf16-mixed") >= BF16_MARGIN * peak_flops(device, "fp32")
        return "bf16-mixed" if faster else "fp32"
    return "fp32"


def slow_bf16(device: str) -> str | None:
    """What to tell a user who asks for bf16-mixed on `device` (resolved) when this CPU
    multiplies bfloat16 matrices at under half float32's rate (no native bfloat16: an
    AVX2-only CPU runs them at about 1% of it); None where bf16 is not the slower."""
    if device != "cpu":
        return None
    bf16, fp32 = peak_flops(device, "bf16-mixed"), peak_flops(device, "fp32")
    if bf16 >= fp32 / 2:
        return None
    return (
        f"train.precision = 'bf16-mixed' on this CPU, whose bfloat16 matrix products run at "
        f"{bf16 / 1e9:,.1f} GFLOP/s against float32's {fp32 / 1e9:,.0f} (no native bfloat16): "
        f"training will be many times slower than in fp32; set train.precision = 'auto' or "
        f"'fp32' unless you want bfloat16's numerics"
    )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def tokens_per_second(
    steps: int, tokens_per_step: int, train_s: float, first_step_s: float
) -> float | None:
    """Training tokens per second of step time, leaving out the first step (set-up costs that a
    longer run would not repeat) when there are others."""
    if steps > 1 and train_s > first_step_s:
        return (steps - 1) * tokens_per_step / (train_s - first_step_s)
    return steps * tokens_per_step / train_s if train_s else None


def autocast(device: str, precision: str) -> torch.autocast:
    """bfloat16 autocast for "bf16-mixed" (weights, optimizer and loss stay float32); the
    precision must be resolved ("auto" is not)."""
    return torch.autocast(
        device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16-mixed"
    )


def compiled(model: nn.Module) -> nn.Module:
    """torch.compile(model), or the model itself (saying why) where compiling is unavailable.
    Compiling happens at the first call; loop.py falls back to eager if that fails."""
    try:
        return torch.compile(model)
    except Exception as exc:  # e.g. an unsupported Python or platform
        print(
            f"train.compile: torch.compile unavailable ({one_line(exc, 300)}); training eagerly",
            file=sys.stderr,
        )
        return model
