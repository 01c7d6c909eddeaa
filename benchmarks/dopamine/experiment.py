"""The study end to end: each variant's populations trained on both mouse tasks, analysed, and
written out as dopamine.json, dopamine.md and figures."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

from agents import population_td
from agents.base import build_config, require
from benchmarks import results as results_io
from benchmarks.dopamine import analysis, simulation
from benchmarks.dopamine.decoding import BOUNDS_MARGIN, DECODING_SETTINGS, DECODINGS
from benchmarks.dopamine.measurement import correlation
from benchmarks.dopamine.report import write_outputs
from benchmarks.dopamine.task import (
    CUE_PROBABILITIES,
    MAGNITUDE_PROBS,
    MAGNITUDES,
    PROBABILITY_TASK_REWARD,
    TRUE_REWARD_RANGE,
    reference_distances,
)

# Response noise SDs (ul) of the reliability sweep, on the same expectile cells.
NOISE_LEVELS = (1.0, 5.0, 10.0, 20.0)


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


@dataclasses.dataclass(frozen=True)
class StudyOptions:
    """The study's settings: a dopamine suite's [options] table, or keywords of
    `run_dopamine_analysis`.

    Each animal's cells learn from num_trials rewards; their predictions averaged over the last
    averaging_trials are then probed with response_trials noisy responses (SD response_noise,
    in reward units) to each magnitude, split into two independent halves. The expectile cells
    are also recorded at each of noise_levels (the reliability sweep). The same cells (the same
    animal keys) also learn the variable-probability task, whose reward is
    probability_task_reward. Quantile cells step in reward units, hence their own
    quantile_learning_rate.
    """

    seed: int = 0
    num_animals: int = 5
    num_cells: int = 40
    num_trials: int = 20_000
    averaging_trials: int = 10_000
    learning_rate: float = 0.01
    quantile_learning_rate: float = 0.05
    asymmetry_low: float = 0.05
    asymmetry_high: float = 0.95
    response_noise: float = 1.0
    response_trials: int = 100
    probability_task_reward: float = PROBABILITY_TASK_REWARD
    noise_levels: tuple[float, ...] = NOISE_LEVELS

    def population_config(self, variant: str) -> population_td.Config:
        return population_td.Config(
            variant=variant,
            num_cells=self.num_cells,
            learning_rate=(
                self.quantile_learning_rate if variant == "quantile" else self.learning_rate
            ),
            asymmetry_low=self.asymmetry_low,
            asymmetry_high=self.asymmetry_high,
            response_noise=self.response_noise,
            num_trials=self.num_trials,
            averaging_trials=self.averaging_trials,
        )

    def validate(self) -> None:
        require(self.seed >= 0, f"seed={self.seed} must be >= 0")
        require(self.num_animals >= 1, f"num_animals={self.num_animals} must be >= 1")
        # Two independent halves of the responses give the split-half reliability.
        require(self.response_trials >= 2, f"response_trials={self.response_trials} must be >= 2")
        require(
            self.probability_task_reward > 0,
            f"probability_task_reward={self.probability_task_reward} must be > 0",
        )
        require(
            len(self.noise_levels) >= 1 and min(self.noise_levels) >= 0,
            f"noise_levels={list(self.noise_levels)} must be one or more SDs >= 0",
        )
        for variant in population_td.VARIANTS:
            self.population_config(variant).validate()


def study_options(options: dict[str, Any] | None = None) -> StudyOptions:
    """StudyOptions from a dict of overrides (text or values), validated: ConfigError names an
    unknown key or a bad value and what is valid."""
    return build_config(StudyOptions, options, what="dopamine option")


def run_dopamine_analysis(
    out_dir: str | Path, *, log: Callable[[str], None] | None = None, **options
) -> dict[str, Any]:
    """Train expectile, quantile and classical populations on both mouse tasks, analyse them as
    Dabney et al. did, and write dopamine.json, dopamine.md and PNG figures into out_dir.

    `options` are StudyOptions fields (ConfigError on a bad one, before anything runs). log
    gets one progress line per stage (default: to stderr). Returns the JSON payload.
    """
    study_config = study_options(options)
    log = stderr_progress() if log is None else log
    seed = study_config.seed
    root = jax.random.PRNGKey(seed)
    study = _Study(
        study_config.num_animals,
        study_config.response_trials,
        study_config.probability_task_reward,
        study_config.noise_levels,
        log,
    )
    for index, variant in enumerate(population_td.VARIANTS):
        study.run_variant(study_config.population_config(variant), jax.random.fold_in(root, index))
    payload = results_io.to_jsonable(study.payload(seed))
    log(f"writing {Path(out_dir) / 'dopamine.json'}, dopamine.md and the figures")
    write_outputs(out_dir, payload)
    log("done")
    return payload


@dataclasses.dataclass
class _Study:
    """The study's settings and what its variants have produced so far."""

    num_animals: int
    response_trials: int
    probability_task_reward: float
    noise_levels: Sequence[float]
    log: Callable[[str], None]
    variants: dict = dataclasses.field(default_factory=dict)
    cells: dict = dataclasses.field(default_factory=dict)
    probability: dict = dataclasses.field(default_factory=dict)
    configs: dict = dataclasses.field(default_factory=dict)
    noise_sweep: dict | None = None

    def run_variant(self, config: population_td.Config, key: jax.Array) -> None:
        """One variant on both tasks (and, for expectile cells, the noise sweep)."""
        variant, log = config.variant, self.log
        train_key, analysis_key, probability_key = jax.random.split(key, 3)
        log(
            f"{variant}: training {self.num_animals} animals x {config.num_cells} cells on the "
            f"magnitude task ({config.num_trials:,} trials)"
        )
        states, mean_values = simulation.train_magnitude_task(config, train_key, self.num_animals)
        log(f"{variant}: recording {self.response_trials} noisy responses per magnitude")
        self.variants[variant], self.cells[variant] = analysis.analyse_magnitude_task(
            config, states, mean_values, analysis_key, self.response_trials, log
        )
        if variant == "expectile":
            log(f"{variant}: reliability sweep over response noise SD {list(self.noise_levels)} ul")
            self.noise_sweep = analysis.noise_sweep(
                config, states, mean_values, analysis_key, self.response_trials, self.noise_levels
            )
        log(f"{variant}: training and recording on the probability task")
        self.probability[variant] = self._probability_task(config, train_key, probability_key)
        self.configs[variant] = config

    def _probability_task(self, config, train_key, key) -> dict[str, Any]:
        """The variable-probability task on the same animal keys, and the optimism signature."""
        task = analysis.analyse_probability_task(
            dataclasses.replace(config, num_states=len(CUE_PROBABILITIES)),
            train_key,
            key,
            self.num_animals,
            self.probability_task_reward,
            self.response_trials,
        )
        task["optimism_vs_asymmetry"] = correlation(
            self.cells[config.variant]["asymmetry"], task["cells"]["optimism"]
        )
        return task

    def payload(self, seed: int) -> dict[str, Any]:
        """The JSON payload (before `to_jsonable`) of everything run."""
        return {
            "metadata": results_io.metadata(),
            "kind": "dopamine",
            "config": {
                "seed": seed,
                "num_animals": self.num_animals,
                "response_trials": self.response_trials,
                "magnitudes": MAGNITUDES,
                "magnitude_probs": MAGNITUDE_PROBS,
                "cue_probabilities": CUE_PROBABILITIES,
                "decoding": {
                    **DECODING_SETTINGS,
                    "default": "data_bounds",
                    "labels": DECODINGS,
                    "data_bounds_margin": BOUNDS_MARGIN,
                    "true_bounds": TRUE_REWARD_RANGE,
                },
                "populations": self.configs,
            },
            "reference_w1": reference_distances(),
            "variants": self.variants,
            "noise_sweep": self.noise_sweep,
            "probability_task": self.probability,
            "cells": self.cells,
        }
