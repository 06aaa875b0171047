"""The fused attention kernel's cost by precision on this machine: `python benchmarks/attention.py`.

Times forward + backward of F.scaled_dot_product_attention (causal) at the speed benchmark's
shape (batch 8, 8 heads, context 256, head size 32) in float32 and bfloat16, and the explicit
maths (q k^T, mask, softmax, v) beside it. Why it exists: on CPUs the fused kernel's bfloat16
backward is slower than its float32 one, so the toolkit's fused attentions attend in float32
during bf16-mixed training steps (plugins/heads.py, HeadAttention.attend_fused). Rounds
alternate between the cases and the figure is the median. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F


def fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    t = q.shape[-2]
    hidden = torch.ones(t, t, dtype=torch.bool).triu(1)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return scores.masked_fill(hidden, float("-inf")).softmax(-1) @ v


def seconds(
    attend: Callable[..., torch.Tensor], dtype: torch.dtype, shape: tuple[int, ...], backward: bool
) -> float:
    q, k, v = (torch.randn(shape, dtype=dtype, requires_grad=backward) for _ in range(3))
    grad = torch.randn(shape, dtype=dtype)
    tick = time.perf_counter()
    out = attend(q, k, v)
    if backward:
        out.backward(grad)
    return time.perf_counter() - tick


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--shape", type=int, nargs=4, default=[8, 8, 256, 32], metavar="N")
    args = parser.parse_args(argv)
    shape = tuple(args.shape)
    cases = [
        (f"{name}, {label}", attend, dtype, backward)
        for backward, label in ((False, "forward"), (True, "forward + backward"))
        for name, attend in (("fused", fused), ("explicit", explicit))
        for dtype in (torch.float32, torch.bfloat16)
    ]
    times: dict[str, list[float]] = {c[0] + f" {c[2]}": [] for c in cases}
    for _ in range(args.rounds):
        for name, attend, dtype, backward in cases:
            times[f"{name} {dtype}"].append(seconds(attend, dtype, shape, backward))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, shape {shape}")
    for key, values in times.items():
        print(f"{key:<45} {statistics.median(values) * 1e3:7.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
