"""Samples whose expectiles match measured ones: the decoding's imputation, in float64 NumPy.

The same algorithm as agents/imputation.py's `impute_samples` (max-entropy start, projected
Gauss-Newton polish, the best of it and random uniform starts), outside jit: the decoding runs
once, and pooled populations have hundreds of cells, where the jitted version's unrolled K x K
solve makes compilation, not solving, the cost.
"""

from __future__ import annotations

import numpy as np
import scipy.special

# Step sizes tried along each Newton / Gauss-Newton direction; 0 keeps the iterate, so no
# iteration can make its objective worse.
_STEP_SIZES = np.array((1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.0))
# The max-entropy dual starts heavily regularised (measured expectiles are inconsistent) and
# the ridge halves every iteration down to a floor that barely biases consistent ones.
_DUAL_RIDGE_START, _DUAL_RIDGE_FLOOR = 1e-3, 1e-6


def impute_from_expectiles(
    expectiles: np.ndarray,
    taus: np.ndarray,
    bounds: tuple[float, float],
    rng: np.random.Generator,
    *,
    num_samples: int,
    num_grid: int,
    num_iterations: int,
    num_starts: int,
) -> np.ndarray:
    """Samples x [num_samples] in bounds whose tau_k-expectiles best match e_k [K]: they minimise
    L(x) = (1/K) sum_k r_k(x)^2 (`expectile_residuals`), the paper's decoding objective.

    Stage 1 gives one start, num_starts - 1 more are uniform in bounds; stage 2 polishes each,
    and the best is kept.
    """
    expectiles, taus = np.asarray(expectiles, np.float64), np.asarray(taus, np.float64)
    first = _max_entropy_quantiles(expectiles, taus, bounds, num_samples, num_grid, num_iterations)
    random_starts = rng.uniform(*bounds, size=(num_starts - 1, num_samples))
    polished = _gauss_newton(
        np.concatenate([first[None], random_starts]), expectiles, taus, bounds, num_iterations
    )
    losses = np.mean(expectile_residuals(polished, expectiles, taus) ** 2, axis=-1)
    return np.sort(polished[np.argmin(losses)])


def _weights_and_offsets(samples, expectiles, taus):
    """|tau_k - 1{x_i <= e_k}| and x_i - e_k, both [..., K, M], for samples [..., M]."""
    offsets = samples[..., None, :] - expectiles[:, None]
    return np.where(offsets <= 0.0, 1.0 - taus[:, None], taus[:, None]), offsets


def expectile_residuals(samples, expectiles, taus) -> np.ndarray:
    """r_k = (1/M) sum_i |tau_k - 1{x_i <= e_k}| (x_i - e_k), [..., K]: zero iff e_k is the
    tau_k-expectile of the samples [..., M]."""
    weights, offsets = _weights_and_offsets(samples, expectiles, taus)
    return np.mean(weights * offsets, axis=-1)


def _max_entropy_quantiles(expectiles, taus, bounds, num_samples, num_grid, num_iterations):
    """Stage 1: the M quantiles of the max-entropy distribution on a grid over bounds whose
    expectile conditions hold (least-violation when they cannot all hold).

    Its dual (K multipliers) is convex and smooth: damped Newton with an annealed ridge.
    Products here and in the polish are einsums, not `@`: threaded BLAS on matrices this small
    can stall for a long time when other processes share the cores.
    """
    low, high = bounds
    eps = np.finfo(np.float64).eps
    # A zero-width range (all expectiles equal) must not divide by zero.
    width = max(high - low, eps * (1.0 + np.max(np.abs(expectiles))))
    grid = low + width * (np.arange(num_grid) + 0.5) / num_grid
    weights, offsets = _weights_and_offsets(grid, expectiles, taus)
    # Scaling by the width makes the ridge schedule independent of the reward unit.
    features = weights * offsets / width  # [K, G]
    multipliers = np.zeros(expectiles.size)
    for iteration in range(num_iterations):
        ridge = max(_DUAL_RIDGE_FLOOR, _DUAL_RIDGE_START * 0.5**iteration)
        multipliers = _dual_newton_step(multipliers, features, ridge)
    probs = scipy.special.softmax(np.einsum("k,kg->g", multipliers, features))
    # Each grid cell's mass is spread uniformly over the cell, so the CDF is piecewise linear.
    edges = low + width * np.arange(num_grid + 1) / num_grid
    cdf = np.concatenate([[0.0], np.cumsum(probs)])
    levels = (np.arange(num_samples) + 0.5) / num_samples
    return np.clip(np.interp(levels, cdf, edges), low, high)


def _dual_newton_step(multipliers, features, ridge):
    """One damped Newton step on the ridged max-entropy dual logsumexp(l F) + ridge |l|^2 / 2."""
    probs = scipy.special.softmax(np.einsum("k,kg->g", multipliers, features))
    mean_features = np.einsum("kg,g->k", features, probs)
    gradient = mean_features + ridge * multipliers
    hessian = np.einsum("kg,jg->kj", features * probs, features)
    hessian -= np.outer(mean_features, mean_features)
    hessian += ridge * np.eye(multipliers.size)
    direction = -_solve_positive_definite(hessian[None], gradient[None])[0]
    candidates = multipliers + _STEP_SIZES[:, None] * direction
    duals = scipy.special.logsumexp(np.einsum("tk,kg->tg", candidates, features), axis=-1)
    duals += 0.5 * ridge * np.sum(candidates**2, axis=-1)
    return candidates[np.argmin(duals)]


def _gauss_newton(starts, expectiles, taus, bounds, num_iterations):
    """Stage 2: projected Gauss-Newton on r(x) from each start [S, M]; returns [S, M].

    r is piecewise linear in x with slopes |tau_k - 1{x_i <= e_k}| / M. Samples at a bound that
    the step would push outwards are frozen; the best of a few step sizes is kept.
    """
    low, high = bounds
    x = np.clip(starts, low, high)
    for _ in range(num_iterations):
        direction = _gauss_newton_direction(x, expectiles, taus, bounds)
        candidates = np.clip(x[:, None] + _STEP_SIZES[:, None] * direction[:, None], low, high)
        losses = np.mean(expectile_residuals(candidates, expectiles, taus) ** 2, axis=-1)
        x = candidates[np.arange(x.shape[0]), np.argmin(losses, axis=-1)]
    return x


def _gauss_newton_direction(x, expectiles, taus, bounds):
    """The damped minimum-norm Gauss-Newton step [S, M] from samples x [S, M], 0 where stuck.

    Levenberg damping keeps the step finite when rows are (nearly) proportional.
    """
    low, high = bounds
    weights, offsets = _weights_and_offsets(x, expectiles, taus)  # [S, K, M]
    residuals = np.mean(weights * offsets, axis=-1)  # [S, K]
    jacobian = weights / x.shape[-1]
    gradient = np.einsum("skm,sk->sm", jacobian, residuals)
    pushed_out = ((x <= low) & (gradient > 0.0)) | ((x >= high) & (gradient < 0.0))
    jacobian = np.where(pushed_out[:, None, :], 0.0, jacobian)
    gram = np.einsum("skm,sjm->skj", jacobian, jacobian)
    damping = 1e-3 * np.trace(gram, axis1=-2, axis2=-1) / expectiles.size
    damping += np.finfo(np.float64).tiny
    system = gram + damping[:, None, None] * np.eye(expectiles.size)
    with np.errstate(over="ignore", invalid="ignore"):
        coefficients = _solve_positive_definite(system, residuals)
        direction = -np.einsum("skm,sk->sm", jacobian, coefficients)
    # With every sample frozen the Gram matrix is zero and the step overflows: stay put.
    stuck = ~np.all(np.isfinite(direction), axis=-1, keepdims=True)
    return np.where(stuck, 0.0, direction)


def _solve_positive_definite(matrices: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """matrices^-1 vectors for symmetric positive definite systems [S, K, K], [S, K] -> [S, K].

    Cholesky written out column by column in element-wise NumPy rather than LAPACK: threaded
    OpenBLAS factorisations of systems this small can stall for a long time when other processes
    share the cores, and this runs at a steady cost O(K) NumPy calls per solve.
    """
    size = matrices.shape[-1]
    factor = np.zeros_like(matrices)  # lower triangular: matrices = factor @ factor^T
    for j in range(size):
        row = factor[:, j, :j]
        pivot = np.sqrt(matrices[:, j, j] - np.einsum("sk,sk->s", row, row))
        factor[:, j, j] = pivot
        below = matrices[:, j + 1 :, j] - np.einsum("sik,sk->si", factor[:, j + 1 :, :j], row)
        factor[:, j + 1 :, j] = below / pivot[:, None]
    forward = np.zeros_like(vectors)  # factor @ forward = vectors
    for i in range(size):
        known = np.einsum("sk,sk->s", factor[:, i, :i], forward[:, :i])
        forward[:, i] = (vectors[:, i] - known) / factor[:, i, i]
    solution = np.zeros_like(vectors)  # factor^T @ solution = forward
    for i in reversed(range(size)):
        known = np.einsum("sk,sk->s", factor[:, i + 1 :, i], solution[:, i + 1 :])
        solution[:, i] = (forward[:, i] - known) / factor[:, i, i]
    return solution
