"""Run one agent on one env for many seeds: jit(vmap(...)) over the seed axis, sharded over
every device, in chunks so progress and greedy evaluation happen between compiled calls.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from agents.base import Agent
from benchmarks.train import Evaluation, TrainConfig, make_train


def seed_keys(base_seed: int, seed_ids) -> jax.Array:
    """Seed id k always gets fold_in(PRNGKey(base_seed), k), whatever runs beside it."""
    base = jax.random.PRNGKey(base_seed)
    return jax.vmap(lambda k: jax.random.fold_in(base, k))(jnp.asarray(seed_ids, jnp.uint32))


@dataclasses.dataclass
class SeedResults:
    """Per-seed outcomes of a run (numpy arrays with a leading seed axis)."""

    seed_ids: np.ndarray  # [S]
    eval_steps: np.ndarray  # [num_evals] env steps per seed at each evaluation
    eval_returns: np.ndarray  # [S, num_evals, E] greedy undiscounted returns
    eval_discounted: np.ndarray  # [S, num_evals, E]
    final: dict[str, np.ndarray]  # last evaluation: returns, discounted_returns, start_locs, ...
    train_returns: np.ndarray  # [S, num_evals] mean return of exploring episodes per chunk
    train_loss: np.ndarray  # [S, num_evals]
    compile_seconds: float
    train_seconds: float  # compiled chunks only, excluding compile and evaluation
    chunk_seconds: np.ndarray  # [num_evals] wall time of each compiled chunk
    eval_seconds: float
    env_steps: int  # per seed
    num_devices: int
    final_state: Any = None
    # Compile time of each program (init, run_chunk, evaluate); compile_seconds is their sum
    # plus running init once.
    program_compile_seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def steps_per_second(self) -> float:
        return len(self.seed_ids) * self.env_steps / max(self.train_seconds, 1e-9)


def _mesh_sharding() -> NamedSharding:
    # Local devices: in a multi-process run each process trains its own share of the seeds.
    return NamedSharding(Mesh(np.array(jax.local_devices()), ("seeds",)), PartitionSpec("seeds"))


def sharded_seed_keys(base_seed: int, seed_ids) -> tuple[jax.Array, NamedSharding]:
    """The seeds' keys, padded to a multiple of the local device count by repeating the last
    seed (callers drop the padded rows) and sharded over those devices; and that sharding."""
    seed_ids = np.asarray(list(seed_ids), dtype=np.int64)
    num_devices = jax.local_device_count()
    padded = -(-len(seed_ids) // num_devices) * num_devices
    padded_ids = np.concatenate([seed_ids, np.repeat(seed_ids[-1:], padded - len(seed_ids))])
    sharding = _mesh_sharding()
    return jax.device_put(seed_keys(base_seed, padded_ids), sharding), sharding


def run_seeds(
    agent: Agent,
    env,
    env_params,
    config: TrainConfig,
    seed_ids,
    *,
    base_seed: int = 0,
    progress: Callable[[int, int, dict], None] | None = None,
    keep_state: bool = False,
) -> SeedResults:
    """Train seeds `seed_ids` in one compiled program; evaluate greedily after every chunk.

    The seed axis is padded to a multiple of the device count (padded seeds are dropped) and
    sharded over all devices. `progress(chunk_done, num_chunks, info)` is called between chunks.
    """
    seed_ids = np.asarray(list(seed_ids), dtype=np.int64)
    num_seeds = len(seed_ids)
    trainer = make_train(agent, env, env_params, config)
    keys, sharding = sharded_seed_keys(base_seed, seed_ids)
    num_devices = sharding.mesh.size
    fold_in = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)), out_shardings=sharding)
    train_keys = fold_in(keys, jnp.asarray(0, jnp.uint32))
    eval_keys = fold_in(keys, jnp.asarray(1, jnp.uint32))

    # Every leaf of every input and output has the seed axis first: pin them all to the mesh,
    # else XLA may replicate leaves that do not depend on the key (zero biases) and the next
    # call would see other shardings than it was compiled for.
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    compile_start = time.perf_counter()
    program_compile_seconds = {}

    def compile_timed(name, jitted, *args):
        start = time.perf_counter()
        compiled = jitted.lower(*args).compile()
        program_compile_seconds[name] = time.perf_counter() - start
        return compiled

    init = jax.jit(jax.vmap(trainer.init), in_shardings=sharding, out_shardings=sharding)
    init = compile_timed("init", init, train_keys)
    runner = init(train_keys)
    chunk_index = jnp.asarray(0, jnp.int32)
    run_chunk = jax.jit(
        jax.vmap(trainer.run_chunk, in_axes=(0, None)),
        in_shardings=(sharding, replicated),
        out_shardings=sharding,
        donate_argnums=0,
    )
    run_chunk = compile_timed("run_chunk", run_chunk, runner, chunk_index)
    evaluate = jax.jit(jax.vmap(trainer.evaluate), in_shardings=sharding, out_shardings=sharding)
    evaluate = compile_timed("evaluate", evaluate, runner, eval_keys)
    jax.block_until_ready(runner)
    compile_seconds = time.perf_counter() - compile_start

    chunk_seconds = []
    eval_seconds = 0.0
    evaluations: list[Evaluation] = []
    logs = []
    for chunk in range(config.num_evals):
        start = time.perf_counter()
        runner, log = run_chunk(runner, jnp.asarray(chunk, jnp.int32))
        jax.block_until_ready(runner)
        chunk_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        evaluation = jax.device_get(
            evaluate(runner, fold_in(eval_keys, jnp.asarray(chunk, jnp.uint32)))
        )
        eval_seconds += time.perf_counter() - start
        evaluations.append(evaluation)
        logs.append(jax.device_get(log))
        if progress is not None:
            progress(
                chunk + 1,
                config.num_evals,
                {"eval_return": float(np.mean(evaluation.returns[:num_seeds]))},
            )

    def stack(values, axis=1):
        return np.stack([np.asarray(v)[:num_seeds] for v in values], axis=axis)

    final = evaluations[-1]
    eval_steps = np.minimum(
        (np.arange(1, config.num_evals + 1) * config.chunk_length) * config.num_envs,
        config.num_iterations * config.num_envs,
    )
    return SeedResults(
        seed_ids=seed_ids,
        eval_steps=eval_steps,
        eval_returns=stack([e.returns for e in evaluations]),
        eval_discounted=stack([e.discounted_returns for e in evaluations]),
        final={k: np.asarray(v)[:num_seeds] for k, v in final._asdict().items()},
        train_returns=stack([log.mean_episode_return for log in logs]),
        train_loss=stack([log.mean_loss for log in logs]),
        compile_seconds=compile_seconds,
        train_seconds=float(np.sum(chunk_seconds)),
        chunk_seconds=np.asarray(chunk_seconds),
        eval_seconds=eval_seconds,
        env_steps=config.num_iterations * config.num_envs,
        num_devices=num_devices,
        program_compile_seconds=program_compile_seconds,
        final_state=(
            jax.tree.map(lambda x: np.asarray(x)[:num_seeds], jax.device_get(runner.agent_state))
            if keep_state
            else None
        ),
    )
