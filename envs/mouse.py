"""The mouse dopamine tasks of Dabney et al. (2020), Nature 577: variable reward magnitude
and variable reward probability, as one-trial episodes with exactly known returns.

Both tasks have one action, so the base class's `action_return_distributions` (its single row
is `true_return_distribution`) is the law calibration scores every episode against.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment

from envs.exact import (
    ExactEnvironment,
    check_bool,
    check_distribution,
    check_gamma,
    check_integer,
    check_max_steps,
    check_real,
    clock,
    fail,
    merge_atoms,
    sample_discrete,
    scaled_atoms,
)

MAGNITUDES = (0.1, 0.3, 1.2, 2.5, 5.0, 10.0, 20.0)
# The paper's empirical trial frequencies; they sum to 1.0001, so the default is normalised.
_PAPER_FREQUENCIES = (0.0661, 0.0909, 0.1485, 0.1549, 0.3116, 0.1510, 0.0771)
MAGNITUDE_PROBS = tuple(f / sum(_PAPER_FREQUENCIES) for f in _PAPER_FREQUENCIES)


@struct.dataclass
class VariableMagnitudeParams(environment.EnvParams):
    magnitudes: tuple[float, ...] = MAGNITUDES
    probs: tuple[float, ...] = MAGNITUDE_PROBS
    delay: int = struct.field(pytree_node=False, default=3)
    cued: bool = True
    max_steps_in_episode: int = 10_000


class VariableMagnitude(ExactEnvironment):
    """One trial of the variable-magnitude task; the agent has one action and only predicts.

    Times 0..delay are the trial's steps: time 0 is the cue (the odour, when `cued`), times
    1..delay the trace period, and the step taken at time `delay` delivers one reward R drawn
    from (magnitudes, probs) and terminates. So the start-state return is gamma^delay * R,
    and an episode lasts delay + 1 steps. Observation [delay + 2]: a one-hot clock over the
    delay + 1 times, then the odour feature, 1 throughout a cued trial and 0 in an uncued one
    (the agents have no memory, so the odour stays visible until the outcome). Cued and
    uncued trials have the same return distribution: the cue only changes what is seen.
    """

    env_name = "VariableMagnitude-mouse"

    @property
    def default_params(self) -> VariableMagnitudeParams:
        return VariableMagnitudeParams()

    @property
    def num_actions(self) -> int:
        return 1

    def obs_size(self, params: VariableMagnitudeParams) -> int:
        return params.delay + 2

    def reset_env(self, key, params: VariableMagnitudeParams):
        state = environment.EnvState(time=jnp.int32(0))
        return self.get_obs(state, params), state

    def step_env(self, key, state, action, params: VariableMagnitudeParams):
        reward = jnp.where(
            state.time == params.delay, sample_discrete(key, params.magnitudes, params.probs), 0.0
        )
        return self.transition(environment.EnvState(time=state.time + 1), reward, params)

    def get_obs(self, state, params: VariableMagnitudeParams, key=None) -> jax.Array:
        in_trial = state.time <= params.delay
        odour = jnp.logical_and(params.cued, in_trial).astype(jnp.float32)
        return jnp.concatenate([clock(state.time, params.delay + 1), odour[None]])

    def is_terminated(self, state, params: VariableMagnitudeParams) -> jax.Array:
        return state.time > params.delay

    def validate_params(self, params: VariableMagnitudeParams) -> None:
        name = self.env_name
        check_distribution(name, "magnitudes", params.magnitudes, "probs", params.probs)
        check_integer(name, "delay", params.delay, 0)
        check_bool(name, "cued", params.cued)
        check_max_steps(name, params.max_steps_in_episode, params.delay + 1)

    def true_return_distribution(self, params: VariableMagnitudeParams, gamma: float):
        """Atoms (locs [K], probs [K]) of gamma^delay * R, exact."""
        gamma = check_gamma(gamma)
        return scaled_atoms(params.magnitudes, params.probs, gamma**params.delay)


@struct.dataclass
class VariableProbabilityState(environment.EnvState):
    cue: jax.Array


@struct.dataclass
class VariableProbabilityParams(environment.EnvParams):
    reward_probs: tuple[float, ...] = (0.1, 0.5, 0.9)
    cue_probs: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)
    reward_size: float = 1.0
    delay: int = struct.field(pytree_node=False, default=3)
    max_steps_in_episode: int = 10_000


class VariableProbability(ExactEnvironment):
    """One trial of the variable-probability task: a cue predicts a reward with its probability.

    Time 0 is the pre-cue state (nothing shown); the step taken there reveals cue c, drawn
    with `cue_probs`; times 1..delay + 1 show the cue; the step taken at time delay + 1
    delivers `reward_size` with probability reward_probs[c] (else 0) and terminates. An
    episode lasts delay + 2 steps. Returns: gamma^(delay + 1) * reward_size * B from the
    start, gamma^delay * reward_size * B from the cue state, B ~ Bernoulli(reward_probs[c]).
    Observation [delay + 2 + num_cues]: a one-hot clock over times 0..delay + 1, then the
    one-hot cue, shown from time 1 until the outcome (the agents have no memory).
    """

    env_name = "VariableProbability-mouse"

    @property
    def default_params(self) -> VariableProbabilityParams:
        return VariableProbabilityParams()

    @property
    def num_actions(self) -> int:
        return 1

    def obs_size(self, params: VariableProbabilityParams) -> int:
        return params.delay + 2 + len(params.reward_probs)

    def reset_env(self, key, params: VariableProbabilityParams):
        # The cue is drawn now but hidden until time 1: the same law as drawing it then.
        num_cues = len(params.reward_probs)
        cue = jax.random.choice(key, num_cues, p=jnp.asarray(params.cue_probs, jnp.float32))
        state = VariableProbabilityState(time=jnp.int32(0), cue=cue.astype(jnp.int32))
        return self.get_obs(state, params), state

    def step_env(self, key, state, action, params: VariableProbabilityParams):
        reward_prob = jnp.asarray(params.reward_probs, jnp.float32)[state.cue]
        rewarded = jnp.logical_and(
            state.time == params.delay + 1, jax.random.bernoulli(key, reward_prob)
        )
        reward = jnp.where(rewarded, params.reward_size, 0.0)
        return self.transition(state.replace(time=state.time + 1), reward, params)

    def get_obs(self, state, params: VariableProbabilityParams, key=None) -> jax.Array:
        cue_visible = jnp.logical_and(state.time >= 1, state.time <= params.delay + 1)
        cue = jax.nn.one_hot(state.cue, len(params.reward_probs), dtype=jnp.float32)
        return jnp.concatenate([clock(state.time, params.delay + 2), cue * cue_visible])

    def is_terminated(self, state, params: VariableProbabilityParams) -> jax.Array:
        return state.time > params.delay + 1

    def validate_params(self, params: VariableProbabilityParams) -> None:
        name = self.env_name
        check_distribution(name, "reward_probs", params.reward_probs, "cue_probs", params.cue_probs)
        for prob in params.reward_probs:
            check_real(name, "reward_probs", prob, 0.0, 1.0)
        check_real(name, "reward_size", params.reward_size, -np.inf, np.inf)
        check_integer(name, "delay", params.delay, 0)
        check_max_steps(name, params.max_steps_in_episode, params.delay + 2)

    def true_return_distribution(
        self, params: VariableProbabilityParams, gamma: float, cue: int | None = None
    ):
        """Exact atoms (locs [K <= 2], probs [K]) of the return.

        cue=None: at the pre-cue start state, the mixture over cues; cue=c: at the cue state
        just after cue c appeared. The cue is drawn at reset but hidden at time 0, so the
        start observation is the same in every trial and the mixture is the law an agent's
        start-state prediction (and `action_return_distributions`) should match.
        """
        gamma = check_gamma(gamma)
        reward_probs = np.asarray(params.reward_probs, np.float64)
        if cue is None:
            cue_probs = np.asarray(params.cue_probs, np.float64)
            reward_prob = float(cue_probs @ reward_probs / cue_probs.sum())
            steps_to_reward = params.delay + 1
        elif (
            isinstance(cue, (int, np.integer))
            and not isinstance(cue, bool)
            and 0 <= cue < reward_probs.size
        ):
            reward_prob = float(reward_probs[cue])
            steps_to_reward = params.delay
        else:
            raise fail(
                self.env_name,
                "cue",
                cue,
                f"it must be None or an integer in [0, {reward_probs.size})",
            )
        reward = gamma**steps_to_reward * params.reward_size
        return merge_atoms([0.0, reward], [1.0 - reward_prob, reward_prob])
