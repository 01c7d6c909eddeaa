"""Calibration scores each evaluation episode against the true law of the action it took at the
start state, not the optimal action's: on TwoArmedBandit's defaults (equal means) a greedy
agent may pull either arm, and one that pulls arm b must be judged on arm b's law.
"""

import jax
import numpy as np
import pytest

import agents
import envs
from benchmarks import cell
from benchmarks.runner import run_seeds

# The reproduction (`distbench train --agent c51 --env TwoArmedBandit --seeds 8`), with
# fewer steps, one hidden layer and smaller batches so it compiles and trains quickly on a CPU.
REPRODUCTION_AGENT = {
    "learning_starts": 200,
    "epsilon_steps": 1_500,
    "v_min": -1.0,
    "v_max": 3.0,
    "gamma": 0.9,
    "target_period": 100,
    "train_every": 1,
    "batch_size": 32,
    "hidden_sizes": (32,),
}
REPRODUCTION_TRAIN = {"total_steps": 3_000, "num_evals": 1, "eval_episodes": 16}
NUM_SEEDS = 8


def test_two_armed_bandit_states_each_arms_law():
    env, params = envs.make("TwoArmedBandit")
    locs, probs = env.action_return_distributions(params, 0.9)
    # Arm a pays 1 surely, padded with a zero-probability copy; arm b pays 0 or 2.
    np.testing.assert_allclose(locs, [[1.0, 1.0], [0.0, 2.0]])
    np.testing.assert_allclose(probs, [[1.0, 0.0], [0.5, 0.5]])


def test_two_armed_bandit_pads_the_shorter_arm_to_the_longer():
    env, params = envs.make(
        "TwoArmedBandit",
        magnitudes_a=(2.0, 1.0),
        probs_a=(0.25, 0.75),
        magnitudes_b=(3.0, 0.0, 1.0),
        probs_b=(0.5, 0.2, 0.3),
    )
    locs, probs = env.action_return_distributions(params, 0.5)
    np.testing.assert_allclose(locs, [[1.0, 2.0, 2.0], [0.0, 1.0, 3.0]])
    np.testing.assert_allclose(probs, [[0.75, 0.25, 0.0], [0.2, 0.3, 0.5]])
    # Means 1.25 and 1.8: arm b is optimal, and its row is `true_return_distribution`.
    assert env.optimal_action(params) == 1
    np.testing.assert_allclose(env.true_return_distribution(params, 0.5), (locs[1], probs[1]))


def test_random_start_state_gives_the_mixture_over_start_states():
    # The cue is drawn at reset but hidden at time 0; reward 1 comes delay + 1 = 4 steps later
    # with probability (0.1 + 0.5 + 0.9) / 3 = 0.5.
    env, params = envs.make("VariableProbability-mouse")
    locs, probs = env.action_return_distributions(params, 0.9)
    np.testing.assert_allclose(locs, [[0.0, 0.9**4]])
    np.testing.assert_allclose(probs, [[0.5, 0.5]])


@pytest.mark.parametrize("name", envs.own_names())
def test_every_own_env_has_one_law_per_action_and_the_optimal_row_is_the_truth(name):
    env, params = envs.make(name)
    gamma = 0.9
    locs, probs = env.action_return_distributions(params, gamma)
    assert locs.shape == probs.shape and locs.shape[0] == env.num_actions
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    row = env.optimal_action(params)
    kept = probs[row] > 0
    true_locs, true_probs = env.true_return_distribution(params, gamma)
    np.testing.assert_allclose(locs[row][kept], true_locs)
    np.testing.assert_allclose(probs[row][kept], true_probs)


def test_seed_calibration_scores_each_episode_against_its_own_action():
    """Two episodes, each predicting exactly the law of the arm it pulled: a perfect score."""
    truth_locs = np.array([[1.0, 1.0], [0.0, 2.0]], np.float32)
    truth_probs = np.array([[1.0, 0.0], [0.5, 0.5]], np.float32)
    actions = np.array([0, 1])
    scores = jax.jit(cell._seed_calibration)(
        truth_locs[actions],
        truth_probs[actions],
        np.array([1.0, 2.0], np.float32),
        actions,
        jax.random.PRNGKey(0),
        truth_locs,
        truth_probs,
    )
    for name in ("wasserstein1", "cramer", "ks"):
        assert float(scores[name]) == pytest.approx(0.0, abs=1e-6), name


def test_bandit_reproduction_every_seed_is_calibrated_against_the_arm_it_pulled():
    spec = cell.CellSpec.build("c51", "TwoArmedBandit", REPRODUCTION_AGENT, {}, REPRODUCTION_TRAIN)
    agent = agents.module("c51").make(spec.agent_config)
    env, params = envs.make(spec.env)
    results = run_seeds(agent, env, params, spec.train_config, range(NUM_SEEDS))
    calibration = cell.calibration(spec, results)
    w1 = calibration["per_seed"]["wasserstein1"]
    # Against the optimal arm's law a seed pulling arm b scored W1 = 1, the arms' distance.
    assert np.all(w1 < 0.2), f"per-seed W1 {np.round(w1, 3).tolist()}"
    start_actions = results.final["start_actions"]
    assert start_actions.shape == (NUM_SEEDS, REPRODUCTION_TRAIN["eval_episodes"])
    assert np.any(start_actions == 1), "no seed pulled arm b, so the test checks nothing"
    truth = calibration["truth"]
    np.testing.assert_allclose(truth["action_locs"], [[1.0, 1.0], [0.0, 2.0]])
    counts = truth["start_action_counts"]
    np.testing.assert_array_equal(counts, [np.bincount(a, minlength=2) for a in start_actions])
    # The first seed's reference (what its example prediction is plotted against): the
    # mixture of arm a's {1} and arm b's {0, 2} in the proportions its episodes pulled them.
    share_a, share_b = counts[0] / counts[0].sum()
    mixture = {0.0: share_b / 2, 1.0: share_a, 2.0: share_b / 2}
    mixture = {loc: prob for loc, prob in mixture.items() if prob > 0}
    np.testing.assert_allclose(truth["locs"], list(mixture))
    np.testing.assert_allclose(truth["probs"], list(mixture.values()))
