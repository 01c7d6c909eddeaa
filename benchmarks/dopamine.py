"""The analysis of Dabney et al. 2020 (Nature 577) on simulated dopamine populations: reversal
points and asymmetries measured from noisy responses, their signatures, and distribution decoding.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from agents import population_td
from agents.imputation import DECODING_SETTINGS, expectiles_of, impute_samples
from benchmarks import report
from benchmarks import results as results_io

# Variable-magnitude task (SCIENCE.md section 4): the paper's trial frequencies, normalised.
MAGNITUDES = (0.1, 0.3, 1.2, 2.5, 5.0, 10.0, 20.0)
_FREQUENCIES = (0.0661, 0.0909, 0.1485, 0.1549, 0.3116, 0.1510, 0.0771)
MAGNITUDE_PROBS = tuple(f / sum(_FREQUENCIES) for f in _FREQUENCIES)
# Variable-probability task: three odour cues, each followed by one reward with this probability.
CUE_PROBABILITIES = (0.1, 0.5, 0.9)
# Candidate kinks of the reversal-point fit, evenly spaced over the magnitudes' range.
_KINK_GRID = 4001
_DECODING_STARTS = 4


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
    """Wasserstein-1 (ul) from weighted atoms to the variable-magnitude distribution."""
    return float(
        scipy.stats.wasserstein_distance(
            np.asarray(locs), MAGNITUDES, u_weights=probs, v_weights=MAGNITUDE_PROBS
        )
    )


def reference_distances() -> dict[str, float]:
    """W1 to the task of a Gaussian with matched mean and SD and of a uniform over the range."""
    magnitudes, probs = np.asarray(MAGNITUDES), np.asarray(MAGNITUDE_PROBS)
    mean = float(np.sum(magnitudes * probs))
    sd = float(np.sqrt(np.sum((magnitudes - mean) ** 2 * probs)))
    levels = (np.arange(20_000) + 0.5) / 20_000
    uniform = magnitudes.min() + levels * (magnitudes.max() - magnitudes.min())
    return {
        "gaussian": w1_to_task(scipy.stats.norm(mean, sd).ppf(levels)),
        "uniform": w1_to_task(uniform),
    }


def decode(
    variant: str, reversal: np.ndarray, asymmetry: np.ndarray, key: jax.Array
) -> tuple[np.ndarray, np.ndarray]:
    """The reward distribution a set of cells implies, as atoms (locs, probs).

    Expectile (and classical) cells: samples imputed from reversal points as expectiles at the
    measured asymmetries, within the reward range the experimenter knows. Quantile cells: the
    reversal points are quantiles, each weighted by the stretch of levels nearest its own.
    Cells with no reversal point or no valid asymmetry are left out.
    """
    keep = np.isfinite(reversal) & np.isfinite(asymmetry)
    reversal, asymmetry = reversal[keep], asymmetry[keep]
    if variant == "quantile":
        # Rearranged (both sorted): a quantile function cannot decrease.
        levels = np.sort(asymmetry)
        edges = np.concatenate([[0.0], (levels[1:] + levels[:-1]) / 2, [1.0]])
        return np.sort(reversal), np.diff(edges)
    samples = impute_samples(
        jnp.asarray(reversal, jnp.float32),
        jnp.asarray(asymmetry, jnp.float32),
        bounds=(min(MAGNITUDES), max(MAGNITUDES)),
        key=key,
        num_starts=_DECODING_STARTS,
        **DECODING_SETTINGS,
    )
    samples = np.asarray(samples, np.float64)
    return samples, np.full(samples.shape, 1.0 / samples.size)


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


def _analyse_magnitude_task(config, states, mean_values, key, response_trials):
    """What an experimenter measures on one variant's animals: per-cell arrays and a summary."""
    response_key, decoding_key = jax.random.split(key)
    converged = states._replace(values=mean_values)
    recorded = _record_magnitude_responses(config, converged, response_key, response_trials)
    half = response_trials // 2
    mean_responses = recorded.mean(axis=2)
    mean_a, mean_b = recorded[:, :, :half].mean(axis=2), recorded[:, :, half:].mean(axis=2)
    reversal = hinge_reversal_points(MAGNITUDES, mean_responses)
    reversal_a = hinge_reversal_points(MAGNITUDES, mean_a)
    reversal_b = hinge_reversal_points(MAGNITUDES, mean_b)
    asymmetry = measured_asymmetries(*hinge_slopes(MAGNITUDES, mean_responses, reversal))
    # Asymmetry from the half the reversal point was not measured on, so their noise is
    # independent (Dabney et al.'s control against a spurious correlation).
    asymmetry_b = measured_asymmetries(*hinge_slopes(MAGNITUDES, mean_b, reversal_a))
    true_asymmetry = np.asarray(jax.vmap(population_td.asymmetries)(states), np.float64)
    truth = true_reversal_points(config.variant, true_asymmetry, MAGNITUDES, MAGNITUDE_PROBS)
    values = np.asarray(mean_values[:, 0, :], np.float64)

    per_animal_w1 = [
        w1_to_task(*decode(config.variant, reversal[a], asymmetry[a], key))
        for a, key in enumerate(jax.random.split(decoding_key, reversal.shape[0]))
    ]
    # Like the paper's recorded population, the decoding pools cells across animals.
    locs, probs = decode(config.variant, reversal.ravel(), asymmetry.ravel(), decoding_key)
    cells = {
        "true_asymmetry": true_asymmetry,
        "true_reversal": truth,
        "value": values,
        "mean_responses": mean_responses,
        "reversal": reversal,
        "reversal_half_a": reversal_a,
        "reversal_half_b": reversal_b,
        "asymmetry": asymmetry,
        "asymmetry_half_b": asymmetry_b,
    }
    summary = {
        "num_cells": int(reversal.size),
        "cells_without_reversal": int(np.isnan(reversal).sum()),
        "cells_without_asymmetry": int(np.isnan(asymmetry).sum()),
        "value_error_mae": float(np.mean(np.abs(values - truth))),
        "reversal_error_mae": float(np.nanmean(np.abs(reversal - truth))),
        "reversal_sd_across_cells": float(np.nanmean(np.nanstd(reversal, axis=1))),
        "split_half": correlation(reversal_a, reversal_b),
        "asymmetry_vs_reversal": correlation(asymmetry_b, reversal_a),
        "true_asymmetry_vs_reversal": correlation(true_asymmetry, reversal),
        "decoding": "quantile atoms" if config.variant == "quantile" else "expectile imputation",
        "decoded_w1": w1_to_task(locs, probs),
        "decoded_w1_per_animal": per_animal_w1,
        "decoded": {"locs": locs, "probs": probs},
    }
    return summary, cells


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
) -> dict[str, Any]:
    """Train expectile, quantile and classical populations on both mouse tasks, analyse them as
    Dabney et al. did, and write dopamine.json, dopamine.md and PNG figures into out_dir.

    Each animal's cells learn from num_trials rewards; their predictions averaged over the last
    averaging_trials are then probed with response_trials noisy responses (SD response_noise,
    in reward units) to each magnitude, split into two independent halves. The same cells (the
    same animal keys) also learn the variable-probability task. Quantile cells step in reward
    units, hence their own quantile_learning_rate. Returns the JSON payload.
    """
    root = jax.random.PRNGKey(seed)
    variants, probability, cells, configs = {}, {}, {}, {}
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
        states, mean_values = _train_magnitude_task(config, train_key, num_animals)
        variants[variant], cells[variant] = _analyse_magnitude_task(
            config, states, mean_values, analysis_key, response_trials
        )
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
                **DECODING_SETTINGS,
                "num_starts": _DECODING_STARTS,
                "bounds": [min(MAGNITUDES), max(MAGNITUDES)],
            },
            "populations": configs,
        },
        "reference_w1": reference_distances(),
        "variants": variants,
        "probability_task": probability,
        "cells": cells,
    }
    payload = results_io.to_jsonable(payload)
    write_outputs(out_dir, payload)
    return payload


def markdown(payload: dict) -> str:
    """The report's tables, derived from the JSON payload alone."""
    meta, config, refs = payload["metadata"], payload["config"], payload["reference_w1"]
    population = config["populations"]["expectile"]

    def corr(stat):
        if stat["r"] is None:
            return f"n/a (n={stat['n']})"
        return f"{stat['r']:+.2f} (p={stat['p']:.1e}, n={stat['n']})"

    lines = [
        "# Distributional TD in simulated dopamine populations (Dabney et al. 2020)",
        "",
        (
            f"{config['num_animals']} animals per variant, {population['num_cells']} cells "
            f"each, {population['num_trials']} training trials, {config['response_trials']} "
            f"responses per magnitude with noise SD {population['response_noise']} ul; commit "
            f"`{meta['commit'][:12]}`, {meta['device_kind']}, created {meta['created']}."
        ),
        "",
        (
            "Reversal points are fitted to the responses (hinge fit); the asymmetry "
            "alpha+/(alpha+ + alpha-) correlated with them comes from the other half of the "
            "trials; correlations are within animals. Decoded W1 (ul) to the true reward "
            "distribution: cells pooled over animals, then the per-animal mean."
        ),
        "",
        (
            "| variant | reversal error (ul) | reversal SD across cells | split-half r | "
            "asymmetry vs reversal r | decoded W1 | per-animal W1 | decoding |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, v in payload["variants"].items():
        lines.append(
            f"| {variant} | {v['reversal_error_mae']:.3f} | {v['reversal_sd_across_cells']:.2f} "
            f"| {corr(v['split_half'])} | {corr(v['asymmetry_vs_reversal'])} | "
            f"{v['decoded_w1']:.3f} | {np.mean(v['decoded_w1_per_animal']):.3f} | "
            f"{v['decoding']} |"
        )
    lines += [
        f"| Gaussian, matched mean and SD | | | | | {refs['gaussian']:.3f} | | reference |",
        f"| uniform over [0.1, 20] | | | | | {refs['uniform']:.3f} | | reference |",
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
        lines.append(f"| {variant} | {per_cue} | {corr(task['optimism_vs_asymmetry'])} |")
    return "\n".join(lines) + "\n"


def plot_decoding(payload: dict) -> bytes:
    """Decoded density and CDF of each variant (cells pooled) against the truth."""
    plt = report.figure()
    fig, (density_axis, cdf_axis) = plt.subplots(1, 2, figsize=(11, 4))
    magnitudes, probs = np.asarray(MAGNITUDES), np.asarray(MAGNITUDE_PROBS)
    grid = np.linspace(-2.0, 24.0, 600)
    mean = float(np.sum(magnitudes * probs))
    sd = float(np.sqrt(np.sum((magnitudes - mean) ** 2 * probs)))
    gaussian = scipy.stats.norm(mean, sd)
    density_axis.stem(magnitudes, probs, linefmt="k-", markerfmt="ko", basefmt=" ", label="truth")
    density_axis.plot(grid, gaussian.pdf(grid), "C7--", label="matched Gaussian")
    cdf_axis.step(np.r_[grid[0], magnitudes], np.r_[0.0, np.cumsum(probs)], "k", where="post")
    gaussian_w1 = payload["reference_w1"]["gaussian"]
    cdf_axis.plot(grid, gaussian.cdf(grid), "C7--", label=f"Gaussian (W1 {gaussian_w1:.2f})")
    for color, (variant, summary) in zip(("C0", "C1", "C3"), payload["variants"].items()):
        locs = np.asarray(summary["decoded"]["locs"])
        weights = np.asarray(summary["decoded"]["probs"])
        if np.ptp(locs) > 0:
            kde = scipy.stats.gaussian_kde(locs, bw_method=0.15, weights=weights)
            density_axis.plot(grid, kde(grid), color=color, label=f"decoded, {variant}")
        cdf_axis.step(
            locs,
            np.cumsum(weights),
            color=color,
            where="post",
            label=f"{variant} (W1 {summary['decoded_w1']:.2f})",
        )
    density_axis.set(xlabel="reward (ul)", ylabel="density / probability", title="decoded")
    cdf_axis.set(xlabel="reward (ul)", ylabel="CDF", title="decoded CDF (truth in black)")
    density_axis.legend(fontsize=7)
    cdf_axis.legend(fontsize=7)
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
