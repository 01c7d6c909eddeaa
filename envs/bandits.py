"""One-step probes with exactly known returns: a single stochastic reward, and two arms with
the same mean but different spread.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment

from envs.exact import (
    ExactEnvironment,
    check_distribution,
    check_gamma,
    check_max_steps,
    clock,
    fail,
    merge_atoms,
    pad_laws,
    sample_discrete,
)


@struct.dataclass
class OneStepRewardParams(environment.EnvParams):
    magnitudes: tuple[float, ...] = (0.0, 1.0)
    probs: tuple[float, ...] = (0.5, 0.5)
    max_steps_in_episode: int = 10_000


class OneStepReward(ExactEnvironment):
    """One action, one step paying R ~ (magnitudes, probs), then the end; the return is R.

    The default is the 50/50 two-point law on {0, 1}. Observation [1]: 1 at the start.
    """

    env_name = "OneStepReward"

    @property
    def default_params(self) -> OneStepRewardParams:
        return OneStepRewardParams()

    @property
    def num_actions(self) -> int:
        return 1

    def obs_size(self, params: OneStepRewardParams) -> int:
        return 1

    def reset_env(self, key, params: OneStepRewardParams):
        state = environment.EnvState(time=jnp.int32(0))
        return self.get_obs(state, params), state

    def step_env(self, key, state, action, params: OneStepRewardParams):
        reward = sample_discrete(key, params.magnitudes, params.probs)
        return self.transition(environment.EnvState(time=state.time + 1), reward, params)

    def get_obs(self, state, params: OneStepRewardParams, key=None) -> jax.Array:
        return clock(state.time, 1)

    def is_terminated(self, state, params: OneStepRewardParams) -> jax.Array:
        return state.time >= 1

    def validate_params(self, params: OneStepRewardParams) -> None:
        check_distribution(self.env_name, "magnitudes", params.magnitudes, "probs", params.probs)
        check_max_steps(self.env_name, params.max_steps_in_episode, 1)

    def true_return_distribution(self, params: OneStepRewardParams, gamma: float):
        """Atoms (locs [K], probs [K]) of R, exact (one step, so gamma does not enter)."""
        check_gamma(gamma)
        return merge_atoms(params.magnitudes, params.probs)


@struct.dataclass
class TwoArmedBanditParams(environment.EnvParams):
    magnitudes_a: tuple[float, ...] = (1.0,)
    probs_a: tuple[float, ...] = (1.0,)
    magnitudes_b: tuple[float, ...] = (0.0, 2.0)
    probs_b: tuple[float, ...] = (0.5, 0.5)
    max_steps_in_episode: int = 10_000


class TwoArmedBandit(ExactEnvironment):
    """One step: action 0 pulls arm a, action 1 arm b, each paying from its own atoms; the end.

    Defaults: both arms have mean 1; arm a always pays 1, arm b pays 0 or 2 with probability
    1/2 each, so a risk-neutral agent is indifferent and only its distribution tells the arms
    apart. Observation [1]: 1 at the start. `true_return_distribution` is the optimal arm's law
    and `action_return_distributions` each arm's, which calibration scores against: an agent
    that pulls arm b is judged on arm b's law.
    """

    env_name = "TwoArmedBandit"

    @property
    def default_params(self) -> TwoArmedBanditParams:
        return TwoArmedBanditParams()

    @property
    def num_actions(self) -> int:
        return 2

    def obs_size(self, params: TwoArmedBanditParams) -> int:
        return 1

    def reset_env(self, key, params: TwoArmedBanditParams):
        state = environment.EnvState(time=jnp.int32(0))
        return self.get_obs(state, params), state

    def step_env(self, key, state, action, params: TwoArmedBanditParams):
        key_a, key_b = jax.random.split(key)
        reward = jnp.where(
            action == 0,
            sample_discrete(key_a, params.magnitudes_a, params.probs_a),
            sample_discrete(key_b, params.magnitudes_b, params.probs_b),
        )
        return self.transition(environment.EnvState(time=state.time + 1), reward, params)

    def get_obs(self, state, params: TwoArmedBanditParams, key=None) -> jax.Array:
        return clock(state.time, 1)

    def is_terminated(self, state, params: TwoArmedBanditParams) -> jax.Array:
        return state.time >= 1

    def validate_params(self, params: TwoArmedBanditParams) -> None:
        name = self.env_name
        check_distribution(name, "magnitudes_a", params.magnitudes_a, "probs_a", params.probs_a)
        check_distribution(name, "magnitudes_b", params.magnitudes_b, "probs_b", params.probs_b)
        check_max_steps(name, params.max_steps_in_episode, 1)

    def optimal_action(self, params: TwoArmedBanditParams) -> int:
        """The arm with the larger mean; a tie (as in the defaults) goes to arm 0, like argmax."""
        means = [
            float(np.dot(*merge_atoms(params.magnitudes_a, params.probs_a))),
            float(np.dot(*merge_atoms(params.magnitudes_b, params.probs_b))),
        ]
        return int(np.argmax(means))

    def arm_return_distribution(self, params: TwoArmedBanditParams, gamma: float, arm: int):
        """Atoms (locs [K], probs [K]) of the return after pulling `arm` (0 or 1), exact."""
        check_gamma(gamma)
        if arm == 0:
            return merge_atoms(params.magnitudes_a, params.probs_a)
        if arm == 1:
            return merge_atoms(params.magnitudes_b, params.probs_b)
        raise fail(self.env_name, "arm", arm, "it must be 0 or 1")

    def true_return_distribution(self, params: TwoArmedBanditParams, gamma: float):
        """The greedy-optimal arm's return atoms (`optimal_action`; ties go to arm 0)."""
        return self.arm_return_distribution(params, gamma, self.optimal_action(params))

    def action_return_distributions(self, params: TwoArmedBanditParams, gamma: float):
        """(locs [2, n], probs [2, n]): row a is arm a's return law, padded to a common n.

        The arm pulled decides the law, and with the defaults' equal means a greedy agent may
        pull either, so its prediction must be scored against the arm it pulled.
        """
        return pad_laws([self.arm_return_distribution(params, gamma, arm) for arm in (0, 1)])
