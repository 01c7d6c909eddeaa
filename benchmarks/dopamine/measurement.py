"""What an experimenter computes from recorded responses: reversal points and asymmetries (hinge
fits), correlations within animals, and the truth the model says they should find."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import scipy.stats

from agents.imputation import expectiles_of
from benchmarks.dopamine.task import MAGNITUDES

# Candidate kinks of the reversal-point fit, evenly spaced over the magnitudes' range.
_KINK_GRID = 4001


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


def measure_cells(recorded: np.ndarray) -> dict[str, np.ndarray]:
    """Per cell [animals, cells], from responses [animals, cells, trials, magnitudes] split into
    two halves of the trials: mean responses, reversal points (all trials, each half) and
    asymmetries."""
    half = recorded.shape[2] // 2
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


def signatures(measured: dict[str, np.ndarray]) -> dict[str, dict]:
    """Split-half reliability of reversal points and the asymmetry signature (asymmetry from
    half B against reversal point from half A), both within animals."""
    return {
        "split_half": correlation(measured["reversal_half_a"], measured["reversal_half_b"]),
        "asymmetry_vs_reversal": correlation(
            measured["asymmetry_half_b"], measured["reversal_half_a"]
        ),
    }
