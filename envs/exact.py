"""Shared parts of our environments whose return distribution is known exactly:
the base class, parameter checks, atom merging and discrete reward sampling.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import environment, spaces

from envs.registry import EnvError

PROB_SUM_TOLERANCE = 1e-6
# Atoms closer than this (relative to the largest |atom|, at least 1) are one atom: sums of
# the same discounted rewards taken in a different order differ by a few ulps.
MERGE_RTOL = 1e-12


class ReturnError(NamedTuple):
    """Bounds on the distance between `true_return_distribution` and the real return law.

    Both are 0 where the atoms are exact; `sup_cdf` bounds sup_x |F_atoms(x) - F_true(x)|.
    """

    wasserstein1: float
    sup_cdf: float


class ExactEnvironment(environment.Environment):
    """A gymnax environment that also knows its start-state return distribution, under the
    optimal first action (`true_return_distribution`) and under each first action
    (`action_return_distributions`).

    Conventions shared by every subclass: the discounted return from a state is
    G = sum_t gamma^t r_t, where r_t is the reward of the t-th step taken from that state
    (t = 0 for the first step); observations are float32 vectors in [0, 1]; the terminal
    observation (gymnax's `final_observation`) is all zeros; `max_steps_in_episode` is
    validated never to truncate an episode before it terminates (or only with the
    probability stated by the subclass), so Monte Carlo returns are untruncated.
    """

    env_name: ClassVar[str]

    @property
    def name(self) -> str:
        return self.env_name

    def validate_params(self, params: Any) -> None:
        """Raise EnvError naming the first invalid field of `params`."""
        raise NotImplementedError

    def true_return_distribution(self, params: Any, gamma: float) -> tuple[np.ndarray, np.ndarray]:
        """(locs [K], probs [K]) of the start-state return under `optimal_action`.

        locs are sorted and distinct, probs are positive and sum to 1.
        """
        raise NotImplementedError

    def true_return_error(self, params: Any, gamma: float) -> ReturnError:
        """Error bounds of `true_return_distribution`: zero unless a subclass discretises."""
        check_gamma(gamma)
        return ReturnError(0.0, 0.0)

    def optimal_action(self, params: Any) -> int:
        """The action of the (greedy-optimal) policy `true_return_distribution` describes."""
        return 0

    def action_return_distributions(
        self, params: Any, gamma: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(locs [A, n], probs [A, n]): the start-state return law of each first action.

        Row a is the law of taking action a at the start state (then the policy
        `true_return_distribution` describes), so a prediction is scored against the action
        the agent really took, not the optimal one. Each row is padded to the common n with
        zero-probability copies of its last atom. This default suits envs where the first
        action does not change the return: every row is `true_return_distribution`. Where the
        start state is random its law is the mixture over start states for that action; every
        exact env shows the same start observation in every episode, so the action an agent
        takes there cannot depend on which start state it is in.
        """
        law = self.true_return_distribution(params, gamma)
        return pad_laws([law] * self.num_actions)

    def obs_size(self, params: Any) -> int:
        """Length of the observation vector."""
        raise NotImplementedError

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_actions)

    def observation_space(self, params: Any) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (self.obs_size(params),), jnp.float32)

    def transition(self, state: Any, reward: jax.Array, params: Any):
        """The `step_env` result (obs, state, reward, terminated, info) for a next state."""
        terminated = self.is_terminated(state, params)
        info = {"discount": self.discount(state, params)}
        reward = jnp.asarray(reward, jnp.float32)
        return self.get_obs(state, params), state, reward, terminated, info


def fail(env_name: str, field: str, value: Any, valid: str) -> EnvError:
    """The one-line EnvError for an invalid field: names the value and what is valid."""
    return EnvError(f"{env_name}: {field}={value!r} is invalid; {valid}")


def check_gamma(gamma: Any) -> float:
    """Return gamma as a float, or raise EnvError unless it is a number in [0, 1]."""
    if (
        isinstance(gamma, bool)
        or not isinstance(gamma, numbers.Real)
        or not 0.0 <= float(gamma) <= 1.0
    ):
        raise EnvError(f"gamma={gamma!r} is invalid; it must be a number in [0, 1]")
    return float(gamma)


def check_integer(env_name: str, field: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise fail(env_name, field, value, f"it must be an integer >= {minimum}")


def check_real(env_name: str, field: str, value: Any, low: float, high: float) -> None:
    """Require a finite number in the closed interval [low, high] (low/high may be inf)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        bounded = math.isfinite(low) or math.isfinite(high)
        valid = f"a finite number in [{low}, {high}]" if bounded else "a finite number"
        raise fail(env_name, field, value, f"it must be {valid}")


def check_bool(env_name: str, field: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise fail(env_name, field, value, "it must be True or False")


def check_distribution(
    env_name: str, values_field: str, values: Any, probs_field: str, probs: Any
) -> None:
    """Require finite `values` [K] and `probs` [K] >= 0 summing to 1 (within 1e-6), K >= 1."""
    try:
        values_array = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        raise fail(env_name, values_field, values, "it must be a tuple of numbers") from None
    try:
        probs_array = np.asarray(probs, np.float64)
    except (TypeError, ValueError):
        raise fail(env_name, probs_field, probs, "it must be a tuple of numbers") from None
    if values_array.ndim != 1 or values_array.size == 0 or not np.all(np.isfinite(values_array)):
        raise fail(env_name, values_field, values, "it must be a non-empty tuple of finite numbers")
    if probs_array.shape != values_array.shape:
        raise fail(
            env_name,
            probs_field,
            probs,
            f"it must have one probability per entry of {values_field} ({values_array.size})",
        )
    if not np.all(np.isfinite(probs_array)) or np.any(probs_array < 0):
        raise fail(env_name, probs_field, probs, "probabilities must be finite and >= 0")
    total = float(probs_array.sum())
    if abs(total - 1.0) > PROB_SUM_TOLERANCE:
        raise fail(
            env_name,
            probs_field,
            probs,
            f"they sum to {total:.9g}; they must sum to 1 (within {PROB_SUM_TOLERANCE})",
        )


def check_max_steps(env_name: str, max_steps: Any, episode_length: int) -> None:
    """Require a time limit that cannot cut an episode of `episode_length` steps short."""
    if (
        isinstance(max_steps, bool)
        or not isinstance(max_steps, numbers.Integral)
        or max_steps < episode_length
    ):
        raise fail(
            env_name,
            "max_steps_in_episode",
            max_steps,
            f"it must be an integer >= the episode length {episode_length}",
        )


def merge_atoms(locs: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Sort atoms, merge (near-)equal locations, drop zero mass and renormalise.

    locs, probs: [K] -> (locs [J], probs [J]) float64, J <= K, locs strictly increasing.
    """
    locs = np.asarray(locs, np.float64).ravel()
    probs = np.asarray(probs, np.float64).ravel()
    keep = probs > 0
    locs, probs = locs[keep], probs[keep]
    order = np.argsort(locs, kind="stable")
    locs, probs = locs[order], probs[order]
    scale = max(1.0, float(np.max(np.abs(locs))))
    starts = np.concatenate([[True], np.diff(locs) > MERGE_RTOL * scale])
    merged_probs = np.bincount(np.cumsum(starts) - 1, weights=probs)
    return locs[starts], merged_probs / merged_probs.sum()


def pad_laws(laws: list[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Stack atom laws [(locs [K_a], probs [K_a])] into (locs [A, n], probs [A, n]).

    n = max K_a; a shorter law is padded with copies of its last atom at probability 0, which
    leaves its CDF unchanged and keeps the padding inside its support (so plots and distances
    that look at the support see nothing new).
    """
    width = max(np.asarray(locs).size for locs, _ in laws)
    locs_rows, probs_rows = [], []
    for locs, probs in laws:
        locs = np.asarray(locs, np.float64).ravel()
        probs = np.asarray(probs, np.float64).ravel()
        padding = width - locs.size
        locs_rows.append(np.concatenate([locs, np.full(padding, locs[-1])]))
        probs_rows.append(np.concatenate([probs, np.zeros(padding)]))
    return np.stack(locs_rows), np.stack(probs_rows)


def scaled_atoms(values: Any, probs: Any, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The law of scale * R for R with atoms (values [K], probs [K]), merged."""
    return merge_atoms(scale * np.asarray(values, np.float64), probs)


def sample_discrete(key: jax.Array, values: Any, probs: Any) -> jax.Array:
    """One float32 draw from atoms (values [K], probs [K]); probs are renormalised."""
    values = jnp.asarray(values, jnp.float32)
    index = jax.random.choice(key, values.shape[0], p=jnp.asarray(probs, jnp.float32))
    return values[index]


def clock(time: jax.Array, num_phases: int) -> jax.Array:
    """One-hot [num_phases] float32 of `time`; all zeros once time reaches num_phases."""
    return jax.nn.one_hot(time, num_phases, dtype=jnp.float32)
