"""The study's report, derived from the JSON payload alone: dopamine.md (the tables and the
statements they support) and, via figures.py, the PNG figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import results as results_io
from benchmarks.dopamine import figures
from benchmarks.dopamine.decoding import DECODINGS

FIGURES = {
    "dopamine_decoding.png": figures.plot_decoding,
    "dopamine_asymmetry_vs_reversal.png": figures.plot_asymmetry_vs_reversal,
    "dopamine_responses.png": figures.plot_responses,
}


def write_outputs(out_dir: str | Path, payload: dict) -> None:
    """dopamine.json, dopamine.md and the figures, each written atomically, all from payload."""
    out_dir = Path(out_dir)
    results_io.write_json(out_dir / "dopamine.json", payload)
    results_io.atomic_write_text(out_dir / "dopamine.md", markdown(payload))
    for name, plot in FIGURES.items():
        results_io.atomic_write_bytes(out_dir / name, plot(payload))


def markdown(payload: dict) -> str:
    """The report's tables and the statements they support, derived from the JSON payload alone."""
    lines = [
        *_introduction(payload),
        *_headline(payload),
        *_signatures_table(payload),
        *_decoding_table(payload),
        *_noise_sweep_table(payload),
        *_probability_task_table(payload),
    ]
    return "\n".join(lines) + "\n"


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


def _introduction(payload: dict) -> list[str]:
    """Title, the run's sizes and provenance, and what a recorded response is."""
    meta, config = payload["metadata"], payload["config"]
    population = config["populations"]["expectile"]
    noise, trials = population["response_noise"], config["response_trials"]
    return [
        "# Distributional TD in simulated dopamine populations (Dabney et al. 2020)",
        "",
        (
            f"{config['num_animals']} animals per variant, {population['num_cells']} cells each, "
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
    ]


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
        text += _headline_reliability(sweep["levels"])
    return [text, ""]


def _headline_reliability(levels: list[dict]) -> str:
    """The headline's sentence on split-half r at each response noise."""
    first, rest = levels[0], levels[1:]
    text = (
        f" Split-half r of reversal points: {first['split_half']['r']:.2f} at response "
        f"noise SD {first['response_noise']:g} ul"
    )
    if rest:
        values = " / ".join(f"{row['split_half']['r']:.2f}" for row in rest)
        noises = " / ".join(f"{row['response_noise']:g}" for row in rest)
        text += f", {values} at SD {noises} ul"
    return text + "."


def _signatures_table(payload: dict) -> list[str]:
    """Reversal-point error and spread, split-half r and the asymmetry signature per variant."""
    lines = [
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
    return lines


def _decoding_table(payload: dict) -> list[str]:
    """W1 of both decodings per variant, per animal and pooled, and the reference rows."""
    config, refs = payload["config"], payload["reference_w1"]
    num_animals = config["num_animals"]
    num_cells = config["populations"]["expectile"]["num_cells"]
    lines = [
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
    low, high = config["decoding"]["true_bounds"]
    return lines + [
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


def _noise_sweep_table(payload: dict) -> list[str]:
    """Reliability, the signature and decoding at each response noise (empty without a sweep)."""
    sweep = payload.get("noise_sweep")
    if not sweep:
        return []
    lines = [
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
    return lines


def _probability_task_table(payload: dict) -> list[str]:
    """Cue values per cue and the optimism signature per variant."""
    cue_probabilities = payload["config"]["cue_probabilities"]
    lines = [
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
        + " | ".join(f"cue p={p}" for p in cue_probabilities)
        + " | optimism vs asymmetry r |",
        "|---" * (len(cue_probabilities) + 2) + "|",
    ]
    for variant, task in payload["probability_task"].items():
        per_cue = " | ".join(
            f"{mean:.3f} +- {sd:.3f}"
            for mean, sd in zip(
                task["reversal_mean_per_cue"], task["reversal_sd_across_cells_per_cue"]
            )
        )
        lines.append(f"| {variant} | {per_cue} | {_corr(task['optimism_vs_asymmetry'])} |")
    return lines
