"""benchmarks/tuning_seeds.py's model of a tuned sweep: a final run that is its variant's
tuning winner flatters the variant with the larger grid; tuning seeds apart from the final
seeds (the [tune] default) do not. What the README states about the default rests on this."""

from __future__ import annotations

from benchmarks import tuning_seeds as bench

SD = {"run": 0.02, "seed": 0.02, "split": 0.005}


def test_a_reused_winner_biases_the_difference_and_separate_seeds_do_not():
    found = bench.simulate(400, seeds=3, points=(5, 1), sd=SD, start=0)
    # E[min of 5 normals] is -1.16 sd: about -0.023 on seed 0, -0.0077 over 3 seeds; the
    # mean over 400 sweeps has a standard error of about 0.0013.
    overlap, apart = found["overlap"][0], found["apart"][0]
    assert -0.012 < overlap < -0.004
    assert abs(apart) < 0.004
    # Equal grids: the luck is the same on both sides, and cancels.
    even = bench.simulate(400, seeds=3, points=(3, 3), sd=SD, start=1)
    assert abs(even["overlap"][0]) < 0.004
