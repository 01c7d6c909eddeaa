"""The one training loop: seeds are independent and reproducible, chunks compile once, and
DQN and C51 learn CartPole on a CI-sized budget.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
import envs
from benchmarks.runner import run_seeds, seed_keys
from benchmarks.stats import iqm
from benchmarks.train import TrainConfig, make_train

SMALL = {
    "learning_starts": 200,
    "batch_size": 32,
    "buffer_size": 2_000,
    "target_period": 200,
    "epsilon_steps": 2_000,
    "train_every": 4,
}


def _cartpole():
    return envs.make("CartPole-v1")


def test_vmapped_seed_equals_the_same_seed_run_alone():
    agent = agents.make("dqn", **SMALL)
    env, params = _cartpole()
    config = TrainConfig(total_steps=1_500, num_envs=4, num_evals=2, eval_episodes=4)
    together = run_seeds(agent, env, params, config, [0, 1, 2, 3], keep_state=True)
    alone = run_seeds(agent, env, params, config, [2], keep_state=True)
    np.testing.assert_allclose(together.eval_returns[2], alone.eval_returns[0])
    np.testing.assert_allclose(together.train_returns[2], alone.train_returns[0], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a[2], b[0], rtol=1e-4, atol=1e-6),
        together.final_state.params,
        alone.final_state.params,
    )


def test_seed_ids_map_to_the_same_key_whatever_runs_beside_them():
    np.testing.assert_array_equal(seed_keys(0, [5, 6, 7])[1], seed_keys(0, [6])[0])
    assert not np.array_equal(seed_keys(0, [5])[0], seed_keys(1, [5])[0])


def test_different_seeds_really_differ():
    agent = agents.make("c51", **SMALL)
    env, params = _cartpole()
    trainer = make_train(agent, env, params, TrainConfig(total_steps=800, num_envs=4))
    runners = jax.jit(jax.vmap(trainer.init, in_axes=(0, None)))(
        seed_keys(0, [0, 1, 2]), trainer.default_hparams
    )
    kernel = runners.agent_state.params["params"]["MLP_0"]["Dense_0"]["kernel"]
    assert not np.allclose(kernel[0], kernel[1]) and not np.allclose(kernel[1], kernel[2])
    results = run_seeds(
        agent,
        env,
        params,
        TrainConfig(total_steps=2_000, num_envs=4, num_evals=1, eval_episodes=8),
        [0, 1, 2],
    )
    losses = results.train_loss[:, -1]
    assert len(set(np.round(losses, 6).tolist())) == 3


def test_training_segment_is_traced_once():
    agent = agents.make("dqn", **SMALL)
    env, params = _cartpole()
    config = TrainConfig(total_steps=1_000, num_envs=4, num_evals=4)
    trainer = make_train(agent, env, params, config)
    traces = []

    def counted(runner, first, end):
        traces.append(first)
        return trainer.run_segment(runner, first, end)

    run_segment = jax.jit(jax.vmap(counted, in_axes=(0, None, None)))
    runner = jax.jit(jax.vmap(trainer.init, in_axes=(0, None)))(
        seed_keys(0, [0, 1]), trainer.default_hparams
    )
    for chunk in range(config.num_evals):
        end = jnp.asarray(min((chunk + 1) * config.chunk_length, config.num_iterations))
        for first in range(chunk * config.chunk_length, int(end), config.segment_length):
            runner, _ = run_segment(runner, jnp.asarray(first, jnp.int32), end)
    jax.block_until_ready(runner)
    assert len(traces) == 1


def test_last_chunk_stops_at_total_steps():
    agent = agents.make("dqn", **SMALL)
    env, params = _cartpole()
    # 1,000 steps / 4 envs = 250 iterations in 3 chunks of 84: the last 2 are skipped.
    config = TrainConfig(total_steps=1_000, num_envs=4, num_evals=3, eval_episodes=2)
    results = run_seeds(agent, env, params, config, [0], keep_state=True)
    assert results.env_steps == 1_000
    assert int(results.final_state.replay.size[0]) == 1_000  # the buffer holds 2,000
    assert results.eval_steps[-1] == 1_000


# A CI-sized budget: 8 seeds x 40k env steps. Random play scores about 22. The quantile agents
# need a larger step size to learn on this budget (IQN at 2.5e-4 is still at random play).
LEARN = {"learning_starts": 1_000, "epsilon_steps": 10_000, "target_period": 500}
LEARNING_RATE = {"qrdqn": 1e-3, "iqn": 1e-3}


@pytest.mark.parametrize("name", ["dqn", "c51", "qrdqn", "iqn", "edrl"])
def test_agent_learns_cartpole(name):
    agent = agents.make(name, **LEARN, learning_rate=LEARNING_RATE.get(name, 2.5e-4))
    env, params = _cartpole()
    config = TrainConfig(total_steps=40_000, num_envs=10, num_evals=2, eval_episodes=8)
    results = run_seeds(agent, env, params, config, range(8))
    final = results.final["returns"].mean(axis=-1)
    assert np.all(np.isfinite(results.train_loss))
    assert iqm(final) > 120, final
