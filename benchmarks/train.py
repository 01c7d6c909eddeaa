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

from agents.base import Agent, ConfigError, EnvSpec, Transition, bind, hyperparams, require
from agents.losses import at_actions

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
        # Each loop iteration steps every env once: another count would run more steps than
        # the result records.
        lower = self.total_steps // self.num_envs * self.num_envs
        require(
            self.total_steps % self.num_envs == 0,
            f"steps={self.total_steps} must be a multiple of num_envs={self.num_envs} (each "
            f"iteration steps every env once): e.g. {max(lower, self.num_envs)} or "
            f"{lower + self.num_envs}",
        )
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


class LoopState(NamedTuple):
    """One seed's training loop state, carried from iteration to iteration."""

    agent_state: Any
    env_state: Any
    obs: jnp.ndarray
    episode_return: jnp.ndarray  # [num_envs] undiscounted return of the running episode
    key: jax.Array
    hparams: dict  # the agent's traced hyperparameters for this seed (agents/base.py)


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


class GreedyEpisodes(NamedTuple):
    """Evaluation's while-loop state: a batch of greedy episodes run side by side to their end."""

    t: jnp.ndarray  # steps taken so far
    key: jax.Array
    obs: jnp.ndarray
    env_state: Any
    returns: jnp.ndarray  # [E] undiscounted return so far
    discounted_returns: jnp.ndarray  # [E]
    alive: jnp.ndarray  # [E] the episode has not ended
    lengths: jnp.ndarray  # [E]
    action: jnp.ndarray  # [E] the action of the step before (at t=0, the start-state action)


def env_spec(env, env_params, num_envs: int = 1) -> EnvSpec:
    """What an agent sees of `num_envs` copies of the env, or a clear error."""
    space = env.action_space(env_params)
    if not hasattr(space, "n"):
        raise ConfigError(
            f"environment {env.name} has a continuous action space; distbench agents need a "
            "discrete one"
        )
    # Imported here: importing envs (gymnax) starts the XLA backend, which a multi-process run
    # must initialise first, and the CLI imports this module before that.
    from envs.registry import observation_dtype

    shape = tuple(env.observation_space(env_params).shape)
    time_limit = getattr(env_params, "max_steps_in_episode", None)
    return EnvSpec(
        observation_shape=shape,
        num_actions=int(space.n),
        observation_dtype=observation_dtype(env, env_params),
        num_envs=num_envs,
        time_limit=None if time_limit is None else int(time_limit),
    )


@dataclasses.dataclass(frozen=True)
class VectorEnv:
    """An env and its params, vmapped over a batch of envs that each get a key of their own."""

    env: Any
    params: Any

    def reset(self, key: jax.Array, count: int):
        """(obs, env_state) of `count` fresh episodes."""
        reset = jax.vmap(self.env.reset, in_axes=(0, None))
        return reset(jax.random.split(key, count), self.params)

    def step(self, key: jax.Array, env_state, action: jnp.ndarray):
        """Step every env (gymnax auto-resets an ended one): obs, state, reward, terminated,
        truncated, info."""
        step = jax.vmap(self.env.step, in_axes=(0, 0, 0, None))
        return step(jax.random.split(key, action.shape[0]), env_state, action, self.params)


class Trainer(NamedTuple):
    """Pure per-seed functions; `run_seeds` vmaps and jits them."""

    # init(key, hparams): hparams the agent's traced hyperparameters (`default_hparams`)
    init: Callable[[jax.Array, dict], LoopState]
    # run_segment(state, first, end): iterations first, first+1, ... below end.
    run_segment: Callable[[LoopState, jnp.ndarray, jnp.ndarray], tuple[LoopState, SegmentLog]]
    evaluate: Callable[[LoopState, jax.Array], Evaluation]
    config: TrainConfig
    default_hparams: dict  # the agent config's own traced values


def make_train(agent: Agent, env, env_params, config: TrainConfig) -> Trainer:
    """Build the loop. Nothing here knows which agent or env it runs."""
    spec = env_spec(env, env_params, config.num_envs)
    vector_env = VectorEnv(env, env_params)
    horizon = eval_horizon(env_params, config)

    def init(key: jax.Array, hparams: dict) -> LoopState:
        return init_loop(agent, spec, vector_env, config.num_envs, key, hparams)

    def run_segment(state: LoopState, first: jnp.ndarray, end: jnp.ndarray):
        return train_segment(agent, vector_env, config, state, first, end)

    def evaluate(state: LoopState, key: jax.Array) -> Evaluation:
        gamma = bind(agent.config, state.hparams).gamma  # this seed's, where gamma is swept
        return evaluate_greedy(agent, vector_env, config.eval_episodes, horizon, gamma, state, key)

    return Trainer(init, run_segment, evaluate, config, hyperparams(agent.config))


def init_loop(agent: Agent, spec: EnvSpec, vector_env: VectorEnv, num_envs: int, key, hparams):
    """A fresh agent with traced hyperparameters `hparams`, and `num_envs` fresh episodes."""
    agent_key, env_key, key = jax.random.split(key, 3)
    obs, env_state = vector_env.reset(env_key, num_envs)
    return LoopState(
        agent.init(agent_key, spec, hparams),
        env_state,
        obs,
        jnp.zeros((num_envs,), jnp.float32),
        key,
        dict(hparams),
    )


def train_segment(agent: Agent, vector_env: VectorEnv, config: TrainConfig, state, first, end):
    """A `lax.scan` over iterations first, ..., first + segment_length - 1, running those below
    `end`; returns the state after them and their summed SegmentLog."""

    def iteration(carry, index):
        step = index * config.num_envs  # global env-step count, unbatched across seeds

        def advance(carry):
            return train_iteration(agent, vector_env, *carry, step)

        # The last segment of a chunk may overrun the chunk's end (or total_steps): those
        # iterations are skipped (a real branch, since the predicate is the same for every seed).
        return jax.lax.cond(index < end, advance, lambda skipped: skipped, carry), None

    zero = jnp.zeros((), jnp.float32)
    (state, log), _ = jax.lax.scan(
        iteration,
        (state, SegmentLog(zero, zero, zero, zero)),
        first + jnp.arange(config.segment_length),
    )
    return state, log


def train_iteration(agent: Agent, vector_env: VectorEnv, state: LoopState, log, step):
    """One iteration: act in every env, step them, update the agent on the batch; returns the
    next state and `log` with this iteration added."""
    key, act_key, env_key, update_key = jax.random.split(state.key, 4)
    action = agent.act(state.agent_state, state.obs, act_key, step, True)
    next_obs, env_state, reward, terminated, truncated, info = vector_env.step(
        env_key, state.env_state, action
    )
    transition = Transition(
        obs=state.obs,
        action=action,
        reward=reward.astype(jnp.float32),
        # Only a terminal state stops bootstrapping: an episode cut by a time limit bootstraps
        # from its true last state, gymnax's final observation (not the state after the reset).
        discount=1.0 - terminated.astype(jnp.float32),
        next_obs=info["final_observation"],
    )
    agent_state, metrics = agent.update(state.agent_state, transition, update_key, step)
    done = jnp.logical_or(terminated, truncated)
    episode_return = state.episode_return + reward
    state = LoopState(
        agent_state, env_state, next_obs, jnp.where(done, 0.0, episode_return), key, state.hparams
    )
    log = SegmentLog(
        log.iterations + 1.0,
        log.episodes + jnp.sum(done),
        log.return_sum + jnp.sum(jnp.where(done, episode_return, 0.0)),
        log.loss_sum + metrics["loss"],
    )
    return state, log


def eval_horizon(env_params, config: TrainConfig) -> int:
    """Steps after which an evaluation episode is cut: the env's time limit, at most
    max_eval_steps."""
    max_steps = int(getattr(env_params, "max_steps_in_episode", config.max_eval_steps))
    return min(max_steps, config.max_eval_steps)


def evaluate_greedy(agent, vector_env, num_episodes: int, horizon: int, gamma, state, key):
    """Run `num_episodes` greedy episodes from fresh resets to their end (or `horizon`); the
    predictions at their start states for the action taken there."""
    reset_key, key = jax.random.split(key)
    obs, env_state = vector_env.reset(reset_key, num_episodes)
    agent_state = state.agent_state
    start_dist = agent.distribution(agent_state, obs)  # [E, A, n]
    first_key, key = jax.random.split(key)
    first_action = agent.act(agent_state, obs, first_key, jnp.asarray(0), False)
    start_locs = at_actions(start_dist.locs, first_action)
    start_probs = at_actions(start_dist.probs, first_action)

    def running(episodes: GreedyEpisodes):
        return jnp.logical_and(episodes.t < horizon, jnp.any(episodes.alive))

    def step(episodes: GreedyEpisodes):
        return greedy_step(agent, vector_env, agent_state, gamma, episodes)

    zeros = jnp.zeros((num_episodes,), jnp.float32)
    start = GreedyEpisodes(
        t=jnp.asarray(0),
        key=key,
        obs=obs,
        env_state=env_state,
        returns=zeros,
        discounted_returns=zeros,
        alive=jnp.ones((num_episodes,), bool),
        lengths=jnp.zeros((num_episodes,), jnp.int32),
        action=first_action,
    )
    end = jax.lax.while_loop(running, step, start)
    return Evaluation(
        end.returns,
        end.discounted_returns,
        end.lengths,
        start_locs,
        start_probs,
        first_action.astype(jnp.int32),
    )


def greedy_step(agent, vector_env, agent_state, gamma, episodes: GreedyEpisodes):
    """One greedy step of every episode; an ended one steps on but adds nothing. The first
    step takes the start-state action, the one whose return law was predicted."""
    t, alive = episodes.t, episodes.alive
    key, act_key, env_key = jax.random.split(episodes.key, 3)
    action = jnp.where(
        t == 0,
        episodes.action,
        agent.act(agent_state, episodes.obs, act_key, jnp.asarray(0), False),
    )
    obs, env_state, reward, terminated, truncated, _ = vector_env.step(
        env_key, episodes.env_state, action
    )
    returns = episodes.returns + jnp.where(alive, reward, 0.0)
    discounted_returns = episodes.discounted_returns + jnp.where(alive, reward * gamma**t, 0.0)
    lengths = episodes.lengths + alive
    alive = jnp.logical_and(alive, ~jnp.logical_or(terminated, truncated))
    return GreedyEpisodes(
        t + 1, key, obs, env_state, returns, discounted_returns, alive, lengths, action
    )
