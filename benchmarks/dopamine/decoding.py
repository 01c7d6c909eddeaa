"""Decoding the reward distribution from a population's reversal points and asymmetries, per
animal and pooled, with sample bounds from the data or (labelled) from the truth."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from benchmarks.dopamine.solver import impute_from_expectiles
from benchmarks.dopamine.task import TRUE_REWARD_RANGE, w1_to_task

# Decoding: M samples imputed from the cells' expectiles; stage 1 is a max-entropy fit on a grid,
# stage 2 a projected Gauss-Newton polish from it and from random uniform starts.
DECODING_SETTINGS = {"num_samples": 100, "num_grid": 512, "num_iterations": 50, "num_starts": 4}
# Without the true range, samples may lie this many spreads of the reversal points beyond them.
BOUNDS_MARGIN = 0.5
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
# The sample bounds each decoding passes to `decode` (None: from the data).
DECODING_BOUNDS = {"data_bounds": None, "true_bounds": TRUE_REWARD_RANGE}


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
    return low - BOUNDS_MARGIN * spread, high + BOUNDS_MARGIN * spread


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
    samples = impute_from_expectiles(reversal, asymmetry, bounds, rng, **DECODING_SETTINGS)
    return Decoded(samples, np.full(samples.shape, 1.0 / samples.size), bounds)


def _generator(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded by a JAX key, so the decoding's random starts follow the seed."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).tolist())


def decoding_summary(
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
