"""Cached decoding on the threads the toolkit picks against every thread, side by side:
`python benchmarks/decode_threads.py [--rounds 11] [--tokens 256] [--busy]`.

toolkit.inference.generate gives cached CPU decoding one thread per DECODE_WORK_PER_THREAD
parameters x prompts. This times that choice ("picked") against all of torch's threads
("all", what decoding took before: DECODE_WORK_PER_THREAD = 1) on benchmarks/run.py's model at
context 512 (greedy, 16-id prompts, one prompt and 16 at once), alternating which goes first
each round; a ratio is the median of the rounds' own ratios. `--busy` runs a process that
keeps one core busy meanwhile, as a training sweep beside `ablate generate` does. Not a test.
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
from toolkit.model.config import ModelConfig
from toolkit.model.gpt import build_model

CONFIG = dict(vocab_size=4096, context_length=512, emb_dim=256, n_heads=8, n_layers=6)
PROMPT, BATCH = 16, 16


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
    picked = gen.DECODE_WORK_PER_THREAD
    modes = {"picked": picked, "all": 1}
    rates: dict[tuple[str, int], list[float]] = {(m, b): [] for m in modes for b in prompts}
    stop = multiprocessing.Event()
    busy = multiprocessing.Process(target=spin, args=(stop,), daemon=True) if args.busy else None
    if busy:
        busy.start()
    try:
        for r in range(args.rounds):
            for mode in list(modes) if r % 2 else list(modes)[::-1]:
                gen.DECODE_WORK_PER_THREAD = modes[mode]
                for b, prompt in prompts.items():
                    gen.generate(model, prompt, 8, greedy, CONFIG["context_length"])  # warm
                    tick = time.perf_counter()
                    gen.generate(model, prompt, args.tokens, greedy, CONFIG["context_length"])
                    rates[mode, b].append(b * args.tokens / (time.perf_counter() - tick))
    finally:
        gen.DECODE_WORK_PER_THREAD = picked
        if busy:
            stop.set()
            busy.join()
    threads = torch.get_num_threads()
    print(f"{threads} torch threads{', one core kept busy' if args.busy else ''}")
    for b in prompts:
        chosen = gen.decode_threads(model, b, threads)
        ratio = statistics.median(
            p / a for p, a in zip(rates["picked", b], rates["all", b], strict=True)
        )
        print(
            f"{b:>2} prompt(s): picked ({chosen} thread(s)) "
            f"{statistics.median(rates['picked', b]):,.0f} tokens/s, all ({threads}) "
            f"{statistics.median(rates['all', b]):,.0f}: x{ratio:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
