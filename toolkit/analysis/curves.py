"""Loss against compute: fitting a saturating power law L(C) = E + A · C^(-alpha), robustly, to
one variant's runs (or many weighted resamples of them at once), and reading the fitted curve.

Curves (`fit_curve`)
- Saturating: L(C) = E + A · C^(-α), with the floor 0 ≤ E < min L (the smallest loss fitted),
  A > 0 and 0 < α ≤ 3 (α ≥ 1e-4 in practice). For conditioning it is fitted in centred log compute,
  x = ln C - μ with μ the mean of ln C over the runs, as L = E + exp(a - α x), so that
  A = exp(a + α μ). Residuals are in log loss, r_i = ln(E + exp(a - α x_i)) - ln L_i, and the fit
  minimises Σ w_i ρ(r_i) with Huber's ρ(r) = r²/2 for |r| ≤ δ and δ|r| - δ²/2 beyond (δ = 0.01
  by default: a run within 1% of the curve counts in full, a diverged run only linearly). w_i is
  1, or how often a bootstrap resample drew run i. Starting points: for each floor E0 = f · min L
  with f in {0, 0.3, 0.6, 0.8, 0.9, 0.95, 0.98}, the least-squares line ln(L - E0) = a0 - α0 x
  gives a0 and α0 (clipped to [0.02, 2.5]); the 3 of lowest Σ w ρ each start a Levenberg-Marquardt
  descent (below), and the converged fit of lowest Σ w ρ is kept.
- Power law, the fallback: L = A · C^(-α) (E = 0), from ordinary least squares of ln L on ln C:
  α = -slope, ln A = intercept. Used with fewer than 4 distinct computes (3 parameters need one
  level to spare) or when no saturating descent converges; the fit says so in its warnings.
- R² of log loss: 1 - Σ w (ln L_i - ln L̂_i)² / Σ w (ln L_i - mean_w ln L)².
- The descent: Levenberg-Marquardt, solving (H + λ D) Δ = -g with the gradient
  g = Σ w ψ(r) ∇r, ψ(r) = clip(r, -δ, δ), the Gauss-Newton curvature H = Σ w ψ'(r) ∇r ∇rᵀ
  (ψ' = 1 for |r| ≤ δ, 0 beyond) and D the diagonal of Σ w min(1, δ/|r|) ∇r ∇rᵀ (the
  reweighted least-squares curvature, never 0: it scales the damping). A step is kept (λ /= 3)
  when Σ w ρ falls, else λ *= 4; a parameter at a bound whose gradient points out of the box
  is held there for the step. It stops when a kept step lowers Σ w ρ by less than 1e-8 of
  itself (scipy's ftol), when λ passes 1e12 (no step lowers it), or when Σ w ρ ≤ 1e-30
  (noiseless data); after 200 steps it has not converged. It runs as numpy arrays over many
  problems at once (every start of every bootstrap resample together: 1000 refits take well
  under a second, where scipy.optimize.least_squares takes about 6 ms per start), and reaches
  the optimum least_squares(loss="huber") reaches (tests/analysis/test_scaling.py).

Not here: ladders, compute multipliers and the bootstrap (toolkit/analysis/scaling.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.errors import ToolkitError

SATURATING, POWER = "saturating", "power"
KINDS = (SATURATING, POWER)
HUBER_DELTA = 0.01
ALPHA_LOW, ALPHA_HIGH = 1e-4, 3.0
MIN_SATURATING_COMPUTES = 4
FLOOR_GRID = (0.0, 0.3, 0.6, 0.8, 0.9, 0.95, 0.98)  # starting E0 as fractions of min L
STARTS = 3
MAX_STEPS = 200


@dataclass(frozen=True)
class ScalingFit:
    """L(C) = E + A · C^(-alpha); kind "power" has E = 0. n_points counts runs (with
    multiplicity in a bootstrap refit), n_computes the distinct computes; r2 is of log loss."""

    kind: str
    E: float
    A: float
    alpha: float
    n_points: int
    n_computes: int
    r2: float
    warnings: tuple[str, ...] = ()


def loss_at(fit: ScalingFit, compute: Any) -> Any:
    """L(C) = E + A · C^(-alpha), computed as E + exp(ln A - alpha · ln C); float or array."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        c = np.asarray(compute, dtype=float)
        out = fit.E + np.exp(math.log(fit.A) - fit.alpha * np.log(c)) if fit.A > 0 else c * np.nan
    return float(out) if out.ndim == 0 else out


def compute_at(fit: ScalingFit, loss: float) -> float:
    """The compute at which the curve reaches loss: (A / (loss - E))^(1/alpha); +inf at or below
    the floor E, NaN for a curve that does not fall (alpha ≤ 0)."""
    return float(inverse(loss, fit.E, fit.A, fit.alpha))


def inverse(loss: Any, E: Any, A: Any, alpha: Any) -> np.ndarray:
    """compute_at over arrays of curve parameters (one curve per element, broadcast)."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        gap = np.asarray(loss, dtype=float) - E
        c = np.exp((np.log(A) - np.log(np.where(gap > 0, gap, 1.0))) / alpha)
        c = np.where(gap > 0, c, np.inf)
        return np.where((np.asarray(alpha) > 0) & (np.asarray(A) > 0) & ~np.isnan(gap), c, np.nan)


# --- fitting ---------------------------------------------------------------------------------


def fit_curve(
    compute: Sequence[float],
    loss: Sequence[float],
    *,
    kind: str | None = None,
    huber_delta: float = HUBER_DELTA,
) -> ScalingFit:
    """Fit L(C) = E + A · C^(-alpha) (see the module docstring). kind None: saturating with at
    least 4 distinct computes, else a power law, and a power law too when the saturating fit
    does not converge (both said in the warnings); "saturating" or "power" forces one, and a
    forced saturating fit that does not converge raises ToolkitError."""
    c, y = points(compute, loss)
    fits, ok = fit_many(c, y, np.ones((1, len(c))), kind, huber_delta)
    if not ok[0]:
        raise ToolkitError(
            f"the saturating fit did not converge on {len(c)} runs: fit kind='power' instead"
        )
    return fits[0]


def points(compute: Sequence[float], loss: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """compute and loss as float arrays, once they can hold a curve (one-line errors else)."""
    c, y = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
    if c.shape != y.shape or c.ndim != 1:
        raise ToolkitError("compute and loss must be sequences of the same length")
    if not (np.isfinite(c).all() and (c > 0).all() and np.isfinite(y).all() and (y > 0).all()):
        raise ToolkitError("compute and loss must be finite and > 0: leave failed runs out")
    if len(np.unique(c)) < 2:
        raise ToolkitError("a curve needs runs at 2 or more distinct computes: add sizes")
    return c, y


def fit_many(
    compute: np.ndarray,
    loss: np.ndarray,
    w: np.ndarray,
    kind: str | None,
    delta: float,
    warm: np.ndarray | None = None,
) -> tuple[list[ScalingFit | None], np.ndarray]:
    """One fit per row of the weights w (fits x runs: each run's multiplicity), of kind or the
    automatic kind; warm, [E, a, alpha] in centred log compute, starts every saturating fit as
    well. Returns the fits (None where a forced saturating fit failed) and which succeeded."""
    if kind is not None and kind not in KINDS:
        raise ToolkitError(f"unknown curve kind {kind!r}: use 'saturating' or 'power'")
    lnc = np.log(compute)
    mu = float(lnc.mean())
    x, y = lnc - mu, np.log(loss)
    distinct = np.array([len(np.unique(compute[row > 0])) for row in w])
    warn: list[list[str]] = [[] for _ in w]
    saturating = np.full(len(w), kind == SATURATING)
    if kind is None:
        saturating = distinct >= MIN_SATURATING_COMPUTES
        for i in np.flatnonzero(~saturating):
            warn[i].append(
                f"{distinct[i]} distinct computes: fitted a pure power law L = A·C^-alpha "
                f"(a saturating fit needs at least {MIN_SATURATING_COMPUTES})"
            )
    params = np.full((len(w), 3), np.nan)  # E, a, alpha
    converged = np.ones(len(w), dtype=bool)
    if saturating.any():
        rows = np.flatnonzero(saturating)
        found, ok = _saturating(x, y, w[rows], delta, warm)
        params[rows] = found
        converged[rows] = ok
        if kind is None:
            for i in rows[~ok]:
                warn[i].append(
                    "the saturating fit did not converge: fitted a pure power law L = A·C^-alpha"
                )
            saturating[rows[~ok]] = False
            converged[rows] = True
    power = ~saturating
    if power.any():
        params[power] = _power(x, y, w[power])
    fits = []
    for i, (E, a, alpha) in enumerate(params):
        if not converged[i]:
            fits.append(None)
            continue
        yhat = np.log(E + np.exp(a - alpha * x))
        mean = np.average(y, weights=w[i])
        ss_tot = float(np.sum(w[i] * (y - mean) ** 2))
        r2 = 1 - float(np.sum(w[i] * (y - yhat) ** 2)) / ss_tot if ss_tot > 0 else math.nan
        is_sat = bool(saturating[i])
        if is_sat and np.min(loss[w[i] > 0]) * (1 - 1e-4) <= E:
            warn[i].append(
                "the fitted floor E sits at the smallest loss observed: the curve has flattened, "
                "so multipliers against it are unreliable"
            )
        if is_sat and alpha >= ALPHA_HIGH * (1 - 1e-6):
            warn[i].append(f"alpha reached its bound {ALPHA_HIGH:g}: check the smallest sizes")
        if not alpha > 0:
            warn[i].append("loss does not fall with compute (alpha ≤ 0): check the runs")
        fits.append(
            ScalingFit(
                SATURATING if is_sat else POWER, float(E), float(math.exp(a + alpha * mu)),
                float(alpha), round(float(w[i].sum())), int(distinct[i]), r2, tuple(warn[i]),
            )
        )  # fmt: skip
    return fits, converged


def _power(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least squares of y = a - alpha · x, one row of weights per fit: [0, a, alpha]."""
    sw = w.sum(1)
    xm, ym = (w @ x) / sw, (w @ y) / sw
    dx = x[None, :] - xm[:, None]
    sxx = (w * dx * dx).sum(1)
    slope = (w * dx * (y[None, :] - ym[:, None])).sum(1) / np.where(sxx > 0, sxx, np.nan)
    return np.stack([np.zeros_like(xm), ym + (-slope) * xm, -slope], axis=1)


def _saturating(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, delta: float, warm: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The best converged descent per row of w (see the module docstring): ([E, a, alpha],
    converged)."""
    n_fits = len(w)
    loss = np.exp(y)
    floor = np.where(w > 0, loss[None, :], np.inf).min(1) * (1 - 1e-6)
    # Starts: the line through ln(L - E0) for each E0 on the grid, the best few by Σ w ρ.
    e0 = floor[:, None] * np.asarray(FLOOR_GRID)[None, :]  # (fits, grid)
    # (fits, grid, runs); a run the resample left out may lie below its floor: ln 1 there, weight 0
    drawn = (w > 0)[:, None, :]
    z = np.log(np.where(drawn, loss[None, None, :] - e0[:, :, None], 1.0))
    sw = w.sum(1)[:, None]
    xm = (w @ x)[:, None] / sw
    zm = np.einsum("fn,fgn->fg", w, z) / sw
    dx = x[None, :] - xm
    sxx = (w * dx * dx).sum(1)[:, None]
    slope = np.einsum("fn,fgn->fg", w * dx, z - zm[:, :, None]) / sxx
    alpha0 = np.clip(-slope, 0.02, 2.5)
    a0 = zm + alpha0 * xm
    grid = np.stack([e0, a0, alpha0], axis=-1)  # (fits, grid, 3)
    r = np.log(grid[..., :1] + np.exp(grid[..., 1:2] - grid[..., 2:3] * x)) - y
    cost = (w[:, None, :] * _rho(r, delta)).sum(-1)
    best = np.argsort(cost, axis=1, kind="stable")[:, :STARTS]
    starts = np.take_along_axis(grid, best[:, :, None], axis=1)
    if warm is not None:
        starts = np.concatenate([starts, np.broadcast_to(warm, (n_fits, 1, 3))], axis=1)
    k = starts.shape[1]
    theta, cost, ok = _descend(
        x, y, np.repeat(w, k, axis=0), starts.reshape(-1, 3), np.repeat(floor, k), delta
    )
    cost = np.where(ok, cost, np.inf).reshape(n_fits, k)
    pick = np.argmin(cost, axis=1)
    theta = theta.reshape(n_fits, k, 3)[np.arange(n_fits), pick]
    return theta, np.isfinite(cost[np.arange(n_fits), pick])


def _rho(r: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * a - 0.5 * delta * delta)


def _residuals(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """r = ln(E + exp(a - alpha x)) - y and its Jacobian (fits, runs, 3)."""
    E, a, alpha = theta[:, :1], theta[:, 1:2], theta[:, 2:3]
    t = np.exp(np.clip(a - alpha * x, -700.0, 700.0))
    m = E + t
    return np.log(m) - y, np.stack([1 / m, t / m, -x * t / m], axis=-1)


def _descend(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, theta: np.ndarray, floor: np.ndarray, delta: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Levenberg-Marquardt for Σ w ρ(r), one problem per row, within the bounds
    0 ≤ E ≤ floor, ALPHA_LOW ≤ alpha ≤ ALPHA_HIGH. Returns (theta, Σ w ρ, converged)."""
    n = len(theta)
    low = np.broadcast_to(np.array([0.0, -np.inf, ALPHA_LOW]), (n, 3))
    high = np.stack([floor, np.full(n, np.inf), np.full(n, ALPHA_HIGH)], axis=1)
    theta = np.clip(theta, low, high)
    cost = np.full(n, np.inf)
    lam = np.full(n, 1e-3)
    converged = np.zeros(n, dtype=bool)
    active = np.arange(n)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        r, jac = _residuals(theta, x, y)
        cost = (w * _rho(r, delta)).sum(1)
        active = active[np.isfinite(cost)]
        r, jac = r[active], jac[active]
        for _ in range(MAX_STEPS):
            if not len(active):
                break
            th, wa, lo, hi = theta[active], w[active], low[active], high[active]
            g = np.einsum("bn,bnk->bk", wa * np.clip(r, -delta, delta), jac)
            omega = wa * np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300))
            scale = np.einsum("bn,bnk->bk", omega, jac * jac)
            inner = wa * (np.abs(r) <= delta)
            hess = np.matmul(np.swapaxes(jac * inner[..., None], 1, 2), jac)
            held = ((th <= lo) & (g > 0)) | ((th >= hi) & (g < 0))
            d = np.maximum(scale, 1e-12 * scale.max(1, keepdims=True) + 1e-300)
            system = hess + lam[active, None, None] * (d[:, :, None] * np.eye(3))
            system = np.where(held[:, :, None] | held[:, None, :], 0.0, system)
            system = system + held[:, :, None] * np.eye(3)
            step = np.linalg.solve(system, np.where(held, 0.0, -g)[..., None])[..., 0]
            trial = np.clip(th + step, lo, hi)
            r_new, jac_new = _residuals(trial, x, y)
            new = (wa * _rho(r_new, delta)).sum(1)
            old = cost[active]
            kept = np.isfinite(new) & (new < old)
            theta[active[kept]] = trial[kept]
            cost[active[kept]] = new[kept]
            r = np.where(kept[:, None], r_new, r)
            jac = np.where(kept[:, None, None], jac_new, jac)
            settled = kept & (old - new <= 1e-8 * old)
            lam[active] = np.where(kept, np.maximum(lam[active] / 3, 1e-12), lam[active] * 4)
            done = settled | (lam[active] > 1e12) | (cost[active] <= 1e-30)
            converged[active[done]] = True
            r, jac, active = r[~done], jac[~done], active[~done]
    return theta, cost, converged & np.isfinite(theta).all(1)
