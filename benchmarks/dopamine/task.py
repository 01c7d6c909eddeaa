"""The mouse tasks as the study sees them: their constants, read from envs/mouse.py so the study
and the environments cannot disagree, and distances to the variable-magnitude reward law."""

from __future__ import annotations

import numpy as np
import scipy.stats

from envs import mouse

MAGNITUDES = mouse.MAGNITUDES
MAGNITUDE_PROBS = mouse.MAGNITUDE_PROBS
# Variable-probability task: three odour cues, each followed by one reward with this probability.
CUE_PROBABILITIES = mouse.VariableProbabilityParams().reward_probs
# ... and the size (ul) of that reward: the default of the study's probability_task_reward.
PROBABILITY_TASK_REWARD = mouse.VariableProbabilityParams().reward_size
# The true smallest and largest reward: only the labelled truth-bounded decoding may use it.
TRUE_REWARD_RANGE = (min(MAGNITUDES), max(MAGNITUDES))


def reward_mean_and_sd() -> tuple[float, float]:
    """Mean and SD (ul) of the variable-magnitude reward."""
    magnitudes, probs = np.asarray(MAGNITUDES), np.asarray(MAGNITUDE_PROBS)
    mean = float(np.sum(magnitudes * probs))
    return mean, float(np.sqrt(np.sum((magnitudes - mean) ** 2 * probs)))


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
    mean, sd = reward_mean_and_sd()
    levels = (np.arange(20_000) + 0.5) / 20_000
    low, high = TRUE_REWARD_RANGE
    gaussian = scipy.stats.norm(mean, sd).ppf(levels)
    return {
        "gaussian": w1_to_task(gaussian),
        "gaussian_clipped_to_true_range": w1_to_task(np.clip(gaussian, low, high)),
        "uniform": w1_to_task(low + levels * (high - low)),
    }
