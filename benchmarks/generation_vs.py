"""Cached generation of this checkout against another one of the toolkit, side by side:
`python benchmarks/generation_vs.py OTHER_CHECKOUT [--pairs 3] [--tokens 256]`.

What it is for: issue 20 asks for cached generation at 2x the tokens/s of the code before it
(`git worktree add /tmp/before 9330dab` makes that checkout). Each checkout runs in its own
process (a process imports one toolkit), on benchmarks/run.py's model at context 512: greedy,
a 16-id prompt, `--tokens` new ids, the median of 5 timed generations after a warm-up. The two
run in turn, `--pairs` times, so drifting load hits both alike; the ratio printed is the median
of the pairs' own ratios. Not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
CONFIG = dict(vocab_size=4096, context_length=512, emb_dim=256, n_layers=6, n_heads=8)
CONFIG.update(drop_rate=0.0, attention="sdpa")
PROMPT = 16
ROUNDS = 5


def child(root: Path, tokens: int) -> float:
    """Median seconds of one cached generation with the toolkit at `root`."""
    sys.path.insert(0, str(root))
    import torch

    import toolkit
    from toolkit.api.manager import Plugins
    from toolkit.inference.generate import generate
    from toolkit.model.config import ModelConfig
    from toolkit.model.gpt import build_model

    if not Path(toolkit.__file__).resolve().is_relative_to(root):
        raise SystemExit(f"imported the toolkit at {toolkit.__file__}, not the one in {root}")
    plugins = Plugins(autoload=False)
    torch.manual_seed(0)
    model = build_model(ModelConfig(**CONFIG), plugins).eval()
    greedy = plugins.registry.get("sampler", "greedy").build()
    prompt = torch.randint(0, CONFIG["vocab_size"], (1, PROMPT))
    generate(model, prompt, 32, greedy, CONFIG["context_length"])  # allocate, pick kernels
    seconds = []
    for _ in range(ROUNDS):
        tick = time.perf_counter()
        generate(model, prompt, tokens, greedy, CONFIG["context_length"])
        seconds.append(time.perf_counter() - tick)
    return statistics.median(seconds)


def timed(root: Path, tokens: int) -> float:
    cmd = [sys.executable, __file__, "--child", str(root), "--tokens", str(tokens)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    if done.returncode:
        raise SystemExit(f"{root}: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", nargs="?", type=Path, help="another checkout of this repository")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps({"seconds": child(args.child.resolve(), args.tokens)}))
        return 0
    if args.other is None or not (args.other / "toolkit").is_dir():
        parser.error("give another checkout of this repository (a folder holding toolkit/)")
    other = args.other.resolve()
    ratios = []
    for i in range(args.pairs):
        here, there = timed(HERE, args.tokens), timed(other, args.tokens)
        ratios.append(there / here)
        print(
            f"pair {i + 1}: this checkout {args.tokens / here:,.0f} tokens/s, "
            f"{other} {args.tokens / there:,.0f} tokens/s: x{there / here:.2f}"
        )
    print(f"this checkout / the other, cached generation: x{statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
