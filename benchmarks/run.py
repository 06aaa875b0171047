"""Speed and memory benchmarks: `python benchmarks/run.py [--quick] [--json FILE]`.

Prints one table. The fixed config (issue 7): emb_dim 256, 6 layers, 8 heads, context 256,
vocab 4096, batch 8, dropout 0. FLOPs per token and the peak come from toolkit.training.throughput: the
peak is a large matrix product in each precision on as many threads as training uses.

1. training tokens/s of the toolkit's model (sdpa) vs benchmarks/minimal_gpt.py (target >= 0.98)
2. fp32 eager MFU against the measured fp32 peak (target >= 75%)
3. bf16-mixed + torch.compile MFU against the measured bf16 peak (target >= 55%)
4. tokenization MB/s (gpt2, bytes, bpe) and bytes per stored token
5. generation tokens/s with and without the KV cache (256 new tokens)
6. sweep overhead: wall time of a small sweep vs the sum of its training-step time (<= 10%)

Timings alternate between the two models being compared and report medians, because other
load on the machine moves single measurements by tens of percent. Not a test: nothing here
passes or fails; the targets are printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.minimal_gpt import MinimalGPT  # noqa: E402
from toolkit.api.manager import Plugins  # noqa: E402
from toolkit.model.config import ModelConfig  # noqa: E402
from toolkit.model.gpt import build_model  # noqa: E402
from toolkit.training.throughput import DTYPES, flops_per_token, peak_flops  # noqa: E402

CONFIG = dict(
    vocab_size=4096, context_length=256, emb_dim=256, n_heads=8, n_layers=6, drop_rate=0.0
)
BATCH = 8


def step_times(model: torch.nn.Module, steps: int, precision: str = "fp32") -> list[float]:
    """Seconds per optimizer step (forward, backward, AdamW), after two warm-up steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, CONFIG["vocab_size"], (BATCH, CONFIG["context_length"]))
    y = torch.randint(0, CONFIG["vocab_size"], (BATCH, CONFIG["context_length"]))
    times = []
    for i in range(steps + 2):
        tick = time.perf_counter()
        with torch.autocast("cpu", dtype=DTYPES[precision], enabled=precision != "fp32"):
            logits = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
        if i >= 2:
            times.append(time.perf_counter() - tick)
    return times


def tokens_per_s(times: list[float]) -> float:
    return BATCH * CONFIG["context_length"] / statistics.median(times)


def bench_training(plugins: Plugins, rounds: int, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    toolkit_model = build_model(ModelConfig(**CONFIG, attention="sdpa"), plugins)
    minimal = MinimalGPT(
        CONFIG["vocab_size"],
        CONFIG["context_length"],
        CONFIG["emb_dim"],
        CONFIG["n_heads"],
        CONFIG["n_layers"],
    )
    assert sum(p.numel() for p in minimal.parameters()) == toolkit_model.num_params()
    ours, theirs = [], []
    for _ in range(rounds):  # alternate, so drifting load hits both alike
        ours += step_times(toolkit_model, steps)
        theirs += step_times(minimal, steps)
    fpt = flops_per_token(toolkit_model)
    peak32 = peak_flops("cpu", "fp32")
    result = {
        "toolkit_tokens_per_s": tokens_per_s(ours),
        "minimal_tokens_per_s": tokens_per_s(theirs),
        "flops_per_token": fpt,
        "peak_fp32_gflops": peak32 / 1e9,
    }
    result["ratio"] = result["toolkit_tokens_per_s"] / result["minimal_tokens_per_s"]
    result["mfu_fp32"] = fpt * result["toolkit_tokens_per_s"] / peak32
    return result


def bench_fast_mode(plugins: Plugins, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**CONFIG, attention="sdpa"), plugins)
    compiled = torch.compile(model)
    tick = time.perf_counter()
    step_times(compiled, 1, "bf16-mixed")  # compiles
    compile_s = time.perf_counter() - tick
    rate = tokens_per_s(step_times(compiled, steps, "bf16-mixed"))
    peak16 = peak_flops("cpu", "bf16-mixed")
    return {
        "bf16_compile_tokens_per_s": rate,
        "peak_bf16_gflops": peak16 / 1e9,
        "mfu_bf16_compile": flops_per_token(model) * rate / peak16,
        "compile_s": compile_s,
    }


def bench_tokenizers(plugins: Plugins) -> dict[str, float]:
    corpus = plugins.registry.get("corpus", "pydoc").build()
    text = "\n\n".join(t for _, t in corpus.documents())
    megabytes = len(text.encode()) / 1e6
    out: dict[str, float] = {"corpus_mb": megabytes}
    for name, options in [("gpt2", {}), ("bytes", {}), ("bpe", {"vocab_size": 2048})]:
        tok = plugins.registry.get("tokenizer", name).build(**options)
        if getattr(tok, "needs_training", False):
            tick = time.perf_counter()
            tok.train([text])
            out[f"{name}_train_s"] = time.perf_counter() - tick
        tok.encode(text[:1000])  # builds lazy tables
        tick = time.perf_counter()
        ids = tok.encode(text)
        out[f"{name}_mb_per_s"] = megabytes / (time.perf_counter() - tick)
        dtype_bytes = 2 if tok.vocab_size <= 1 << 16 else 4
        out[f"{name}_bytes_per_token_stored"] = dtype_bytes
        out[f"{name}_text_bytes_per_token"] = len(text.encode()) / len(ids)
    return out


def bench_generation(plugins: Plugins) -> dict[str, float]:
    from toolkit.inference.generate import generate

    torch.manual_seed(0)
    cfg = ModelConfig(**{**CONFIG, "context_length": 512}, attention="sdpa")
    model = build_model(cfg, plugins).eval()
    greedy = plugins.registry.get("sampler", "greedy").build()
    prompt = torch.randint(0, cfg.vocab_size, (1, 16))
    out = {}
    for use_cache in (True, False):
        tick = time.perf_counter()
        generate(model, prompt, 256, greedy, cfg.context_length, use_cache=use_cache)
        out[f"generate_{'cache' if use_cache else 'no_cache'}_tokens_per_s"] = 256 / (
            time.perf_counter() - tick
        )
    out["cache_speedup"] = (
        out["generate_cache_tokens_per_s"] / out["generate_no_cache_tokens_per_s"]
    )
    return out


def bench_sweep(steps: int) -> dict[str, float]:
    import toolkit

    doc = {
        "name": "overhead",
        "data": {"corpus": "pydoc", "tokenizer": "bytes"},
        "model": {"preset": "micro", "attention": "sdpa", "drop_rate": 0.0},
        "train": {
            "batch_size": 16,
            "max_steps": steps,
            "eval_interval": 50,  # the quick-start's cadence: every 50 steps, 8 fixed batches
            "eval_batches": 8,
            "checkpoint": False,
        },
        "sampling": {"max_new_tokens": 32},
        "grid": {"model.norm": ["layernorm", "rmsnorm"]},
    }
    from toolkit.spec.parse import parse_spec

    with tempfile.TemporaryDirectory() as out:
        tick = time.perf_counter()
        table = toolkit.run(parse_spec(doc), out, progress=False)
        wall = time.perf_counter() - tick
    train_s, eval_s = float(table["train_s"].sum()), float(table["eval_s"].sum())
    return {
        "sweep_wall_s": wall,
        "sweep_train_s": train_s,
        "sweep_eval_s": eval_s,
        "sweep_overhead": wall / train_s - 1,
        "sweep_overhead_besides_eval": (wall - eval_s) / train_s - 1,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (noisier)")
    parser.add_argument("--skip-compile", action="store_true", help="skip bf16 + torch.compile")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    rounds, steps = (2, 4) if args.quick else (4, 8)
    plugins = Plugins(autoload=False)
    results: dict[str, float] = {"threads": torch.get_num_threads()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    for label, bench in [
        ("training", lambda: bench_training(plugins, rounds, steps)),
        (
            "bf16 + compile",
            None if args.skip_compile else lambda: bench_fast_mode(plugins, 2 * steps),
        ),
        ("tokenizers", lambda: bench_tokenizers(plugins)),
        ("generation", lambda: bench_generation(plugins)),
        ("sweep overhead", lambda: bench_sweep(50 if args.quick else 150)),
    ]:
        if bench is None:
            continue
        print(f"running: {label} ...", file=sys.stderr)
        results.update(bench())
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def format_table(r: dict[str, float]) -> str:
    rows = [
        ("train tokens/s, toolkit (fp32 eager)", f"{r['toolkit_tokens_per_s']:,.0f}", ""),
        ("train tokens/s, minimal hand-written GPT", f"{r['minimal_tokens_per_s']:,.0f}", ""),
        ("toolkit / minimal", f"{r['ratio']:.3f}", ">= 0.98"),
        ("fp32 peak (measured matmul)", f"{r['peak_fp32_gflops']:,.0f} GFLOP/s", ""),
        ("MFU, fp32 eager", f"{r['mfu_fp32']:.1%}", ">= 75%"),
    ]
    if "mfu_bf16_compile" in r:
        rows += [
            ("train tokens/s, bf16-mixed + compile", f"{r['bf16_compile_tokens_per_s']:,.0f}", ""),
            ("bf16 peak (measured matmul)", f"{r['peak_bf16_gflops']:,.0f} GFLOP/s", ""),
            ("MFU, bf16-mixed + compile", f"{r['mfu_bf16_compile']:.1%}", ">= 55%"),
            ("compile time", f"{r['compile_s']:.0f} s", ""),
        ]
    for name in ("gpt2", "bytes", "bpe"):
        rows.append(
            (
                f"tokenize {name} (pydoc corpus)",
                f"{r[f'{name}_mb_per_s']:.1f} MB/s",
                f"{r[f'{name}_text_bytes_per_token']:.2f} text bytes/token, "
                f"{r[f'{name}_bytes_per_token_stored']} bytes stored/token",
            )
        )
    rows += [
        ("generate 256 tokens, KV cache", f"{r['generate_cache_tokens_per_s']:,.0f} tokens/s", ""),
        (
            "generate 256 tokens, no cache",
            f"{r['generate_no_cache_tokens_per_s']:,.0f} tokens/s",
            f"cache x{r['cache_speedup']:.1f}",
        ),
        (
            "sweep wall time vs training steps",
            f"+{r['sweep_overhead']:.1%}",
            f"<= 10% ({r['sweep_wall_s']:.1f} s wall, {r['sweep_train_s']:.1f} s in steps)",
        ),
        (
            "  of which evaluation",
            f"{r['sweep_eval_s'] / r['sweep_train_s']:.1%}",
            f"overhead besides evaluation +{r['sweep_overhead_besides_eval']:.1%}",
        ),
    ]
    width = max(len(a) for a, _, _ in rows)
    value = max(len(b) for _, b, _ in rows)
    return "\n".join(f"{a:<{width}}  {b:>{value}}  {c}".rstrip() for a, b, c in rows)


if __name__ == "__main__":
    raise SystemExit(main())
