"""What tuning on a final seed does to a tuned comparison, by simulation:
`python benchmarks/tuning_seeds.py [--sweeps N] [--seeds S] [--points A B]`.

A tuned sweep ([tune]) trains every variant at every point of its grid on the tuning seeds,
picks the point with the lowest validation loss, then trains every variant on the final seeds
at its point and compares them on the test split. Training is deterministic, so when a tuning
seed is also a final seed, that variant's final run on it IS its winning tuning run: chosen
for a low validation loss, which the run's own luck (its initialisation and data order) helped,
and the same luck lowers its test loss. A variant with more points to choose from gains more.

The model of one sweep: two variants of equal true loss, variant A with `A` grid points and B
with `B`, all points equally good (the worst case for the choice's luck). A run's losses are
seed effect (shared by the variants on that seed) + run effect (its own, the same on both
splits) + split noise (one draw per split). Each sweep tunes on seed 0 and then either reuses it
as a final seed ("overlap": final seeds 0 .. S-1, seed 0's final run being the winner) or not
("apart": final seeds 1 .. S, as the default tuning seed outside the final seeds gives). It
prints, over the sweeps, the mean Δ (A minus B on test, its true value 0) and how often the
toolkit's test (stats.compare_to_baseline: paired t on shared seeds) calls it at α = 0.05.
Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit.analysis.stats import compare_to_baseline


def final_losses(
    rng: np.random.Generator, seed_fx: np.ndarray, points: int, overlap: bool, sd: dict
) -> dict[int, float]:
    """One variant's test losses on the final seeds (seed -> loss)."""
    n = len(seed_fx) - 1  # seed_fx[0] is the tuning seed's
    seeds = range(n) if overlap else range(1, n + 1)
    out = {}
    for s in seeds:
        out[s] = seed_fx[s] + rng.normal(0, sd["run"]) + rng.normal(0, sd["split"])
    if overlap:  # seed 0's final run is the tuning run with the lowest validation loss
        runs = rng.normal(0, sd["run"], points)
        val = seed_fx[0] + runs + rng.normal(0, sd["split"], points)
        out[0] = seed_fx[0] + runs[int(np.argmin(val))] + rng.normal(0, sd["split"])
    return out


def simulate(sweeps: int, seeds: int, points: tuple[int, int], sd: dict, start: int) -> dict:
    rng = np.random.default_rng(start)
    found = {}
    for overlap in (True, False):
        deltas, calls = [], 0
        for _ in range(sweeps):
            seed_fx = rng.normal(0, sd["seed"], seeds + 1)
            a, b = (final_losses(rng, seed_fx, p, overlap, sd) for p in points)
            deltas.append(np.mean([a[s] - b[s] for s in a]))
            calls += compare_to_baseline(a, b).p_value < 0.05
        found["overlap" if overlap else "apart"] = (float(np.mean(deltas)), calls / sweeps)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=4000)
    parser.add_argument("--seeds", type=int, default=3, help="final seeds per variant")
    parser.add_argument("--points", type=int, nargs=2, default=(5, 1), metavar=("A", "B"))
    parser.add_argument("--run-sd", type=float, default=0.02, help="a run's own effect")
    parser.add_argument("--seed-sd", type=float, default=0.02, help="shared by a seed's runs")
    parser.add_argument("--split-sd", type=float, default=0.005, help="per split and run")
    parser.add_argument("--start", type=int, default=0, help="the simulation's own seed")
    args = parser.parse_args()
    sd = {"run": args.run_sd, "seed": args.seed_sd, "split": args.split_sd}
    found = simulate(args.sweeps, args.seeds, tuple(args.points), sd, args.start)
    print(
        f"{args.sweeps} sweeps, {args.seeds} final seeds, grids of {args.points[0]} and "
        f"{args.points[1]} points, sd run {args.run_sd} seed {args.seed_sd} split {args.split_sd}"
    )
    where = {"overlap": "among the final seeds", "apart": "apart from them"}
    for name, (delta, rate) in found.items():
        print(
            f"  tuning seed {where[name]:<21}: mean Δ {delta:+.4f} (true 0), "
            f"called a difference at α 0.05 in {rate:.3f}"
        )


if __name__ == "__main__":
    main()
