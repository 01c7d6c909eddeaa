"""The one training loop: `make_train(agent, env, env_params, config)` gives pure functions that
`run_seeds` jits, vmaps over seeds and shards over devices, in chunks between evaluations.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from agents.base import Agent, ConfigError, EnvSpec, Transition, require
from agents.common import at_actions

# Throughput samples per run: with n paired samples the one-sided signed-rank test can reach
# p = 2^-n at best, so 20 leave room for a Holm correction over a suite's many tests.
MIN_TIMED_SEGMENTS = 20


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What the loop runs for each seed (all counts in env steps of one seed)."""

    total_steps: int = 500_000  # env steps per seed, over all its parallel envs
    num_envs: int = 10  # parallel envs per seed
    num_evals: int = 10  # greedy evaluations, evenly spaced; the loop runs in this many chunks
    eval_episodes: int = 16  # greedy episodes per evaluation
    max_eval_steps: int = 10_000  # cap on an evaluation episode when the env has no time limit
    # Seeds per compiled block on each device (0: the platform's default, see seed_blocks). A
    # seed's results are bit-identical across runs with the same block size.
    seed_block: int = 0

    def validate(self) -> None:
        require(self.total_steps >= 1, f"steps={self.total_steps} must be >= 1")
        require(self.num_envs >= 1, f"num_envs={self.num_envs} must be >= 1")
        require(self.num_evals >= 1, f"num_evals={self.num_evals} must be >= 1")
        require(self.eval_episodes >= 1, f"eval_episodes={self.eval_episodes} must be >= 1")
        require(self.max_eval_steps >= 1, f"max_eval_steps={self.max_eval_steps} must be >= 1")
        require(self.seed_block >= 0, f"seed_block={self.seed_block} must be >= 0 (0: default)")

    @property
    def num_iterations(self) -> int:
        """Scan iterations per seed: each steps every parallel env once."""
        return math.ceil(self.total_steps / self.num_envs)

    @property
    def chunk_length(self) -> int:
        """Iterations between two evaluations."""
        return math.ceil(self.num_iterations / self.num_evals)

    @property
    def segments_per_chunk(self) -> int:
        """Each chunk runs as this many separately timed calls, so a run has at least
        MIN_TIMED_SEGMENTS throughput samples whatever its number of evaluations."""
        return min(math.ceil(MIN_TIMED_SEGMENTS / self.num_evals), self.chunk_length)

    @property
    def segment_length(self) -> int:
        """Iterations per compiled call (the chunk's last segment may run fewer)."""
        return math.ceil(self.chunk_length / self.segments_per_chunk)


class Runner(NamedTuple):
    agent_state: Any
    env_state: Any
    obs: jnp.ndarray
    episode_return: jnp.ndarray  # [num_envs] undiscounted return of the running episode
    key: jax.Array


class SegmentLog(NamedTuple):
    """Training statistics of one seed over one segment (scalar sums; the host adds segments
    up to a chunk and divides)."""

    iterations: jnp.ndarray  # loop iterations that ran (the last segment may stop early)
    episodes: jnp.ndarray  # episodes completed
    return_sum: jnp.ndarray  # summed returns of the completed training (exploring) episodes
    loss_sum: jnp.ndarray  # summed per-iteration losses


class Evaluation(NamedTuple):
    """Greedy evaluation of one seed: per-episode values [eval_episodes, ...]."""

    returns: jnp.ndarray  # undiscounted episode return
    discounted_returns: jnp.ndarray  # with the agent's gamma, from the start state
    lengths: jnp.ndarray
    start_locs: jnp.ndarray  # [E, n] predicted return atoms at the start state, greedy action
    start_probs: jnp.ndarray
    # [E] int32: the greedy action taken at the start state, whose law start_locs predicts;
    # calibration scores each episode against the true law of this action.
    start_actions: jnp.ndarray


def env_spec(env, env_params) -> EnvSpec:
    """The observation shape and number of actions an agent sees, or a clear error."""
    space = env.action_space(env_params)
    if not hasattr(space, "n"):
        raise ConfigError(
            f"environment {env.name} has a continuous action space; distbench agents need a "
            "discrete one"
        )
    shape = tuple(env.observation_space(env_params).shape)
    return EnvSpec(observation_shape=shape, num_actions=int(space.n))


class Trainer(NamedTuple):
    """Pure per-seed functions; `run_seeds` vmaps and jits them."""

    init: Callable[[jax.Array], Runner]
    # run_segment(runner, first, end): iterations first, first+1, ... below end.
    run_segment: Callable[[Runner, jnp.ndarray, jnp.ndarray], tuple[Runner, SegmentLog]]
    evaluate: Callable[[Runner, jax.Array], Evaluation]
    config: TrainConfig


def make_train(agent: Agent, env, env_params, config: TrainConfig) -> Trainer:
    """Build the loop. Nothing here knows which agent or env it runs."""
    spec = env_spec(env, env_params)
    num_envs = config.num_envs
    gamma = float(agent.config.gamma)
    reset = jax.vmap(env.reset, in_axes=(0, None))
    step_envs = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def init(key: jax.Array) -> Runner:
        agent_key, env_key, key = jax.random.split(key, 3)
        obs, env_state = reset(jax.random.split(env_key, num_envs), env_params)
        return Runner(
            agent.init(agent_key, spec),
            env_state,
            obs,
            jnp.zeros((num_envs,), jnp.float32),
            key,
        )

    def iteration(carry, iteration_index, end):
        step = iteration_index * num_envs  # global env-step count, unbatched across seeds

        def advance(runner, iterations, episodes, return_sum, loss_sum):
            key, act_key, env_key, update_key = jax.random.split(runner.key, 4)
            action = agent.act(runner.agent_state, runner.obs, act_key, step, True)
            next_obs, env_state, reward, terminated, truncated, info = step_envs(
                jax.random.split(env_key, num_envs), runner.env_state, action, env_params
            )
            transition = Transition(
                obs=runner.obs,
                action=action,
                reward=reward.astype(jnp.float32),
                discount=1.0 - terminated.astype(jnp.float32),
                next_obs=info["final_observation"],
            )
            agent_state, metrics = agent.update(runner.agent_state, transition, update_key, step)
            done = jnp.logical_or(terminated, truncated)
            episode_return = runner.episode_return + reward
            runner = Runner(
                agent_state, env_state, next_obs, jnp.where(done, 0.0, episode_return), key
            )
            return (
                runner,
                iterations + 1.0,
                episodes + jnp.sum(done),
                return_sum + jnp.sum(jnp.where(done, episode_return, 0.0)),
                loss_sum + metrics["loss"],
            )

        # The last segment of a chunk may overrun the chunk's end (or total_steps): those
        # iterations are skipped (a real branch, since the predicate is the same for every seed).
        carry = jax.lax.cond(iteration_index < end, advance, lambda *c: c, *carry)
        return carry, None

    def run_segment(runner: Runner, first: jnp.ndarray, end: jnp.ndarray):
        zero = jnp.zeros((), jnp.float32)
        (runner, *sums), _ = jax.lax.scan(
            lambda carry, i: iteration(carry, i, end),
            (runner, zero, zero, zero, zero),
            first + jnp.arange(config.segment_length),
        )
        return runner, SegmentLog(*sums)

    max_steps = int(getattr(env_params, "max_steps_in_episode", config.max_eval_steps))
    max_steps = min(max_steps, config.max_eval_steps)

    def evaluate(runner: Runner, key: jax.Array) -> Evaluation:
        """Run eval_episodes greedy episodes to their end; predictions at their start states."""
        episodes = config.eval_episodes
        reset_key, key = jax.random.split(key)
        obs, env_state = reset(jax.random.split(reset_key, episodes), env_params)
        state = runner.agent_state
        start_dist = agent.distribution(state, obs)  # [E, A, n]
        first_key, key = jax.random.split(key)
        first_action = agent.act(state, obs, first_key, jnp.asarray(0), False)
        start_locs = at_actions(start_dist.locs, first_action)
        start_probs = at_actions(start_dist.probs, first_action)

        def cond(carry):
            t, _, _, _, _, _, alive, _, _ = carry
            return jnp.logical_and(t < max_steps, jnp.any(alive))

        def body(carry):
            t, key, obs, env_state, ret, disc_ret, alive, length, action = carry
            key, act_key, env_key = jax.random.split(key, 3)
            action = jnp.where(
                t == 0, action, agent.act(state, obs, act_key, jnp.asarray(0), False)
            )
            obs, env_state, reward, terminated, truncated, _ = step_envs(
                jax.random.split(env_key, episodes), env_state, action, env_params
            )
            ret = ret + jnp.where(alive, reward, 0.0)
            disc_ret = disc_ret + jnp.where(alive, reward * gamma**t, 0.0)
            length = length + alive
            alive = jnp.logical_and(alive, ~jnp.logical_or(terminated, truncated))
            return t + 1, key, obs, env_state, ret, disc_ret, alive, length, action

        zeros = jnp.zeros((episodes,), jnp.float32)
        carry = (
            jnp.asarray(0),
            key,
            obs,
            env_state,
            zeros,
            zeros,
            jnp.ones((episodes,), bool),
            jnp.zeros((episodes,), jnp.int32),
            first_action,
        )
        _, _, _, _, ret, disc_ret, _, length, _ = jax.lax.while_loop(cond, body, carry)
        return Evaluation(
            ret, disc_ret, length, start_locs, start_probs, first_action.astype(jnp.int32)
        )

    return Trainer(init, run_segment, evaluate, config)
