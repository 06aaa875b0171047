"""The fused attention kernel's cost by precision on this machine: `python benchmarks/attention.py`.

Times forward + backward of F.scaled_dot_product_attention (causal) at the speed benchmark's
shape (batch 8, 8 heads, context 256, head size 32) in float32 and bfloat16, and the explicit
maths (q k^T, mask, softmax, v) beside it. Why it exists: on CPUs the fused kernel's bfloat16
backward is slower than its float32 one, so the toolkit's fused attentions attend in float32
during bf16-mixed training steps (plugins/heads.py, HeadAttention.attend_fused).

`--options` times the toolkit's own attention module instead, forward + backward in float32 at
the same shape (emb_dim = heads x head size), once per option set, as the ratio to the first:
`--options '{}' '{"sinks": true}' '{"gate": true}'` prices sinks and the gate against plain
sdpa (`--attention gqa` another attention). Rounds alternate between the cases and the figure
is the median. Not a test.
"""

from __future__ import annotations

import argparse
import json
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


def module_seconds(module: torch.nn.Module, x: torch.Tensor) -> float:
    """One forward + backward of an attention module on x (B, T, emb_dim)."""
    module.zero_grad(set_to_none=True)
    tick = time.perf_counter()
    module(x).sum().backward()
    return time.perf_counter() - tick


def compare_options(attention: str, options: list[dict], shape: tuple[int, ...], rounds: int):
    """The registered `attention` built with each option set, timed in interleaved rounds."""
    from toolkit.api.manager import load_plugins
    from toolkit.model.config import ModelConfig

    batch, heads, t, head_size = shape
    config = ModelConfig(
        vocab_size=256, context_length=t, emb_dim=heads * head_size, n_heads=heads,
        n_layers=1, drop_rate=0.0,
    )  # fmt: skip
    component = load_plugins().registry.get("attention", attention)
    modules = []
    for opts in options:
        torch.manual_seed(0)
        modules.append(component.build(config, **opts).train())
    x = torch.randn(batch, t, config.emb_dim)
    times: list[list[float]] = [[] for _ in options]
    for _ in range(rounds):
        for i, module in enumerate(modules):
            times[i].append(module_seconds(module, x))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {attention}, {shape}")
    first = statistics.median(times[0])
    for opts, values in zip(options, times, strict=True):
        median = statistics.median(values)
        label = json.dumps(opts)
        print(f"{label:<40} {median * 1e3:7.2f} ms  x{median / first:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--shape", type=int, nargs=4, default=[8, 8, 256, 32], metavar="N")
    parser.add_argument(
        "--options", nargs="+", type=json.loads, metavar="JSON",
        help="time the toolkit's attention module with each option set (a JSON table)",
    )  # fmt: skip
    parser.add_argument("--attention", default="sdpa", help="the attention --options builds")
    args = parser.parse_args(argv)
    shape = tuple(args.shape)
    if args.options:
        compare_options(args.attention, args.options, shape, args.rounds)
        return 0
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
