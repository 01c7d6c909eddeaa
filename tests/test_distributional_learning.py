"""Each distributional agent learns the exact return distribution of small probes; DQN's point
mass cannot.

Score: W1(predicted start-state distribution, truth) / SD(truth), median over 4 seeds. A point
mass at the mean scores MAD/SD: 0.69 on the one-step probe and 0.80 on the chain, so the bar of
0.3 separates "learned the shape" from "learned the mean" with a wide margin, while leaving room
for a finite support (C51), K quantiles (QR-DQN, IQN) and optimisation noise.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import agents
import envs
from benchmarks import metrics
from benchmarks.runner import run_seeds
from benchmarks.train import TrainConfig

THRESHOLD = 0.3

PROBES = {
    # One step, three outcomes: mean 2, SD sqrt(3).
    "one_step": (
        "OneStepReward",
        {"magnitudes": (0.0, 2.0, 5.0), "probs": (0.3, 0.5, 0.2)},
        0.9,
        12_000,
    ),
    # Four steps of Bernoulli(1/2) rewards, discounted: 16 atoms, needs bootstrapping.
    "chain": ("StochasticChain", {"length": 4, "p": 0.5, "reward_size": 1.0}, 0.9, 30_000),
}

AGENT_SETTINGS = {
    "learning_rate": 1e-3,
    "learning_starts": 500,
    "train_every": 10,
    "batch_size": 64,
    "buffer_size": 5_000,
    "target_period": 200,
    "epsilon_steps": 1_000,
    "hidden_sizes": (64, 64),
}
# The quantile Huber loss with kappa > 0 is minimised by a blend of quantile and expectile
# (errors below kappa are squared), so the probes score the exact quantile loss, kappa = 0: with
# the default kappa = 1, QR-DQN scores 0.41 on the chain, whose return spread is about 1.
PER_AGENT = {
    "c51": {"v_min": -1.0, "v_max": 6.0},
    "qrdqn": {"num_quantiles": 32, "huber_kappa": 0.0},
    "iqn": {"num_distribution_quantiles": 32, "huber_kappa": 0.0},
}


def _score(name: str, probe: str) -> float:
    env_name, env_params, gamma, steps = PROBES[probe]
    env, params = envs.make(env_name, **env_params)
    truth_locs, truth_probs = env.true_return_distribution(params, gamma)
    agent = agents.make(name, gamma=gamma, **AGENT_SETTINGS, **PER_AGENT.get(name, {}))
    config = TrainConfig(total_steps=steps, num_envs=10, num_evals=1, eval_episodes=1)
    results = run_seeds(agent, env, params, config, range(4))
    mean = np.sum(truth_locs * truth_probs)
    sd = np.sqrt(np.sum(truth_probs * (truth_locs - mean) ** 2))
    scores = [
        float(
            metrics.wasserstein1(
                jnp.asarray(results.final["start_locs"][s, 0]),
                jnp.asarray(results.final["start_probs"][s, 0]),
                jnp.asarray(truth_locs, jnp.float32),
                jnp.asarray(truth_probs, jnp.float32),
            )
        )
        / sd
        for s in range(4)
    ]
    return float(np.median(scores))


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("name", ["c51", "qrdqn", "iqn", "edrl"])
def test_distributional_agent_learns_exact_return_distribution(name, probe):
    score = _score(name, probe)
    assert score < THRESHOLD, f"{name} on {probe}: W1/SD = {score:.3f}"


@pytest.mark.parametrize("probe", PROBES)
def test_point_mass_prediction_fails_the_bar(probe):
    score = _score("dqn", probe)
    assert score > THRESHOLD + 0.2, f"dqn on {probe}: W1/SD = {score:.3f}"
