"""Scaling ladders: loss against training compute per variant, and a variant's gain stated as the
factor of compute the baseline would need to match it.

A ladder trains every variant at several model sizes over seeds. Its results table has one row
per finished run: variant (str), size (a label), seed (int), compute (training FLOPs, > 0) and
loss (final validation or test loss). Everything here is a plain function of that table or of
fitted curves; nothing trains.

Curves are fitted by toolkit.analysis.curves (`fit_curve`: a saturating power law, robustly).

Compute multiplier (`compute_multiplier`)
- m(C) = C'/C where L_base(C') = L_var(C): how many times the baseline's compute must grow to
  reach the loss the variant reaches with compute C. m > 1: the variant is better. Inverting the
  baseline's curve, C' = (A_b / (L_var(C) - E_b))^(1/α_b), so m = +inf when L_var(C) ≤ E_b (no
  baseline compute gets there). With the same E and α, m = (A_b / A_v)^(1/α) at every C. Two
  power laws (E = 0): m(C) = (A_b / A_v)^(1/α_b) · C^(α_v/α_b - 1), constant when α_v = α_b.
- `crossings(a, b, low, high)`: the computes in [low, high] where d(C) = ln L_a(C) - ln L_b(C)
  changes sign (the ranking flips), located on 2001 log-spaced computes and refined by brentq in
  ln C. A touch without a flip is not a crossing; coinciding curves have none.

Bootstrap (`bootstrap`, `ladder_summary`)
- Within each size, a variant's n_s runs are drawn n_s times with replacement and the curve is
  refitted (the same kind as the fit to all runs, started also from that fit): the spread
  reflects seed-to-seed noise at fixed sizes. Refits that do not converge are left out and
  counted. The variant and the baseline are resampled independently (conservative when seeds
  pair their runs), and refit i of one is paired with refit i of the other. The interval of m is
  an expanded percentile interval: the pair of order statistics at Φ(-z·√(n/(n-1))) and
  Φ(z·√(n/(n-1))) ("inverted cdf" quantiles, which allow m = +inf) of the m of the pairs,
  z = Φ⁻¹((1 + c)/2), c the confidence and n the fewest seeds at a size of the two curves. The
  factor undoes the resampling's own narrowing: a resample of n seeds spreads √((n-1)/n) as
  much as the seeds do. (Hesterberg's expanded percentile interval, 2015, uses a t quantile
  with n - 1 degrees of freedom in place of z; the fits pool every size, so that would widen
  the interval far past 95%.)
- Calibration, measured by simulation (benchmarks/ladder_coverage.py;
  test_bootstrap_interval_coverage checks 200 ladders): ladders of 4 sizes x 5 seeds over
  1e15-1e18 FLOPs, 2% log-normal noise on each run's loss, the baseline L = 2 + 445 C^-0.15 and
  the variant the same curve with twice the compute (true m = 2 at every C), 1000 refits each.
  The 95% interval of m at 1e18 FLOPs covered 2 in 95.8% ± 0.4% of 2000 ladders (seeds
  5000-5399, 6000-6599, 7000-7499 and 8000-8499; 93.6-97.7% by batch; 39 intervals wholly below
  2, 46 above: no side favoured). The plain percentile interval (order statistics at (1 - c)/2
  and (1 + c)/2, which this module used before) covered 93.5% ± 0.6% of the same ladders (91.2%
  ± 0.9% of 1000 others with 200 refits): more refits do not fix that, the factor does. The
  interval is wide all the same: the plain one's median ratio high/low was 4.5 (e^1.5), and
  this one is wider. With the baseline's own noise left out of the interval, the plain one's
  coverage fell to 73%. With fewer seeds it covers less: over 1000 ladders (seeds 5000-5399 and
  6000-6599) 93.5% ± 0.8% with 4 seeds and 88.7% ± 1.0% with 3, and 77.8% ± 1.3% with 2 (plain:
  90.6%, 85.5% and 72.4%), the misses on both sides (test_bootstrap_coverage_with_few_seeds
  checks 3). So `ladder_summary` warns below 4 seeds at a size with that figure, and a size
  with one seed adds nothing to the resampled spread: one seed at every size on both sides
  gives no interval (NaN) rather than a zero-width one that never covered the truth.
- Each variant's resamples come from numpy's generator seeded with (seed, crc32 of the variant's
  name), so a variant's interval does not change when other variants are added or the table's
  rows are reordered.

`ladder_summary` returns one row per variant (the baseline first, its multiplier 1): the fit
(kind, E, A, alpha, r2), the runs, sizes and distinct computes it used, the multiplier m at the
largest compute the baseline trained (`at_flops`) with its bootstrap interval, the same at
`target_flops` when given, the crossings against the baseline between the smallest compute trained
and max(target_flops, largest compute trained), the bootstrap counts, and `warnings`: short
sentences for fewer than 3 sizes, a poor fit (R² of log loss below 0.9, or more than 10% of
refits failed), a target more than 10x past the largest compute the variant or the baseline
trained, the fallback to a power law, an infinite multiplier and a crossing. The figure of the
runs, the curves and their bootstrap bands: scaling_figure.py.

Not here: training the ladder (its table comes from the sweep) and where the summary goes in a
report.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize as _scipy_optimize

from toolkit.analysis import curves
from toolkit.analysis.curves import (
    HUBER_DELTA,
    ScalingFit,
    fit_curve,
    loss_at,
)
from toolkit.errors import ToolkitError

COLUMNS = ("variant", "size", "seed", "compute", "loss")
MIN_SIZES = 3
POOR_R2 = 0.9
MAX_FAILED = 0.1  # fraction of bootstrap refits
MAX_EXTRAPOLATION = 10.0
GRID_POINTS = 2001  # crossings

FEWER_SIZES = f"a curve through fewer than {MIN_SIZES} sizes is a guess: add sizes"


@dataclass(frozen=True)
class BootstrapFits:
    """The refits of one variant's curve that converged, out of n resamples."""

    fits: tuple[ScalingFit, ...]
    failed: int
    n: int


# --- the table ---------------------------------------------------------------------------------


def ladder_runs(table: pd.DataFrame) -> pd.DataFrame:
    """The table's runs with a finite loss, sorted by variant, size and seed."""
    missing = [c for c in COLUMNS if c not in table]
    if missing:
        raise ToolkitError(
            f"the ladder table lacks {', '.join(missing)}: it needs one row per finished run "
            f"with columns {', '.join(COLUMNS)}"
        )
    runs = table[list(COLUMNS)].copy()
    runs["compute"] = pd.to_numeric(runs["compute"], errors="coerce")
    runs["loss"] = pd.to_numeric(runs["loss"], errors="coerce")
    if not (np.isfinite(runs["compute"]) & (runs["compute"] > 0)).all():
        raise ToolkitError("every run's compute must be a number of FLOPs > 0")
    runs = runs[np.isfinite(runs["loss"]) & (runs["loss"] > 0)]
    runs = runs.astype({"variant": str, "size": str})
    return runs.sort_values(["variant", "size", "seed"], kind="stable").reset_index(drop=True)


def _of(runs: pd.DataFrame, variant: str) -> pd.DataFrame:
    mine = runs[runs["variant"] == variant]
    if mine.empty:
        raise ToolkitError(
            f"variant {variant!r} has no finished runs in the ladder table: it has "
            f"{', '.join(sorted(set(runs['variant']))) or 'none'}"
        )
    return mine


def bootstrap(
    table: pd.DataFrame,
    variant: str,
    n: int = 1000,
    rng: np.random.Generator | int | None = None,
    *,
    kind: str | None = None,
    huber_delta: float = HUBER_DELTA,
) -> BootstrapFits:
    """n refits of the variant's curve, each on its runs resampled with replacement within each
    size (see the module docstring); the refits that did not converge are counted in failed.
    kind: that of the fit to all runs unless given. rng: a numpy Generator or a seed."""
    if n < 1:
        raise ToolkitError(f"bootstrap needs n ≥ 1 resamples, not {n}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    mine = _of(ladder_runs(table), variant)
    c, y = curves.points(mine["compute"].to_numpy(), mine["loss"].to_numpy())
    point = fit_curve(c, y, kind=kind, huber_delta=huber_delta)
    w = np.zeros((n, len(c)))
    for _, rows in mine.reset_index(drop=True).groupby("size", sort=True).groups.items():
        index = np.asarray(rows)
        draws = index[rng.integers(0, len(index), size=(n, len(index)))]
        np.add.at(w, (np.arange(n)[:, None], draws), 1.0)
    mu = float(np.log(c).mean())
    warm = np.array([point.E, math.log(point.A) - point.alpha * mu, point.alpha])
    fits, ok = curves.fit_many(c, y, w, point.kind, huber_delta, warm)
    kept = tuple(f for f, good in zip(fits, ok, strict=True) if good)
    return BootstrapFits(kept, n - len(kept), n)


# --- comparing curves ------------------------------------------------------------------------


def compute_multiplier(fit_variant: ScalingFit, fit_baseline: ScalingFit, at: float) -> float:
    """C'/at where L_baseline(C') = L_variant(at): > 1 when the variant is better, +inf when the
    variant's loss at `at` is at or below the baseline's floor E (no baseline compute reaches
    it), NaN when the baseline's curve does not fall. Same E and alpha: (A_b/A_v)^(1/alpha)."""
    if not at > 0:
        raise ToolkitError(f"the compute to compare at must be > 0 FLOPs, not {at}")
    target = loss_at(fit_variant, at)
    return float(curves.inverse(target, fit_baseline.E, fit_baseline.A, fit_baseline.alpha) / at)


def crossings(fit_a: ScalingFit, fit_b: ScalingFit, low: float, high: float) -> list[float]:
    """The computes in [low, high] where the two curves cross and their ranking flips, ascending
    (see the module docstring)."""
    if not 0 < low < high:
        raise ToolkitError(f"crossings need 0 < low < high FLOPs, not [{low}, {high}]")
    u = np.linspace(math.log(low), math.log(high), GRID_POINTS)

    def gap(v: Any) -> Any:
        c = np.exp(v)
        return np.log(loss_at(fit_a, c)) - np.log(loss_at(fit_b, c))

    d = gap(u)
    s = np.sign(d)
    found = [
        _scipy_optimize.brentq(gap, u[i], u[i + 1], xtol=1e-12)
        for i in np.flatnonzero(s[:-1] * s[1:] < 0)
    ]
    found += [u[i] for i in range(1, len(u) - 1) if s[i] == 0 and s[i - 1] * s[i + 1] < 0]
    return [float(math.exp(v)) for v in sorted(found)]


def _multipliers(fv: Sequence[ScalingFit], fb: Sequence[ScalingFit], at: float) -> np.ndarray:
    """compute_multiplier of fv[i] against fb[i] for the pairs, at once."""
    k = min(len(fv), len(fb))
    if k == 0:
        return np.array([])
    pv = np.array([(f.E, f.A, f.alpha) for f in fv[:k]])
    pb = np.array([(f.E, f.A, f.alpha) for f in fb[:k]])
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        target = pv[:, 0] + np.exp(np.log(pv[:, 1]) - pv[:, 2] * math.log(at))
    return curves.inverse(target, pb[:, 0], pb[:, 1], pb[:, 2]) / at


def expanded_tail(confidence: float, seeds: int) -> float:
    """The lower quantile level of the expanded percentile interval (module docstring):
    Φ(-z·√(n/(n-1))), z the normal quantile of the confidence and n the fewest seeds at a
    size; 0 (the whole range) with one seed. The upper level is 1 minus it."""
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    return NormalDist().cdf(-z * math.sqrt(seeds / (seeds - 1))) if seeds > 1 else 0.0


def _interval(m: np.ndarray, confidence: float, seeds: int) -> tuple[float, float]:
    """The expanded percentile interval of the refits' multipliers m: their order statistics
    at expanded_tail() and 1 minus it; with one seed, the range of m."""
    m = m[~np.isnan(m)]
    if not len(m):
        return math.nan, math.nan
    tail = expanded_tail(confidence, seeds)
    q = np.quantile(m, [tail, 1 - tail], method="inverted_cdf")
    return float(q[0]), float(q[1])


# --- the summary --------------------------------------------------------------------------------

# Below this many seeds at some size, the interval covers clearly less than it says (module
# docstring), and a warning says how much.
MIN_SEEDS = 4
# The 95% interval's coverage of the true multiplier by seeds per size, simulated as in the
# module docstring (test_bootstrap_coverage_with_few_seeds).
COVERAGE = {2: "about 78%", 3: "about 89%"}


def _seeds_per_size(runs: pd.DataFrame, pick: Any = min) -> int:
    """The fewest (or, with pick=max, the most) runs any size of these runs has."""
    return int(pick(runs.groupby("size").size())) if len(runs) else 0


def _few_seeds(seeds: int) -> str:
    if seeds < 2:
        return (
            "a size with one seed adds none of its noise to the bootstrap, which resamples "
            "seeds: the interval is too narrow (none at all with one seed everywhere); train "
            f"{MIN_SEEDS} or more seeds per size"
        )
    return (
        f"{seeds} seeds at a size: the bootstrap's 95% interval covers the true multiplier "
        f"{COVERAGE.get(seeds, 'less than 95%')} of the time in simulated ladders (about 94% "
        f"with {MIN_SEEDS}, 96% with 5); read it as that, or train more seeds"
    )


def simulated_ladder(
    rng: np.random.Generator,
    curves_by_variant: dict[str, tuple[float, float, float]],
    computes: Sequence[float],
    seeds: int = 5,
    noise: float = 0.02,
) -> pd.DataFrame:
    """A ladder's table of simulated runs, as ladder_summary reads it: for each variant's
    (E, A, alpha), `seeds` runs at each compute (size "size0", "size1", ...), each run's loss
    the curve's times log-normal noise of standard deviation `noise` in log loss. For checking
    by simulation what an interval covers with a given number of seeds and sizes
    (benchmarks/ladder_coverage.py; the tests)."""
    rows = [
        (v, f"size{i}", seed, c, (E + A * c**-alpha) * math.exp(rng.normal(0, noise)))
        for v, (E, A, alpha) in curves_by_variant.items()
        for i, c in enumerate(computes)
        for seed in range(seeds)
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def variant_rng(seed: int, variant: str) -> np.random.Generator:
    """The generator of one variant's bootstrap resamples: seeded with (seed, crc32(name))."""
    return np.random.default_rng([seed, zlib.crc32(variant.encode())])


def ladder_summary(
    table: pd.DataFrame,
    baseline: str,
    target_flops: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per variant, the baseline first (see the module docstring); attrs carry the
    baseline, target_flops, confidence and, under "bootstrap", each variant's refits as
    (E, A, alpha) tuples for `ladder_figure` (scaling_figure.py)."""
    if not 0 < confidence < 1:
        raise ToolkitError(f"confidence must be between 0 and 1, not {confidence}")
    if target_flops is not None and not target_flops > 0:
        raise ToolkitError(f"target_flops must be > 0 FLOPs, not {target_flops}")
    runs = ladder_runs(table)
    base_runs = _of(runs, baseline)
    order = [baseline] + [v for v in dict.fromkeys(table["variant"].astype(str)) if v != baseline]
    order = [v for v in order if v in set(runs["variant"])]
    at = float(base_runs["compute"].max())
    try:
        base_fit = fit_curve(base_runs["compute"], base_runs["loss"])
    except ToolkitError as exc:
        raise ToolkitError(f"the baseline's curve cannot be fitted: {exc}") from None
    boots: dict[str, BootstrapFits] = {}
    fewest: dict[str, int] = {}  # variant -> the fewest seeds at any of its sizes
    rows = []
    for variant in order:
        mine = runs[runs["variant"] == variant]
        row: dict[str, Any] = {
            "variant": variant, "baseline": variant == baseline, "runs": len(mine),
            "sizes": mine["size"].nunique(), "at_flops": at, "target_flops": target_flops,
        }  # fmt: skip
        warnings: list[str] = []
        if row["sizes"] < MIN_SIZES:
            warnings.append(FEWER_SIZES)
        try:
            fit = base_fit if variant == baseline else fit_curve(mine["compute"], mine["loss"])
        except ToolkitError as exc:
            rows.append(row | {"warnings": [*warnings, f"no curve: {exc}"], "crossings": []})
            continue
        boot = bootstrap(runs, variant, n_boot, variant_rng(seed, variant), kind=fit.kind)
        boots[variant] = boot
        fewest[variant] = _seeds_per_size(mine)
        warnings += fit.warnings
        row |= {
            "kind": fit.kind, "E": fit.E, "A": fit.A, "alpha": fit.alpha, "r2": fit.r2,
            "computes": fit.n_computes, "boot_fits": len(boot.fits), "boot_failed": boot.failed,
        }  # fmt: skip
        if fit.r2 < POOR_R2:
            warnings.append(
                f"poor fit (R² of log loss {fit.r2:.2f} < {POOR_R2}): look for diverged runs, "
                f"or add sizes"
            )
        if boot.failed > MAX_FAILED * boot.n:
            warnings.append(
                f"{boot.failed} of {boot.n} bootstrap refits failed (over {MAX_FAILED:.0%}): "
                f"the interval is unreliable; add seeds or sizes"
            )
        trained = min(float(mine["compute"].max()), at)
        if target_flops is not None and target_flops > MAX_EXTRAPOLATION * trained:
            warnings.append(
                f"target {target_flops:.3g} FLOPs is {target_flops / trained:.0f}x past the "
                f"largest compute trained ({trained:.3g}): the multiplier there is an "
                f"extrapolation of the fitted curves"
            )
        seeds = min(_seeds_per_size(mine), _seeds_per_size(base_runs))
        if variant != baseline and seeds < MIN_SEEDS:
            warnings.append(_few_seeds(seeds))
        for name, point in (("at", at), ("target", target_flops)):
            if point is None:
                continue
            if variant == baseline:
                m, low, high = 1.0, 1.0, 1.0
            else:
                m = compute_multiplier(fit, base_fit, point)
                base_boot = boots[baseline].fits
                pairs = _multipliers(boot.fits, base_boot, point)
                low, high = _interval(pairs, confidence, seeds)
                if max(_seeds_per_size(mine, max), _seeds_per_size(base_runs, max)) < 2:
                    low = high = math.nan  # resampling one seed per size moves nothing
                if m == math.inf:
                    warnings.append(
                        f"at {point:.3g} FLOPs the loss is at or below the baseline's fitted "
                        f"floor E = {base_fit.E:.4g}: no baseline compute reaches it "
                        f"(multiplier +inf)"
                    )
            prefix = "multiplier" if name == "at" else "target_multiplier"
            row |= {prefix: m, f"{prefix}_low": low, f"{prefix}_high": high}
        low_c = float(min(mine["compute"].min(), base_runs["compute"].min()))
        high_c = max(float(mine["compute"].max()), at, target_flops or 0.0)
        row["crossings"] = [] if variant == baseline else crossings(fit, base_fit, low_c, high_c)
        if row["crossings"]:
            where = ", ".join(f"{c:.3g}" for c in row["crossings"])
            warnings.append(
                f"the curve crosses the baseline's at {where} FLOPs: the ranking flips there"
            )
        rows.append(row | {"warnings": warnings})
    columns = [
        "variant", "baseline", "kind", "E", "A", "alpha", "r2", "runs", "sizes", "computes",
        "at_flops", "multiplier", "multiplier_low", "multiplier_high", "target_flops",
        "target_multiplier", "target_multiplier_low", "target_multiplier_high", "crossings",
        "boot_fits", "boot_failed", "warnings",
    ]  # fmt: skip
    summary = pd.DataFrame(rows).reindex(columns=columns)
    summary.attrs = {
        "baseline": baseline, "target_flops": target_flops, "confidence": confidence,
        "bootstrap": {v: tuple((f.E, f.A, f.alpha) for f in b.fits) for v, b in boots.items()},
        "seeds": fewest,
    }  # fmt: skip
    return summary
