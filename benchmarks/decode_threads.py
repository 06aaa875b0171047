"""Cached decoding on the threads the toolkit chooses against one thread and all of them,
side by side: `python benchmarks/decode_threads.py [--rounds 11] [--tokens 256] [--busy]`.

toolkit.inference.threads measures, step by step, whether cached CPU decoding runs faster on
one thread or on all of them, where the choice cannot change a token, and otherwise keeps
its canonical count (one thread per DECODE_WORK_PER_THREAD parameters x prompts). This times
that ("chosen") against one fixed thread ("one") and all of torch's threads ("all") on
benchmarks/run.py's model at context 512 (greedy, 16-id prompts, one prompt and 16 at once),
rotating which goes first each round; a ratio is the median of the rounds' own ratios.
`--busy` runs a process that keeps one core busy meanwhile, as a training sweep beside
`ablate generate` does. Not a test.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from toolkit.api.manager import Plugins
from toolkit.inference import generate as gen
from toolkit.inference import threads as th
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model

CONFIG = dict(vocab_size=4096, context_length=512, emb_dim=256, n_heads=8, n_layers=6)
PROMPT, BATCH = 16, 16


def fixed(count: int) -> type[th.DecodeThreads]:
    """DecodeThreads that runs every step on `count` threads, measuring nothing."""

    class Fixed(th.DecodeThreads):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            # Not what an earlier stream of the chosen mode found for this model: nothing.
            self.canonical, self.choice = min(count, self.available), None

        def probe(self, *args, **kwargs) -> None:  # the choice never opens
            pass

    return Fixed


def spin(stop: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    """One core's worth of matrix products until told to stop."""
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while not stop.is_set():
        a = torch.tanh(a @ a)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--busy", action="store_true", help="keep one core busy meanwhile")
    args = parser.parse_args()
    torch.manual_seed(0)
    plugins = Plugins(autoload=False)
    model = build_model(ModelConfig(**CONFIG, drop_rate=0.0, attention="sdpa"), plugins).eval()
    greedy = plugins.registry.build("sampler", "greedy")
    prompts = {
        1: torch.randint(0, 4096, (1, PROMPT)),
        BATCH: torch.randint(0, 4096, (BATCH, PROMPT)),
    }
    threads = torch.get_num_threads()
    modes = {"chosen": th.DecodeThreads, "one": fixed(1), "all": fixed(threads)}
    rates: dict[tuple[str, int], list[float]] = {(m, b): [] for m in modes for b in prompts}
    stop = multiprocessing.Event()
    busy = multiprocessing.Process(target=spin, args=(stop,), daemon=True) if args.busy else None
    if busy:
        busy.start()
    order = list(modes)
    try:
        for r in range(args.rounds):
            for mode in order[r % 3 :] + order[: r % 3]:
                gen.DecodeThreads = modes[mode]
                for b, prompt in prompts.items():
                    gen.generate(model, prompt, 8, greedy, CONFIG["context_length"])  # warm
                    tick = time.perf_counter()
                    gen.generate(model, prompt, args.tokens, greedy, CONFIG["context_length"])
                    rates[mode, b].append(b * args.tokens / (time.perf_counter() - tick))
    finally:
        gen.DecodeThreads = th.DecodeThreads
        if busy:
            stop.set()
            busy.join()
    print(f"{threads} torch threads{', one core kept busy' if args.busy else ''}")
    for b in prompts:
        line = [f"{b:>2} prompt(s): chosen {statistics.median(rates['chosen', b]):,.0f} tokens/s"]
        for mode in ("one", "all"):
            ratio = statistics.median(
                c / o for c, o in zip(rates["chosen", b], rates[mode, b], strict=True)
            )
            line.append(f"{mode} {statistics.median(rates[mode, b]):,.0f} (x{ratio:.2f})")
        canonical = th.decode_threads(model, b, threads)
        print(", ".join(line) + f"; canonical {canonical} thread(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
