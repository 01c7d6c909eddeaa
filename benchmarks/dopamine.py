"""The analysis of Dabney et al. 2020 (Nature 577) on simulated dopamine populations: reversal
points and asymmetries measured from noisy responses, their signatures, and distribution decoding.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
import scipy.stats

from agents import population_td
from agents.imputation import expectiles_of
from benchmarks import report
from benchmarks import results as results_io
from envs import mouse

# The tasks' constants come from the environments, so the analysis and the envs cannot disagree.
MAGNITUDES = mouse.MAGNITUDES
MAGNITUDE_PROBS = mouse.MAGNITUDE_PROBS
# Variable-probability task: three odour cues, each followed by one reward with this probability.
CUE_PROBABILITIES = mouse.VariableProbabilityParams().reward_probs
# The true smallest and largest reward: only the labelled truth-bounded decoding may use it.
TRUE_REWARD_RANGE = (min(MAGNITUDES), max(MAGNITUDES))
# Candidate kinks of the reversal-point fit, evenly spaced over the magnitudes' range.
_KINK_GRID = 4001

# Decoding: M samples imputed from the cells' expectiles; stage 1 is a max-entropy fit on a grid,
# stage 2 a projected Gauss-Newton polish from it and from random uniform starts.
_DECODING = {"num_samples": 100, "num_grid": 512, "num_iterations": 50, "num_starts": 4}
# Step sizes tried along each Newton / Gauss-Newton direction; 0 keeps the iterate, so no
# iteration can make its objective worse.
_STEP_SIZES = np.array((1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.0))
# The max-entropy dual starts heavily regularised (measured expectiles are inconsistent) and
# the ridge halves every iteration down to a floor that barely biases consistent ones.
_DUAL_RIDGE_START, _DUAL_RIDGE_FLOOR = 1e-3, 1e-6
# Without the true range, samples may lie this many spreads of the reversal points beyond them.
_BOUNDS_MARGIN = 0.5
# The two decodings reported for every variant: the default, then the truth-bounded comparison.
DECODINGS = {
    "data_bounds": (
        "bounds from the data: the reversal points' range widened by half their spread on "
        "each side (default; what an experimenter can do)"
    ),
    "true_bounds": (
        f"truth-bounded: samples kept in [{TRUE_REWARD_RANGE[0]}, {TRUE_REWARD_RANGE[1]}] ul, "
        "the true smallest and largest reward, which an experimenter does not know"
    ),
}
# Response noise SDs (ul) of the reliability sweep, on the same expectile cells.
NOISE_LEVELS = (1.0, 5.0, 10.0, 20.0)


def hinge_reversal_points(magnitudes: np.ndarray, mean_responses: np.ndarray) -> np.ndarray:
    """Each cell's reversal point from its mean response to each magnitude, [...].

    Fits response(r) = alpha+ (r - k)_+ + alpha- min(r - k, 0) (the model's response shape:
    zero at the reversal point k, a slope on each side) by least squares, k on a fine grid over
    the magnitudes' range. Linear interpolation between the two magnitudes around the sign change
    would bias k towards the flatter side whenever alpha+ != alpha-. NaN where the responses never
    change sign (the cell has no reversal point inside the range).

    Args: magnitudes [R], mean_responses [..., R].
    """
    magnitudes = np.asarray(magnitudes, np.float64)
    mean_responses = np.asarray(mean_responses, np.float64)
    kinks = np.linspace(magnitudes.min(), magnitudes.max(), _KINK_GRID)
    offsets = magnitudes[None, :] - kinks[:, None]  # [G, R]
    # Magnitudes at the kink itself are fitted by 0, so their whole response is residual.
    sse = np.sum((mean_responses[..., None, :] * (offsets == 0.0)) ** 2, axis=-1)
    for side in (np.maximum(offsets, 0.0), np.minimum(offsets, 0.0)):
        # Each side's least-squares slope for every kink, and that side's residuals.
        slope = (mean_responses @ side.T) / np.maximum(np.sum(side**2, axis=-1), 1e-12)
        residuals = (mean_responses[..., None, :] - slope[..., :, None] * side) * (side != 0.0)
        sse += np.sum(residuals**2, axis=-1)
    reversal = kinks[np.argmin(sse, axis=-1)]
    changes_sign = (mean_responses.min(axis=-1) < 0.0) & (mean_responses.max(axis=-1) > 0.0)
    return np.where(changes_sign, reversal, np.nan)


def hinge_slopes(
    magnitudes: np.ndarray, mean_responses: np.ndarray, kinks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(alpha+, alpha-) of response(r) = c + alpha+ (r - k)_+ + alpha- min(r - k, 0), k given.

    The free offset c keeps the slopes unbiased when k is off (as a noisy reversal point is): a
    straight line, the classical cells' true response, is fitted exactly for any k, so noise in
    k cannot masquerade as asymmetry. Args: magnitudes [R], mean_responses [..., R], kinks [...]
    (NaN gives NaN). Returns two arrays [...].
    """
    magnitudes = np.asarray(magnitudes, np.float64)
    mean_responses = np.asarray(mean_responses, np.float64)
    kinks = np.asarray(kinks, np.float64)
    offsets = magnitudes - np.nan_to_num(kinks)[..., None]
    design = np.stack(
        [np.ones_like(offsets), np.maximum(offsets, 0.0), np.minimum(offsets, 0.0)], axis=-1
    )
    transposed = np.swapaxes(design, -1, -2)
    solution = np.linalg.pinv(transposed @ design) @ (transposed @ mean_responses[..., None])
    invalid = np.isnan(kinks)
    return (
        np.where(invalid, np.nan, solution[..., 1, 0]),
        np.where(invalid, np.nan, solution[..., 2, 0]),
    )


def measured_asymmetries(alpha_plus: np.ndarray, alpha_minus: np.ndarray) -> np.ndarray:
    """alpha+ / (alpha+ + alpha-) where both fitted slopes are positive, NaN elsewhere."""
    valid = (alpha_plus > 0) & (alpha_minus > 0)
    return np.where(valid, alpha_plus / np.where(valid, alpha_plus + alpha_minus, 1.0), np.nan)


def true_reversal_points(variant: str, taus: np.ndarray, magnitudes, probs) -> np.ndarray:
    """Where each cell should reverse: its tau-expectile, or tau-quantile for sign updates."""
    taus = np.asarray(taus, np.float64)
    if variant == "quantile":
        cdf = np.cumsum(probs)
        return np.asarray(magnitudes)[np.minimum(np.searchsorted(cdf, taus), len(cdf) - 1)]
    locs, weights = jnp.asarray(magnitudes), jnp.asarray(probs)
    return np.asarray(expectiles_of(locs, weights, jnp.asarray(taus, jnp.float32)), np.float64)


def correlation(x: np.ndarray, y: np.ndarray) -> dict[str, float | int | None]:
    """Pearson r within animals, with its two-sided p-value: x, y [animals, cells].

    Each animal's mean is removed first (over pairs where both are finite), so differences
    between animals (each classical animal's cells share one slightly different value) cannot
    pass for a relation across cells; the t test has n - animals - 1 degrees of freedom.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    count, num_groups = int(keep.sum()), int(np.any(keep, axis=-1).sum())
    centred = []
    for values in (x, y):
        values = np.where(keep, values, 0.0)
        means = values.sum(axis=-1, keepdims=True) / np.maximum(keep.sum(-1, keepdims=True), 1)
        centred.append(np.where(keep, values - means, 0.0))
    norm = np.sqrt(np.sum(centred[0] ** 2) * np.sum(centred[1] ** 2))
    degrees = count - num_groups - 1
    if degrees < 1 or norm == 0:  # e.g. classical cells' true asymmetries: all exactly 1/2
        return {"r": None, "p": None, "n": count}
    r = float(np.clip(np.sum(centred[0] * centred[1]) / norm, -1.0, 1.0))
    t = r * np.sqrt(degrees / max(1.0 - r**2, 1e-300))
    return {"r": r, "p": float(2 * scipy.stats.t.sf(abs(t), degrees)), "n": count}


def w1_to_task(locs, probs=None) -> float:
    """Wasserstein-1 (ul) from weighted atoms to the variable-magnitude distribution; NaN for
    no atoms (no cell could be decoded)."""
    if np.size(locs) == 0:
        return float("nan")
    return float(
        scipy.stats.wasserstein_distance(
            np.asarray(locs), MAGNITUDES, u_weights=probs, v_weights=MAGNITUDE_PROBS
        )
    )


def reference_distances() -> dict[str, float]:
    """W1 to the task of a Gaussian with the true mean and SD, of that Gaussian clipped to the
    true range (the fair reference for the truth-bounded decoding) and of a uniform over it."""
    magnitudes, probs = np.asarray(MAGNITUDES), np.asarray(MAGNITUDE_PROBS)
    mean = float(np.sum(magnitudes * probs))
    sd = float(np.sqrt(np.sum((magnitudes - mean) ** 2 * probs)))
    levels = (np.arange(20_000) + 0.5) / 20_000
    low, high = TRUE_REWARD_RANGE
    gaussian = scipy.stats.norm(mean, sd).ppf(levels)
    return {
        "gaussian": w1_to_task(gaussian),
        "gaussian_clipped_to_true_range": w1_to_task(np.clip(gaussian, low, high)),
        "uniform": w1_to_task(low + levels * (high - low)),
    }


class Decoded(NamedTuple):
    """A decoded distribution: atoms (locs [N], probs [N]) and the sample bounds used (None for
    quantile atoms, which need none)."""

    locs: np.ndarray
    probs: np.ndarray
    bounds: tuple[float, float] | None


def data_bounds(reversal: np.ndarray) -> tuple[float, float]:
    """The range decoded samples may take when the reward range is unknown, from the reversal
    points alone: their range widened by half their spread on each side.

    Samples must reach beyond the extreme expectiles (no distribution inside [min e, max e] has
    min e as an expectile of level below 1/2), but how far is not measured; the margin is the
    shared imputation's rule for an unknown range, not one fitted to this task.
    """
    reversal = np.asarray(reversal, np.float64)
    finite = reversal[np.isfinite(reversal)]
    low, high = float(finite.min()), float(finite.max())
    spread = high - low
    return low - _BOUNDS_MARGIN * spread, high + _BOUNDS_MARGIN * spread


def decode(
    variant: str,
    reversal: np.ndarray,
    asymmetry: np.ndarray,
    rng: np.random.Generator,
    bounds: tuple[float, float] | None = None,
) -> Decoded:
    """The reward distribution a set of cells implies.

    Expectile (and classical) cells: samples imputed from reversal points as expectiles at the
    measured asymmetries, within `bounds`; by default (None) those come from the reversal points
    (`data_bounds`), since an experimenter does not know the reward range. Quantile cells: the
    reversal points are quantiles, each weighted by the stretch of levels nearest its own; they
    need no bounds. Cells with no reversal point or no valid asymmetry are left out.
    """
    reversal, asymmetry = np.asarray(reversal, np.float64), np.asarray(asymmetry, np.float64)
    keep = np.isfinite(reversal) & np.isfinite(asymmetry)
    reversal, asymmetry = reversal[keep], asymmetry[keep]
    if reversal.size == 0:
        return Decoded(np.zeros(0), np.zeros(0), None)
    if variant == "quantile":
        # Rearranged (both sorted): a quantile function cannot decrease.
        levels = np.sort(asymmetry)
        edges = np.concatenate([[0.0], (levels[1:] + levels[:-1]) / 2, [1.0]])
        return Decoded(np.sort(reversal), np.diff(edges), None)
    bounds = data_bounds(reversal) if bounds is None else (float(bounds[0]), float(bounds[1]))
    samples = impute_from_expectiles(reversal, asymmetry, bounds, rng, **_DECODING)
    return Decoded(samples, np.full(samples.shape, 1.0 / samples.size), bounds)


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

    The same algorithm as agents/imputation.py's `impute_samples` (max-entropy start, projected
    Gauss-Newton polish, the best of it and num_starts - 1 uniform random starts), in float64
    NumPy outside jit: the decoding runs once, and pooled populations have hundreds of cells,
    where the jitted version's unrolled K x K solve makes compilation, not solving, the cost.
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
    eye = np.eye(expectiles.size)
    multipliers = np.zeros(expectiles.size)
    for iteration in range(num_iterations):
        ridge = max(_DUAL_RIDGE_FLOOR, _DUAL_RIDGE_START * 0.5**iteration)
        probs = scipy.special.softmax(np.einsum("k,kg->g", multipliers, features))
        mean_features = np.einsum("kg,g->k", features, probs)
        gradient = mean_features + ridge * multipliers
        hessian = np.einsum("kg,jg->kj", features * probs, features)
        hessian -= np.outer(mean_features, mean_features)
        direction = -_solve_positive_definite((hessian + ridge * eye)[None], gradient[None])[0]
        candidates = multipliers + _STEP_SIZES[:, None] * direction
        duals = scipy.special.logsumexp(np.einsum("tk,kg->tg", candidates, features), axis=-1)
        duals += 0.5 * ridge * np.sum(candidates**2, axis=-1)
        multipliers = candidates[np.argmin(duals)]
    probs = scipy.special.softmax(np.einsum("k,kg->g", multipliers, features))
    # Each grid cell's mass is spread uniformly over the cell, so the CDF is piecewise linear.
    edges = low + width * np.arange(num_grid + 1) / num_grid
    cdf = np.concatenate([[0.0], np.cumsum(probs)])
    levels = (np.arange(num_samples) + 0.5) / num_samples
    return np.clip(np.interp(levels, cdf, edges), low, high)


def _gauss_newton(starts, expectiles, taus, bounds, num_iterations):
    """Stage 2: projected Gauss-Newton on r(x) from each start [S, M]; returns [S, M].

    r is piecewise linear in x with slopes |tau_k - 1{x_i <= e_k}| / M. Samples at a bound that
    the step would push outwards are frozen; Levenberg damping keeps the minimum-norm step
    finite when rows are (nearly) proportional; the best of a few step sizes is kept.
    """
    low, high = bounds
    num_starts, num_samples = starts.shape
    eye = np.eye(expectiles.size)
    x = np.clip(starts, low, high)
    for _ in range(num_iterations):
        weights, offsets = _weights_and_offsets(x, expectiles, taus)  # [S, K, M]
        residuals = np.mean(weights * offsets, axis=-1)  # [S, K]
        jacobian = weights / num_samples
        gradient = np.einsum("skm,sk->sm", jacobian, residuals)
        pushed_out = ((x <= low) & (gradient > 0.0)) | ((x >= high) & (gradient < 0.0))
        jacobian = np.where(pushed_out[:, None, :], 0.0, jacobian)
        gram = np.einsum("skm,sjm->skj", jacobian, jacobian)
        damping = 1e-3 * np.trace(gram, axis1=-2, axis2=-1) / expectiles.size
        damping += np.finfo(np.float64).tiny
        system = gram + damping[:, None, None] * eye
        with np.errstate(over="ignore", invalid="ignore"):
            coefficients = _solve_positive_definite(system, residuals)
            direction = -np.einsum("skm,sk->sm", jacobian, coefficients)
        # With every sample frozen the Gram matrix is zero and the step overflows: stay put.
        stuck = ~np.all(np.isfinite(direction), axis=-1, keepdims=True)
        direction = np.where(stuck, 0.0, direction)
        candidates = np.clip(x[:, None] + _STEP_SIZES[:, None] * direction[:, None], low, high)
        losses = np.mean(expectile_residuals(candidates, expectiles, taus) ** 2, axis=-1)
        x = candidates[np.arange(num_starts), np.argmin(losses, axis=-1)]
    return x


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


def _generator(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded by a JAX key, so the decoding's random starts follow the seed."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).tolist())


def _decoding_summary(
    variant: str,
    reversal: np.ndarray,
    asymmetry: np.ndarray,
    key: jax.Array,
    bounds: tuple[float, float] | None,
    pooled: bool = True,
) -> dict[str, Any]:
    """W1 of each animal's cells decoded alone (the headline: one recorded population each),
    with its spread across animals, and of all cells pooled over animals (the paper pooled its
    recorded cells). reversal, asymmetry [animals, cells]; bounds None derives them per decoding
    from its own reversal points. The same key gives both bounds the same random starts.
    """
    animal_keys = jax.random.split(key, reversal.shape[0])
    per_animal = [
        decode(variant, reversal[a], asymmetry[a], _generator(k), bounds)
        for a, k in enumerate(animal_keys)
    ]
    w1 = np.array([w1_to_task(d.locs, d.probs) for d in per_animal])
    summary = {
        "per_animal_w1": w1,
        "per_animal_w1_mean": float(np.nanmean(w1)),
        "per_animal_w1_sd": float(np.nanstd(w1, ddof=1)) if np.isfinite(w1).sum() > 1 else None,
        "per_animal_w1_min": float(np.nanmin(w1)),
        "per_animal_w1_max": float(np.nanmax(w1)),
        "per_animal_bounds": [d.bounds for d in per_animal],
    }
    if pooled:
        everyone = decode(variant, reversal.ravel(), asymmetry.ravel(), _generator(key), bounds)
        summary.update(
            pooled_w1=w1_to_task(everyone.locs, everyone.probs),
            pooled_bounds=everyone.bounds,
            pooled={"locs": everyone.locs, "probs": everyone.probs},
        )
    return summary


@functools.partial(jax.jit, static_argnames=("config", "num_animals"))
def _train_magnitude_task(config, key, num_animals):
    sampler = population_td.reward_sampler(jnp.asarray(MAGNITUDES), jnp.asarray(MAGNITUDE_PROBS))
    keys = jax.random.split(key, num_animals)
    return jax.vmap(lambda k: population_td.train(config, k, sampler))(keys)


@functools.partial(jax.jit, static_argnames=("config", "num_animals"))
def _train_probability_task(config, key, num_animals, reward):
    """One state per cue; a trial is a random cue and its outcome (reward or nothing)."""
    cue_probs = jnp.asarray(CUE_PROBABILITIES)

    def sample_trial(trial_key):
        cue_key, outcome_key = jax.random.split(trial_key)
        cue = jax.random.randint(cue_key, (), 0, len(CUE_PROBABILITIES))
        rewarded = jax.random.bernoulli(outcome_key, cue_probs[cue])
        return population_td.Trial(cue[None], (reward * rewarded)[None])

    keys = jax.random.split(key, num_animals)
    return jax.vmap(lambda k: population_td.train(config, k, sample_trial))(keys)


def _record_magnitude_responses(config, states, key, response_trials):
    """Noisy responses [animals, cells, trials, R], response_trials to each magnitude."""
    rewards = jnp.tile(jnp.asarray(MAGNITUDES), response_trials)

    def record(state, record_key):
        return population_td.responses(config, state, rewards, key=record_key)

    recorded = jax.vmap(record)(states, jax.random.split(key, states.values.shape[0]))
    return np.asarray(recorded, np.float64).reshape(
        recorded.shape[:2] + (response_trials, len(MAGNITUDES))
    )


def _measure_cells(config, converged, key, response_trials) -> dict[str, np.ndarray]:
    """What an experimenter measures from recorded responses, per cell [animals, cells]: mean
    responses, reversal points (all trials and each half) and asymmetries."""
    recorded = _record_magnitude_responses(config, converged, key, response_trials)
    half = response_trials // 2
    mean_responses = recorded.mean(axis=2)
    mean_a, mean_b = recorded[:, :, :half].mean(axis=2), recorded[:, :, half:].mean(axis=2)
    reversal = hinge_reversal_points(MAGNITUDES, mean_responses)
    reversal_a = hinge_reversal_points(MAGNITUDES, mean_a)
    # Asymmetry from the half the reversal point was not measured on, so their noise is
    # independent (Dabney et al.'s control against a spurious correlation).
    return {
        "mean_responses": mean_responses,
        "reversal": reversal,
        "reversal_half_a": reversal_a,
        "reversal_half_b": hinge_reversal_points(MAGNITUDES, mean_b),
        "asymmetry": measured_asymmetries(*hinge_slopes(MAGNITUDES, mean_responses, reversal)),
        "asymmetry_half_b": measured_asymmetries(*hinge_slopes(MAGNITUDES, mean_b, reversal_a)),
    }


def _analyse_magnitude_task(config, states, mean_values, key, response_trials, log):
    """What an experimenter measures on one variant's animals: per-cell arrays and a summary."""
    response_key, decoding_key = jax.random.split(key)
    converged = states._replace(values=mean_values)
    measured = _measure_cells(config, converged, response_key, response_trials)
    reversal, asymmetry = measured["reversal"], measured["asymmetry"]
    true_asymmetry = np.asarray(jax.vmap(population_td.asymmetries)(states), np.float64)
    truth = true_reversal_points(config.variant, true_asymmetry, MAGNITUDES, MAGNITUDE_PROBS)
    values = np.asarray(mean_values[:, 0, :], np.float64)
    num_animals, num_cells = reversal.shape
    log(
        f"{config.variant}: decoding {num_animals} animals x {num_cells} cells and the "
        f"{reversal.size} pooled, bounds from the data and truth-bounded"
    )
    bounds = {"data_bounds": None, "true_bounds": TRUE_REWARD_RANGE}
    decodings = {
        name: {
            "label": DECODINGS[name],
            **_decoding_summary(config.variant, reversal, asymmetry, decoding_key, bounds[name]),
        }
        for name in DECODINGS
    }
    cells = {"true_asymmetry": true_asymmetry, "true_reversal": truth, "value": values, **measured}
    summary = {
        "num_cells": int(reversal.size),
        "cells_without_reversal": int(np.isnan(reversal).sum()),
        "cells_without_asymmetry": int(np.isnan(asymmetry).sum()),
        "value_error_mae": float(np.mean(np.abs(values - truth))),
        "reversal_error_mae": float(np.nanmean(np.abs(reversal - truth))),
        "reversal_sd_across_cells": float(np.nanmean(np.nanstd(reversal, axis=1))),
        "split_half": correlation(measured["reversal_half_a"], measured["reversal_half_b"]),
        "asymmetry_vs_reversal": correlation(
            measured["asymmetry_half_b"], measured["reversal_half_a"]
        ),
        "true_asymmetry_vs_reversal": correlation(true_asymmetry, reversal),
        "decoding": "quantile atoms" if config.variant == "quantile" else "expectile imputation",
        "decodings": decodings,
    }
    return summary, cells


def _noise_sweep(config, states, mean_values, key, response_trials, noise_levels):
    """Split-half reliability, the asymmetry signature and per-animal decoding (bounds from the
    data) of the same cells recorded at each response-noise SD.

    Every level reuses the main analysis' keys, so its noise is the same standard normal draws
    scaled, and the level equal to config.response_noise reproduces the main analysis.
    """
    response_key, decoding_key = jax.random.split(key)
    converged = states._replace(values=mean_values)
    rows = []
    for noise in noise_levels:
        noisy = dataclasses.replace(config, response_noise=float(noise))
        measured = _measure_cells(noisy, converged, response_key, response_trials)
        decoded = _decoding_summary(
            config.variant,
            measured["reversal"],
            measured["asymmetry"],
            decoding_key,
            None,
            pooled=False,
        )
        rows.append(
            {
                "response_noise": float(noise),
                "half_mean_noise_sd": float(noise / np.sqrt(response_trials // 2)),
                "split_half": correlation(measured["reversal_half_a"], measured["reversal_half_b"]),
                "asymmetry_vs_reversal": correlation(
                    measured["asymmetry_half_b"], measured["reversal_half_a"]
                ),
                "cells_without_reversal": int(np.isnan(measured["reversal"]).sum()),
                "cells_without_asymmetry": int(np.isnan(measured["asymmetry"]).sum()),
                "decoded_w1_per_animal_mean": decoded["per_animal_w1_mean"],
                "decoded_w1_per_animal_sd": decoded["per_animal_w1_sd"],
            }
        )
    return {"variant": config.variant, "levels": rows}


def _analyse_probability_task(config, train_key, key, num_animals, reward, response_trials):
    """Cue values per cell (each cue context's reward-time reversal point) and the optimism of
    cue responses: how far the 50% cue's response lies above the mean of the 10% and 90% ones."""
    states, mean_values = _train_probability_task(config, train_key, num_animals, reward)
    values = np.asarray(mean_values, np.float64)  # [animals, cues, cells]
    true_asymmetry = np.asarray(jax.vmap(population_td.asymmetries)(states), np.float64)
    truth = np.stack(
        [
            true_reversal_points(config.variant, true_asymmetry, (0.0, reward), (1 - p, p))
            for p in CUE_PROBABILITIES
        ],
        axis=1,
    )

    def record(state, cue_values, record_key):
        # A cue arrives unpredictably (the inter-trial value is 0): its error is the cue value.
        errors = jnp.repeat(cue_values.T[:, :, None], response_trials, axis=-1)
        return population_td.error_responses(config, state, errors, key=record_key)

    keys = jax.random.split(key, num_animals)
    recorded = jax.vmap(record)(states, mean_values, keys)  # [animals, cells, cues, trials]
    low, middle, high = np.moveaxis(np.asarray(recorded, np.float64).mean(axis=-1), -1, 0)
    return {
        "reward": reward,
        "value_error_mae_per_cue": np.mean(np.abs(values - truth), axis=(0, 2)),
        "reversal_mean_per_cue": values.mean(axis=(0, 2)),
        "reversal_sd_across_cells_per_cue": values.std(axis=2).mean(axis=0),
        "cells": {"value": values, "true_value": truth, "optimism": middle - (low + high) / 2},
    }


def stderr_progress() -> Callable[[str], None]:
    """A progress logger: each line to stderr with the seconds since it was made, flushed, so a
    long run shows where it is also when its output goes to a file or a pipe."""
    start = time.perf_counter()

    def log(message: str) -> None:
        print(
            f"dopamine [{time.perf_counter() - start:5.0f} s] {message}",
            file=sys.stderr,
            flush=True,
        )

    return log


def run_dopamine_analysis(
    out_dir: str | Path,
    *,
    seed: int = 0,
    num_animals: int = 5,
    num_cells: int = 40,
    num_trials: int = 20_000,
    averaging_trials: int = 10_000,
    learning_rate: float = 0.01,
    quantile_learning_rate: float = 0.05,
    asymmetry_low: float = 0.05,
    asymmetry_high: float = 0.95,
    response_noise: float = 1.0,
    response_trials: int = 100,
    probability_task_reward: float = 1.0,
    noise_levels: Sequence[float] = NOISE_LEVELS,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train expectile, quantile and classical populations on both mouse tasks, analyse them as
    Dabney et al. did, and write dopamine.json, dopamine.md and PNG figures into out_dir.

    Each animal's cells learn from num_trials rewards; their predictions averaged over the last
    averaging_trials are then probed with response_trials noisy responses (SD response_noise,
    in reward units) to each magnitude, split into two independent halves. The expectile cells
    are also recorded at each of noise_levels (the reliability sweep). The same cells (the same
    animal keys) also learn the variable-probability task. Quantile cells step in reward units,
    hence their own quantile_learning_rate. log gets one progress line per stage (default: to
    stderr). Returns the JSON payload.
    """
    log = stderr_progress() if log is None else log
    root = jax.random.PRNGKey(seed)
    variants, probability, cells, configs = {}, {}, {}, {}
    noise_sweep = None
    for index, variant in enumerate(population_td.VARIANTS):
        config = population_td.Config(
            variant=variant,
            num_cells=num_cells,
            learning_rate=quantile_learning_rate if variant == "quantile" else learning_rate,
            asymmetry_low=asymmetry_low,
            asymmetry_high=asymmetry_high,
            response_noise=response_noise,
            num_trials=num_trials,
            averaging_trials=averaging_trials,
        )
        config.validate()
        train_key, analysis_key, probability_key = jax.random.split(
            jax.random.fold_in(root, index), 3
        )
        log(
            f"{variant}: training {num_animals} animals x {num_cells} cells on the magnitude "
            f"task ({num_trials:,} trials)"
        )
        states, mean_values = _train_magnitude_task(config, train_key, num_animals)
        log(f"{variant}: recording {response_trials} noisy responses per magnitude")
        variants[variant], cells[variant] = _analyse_magnitude_task(
            config, states, mean_values, analysis_key, response_trials, log
        )
        if variant == "expectile":
            log(f"{variant}: reliability sweep over response noise SD {list(noise_levels)} ul")
            noise_sweep = _noise_sweep(
                config, states, mean_values, analysis_key, response_trials, noise_levels
            )
        log(f"{variant}: training and recording on the probability task")
        probability_config = dataclasses.replace(config, num_states=len(CUE_PROBABILITIES))
        task = _analyse_probability_task(
            probability_config,
            train_key,
            probability_key,
            num_animals,
            probability_task_reward,
            response_trials,
        )
        task["optimism_vs_asymmetry"] = correlation(
            cells[variant]["asymmetry"], task["cells"]["optimism"]
        )
        probability[variant] = task
        configs[variant] = config
    payload = {
        "metadata": results_io.metadata(),
        "kind": "dopamine",
        "config": {
            "seed": seed,
            "num_animals": num_animals,
            "response_trials": response_trials,
            "magnitudes": MAGNITUDES,
            "magnitude_probs": MAGNITUDE_PROBS,
            "cue_probabilities": CUE_PROBABILITIES,
            "decoding": {
                **_DECODING,
                "default": "data_bounds",
                "labels": DECODINGS,
                "data_bounds_margin": _BOUNDS_MARGIN,
                "true_bounds": TRUE_REWARD_RANGE,
            },
            "populations": configs,
        },
        "reference_w1": reference_distances(),
        "variants": variants,
        "noise_sweep": noise_sweep,
        "probability_task": probability,
        "cells": cells,
    }
    payload = results_io.to_jsonable(payload)
    log(f"writing {Path(out_dir) / 'dopamine.json'}, dopamine.md and the figures")
    write_outputs(out_dir, payload)
    log("done")
    return payload


def _corr(stat: dict) -> str:
    """A correlation as the report writes it: r (p, n), or n/a where it is undefined."""
    if stat["r"] is None:
        return f"n/a (n={stat['n']})"
    return f"{stat['r']:+.2f} (p={stat['p']:.1e}, n={stat['n']})"


def _per_animal(decoding: dict) -> str:
    """Per-animal W1 as mean +- SD across animals [min, max]."""
    sd = decoding["per_animal_w1_sd"]
    spread = "" if sd is None else f" +- {sd:.2f}"
    return (
        f"{decoding['per_animal_w1_mean']:.2f}{spread} "
        f"[{decoding['per_animal_w1_min']:.2f}, {decoding['per_animal_w1_max']:.2f}]"
    )


def _headline(payload: dict) -> list[str]:
    """The expectile cells' decoding and reliability in one paragraph (empty without them)."""
    if "expectile" not in payload["variants"]:
        return []
    decodings = payload["variants"]["expectile"]["decodings"]
    data, truth = decodings["data_bounds"], decodings["true_bounds"]
    low, high = payload["config"]["decoding"]["true_bounds"]
    text = (
        f"Expectile cells decoded per animal with bounds from the data: W1 "
        f"{_per_animal(data)} ul (mean +- SD [min, max] over animals; all cells pooled: "
        f"{data['pooled_w1']:.2f}), against {payload['reference_w1']['gaussian']:.2f} for a "
        f"Gaussian with the true mean and SD. Truth-bounded (told the true range [{low}, "
        f"{high}] ul): {_per_animal(truth)} per animal, {truth['pooled_w1']:.2f} pooled."
    )
    sweep = payload.get("noise_sweep")
    if sweep and sweep["levels"]:
        first, rest = sweep["levels"][0], sweep["levels"][1:]
        text += (
            f" Split-half r of reversal points: {first['split_half']['r']:.2f} at response "
            f"noise SD {first['response_noise']:g} ul"
        )
        if rest:
            values = " / ".join(f"{row['split_half']['r']:.2f}" for row in rest)
            noises = " / ".join(f"{row['response_noise']:g}" for row in rest)
            text += f", {values} at SD {noises} ul"
        text += "."
    return [text, ""]


def markdown(payload: dict) -> str:
    """The report's tables and the statements they support, derived from the JSON payload alone."""
    meta, config, refs = payload["metadata"], payload["config"], payload["reference_w1"]
    population = config["populations"]["expectile"]
    num_animals, num_cells = config["num_animals"], population["num_cells"]
    noise, trials = population["response_noise"], config["response_trials"]
    low, high = config["decoding"]["true_bounds"]
    lines = [
        "# Distributional TD in simulated dopamine populations (Dabney et al. 2020)",
        "",
        (
            f"{num_animals} animals per variant, {num_cells} cells each, "
            f"{population['num_trials']} training trials, {trials} responses per magnitude with "
            f"noise SD {noise} ul; commit `{meta['commit'][:12]}`, {meta['device_kind']}, "
            f"created {meta['created']}."
        ),
        "",
        (
            "A recorded response is the cell's prediction error scaled by its slope (alpha+ "
            "above its reversal point, alpha- below, divided by its mean rate so responses are "
            f"in ul) plus Gaussian noise of SD {noise} ul per response; each half of the "
            f"{trials} responses per magnitude averages {trials // 2}, so a half's mean response "
            f"carries noise of SD {noise / np.sqrt(trials // 2):.2f} ul. The quantile variant "
            "learns from the sign of the prediction error (steps of alpha+ or alpha-), but its "
            "responses are, like the other variants', linear in the prediction error: the sign "
            "sets where a cell reverses, not how it fires."
        ),
        "",
        *_headline(payload),
        "## Signatures",
        "",
        (
            "Reversal points are fitted to the responses (hinge fit); the asymmetry "
            "alpha+/(alpha+ + alpha-) correlated with them comes from the other half of the "
            "trials; correlations are within animals."
        ),
        "",
        (
            "| variant | reversal error (ul) | reversal SD across cells | split-half r | "
            "asymmetry vs reversal r |"
        ),
        "|---|---|---|---|---|",
    ]
    for variant, v in payload["variants"].items():
        lines.append(
            f"| {variant} | {v['reversal_error_mae']:.3f} | {v['reversal_sd_across_cells']:.2f} "
            f"| {_corr(v['split_half'])} | {_corr(v['asymmetry_vs_reversal'])} |"
        )
    lines += [
        "",
        "## Decoding",
        "",
        (
            f"W1 (ul) from the decoded to the true reward distribution. Headline: each animal's "
            f"{num_cells} cells decoded on their own, mean +- SD across the {num_animals} animals "
            f"[min, max]; beside it all {num_animals * num_cells} cells pooled over animals. "
            f"Default: {DECODINGS['data_bounds']}. Beside it, {DECODINGS['true_bounds']}. "
            "Quantile cells are decoded as quantile atoms, which use no bounds. The Gaussian "
            "reference has the true mean and SD; for the truth-bounded columns it is clipped "
            "to the true range."
        ),
        "",
        (
            "| variant | decoding | **per animal, bounds from data** | pooled, bounds from data | "
            "per animal, truth-bounded | pooled, truth-bounded |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for variant, v in payload["variants"].items():
        data, truth = v["decodings"]["data_bounds"], v["decodings"]["true_bounds"]
        lines.append(
            f"| {variant} | {v['decoding']} | **{_per_animal(data)}** | {data['pooled_w1']:.2f} "
            f"| {_per_animal(truth)} | {truth['pooled_w1']:.2f} |"
        )
    lines += [
        (
            f"| Gaussian, true mean and SD | reference | {refs['gaussian']:.2f} | "
            f"{refs['gaussian']:.2f} | {refs['gaussian_clipped_to_true_range']:.2f} (clipped) | "
            f"{refs['gaussian_clipped_to_true_range']:.2f} (clipped) |"
        ),
        (
            f"| uniform over [{low}, {high}] | reference | | | {refs['uniform']:.2f} | "
            f"{refs['uniform']:.2f} |"
        ),
    ]
    sweep = payload.get("noise_sweep")
    if sweep:
        lines += [
            "",
            "## Response noise and split-half reliability",
            "",
            (
                f"The same {sweep['variant']} cells recorded again with more response noise (the "
                "same draws scaled, so the first row is the analysis above); split-half r of "
                "reversal points and the asymmetry signature as above, decoding per animal with "
                "bounds from the data."
            ),
            "",
            (
                "| noise SD per response (ul) | noise SD of a half's mean response (ul) | "
                "split-half r | asymmetry vs reversal r | decoded W1 per animal |"
            ),
            "|---|---|---|---|---|",
        ]
        for row in sweep["levels"]:
            sd = row["decoded_w1_per_animal_sd"]
            spread = "" if sd is None else f" +- {sd:.2f}"
            lines.append(
                f"| {row['response_noise']:g} | {row['half_mean_noise_sd']:.2f} | "
                f"{_corr(row['split_half'])} | {_corr(row['asymmetry_vs_reversal'])} | "
                f"{row['decoded_w1_per_animal_mean']:.2f}{spread} |"
            )
    lines += [
        "",
        "## Variable-probability task",
        "",
        (
            "Reversal point (cue value) per cue: mean over cells and animals, +- its SD across "
            "cells; optimism = r50 - (r10 + r90) / 2 of each cell's cue responses, correlated "
            "with its asymmetry measured on the magnitude task."
        ),
        "",
        "| variant | "
        + " | ".join(f"cue p={p}" for p in config["cue_probabilities"])
        + " | optimism vs asymmetry r |",
        "|---" * (len(config["cue_probabilities"]) + 2) + "|",
    ]
    for variant, task in payload["probability_task"].items():
        per_cue = " | ".join(
            f"{mean:.3f} +- {sd:.3f}"
            for mean, sd in zip(
                task["reversal_mean_per_cue"], task["reversal_sd_across_cells_per_cue"]
            )
        )
        lines.append(f"| {variant} | {per_cue} | {_corr(task['optimism_vs_asymmetry'])} |")
    return "\n".join(lines) + "\n"


def plot_decoding(payload: dict) -> bytes:
    """Decoded density and CDF of each variant (cells pooled over animals) against the truth:
    bounds from the data solid, truth-bounded dashed."""
    plt = report.figure()
    fig, (density_axis, cdf_axis) = plt.subplots(1, 2, figsize=(11, 4))
    magnitudes, probs = np.asarray(MAGNITUDES), np.asarray(MAGNITUDE_PROBS)
    grid = np.linspace(-6.0, 24.0, 700)
    mean = float(np.sum(magnitudes * probs))
    sd = float(np.sqrt(np.sum((magnitudes - mean) ** 2 * probs)))
    gaussian = scipy.stats.norm(mean, sd)
    density_axis.stem(magnitudes, probs, linefmt="k-", markerfmt="ko", basefmt=" ", label="truth")
    density_axis.plot(grid, gaussian.pdf(grid), "C7:", label="Gaussian, true mean and SD")
    cdf_axis.step(np.r_[grid[0], magnitudes], np.r_[0.0, np.cumsum(probs)], "k", where="post")
    gaussian_w1 = payload["reference_w1"]["gaussian"]
    cdf_axis.plot(grid, gaussian.cdf(grid), "C7:", label=f"Gaussian (W1 {gaussian_w1:.2f})")
    styles = {"data_bounds": ("-", "bounds from data"), "true_bounds": ("--", "truth-bounded")}
    for color, (variant, summary) in zip(("C0", "C1", "C3"), payload["variants"].items()):
        for name, (line, label) in styles.items():
            decoding = summary["decodings"][name]
            if variant == "quantile" and name == "true_bounds":
                continue  # quantile atoms use no bounds: the same as the solid line
            locs = np.asarray(decoding["pooled"]["locs"])
            weights = np.asarray(decoding["pooled"]["probs"])
            if locs.size > 1 and np.ptp(locs) > 0:
                kde = scipy.stats.gaussian_kde(locs, bw_method=0.15, weights=weights)
                density_axis.plot(grid, kde(grid), line, color=color, label=f"{variant}, {label}")
            cdf_axis.step(
                locs,
                np.cumsum(weights),
                line,
                color=color,
                where="post",
                label=f"{variant}, {label} (W1 {decoding['pooled_w1']:.2f})",
            )
    # Narrow decodings (the classical cells' point-like one) would dwarf everything else.
    density_axis.set_ylim(0.0, 1.6 * probs.max())
    density_axis.set(
        xlabel="reward (ul)",
        ylabel="density / probability",
        title="decoded, cells pooled (tall peaks cut off)",
    )
    cdf_axis.set(xlabel="reward (ul)", ylabel="CDF", title="decoded CDF (truth in black)")
    density_axis.legend(fontsize=6)
    cdf_axis.legend(fontsize=6)
    return report.png_bytes(fig)


def plot_asymmetry_vs_reversal(payload: dict) -> bytes:
    """Measured asymmetry (half B) against reversal point (half A), one panel per variant."""
    plt = report.figure()
    variants = payload["variants"]
    fig, axes = plt.subplots(1, len(variants), figsize=(4 * len(variants), 3.6))
    for axis, (variant, summary) in zip(axes, variants.items()):
        cells = payload["cells"][variant]
        asymmetry = np.asarray(cells["asymmetry_half_b"], np.float64)
        reversal = np.asarray(cells["reversal_half_a"], np.float64)
        axis.scatter(asymmetry.ravel(), reversal.ravel(), s=8, alpha=0.6)
        stat = summary["asymmetry_vs_reversal"]
        title = (
            variant if stat["r"] is None else f"{variant}: r={stat['r']:+.2f}, p={stat['p']:.1e}"
        )
        axis.set(xlabel="asymmetry (half B)", ylabel="reversal point, ul (half A)", title=title)
    return report.png_bytes(fig)


def plot_responses(payload: dict) -> bytes:
    """Animal 0's mean response to each magnitude, one line per cell coloured by asymmetry."""
    plt = report.figure()
    cells = payload["cells"]
    fig, axes = plt.subplots(1, len(cells), figsize=(4 * len(cells), 3.6))
    fig.suptitle("mean responses of animal 0's cells (blue: pessimistic, red: optimistic)")
    for axis, (variant, variant_cells) in zip(axes, cells.items()):
        mean_responses = np.asarray(variant_cells["mean_responses"], np.float64)[0]
        asymmetry = np.nan_to_num(np.asarray(variant_cells["asymmetry"], np.float64)[0], nan=0.5)
        colors = plt.cm.coolwarm(np.clip(asymmetry, 0.0, 1.0))
        for cell_responses, color in zip(mean_responses, colors):
            axis.plot(MAGNITUDES, cell_responses, "-", color=color, lw=0.8)
        axis.axhline(0.0, color="k", lw=0.5)
        axis.set(
            xscale="log",
            xlabel="reward (ul)",
            ylabel="mean response",
            title=variant,
        )
    return report.png_bytes(fig)


def write_outputs(out_dir: str | Path, payload: dict) -> None:
    """dopamine.json, dopamine.md and the figures, each written atomically, all from payload."""
    out_dir = Path(out_dir)
    results_io.write_json(out_dir / "dopamine.json", payload)
    results_io.atomic_write_text(out_dir / "dopamine.md", markdown(payload))
    figures = {
        "dopamine_decoding.png": plot_decoding,
        "dopamine_asymmetry_vs_reversal.png": plot_asymmetry_vs_reversal,
        "dopamine_responses.png": plot_responses,
    }
    for name, plot in figures.items():
        results_io.atomic_write_bytes(out_dir / name, plot(payload))
