"""The simulated experiment: populations of animals learn the mouse tasks, then their cells'
noisy responses are recorded."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from agents import population_td
from benchmarks.dopamine.task import CUE_PROBABILITIES, MAGNITUDE_PROBS, MAGNITUDES


@functools.partial(jax.jit, static_argnames=("config", "num_animals"))
def train_magnitude_task(config, key, num_animals):
    """(states, mean values) of num_animals populations trained on the variable-magnitude task."""
    sampler = population_td.reward_sampler(jnp.asarray(MAGNITUDES), jnp.asarray(MAGNITUDE_PROBS))
    keys = jax.random.split(key, num_animals)
    return jax.vmap(lambda k: population_td.train(config, k, sampler))(keys)


@functools.partial(jax.jit, static_argnames=("config", "num_animals"))
def train_probability_task(config, key, num_animals, reward):
    """The same on the variable-probability task: one state per cue; a trial is a random cue
    and its outcome (reward or nothing)."""
    cue_probs = jnp.asarray(CUE_PROBABILITIES)

    def sample_trial(trial_key):
        cue_key, outcome_key = jax.random.split(trial_key)
        cue = jax.random.randint(cue_key, (), 0, len(CUE_PROBABILITIES))
        rewarded = jax.random.bernoulli(outcome_key, cue_probs[cue])
        return population_td.Trial(cue[None], (reward * rewarded)[None])

    keys = jax.random.split(key, num_animals)
    return jax.vmap(lambda k: population_td.train(config, k, sample_trial))(keys)


def record_magnitude_responses(config, states, key, response_trials) -> np.ndarray:
    """Noisy responses [animals, cells, trials, R], response_trials to each magnitude."""
    rewards = jnp.tile(jnp.asarray(MAGNITUDES), response_trials)

    def record(state, record_key):
        return population_td.responses(config, state, rewards, key=record_key)

    recorded = jax.vmap(record)(states, jax.random.split(key, states.values.shape[0]))
    return np.asarray(recorded, np.float64).reshape(
        recorded.shape[:2] + (response_trials, len(MAGNITUDES))
    )


def record_cue_responses(config, states, mean_values, key, response_trials) -> np.ndarray:
    """Noisy responses [animals, cells, cues, trials] to each cue of the probability task."""

    def record(state, cue_values, record_key):
        # A cue arrives unpredictably (the inter-trial value is 0): its error is the cue value.
        errors = jnp.repeat(cue_values.T[:, :, None], response_trials, axis=-1)
        return population_td.error_responses(config, state, errors, key=record_key)

    keys = jax.random.split(key, mean_values.shape[0])
    return np.asarray(jax.vmap(record)(states, mean_values, keys), np.float64)
