"""How often a ladder's 95% compute-multiplier interval covers the truth, by simulation:
`python benchmarks/ladder_coverage.py --seeds 5 [--ladders 400] [--refits 1000] [--start 5000]`.

Each simulated ladder has 4 sizes from 1e15 to 1e18 FLOPs and `--seeds` runs per size for two
variants: the baseline L = 2 + 445 C^-0.15 and a variant on the same curve with twice the
compute (true multiplier 2 at every C), each run's loss times log-normal noise of 2%. Ladder
i draws its noise from numpy's generator seeded with start + i and its refits as
toolkit.analysis.scaling.ladder_summary draws them with seed i. It prints how often the
interval of the multiplier at 1e18 FLOPs covers 2, for the interval ladder_summary gives (the
expanded percentile interval) and for the plain percentile interval (2.5% and 97.5%), with
the misses on each side. The figures in toolkit/analysis/scaling.py's docstring and the
README come from this script. Statistics, not speed; not a test.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from toolkit.analysis.scaling import (
    _interval,
    _multipliers,
    bootstrap,
    simulated_ladder,
    variant_rng,
)

E, A, ALPHA = 2.0, 445.0, 0.15
CURVES = {"base": (E, A, ALPHA), "better": (E, A / 2**ALPHA, ALPHA)}  # twice the compute
COMPUTES = np.geomspace(1e15, 1e18, 4)
NOISE = 0.02


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="runs per size (at least 2)")
    parser.add_argument("--ladders", type=int, default=400)
    parser.add_argument("--refits", type=int, default=1000)
    parser.add_argument("--start", type=int, default=5000, help="the first ladder's seed")
    args = parser.parse_args()
    if args.seeds < 2 or args.ladders < 1 or args.refits < 1:
        parser.error("--seeds must be at least 2, --ladders and --refits at least 1")
    counts = {"expanded": [0, 0, 0], "plain": [0, 0, 0]}  # covered, below 2, above 2
    for i in range(args.ladders):
        table = simulated_ladder(
            np.random.default_rng(args.start + i), CURVES, COMPUTES, args.seeds, NOISE
        )
        fits = {v: bootstrap(table, v, args.refits, variant_rng(i, v)).fits for v in CURVES}
        m = _multipliers(fits["better"], fits["base"], float(COMPUTES[-1]))
        plain = np.quantile(m[~np.isnan(m)], [0.025, 0.975], method="inverted_cdf")
        for name, (low, high) in (("expanded", _interval(m, 0.95, args.seeds)), ("plain", plain)):
            tally = counts[name]
            tally[0] += low <= 2 <= high
            tally[1] += high < 2
            tally[2] += low > 2
    print(
        f"{args.ladders} ladders (seeds {args.start}-{args.start + args.ladders - 1}), "
        f"{args.seeds} seeds per size, {args.refits} refits"
    )
    for name, (covered, below, above) in counts.items():
        p = covered / args.ladders
        se = math.sqrt(p * (1 - p) / args.ladders)
        print(
            f"  {name:8} interval: covered 2 in {p:.1%} ± {se:.1%}, "
            f"{below} wholly below, {above} above"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
