"""Chains whose return distribution is known exactly: Bernoulli rewards at every step,
a terminal-only reward, and reward 1 per step until a geometric termination.

Each chain has one action, so the base class's `action_return_distributions` (its single row
is `true_return_distribution`) is the law calibration scores every episode against.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment

from envs.exact import (
    ExactEnvironment,
    ReturnError,
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

# The exact convolution stops before the atom count passes this (H = 16 steps when no sums
# coincide); the remaining steps are then summarised by their mean, with stated bounds.
MAX_EXACT_ATOMS = 2**16
# GeometricSurvival's atoms stop where the untruncated tail P(N > n) is at most this.
TAIL_MASS = 1e-9
# Keeps that atom table below about 2 million atoms (q = 0 would never terminate).
MIN_Q = 1e-5


@struct.dataclass
class StochasticChainParams(environment.EnvParams):
    length: int = struct.field(pytree_node=False, default=10)
    reward_size: float = 1.0
    p: float = 0.5
    max_steps_in_episode: int = 10_000


class StochasticChain(ExactEnvironment):
    """H = `length` steps, each paying c = `reward_size` with probability p, then the end.

    Start-state return Z = sum_{t<H} gamma^t c B_t, B_t ~ Bernoulli(p) independent. With
    c = 1, p = 1/2, gamma = 1/2 it tends to Uniform[0, 2] as H grows; with c = 2, p = 1/2,
    gamma = 1/3 to the Cantor distribution stretched to [0, 3]. Observation [H]: one-hot
    position. One action.
    """

    env_name = "StochasticChain"

    @property
    def default_params(self) -> StochasticChainParams:
        return StochasticChainParams()

    @property
    def num_actions(self) -> int:
        return 1

    def obs_size(self, params: StochasticChainParams) -> int:
        return params.length

    def reset_env(self, key, params: StochasticChainParams):
        state = environment.EnvState(time=jnp.int32(0))
        return self.get_obs(state, params), state

    def step_env(self, key, state, action, params: StochasticChainParams):
        reward = jnp.where(jax.random.bernoulli(key, params.p), params.reward_size, 0.0)
        return self.transition(environment.EnvState(time=state.time + 1), reward, params)

    def get_obs(self, state, params: StochasticChainParams, key=None) -> jax.Array:
        return clock(state.time, params.length)

    def is_terminated(self, state, params: StochasticChainParams) -> jax.Array:
        return state.time >= params.length

    def validate_params(self, params: StochasticChainParams) -> None:
        name = self.env_name
        check_integer(name, "length", params.length, 1)
        check_real(name, "reward_size", params.reward_size, -np.inf, np.inf)
        check_real(name, "p", params.p, 0.0, 1.0)
        check_max_steps(name, params.max_steps_in_episode, params.length)

    def true_return_distribution(self, params: StochasticChainParams, gamma: float):
        """Atoms (locs [K], probs [K]), K <= 2^16, of the start-state return.

        Exact while the merged atoms of the first K' steps stay within MAX_EXACT_ATOMS (all
        H steps for H <= 16, and any H when gamma is 0 or 1 or p is 0 or 1). The sum T of
        the remaining steps is replaced by its mean; `true_return_error` gives the bounds.
        """
        gamma = check_gamma(gamma)
        locs, probs, tail = self._exact_prefix(params, gamma)
        return locs + params.p * tail.sum(), probs

    def true_return_error(self, params: StochasticChainParams, gamma: float) -> ReturnError:
        """Bounds for the tail T = sum_{K'<=t<H} gamma^t c B_t put at its mean m.

        W1 <= E|T - m| <= min(sd(T), largest distance from m to an end of T's range).
        sup-CDF: Z and the shifted prefix both lie between the prefix's CDF shifted by the
        ends of T's range, so their gap is at most the prefix's largest mass in any window as
        wide as that range (computed from the prefix's atoms).
        """
        gamma = check_gamma(gamma)
        locs, probs, tail = self._exact_prefix(params, gamma)
        if tail.size == 0:
            return ReturnError(0.0, 0.0)
        mean = params.p * tail.sum()
        low, high = min(0.0, tail.sum()), max(0.0, tail.sum())
        sd = math.sqrt(params.p * (1 - params.p) * np.sum(tail**2))
        cdf = np.concatenate([[0.0], np.cumsum(probs)])
        window_ends = np.searchsorted(locs, locs + (high - low), side="right")
        window_mass = float(np.max(cdf[window_ends] - cdf[:-1]))
        return ReturnError(min(sd, max(mean - low, high - mean)), window_mass)

    @staticmethod
    def _exact_prefix(params: StochasticChainParams, gamma: float):
        """(locs [K], probs [K]) of the first K' steps' return, exact, and the rewards
        c gamma^t [H - K'] of the steps left to the tail."""
        locs, probs = np.zeros(1), np.ones(1)
        rewards = params.reward_size * gamma ** np.arange(params.length, dtype=np.float64)
        for t, reward in enumerate(rewards):
            next_locs, next_probs = merge_atoms(
                np.concatenate([locs, locs + reward]),
                np.concatenate([probs * (1 - params.p), probs * params.p]),
            )
            if next_locs.size > MAX_EXACT_ATOMS:
                return locs, probs, rewards[t:]
            locs, probs = next_locs, next_probs
        return locs, probs, rewards[params.length :]


@struct.dataclass
class TerminalRewardChainParams(environment.EnvParams):
    length: int = struct.field(pytree_node=False, default=10)
    magnitudes: tuple[float, ...] = (0.0, 1.0)
    probs: tuple[float, ...] = (0.5, 0.5)
    max_steps_in_episode: int = 10_000


class TerminalRewardChain(ExactEnvironment):
    """H = `length` steps; only the last pays, R ~ (magnitudes, probs); then the end.

    The reward comes on step H - 1 (counting from 0), so Z(s_k) = gamma^(H-1-k) R and the
    start-state return is gamma^(H-1) * R. Observation [H]: one-hot position. One action.
    """

    env_name = "TerminalRewardChain"

    @property
    def default_params(self) -> TerminalRewardChainParams:
        return TerminalRewardChainParams()

    @property
    def num_actions(self) -> int:
        return 1

    def obs_size(self, params: TerminalRewardChainParams) -> int:
        return params.length

    def reset_env(self, key, params: TerminalRewardChainParams):
        state = environment.EnvState(time=jnp.int32(0))
        return self.get_obs(state, params), state

    def step_env(self, key, state, action, params: TerminalRewardChainParams):
        last_step = state.time == params.length - 1
        reward = jnp.where(last_step, sample_discrete(key, params.magnitudes, params.probs), 0.0)
        return self.transition(environment.EnvState(time=state.time + 1), reward, params)

    def get_obs(self, state, params: TerminalRewardChainParams, key=None) -> jax.Array:
        return clock(state.time, params.length)

    def is_terminated(self, state, params: TerminalRewardChainParams) -> jax.Array:
        return state.time >= params.length

    def validate_params(self, params: TerminalRewardChainParams) -> None:
        name = self.env_name
        check_integer(name, "length", params.length, 1)
        check_distribution(name, "magnitudes", params.magnitudes, "probs", params.probs)
        check_max_steps(name, params.max_steps_in_episode, params.length)

    def true_return_distribution(self, params: TerminalRewardChainParams, gamma: float):
        """Atoms (locs [K], probs [K]) of gamma^(H-1) * R, exact."""
        gamma = check_gamma(gamma)
        return scaled_atoms(params.magnitudes, params.probs, gamma ** (params.length - 1))


@struct.dataclass
class GeometricSurvivalState(environment.EnvState):
    terminated: jax.Array


@struct.dataclass
class GeometricSurvivalParams(environment.EnvParams):
    q: float = 0.1
    max_steps_in_episode: int = 10_000


class GeometricSurvival(ExactEnvironment):
    """Reward 1 every step; after each step the episode ends with probability q.

    The number of steps N ~ Geometric(q) on {1, 2, ...}, so the return is
    G = (1 - gamma^N) / (1 - gamma) (G = N when gamma = 1), E[G] = 1 / (1 - gamma (1 - q)).
    Every state has this same law, so the observation [1] is a constant 1 (0 when terminal).
    `max_steps_in_episode` (default 10,000) must truncate with probability
    (1 - q)^max_steps <= 1e-9, so truncation cannot bias the returns. One action.
    """

    env_name = "GeometricSurvival"

    @property
    def default_params(self) -> GeometricSurvivalParams:
        return GeometricSurvivalParams()

    @property
    def num_actions(self) -> int:
        return 1

    def obs_size(self, params: GeometricSurvivalParams) -> int:
        return 1

    def reset_env(self, key, params: GeometricSurvivalParams):
        state = GeometricSurvivalState(time=jnp.int32(0), terminated=jnp.bool_(False))
        return self.get_obs(state, params), state

    def step_env(self, key, state, action, params: GeometricSurvivalParams):
        next_state = GeometricSurvivalState(
            time=state.time + 1, terminated=jax.random.bernoulli(key, params.q)
        )
        return self.transition(next_state, 1.0, params)

    def get_obs(self, state, params: GeometricSurvivalParams, key=None) -> jax.Array:
        return jnp.logical_not(state.terminated).astype(jnp.float32)[None]

    def is_terminated(self, state, params: GeometricSurvivalParams) -> jax.Array:
        return state.terminated

    def validate_params(self, params: GeometricSurvivalParams) -> None:
        name = self.env_name
        check_real(name, "q", params.q, 0.0, 1.0)
        if params.q < MIN_Q:
            raise fail(name, "q", params.q, f"it must be in [{MIN_Q}, 1]")
        check_max_steps(name, params.max_steps_in_episode, 1)
        if params.q < 1 and params.max_steps_in_episode < _steps_until_tail(params.q):
            raise fail(
                name,
                "max_steps_in_episode",
                params.max_steps_in_episode,
                f"with q={params.q} it must be >= {_steps_until_tail(params.q)} so that at "
                f"most {TAIL_MASS} of episodes are truncated",
            )

    def true_return_distribution(self, params: GeometricSurvivalParams, gamma: float):
        """Atoms for N = 1..M + 1 with M the first n where P(N > n) <= 1e-9.

        Mass P(N = n) at G(n) for n <= M, and the whole tail P(N > M) at G(M + 1). Error
        (`true_return_error`): sup-CDF <= P(N > M + 1) = (1 - q)^(M + 1) <= 1e-9, and
        W1 <= sum_{n > M} P(N > n) (G(n + 1) - G(n)) = s^(M + 1) / (1 - s), s = gamma (1 - q).
        """
        gamma = check_gamma(gamma)
        q = float(params.q)
        last = _steps_until_tail(q)
        steps = np.arange(1, last + 2)
        probs = q * (1 - q) ** (steps - 1.0)
        probs[-1] = (1 - q) ** last
        if gamma == 1.0:
            locs = steps.astype(np.float64)
        else:
            locs = (1 - gamma**steps) / (1 - gamma)
        return merge_atoms(locs, probs)

    def true_return_error(self, params: GeometricSurvivalParams, gamma: float) -> ReturnError:
        gamma = check_gamma(gamma)
        survive = 1 - float(params.q)
        tail_steps = _steps_until_tail(params.q) + 1
        return ReturnError(
            (gamma * survive) ** tail_steps / (1 - gamma * survive), survive**tail_steps
        )


def _steps_until_tail(q: float) -> int:
    """The least n >= 1 with P(N > n) = (1 - q)^n <= TAIL_MASS."""
    if q >= 1:
        return 1
    return max(1, math.ceil(math.log(TAIL_MASS) / math.log1p(-q)))
