"""Speed and memory benchmarks: `python benchmarks/run.py [--quick] [--bf16] [--json FILE]`
(`--nanogpt PATH` to time nanoGPT too, `--only SECTION` for some sections).

Prints one table. The fixed config (issue 7): emb_dim 256, 6 layers, 8 heads, context 256,
vocab 4096, batch 8, dropout 0; the models timed and how: benchmarks/contenders.py. FLOPs per
token and the peaks come from toolkit.training.throughput: a peak is a large matrix product in
each precision on as many threads as training uses.

1. training tokens/s of the toolkit (its compiled-or-not LossStep, the optimizer and gradient
   clipping `ablate run` uses) against benchmarks/minimal_gpt.py (the same maths written by
   hand, nanoGPT-style: loss inside the compiled region, torch's default AdamW) in four modes:
   fp32, bf16 autocast, torch.compile, compile + bf16. Targets: the toolkit's best mode >= 1.15x
   the hand-written GPT's best mode, and toolkit fp32 eager >= 1.0x hand-written fp32 eager.
   Where bf16 matrix products measure slower than fp32's (a CPU without native bfloat16), the
   bf16 modes are left out, and said so, unless `--bf16`.
   With `--nanogpt PATH` (a nanoGPT checkout: its folder with model.py), nanoGPT's own model
   and optimizer join the same rounds, run as its train.py runs them (autocast around the
   compiled model, its configure_optimizers, gradient clipping at 1.0), and the table gives the
   toolkit's ratio to nanoGPT in each mode too. Nothing of nanoGPT is in this repository.
2. MFU of each mode against the measured peak of its precision.
3. tokenization MB/s (gpt2, bytes, bpe) and bytes per stored token
4. generation tokens/s with and without the KV cache (256 new tokens), with 16 prompts at once,
   and what the cache could gain if a cached step cost its matrix products alone
5. sweep overhead: wall time of a small sweep vs the sum of its training-step time, the share
   of it spent in evaluation (target <= 3%), and what sets that share: tokens evaluated per
   token trained, and what an evaluated token costs against a trained one

Every mode of both models is timed in each round, in turn, because other load on the machine
moves single measurements by tens of percent: a tokens/s figure is the median over rounds, a
ratio the median of the rounds' own ratios (side_by_side), and a peak the highest of a
measurement before the rounds and one after each. Not a test: nothing here passes or fails;
the targets are printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks import contenders as timed  # noqa: E402  (its CONFIG: tests shrink it)
from benchmarks.contenders import (  # noqa: E402
    MODES,
    Contender,
    hand_written_contender,
    load_nanogpt,
    nanogpt_contender,
    side_by_side,
    time_steps,
    toolkit_contender,
)
from toolkit.api.manager import Plugins  # noqa: E402
from toolkit.model.config import ModelConfig  # noqa: E402
from toolkit.model.gpt import build_model  # noqa: E402
from toolkit.spec.parse import parse_spec  # noqa: E402
from toolkit.training.throughput import cpu_name, flops_per_token, matmul_flops  # noqa: E402

BATCHED_PROMPTS = 16  # generation with several prompts at once


def bench_training(
    plugins: Plugins,
    rounds: int,
    steps: int,
    modes: list[tuple[str, str, bool]] = MODES,
    nanogpt: Any = None,
    bf16: bool = False,
) -> dict[str, float]:
    """tokens/s of both models in every mode: each round times every (mode, model) in turn.
    A tokens/s figure is the median over rounds, a ratio the median of the rounds' ratios
    (side_by_side), and a peak the highest of its measurements, one before the rounds and one
    after each (load on the machine only lowers a peak). The bf16 modes are left out where
    bf16 products are slower than fp32's, unless `bf16`."""
    precisions = list(dict.fromkeys(p for _, p, _ in modes))
    peaks = {p: matmul_flops("cpu", p) for p in precisions}  # first, on an idle machine
    out: dict[str, Any] = {}
    if not bf16 and "bf16-mixed" in peaks and peaks["bf16-mixed"] < peaks["fp32"]:
        # A CPU without native bfloat16 products (AVX2 only, say) runs them a hundred times
        # slower: the bf16 rounds would take hours, and precision = "auto" never trains in it.
        out["bf16_left_out"] = 1.0
        print(
            f"  bf16 modes left out: bf16 matrix products run at "
            f"{peaks['bf16-mixed'] / 1e9:,.1f} GFLOP/s here against fp32's "
            f"{peaks['fp32'] / 1e9:,.0f} (--bf16 times them)",
            file=sys.stderr,
        )
        modes = [m for m in modes if m[1] != "bf16-mixed"]
    contenders: dict[tuple[str, str], Contender] = {}
    for label, precision, compile in modes:
        print(f"  building {label} ...", file=sys.stderr)
        contenders[label, "toolkit"] = toolkit_contender(plugins, precision, compile)
        contenders[label, "hand"] = hand_written_contender(precision, compile)
        if nanogpt is not None:
            contenders[label, "nanogpt"] = nanogpt_contender(nanogpt, precision, compile)
    assert sum(p.numel() for p in contenders[modes[0][0], "hand"].model.parameters()) == (
        contenders[modes[0][0], "toolkit"].model.num_params()
    )
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in contenders}
    for r in range(rounds):
        print(f"  round {r + 1} of {rounds} ...", file=sys.stderr)
        for key, contender in contenders.items():
            seconds[key].append(time_steps(contender, steps))
        peaks = {p: max(peaks[p], matmul_flops("cpu", p)) for p in precisions}
    out |= {f"peak_{p}_gflops": peaks[p] / 1e9 for p in precisions}
    tokens = timed.BATCH * timed.CONFIG["context_length"]
    fpt = flops_per_token(contenders[modes[0][0], "toolkit"].model)
    out["flops_per_token"] = fpt
    others = ["hand"] + (["nanogpt"] if nanogpt is not None else [])
    best = {who: ("", 0.0) for who in ["toolkit", *others]}
    for label, precision, _ in modes:
        for who in best:
            rate = tokens / statistics.median(seconds[label, who])
            out[f"{who}:{label}:tokens_per_s"] = rate
            out[f"{who}:{label}:mfu"] = fpt * rate / peaks[precision]
            out[f"{who}:{label}:first_s"] = contenders[label, who].first_s
            if rate > best[who][1]:
                best[who] = (label, rate)
        out[f"ratio:{label}"] = side_by_side(seconds[label, "toolkit"], seconds[label, "hand"])
        if nanogpt is not None:
            out[f"ratio_nanogpt:{label}"] = side_by_side(
                seconds[label, "toolkit"], seconds[label, "nanogpt"]
            )
    ours = out["best_toolkit_mode"] = best["toolkit"][0]
    for who in others:
        theirs = out[f"best_{who}_mode"] = best[who][0]
        key = "best_ratio" if who == "hand" else f"best_ratio_{who}"
        out[key] = side_by_side(seconds[ours, "toolkit"], seconds[theirs, who])
    return out


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


def bench_generation(plugins: Plugins, rounds: int = 3) -> dict[str, float]:
    """Greedy generation of 256 new ids after a 16-id prompt (batch 1) at context 512, with and
    without the KV cache: tokens/s of each as the median of `rounds` runs, the two alternated
    after a warm-up so drifting load hits both alike, and cache_speedup as the median of the
    rounds' ratios (each measured side by side). Also, in the same rounds, the cached path
    with BATCHED_PROMPTS prompts at once, as a sampling ablation continues its prompts: a step's
    per-operation overhead is then shared by that many tokens. cache_speedup_bound is what the
    cache would gain if a cached step cost its matrix products alone."""
    from toolkit.inference.generate import generate

    torch.manual_seed(0)
    cfg = ModelConfig(**{**timed.CONFIG, "context_length": 512}, attention="sdpa")
    model = build_model(cfg, plugins).eval()
    greedy = plugins.registry.get("sampler", "greedy").build()
    prompt = torch.randint(0, cfg.vocab_size, (1, 16))
    prompts = torch.randint(0, cfg.vocab_size, (BATCHED_PROMPTS, 16))
    new = 256
    for use_cache in (True, False):  # the first calls allocate and choose kernels
        generate(model, prompt, 8, greedy, cfg.context_length, use_cache=use_cache)
    # What a cached step cannot avoid: one row through every weight matrix (the head included).
    # Timed alone, back to back, it is the tokens/s a step with no other cost would reach.
    matrices = [(m.weight.detach(), m.bias) for m in model.modules() if isinstance(m, nn.Linear)]

    def products_only() -> None:
        with torch.inference_mode():
            for _ in range(new):
                for weight, bias in matrices:
                    F.linear(prompt.new_zeros(1, weight.shape[1], dtype=weight.dtype), weight, bias)

    products_only()
    generate(model, prompts, 8, greedy, cfg.context_length)
    seconds: dict[bool, list[float]] = {True: [], False: []}
    floor: list[float] = []
    batched: list[float] = []
    for _ in range(rounds):
        for use_cache in (True, False):
            tick = time.perf_counter()
            generate(model, prompt, new, greedy, cfg.context_length, use_cache=use_cache)
            seconds[use_cache].append(time.perf_counter() - tick)
        tick = time.perf_counter()
        generate(model, prompts, new, greedy, cfg.context_length)
        batched.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        products_only()
        floor.append(time.perf_counter() - tick)
    return {
        "generate_cache_tokens_per_s": new / statistics.median(seconds[True]),
        "generate_no_cache_tokens_per_s": new / statistics.median(seconds[False]),
        "cache_speedup": side_by_side(seconds[True], seconds[False]),
        "generate_matmul_only_tokens_per_s": new / statistics.median(floor),
        # The most a cache could gain over the uncached path, its steps costing nothing else.
        "cache_speedup_bound": side_by_side(floor, seconds[False]),
        "generate_batched_tokens_per_s": BATCHED_PROMPTS * new / statistics.median(batched),
        "generate_batched_vs_one": side_by_side(
            [s / BATCHED_PROMPTS for s in batched], seconds[True]
        ),
    }


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

    spec = parse_spec(doc)
    with tempfile.TemporaryDirectory() as out:
        tick = time.perf_counter()
        table = toolkit.run(spec, out, progress=False)
        wall = time.perf_counter() - tick
        evaluations = [
            len((Path(out) / r.folder / "metrics.jsonl").read_text().splitlines())
            for r in spec.runs
        ]
    train_s, eval_s = float(table["train_s"].sum()), float(table["eval_s"].sum())
    # Tokens scored by evaluation (train and validation batches at each evaluation) against
    # tokens trained on: with the cost of each, what any implementation would spend.
    t, window = spec.runs[0].train, spec.runs[0].model.context_length
    eval_tokens = sum(evaluations) * 2 * t.eval_batches * t.batch_size * window
    train_tokens = len(spec.runs) * steps * t.batch_size * window
    return {
        "sweep_wall_s": wall,
        "sweep_train_s": train_s,
        "sweep_eval_s": eval_s,
        "sweep_overhead": wall / train_s - 1,
        "sweep_overhead_besides_eval": (wall - eval_s) / train_s - 1,
        "sweep_eval_tokens_per_train_token": eval_tokens / train_tokens,
        "sweep_eval_cost_per_token_vs_train": (eval_s / eval_tokens) / (train_s / train_tokens),
    }


SECTIONS = ("training", "tokenizers", "generation", "sweep")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps (noisier)")
    parser.add_argument("--skip-compile", action="store_true", help="leave out the compiled modes")
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, default=SECTIONS, help="run only these sections"
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="time the bf16 modes even where bf16 matrix products are slower than fp32's",
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--nanogpt",
        metavar="PATH",
        help="also time nanoGPT's own model.py from this checkout in the training rounds",
    )
    args = parser.parse_args(argv)
    nanogpt = load_nanogpt(args.nanogpt) if args.nanogpt else None  # before anything runs
    rounds, steps = (2, 3) if args.quick else (5, 4)
    modes = [m for m in MODES if not (args.skip_compile and m[2])]
    plugins = Plugins(autoload=False)
    results: dict[str, float | str] = {"cpu": cpu_name(), "threads": torch.get_num_threads()}
    print(
        f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        file=sys.stderr,
    )
    benches = {
        "training": lambda: bench_training(plugins, rounds, steps, modes, nanogpt, args.bf16),
        "tokenizers": lambda: bench_tokenizers(plugins),
        "generation": lambda: bench_generation(plugins),
        "sweep": lambda: bench_sweep(50 if args.quick else 150),
    }
    for name in SECTIONS:
        if name in args.only:
            print(f"running: {name} ...", file=sys.stderr)
            results.update(benches[name]())
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def format_table(r: dict[str, float]) -> str:
    rows: list[tuple[str, str, str]] = []
    if "best_ratio" in r:
        rows.append(
            (
                "training tokens/s",
                "toolkit vs hand-written",
                "MFU toolkit, hand-written (x: the median of the rounds' ratios)",
            )
        )
        for label, precision, _ in MODES:
            if f"ratio:{label}" not in r:
                continue
            ours, theirs = r[f"toolkit:{label}:tokens_per_s"], r[f"hand:{label}:tokens_per_s"]
            target = " (target >= 1.0)" if label == "fp32" else ""
            rows.append(
                (
                    f"  {label}",
                    f"{ours:,.0f} vs {theirs:,.0f}: {r[f'ratio:{label}']:.2f}x",
                    f"{r[f'toolkit:{label}:mfu']:.0%}, {r[f'hand:{label}:mfu']:.0%} of the "
                    f"{precision} peak{target}",
                )
            )
        rows += [
            (
                "  best mode vs best mode",
                f"{r['best_ratio']:.2f}x",
                f"toolkit {r['best_toolkit_mode']}, hand-written {r['best_hand_mode']} "
                f"(target >= 1.15)",
            ),
            (
                "  measured peaks",
                ", ".join(
                    f"{p} {r[f'peak_{p}_gflops']:,.0f}"
                    for p in ("fp32", "bf16-mixed")
                    if f"peak_{p}_gflops" in r
                ),
                "GFLOP/s, a large matrix product",
            ),
        ]
        if "bf16_left_out" in r:
            rows.append(
                (
                    "  bf16 modes",
                    "left out",
                    "bf16 matrix products are the slower here: no native bfloat16 (--bf16 "
                    "times them)",
                )
            )
        if "best_ratio_nanogpt" in r:
            rows.append(("  vs nanoGPT (its model.py)", "toolkit vs nanoGPT", "MFU nanoGPT"))
            for label, precision, _ in MODES:
                if f"ratio_nanogpt:{label}" not in r:
                    continue
                ours, theirs = (
                    r[f"toolkit:{label}:tokens_per_s"],
                    r[f"nanogpt:{label}:tokens_per_s"],
                )
                rows.append(
                    (
                        f"    {label}",
                        f"{ours:,.0f} vs {theirs:,.0f}: {r[f'ratio_nanogpt:{label}']:.2f}x",
                        f"{r[f'nanogpt:{label}:mfu']:.0%} of the {precision} peak",
                    )
                )
            rows.append(
                (
                    "    best mode vs best mode",
                    f"{r['best_ratio_nanogpt']:.2f}x",
                    f"toolkit {r['best_toolkit_mode']}, nanoGPT {r['best_nanogpt_mode']}",
                )
            )
        compiled_modes = [m for m, _, c in MODES if c and f"ratio:{m}" in r]
        if compiled_modes:
            rows.append(
                (
                    "  compile time (first step)",
                    ", ".join(f"{r[f'toolkit:{m}:first_s']:.0f} s" for m in compiled_modes),
                    f"toolkit, {' and '.join(compiled_modes)}",
                )
            )
    if "gpt2_mb_per_s" in r:
        for name in ("gpt2", "bytes", "bpe"):
            rows.append(
                (
                    f"tokenize {name} (pydoc corpus)",
                    f"{r[f'{name}_mb_per_s']:.1f} MB/s",
                    f"{r[f'{name}_text_bytes_per_token']:.2f} text bytes/token, "
                    f"{r[f'{name}_bytes_per_token_stored']} bytes stored/token",
                )
            )
    if "cache_speedup" in r:
        rows += [
            (
                "generate 256 tokens, KV cache",
                f"{r['generate_cache_tokens_per_s']:,.0f} tokens/s",
                f"its matrix products alone: {r['generate_matmul_only_tokens_per_s']:,.0f} "
                f"tokens/s",
            ),
            (
                f"  {BATCHED_PROMPTS} prompts at once, KV cache",
                f"{r['generate_batched_tokens_per_s']:,.0f} tokens/s",
                f"x{r['generate_batched_vs_one']:.1f} one prompt's, as a sampling ablation runs",
            ),
            (
                "generate 256 tokens, no cache",
                f"{r['generate_no_cache_tokens_per_s']:,.0f} tokens/s",
                f"cache x{r['cache_speedup']:.1f} (target >= 8; matrix products alone: "
                f"x{r['cache_speedup_bound']:.1f})",
            ),
        ]
    if "sweep_overhead" in r:
        rows += [
            (
                "sweep wall time vs training steps",
                f"+{r['sweep_overhead']:.1%}",
                f"{r['sweep_wall_s']:.1f} s wall, {r['sweep_train_s']:.1f} s in steps",
            ),
            (
                "  of which evaluation",
                f"{r['sweep_eval_s'] / r['sweep_wall_s']:.1%} of the wall time",
                f"target <= 3%; overhead besides evaluation +{r['sweep_overhead_besides_eval']:.1%}",
            ),
            (
                "  evaluated tokens per trained token",
                f"{r['sweep_eval_tokens_per_train_token']:.2f}",
                f"each costing {r['sweep_eval_cost_per_token_vs_train']:.2f}x a trained token "
                f"(a forward pass alone; about 1/3 of forward + backward)",
            ),
        ]
    width = max(len(a) for a, _, _ in rows)
    value = max(len(b) for _, b, _ in rows)
    return "\n".join(f"{a:<{width}}  {b:>{value}}  {c}".rstrip() for a, b, c in rows)


if __name__ == "__main__":
    raise SystemExit(main())
