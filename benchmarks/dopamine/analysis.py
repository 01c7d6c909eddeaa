"""Each variant's animals analysed as Dabney et al. analysed recordings: reversal points and
asymmetries against the truth, split-half reliability, the asymmetry signature, decoding, the
response-noise sweep and the variable-probability task's cue values and optimism."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from agents import population_td
from benchmarks.dopamine import simulation
from benchmarks.dopamine.decoding import DECODING_BOUNDS, DECODINGS, decoding_summary
from benchmarks.dopamine.measurement import (
    correlation,
    measure_cells,
    signatures,
    true_reversal_points,
)
from benchmarks.dopamine.task import CUE_PROBABILITIES, MAGNITUDE_PROBS, MAGNITUDES


def _record_and_measure(config, states, mean_values, key, response_trials):
    """What an experimenter measures per cell [animals, cells] of the converged populations."""
    converged = states._replace(values=mean_values)
    recorded = simulation.record_magnitude_responses(config, converged, key, response_trials)
    return measure_cells(recorded)


def analyse_magnitude_task(
    config, states, mean_values, key, response_trials, log: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """What an experimenter measures on one variant's animals: a summary and per-cell arrays."""
    response_key, decoding_key = jax.random.split(key)
    measured = _record_and_measure(config, states, mean_values, response_key, response_trials)
    reversal, asymmetry = measured["reversal"], measured["asymmetry"]
    true_asymmetry = np.asarray(jax.vmap(population_td.asymmetries)(states), np.float64)
    truth = true_reversal_points(config.variant, true_asymmetry, MAGNITUDES, MAGNITUDE_PROBS)
    values = np.asarray(mean_values[:, 0, :], np.float64)
    num_animals, num_cells = reversal.shape
    log(
        f"{config.variant}: decoding {num_animals} animals x {num_cells} cells and the "
        f"{reversal.size} pooled, bounds from the data and truth-bounded"
    )
    decodings = {
        name: {
            "label": DECODINGS[name],
            **decoding_summary(
                config.variant, reversal, asymmetry, decoding_key, DECODING_BOUNDS[name]
            ),
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
        **signatures(measured),
        "true_asymmetry_vs_reversal": correlation(true_asymmetry, reversal),
        "decoding": "quantile atoms" if config.variant == "quantile" else "expectile imputation",
        "decodings": decodings,
    }
    return summary, cells


def noise_sweep(config, states, mean_values, key, response_trials, noise_levels):
    """Split-half reliability, the asymmetry signature and per-animal decoding (bounds from the
    data) of the same cells recorded at each response-noise SD.

    Every level reuses the main analysis' keys, so its noise is the same standard normal draws
    scaled, and the level equal to config.response_noise reproduces the main analysis.
    """
    response_key, decoding_key = jax.random.split(key)
    rows = []
    for noise in noise_levels:
        noisy = dataclasses.replace(config, response_noise=float(noise))
        measured = _record_and_measure(noisy, states, mean_values, response_key, response_trials)
        decoded = decoding_summary(
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
                **signatures(measured),
                "cells_without_reversal": int(np.isnan(measured["reversal"]).sum()),
                "cells_without_asymmetry": int(np.isnan(measured["asymmetry"]).sum()),
                "decoded_w1_per_animal_mean": decoded["per_animal_w1_mean"],
                "decoded_w1_per_animal_sd": decoded["per_animal_w1_sd"],
            }
        )
    return {"variant": config.variant, "levels": rows}


def analyse_probability_task(config, train_key, key, num_animals, reward, response_trials):
    """Cue values per cell (each cue context's reward-time reversal point) and the optimism of
    cue responses: how far the 50% cue's response lies above the mean of the 10% and 90% ones."""
    states, mean_values = simulation.train_probability_task(config, train_key, num_animals, reward)
    values = np.asarray(mean_values, np.float64)  # [animals, cues, cells]
    true_asymmetry = np.asarray(jax.vmap(population_td.asymmetries)(states), np.float64)
    truth = np.stack(
        [
            true_reversal_points(config.variant, true_asymmetry, (0.0, reward), (1 - p, p))
            for p in CUE_PROBABILITIES
        ],
        axis=1,
    )
    recorded = simulation.record_cue_responses(config, states, mean_values, key, response_trials)
    low, middle, high = np.moveaxis(recorded.mean(axis=-1), -1, 0)
    return {
        "reward": reward,
        "value_error_mae_per_cue": np.mean(np.abs(values - truth), axis=(0, 2)),
        "reversal_mean_per_cue": values.mean(axis=(0, 2)),
        "reversal_sd_across_cells_per_cue": values.std(axis=2).mean(axis=0),
        "cells": {"value": values, "true_value": truth, "optimism": middle - (low + high) / 2},
    }
