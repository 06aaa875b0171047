"""How fast a model trains against what the hardware can do: FLOPs per token, the measured peak
of a matrix product, and model FLOPs utilisation (MFU).

FLOPs per token = 6 x (weights used in matrix products, the LM head included)
                  + 12 x n_layers x emb_dim x context_length
(2 per multiply-add, x3 for forward and backward; the second term is the attention scores and
the weighted sum of values). The peak is measured, not looked up: a large matrix product in
the training precision, on the threads training uses. Not here: timing training itself
(train.py) or the benchmark tables (benchmarks/).
"""

from __future__ import annotations

import time

import torch
from torch import nn

# The dtype each precision (toolkit.spec.schema.PRECISIONS) computes matrix products in.
DTYPES = {"fp32": torch.float32, "bf16-mixed": torch.bfloat16}


def matmul_params(model: nn.Module) -> int:
    """Weights of every nn.Linear, each counted once (a tied head is a matrix product too)."""
    linears = {id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Linear)}
    return sum(w.numel() for w in linears.values())


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


def peak_flops(device: str = "cpu", precision: str = "fp32", size: int | None = None) -> float:
    """FLOP/s of a large square matrix product in the precision's dtype on `device`, best of a
    few repeats, measured once per process (and thread count)."""
    key = (device, precision, torch.get_num_threads())
    if key in _PEAKS:
        return _PEAKS[key]
    n = size or (8192 if device.startswith("cuda") else 2048)
    dtype = DTYPES[precision]
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(4):
        _sync(device)
        tick = time.perf_counter()
        (a @ b).sum().item()  # .item() waits for the result on any device
        best = min(best, time.perf_counter() - tick)
    _PEAKS[key] = 2.0 * n**3 / best
    return _PEAKS[key]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
