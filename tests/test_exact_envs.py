"""Tests for envs.mouse, envs.chains and envs.bandits: Monte Carlo returns match the exact
return distributions, the gymnax contract holds under jit + vmap, and bad values are named.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, stats

import envs

# Each Monte Carlo test may fail by chance with probability at most DKW_DELTA.
DKW_DELTA = 1e-3
NUM_ROLLOUTS = 20_000

# (env, param overrides, gamma): every own env, and every discretised truth, at least once.
MONTE_CARLO_CASES = [
    ("VariableMagnitude-mouse", {}, 0.9),
    ("VariableMagnitude-mouse", {"delay": 0, "cued": False}, 1.0),
    ("VariableProbability-mouse", {}, 0.9),
    ("StochasticChain", {}, 0.9),
    ("StochasticChain", {"length": 24, "p": 0.3, "reward_size": 2.0}, 0.6),
    (
        "TerminalRewardChain",
        {"length": 5, "magnitudes": (-1.0, 0.5, 3.0), "probs": (0.2, 0.3, 0.5)},
        0.8,
    ),
    ("GeometricSurvival", {}, 0.9),
    ("GeometricSurvival", {"q": 0.25}, 1.0),
    ("TwoArmedBandit", {}, 0.9),
    ("TwoArmedBandit", {"magnitudes_b": (0.0, 3.0)}, 0.9),
    ("OneStepReward", {"magnitudes": (0.0, 1.0), "probs": (0.3, 0.7)}, 0.5),
]


def dkw_bound(n: int) -> float:
    """sup|F_n - F| <= this with probability >= 1 - DKW_DELTA (Massart's constant)."""
    return math.sqrt(math.log(2 / DKW_DELTA) / (2 * n))


def rollout_returns(env, params, gamma, num_envs, seed, action=None):
    """Discounted returns [num_envs] of each env's first episode under `action` (default
    `optimal_action`) at every step, the start states, and whether any episode was truncated
    before it terminated."""
    action = env.optimal_action(params) if action is None else action
    step = jax.vmap(env.step, in_axes=(0, 0, None, None))

    @jax.jit
    def run(key, params):
        reset_key, key = jax.random.split(key)
        _, start = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(reset_key, num_envs), params
        )

        def body(carry):
            key, state, total, discount, done, cut = carry
            key, step_key = jax.random.split(key)
            _, state, reward, terminated, truncated, _ = step(
                jax.random.split(step_key, num_envs), state, action, params
            )
            total = total + jnp.where(done, 0.0, discount * reward)
            cut = cut | (~done & truncated & ~terminated)
            done = done | terminated | truncated
            return key, state, total, discount * gamma, done, cut

        zeros = jnp.zeros(num_envs)
        falses = jnp.zeros(num_envs, bool)
        init = (key, start, zeros, jnp.ones(num_envs), falses, falses)
        _, _, total, _, _, cut = jax.lax.while_loop(lambda c: ~jnp.all(c[4]), body, init)
        return total, start, jnp.any(cut)

    total, start, cut = run(jax.random.key(seed), params)
    return np.asarray(total, np.float64), start, bool(cut)


def sup_cdf_distance(samples, locs, probs) -> float:
    """sup_x |F_n(x) - F(x)| over every jump point of both right-continuous CDFs."""
    samples = np.sort(samples)
    points = np.union1d(samples, locs)
    empirical = np.searchsorted(samples, points, side="right") / samples.size
    cdf = np.concatenate([[0.0], np.cumsum(probs)])[np.searchsorted(locs, points, side="right")]
    return float(np.max(np.abs(empirical - cdf)))


def snap_to_atoms(samples, locs):
    """Move float32 returns onto the nearest exact atom; also return the largest move."""
    right = np.clip(np.searchsorted(locs, samples), 0, locs.size - 1)
    left = np.maximum(right - 1, 0)
    nearest = np.where(np.abs(samples - locs[left]) <= np.abs(samples - locs[right]), left, right)
    return locs[nearest], float(np.max(np.abs(samples - locs[nearest])))


def check_atoms(locs, probs):
    assert locs.ndim == 1 and locs.shape == probs.shape
    assert np.all(np.diff(locs) > 0), "locs must be sorted and distinct"
    assert np.all(probs > 0)
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=0, atol=1e-12)


def expectile(locs, probs, tau):
    def imbalance(e):
        return tau * probs @ np.maximum(locs - e, 0) - (1 - tau) * probs @ np.maximum(e - locs, 0)

    return optimize.brentq(imbalance, locs[0], locs[-1], xtol=1e-12)


@pytest.mark.parametrize(("name", "overrides", "gamma"), MONTE_CARLO_CASES)
def test_monte_carlo_returns_match_true_distribution(name, overrides, gamma):
    env, params = envs.make(name, **overrides)
    locs, probs = env.true_return_distribution(params, gamma)
    check_atoms(locs, probs)
    error = env.true_return_error(params, gamma)
    returns, _, truncated = rollout_returns(env, params, gamma, NUM_ROLLOUTS, seed=0)
    assert not truncated
    # Returns are float32 sums: one a rounding error off an atom would count as the wrong
    # side of its jump. Where every return lies on an atom (always so for exact truths) they
    # are moved onto it; a discretised continuum-like truth is compared as it is.
    snapped, largest_move = snap_to_atoms(returns, locs)
    on_atoms = largest_move <= 1e-5 * max(1.0, np.max(np.abs(locs)))
    assert on_atoms or error.sup_cdf > 0
    returns = snapped if on_atoms else returns
    distance = sup_cdf_distance(returns, locs, probs)
    assert distance <= dkw_bound(NUM_ROLLOUTS) + error.sup_cdf


@pytest.mark.parametrize("action", [0, 1])
def test_monte_carlo_returns_of_each_bandit_arm_match_its_row(action):
    """Each row of `action_return_distributions` is the law of pulling that arm; arm a's row
    is padded to arm b's three atoms."""
    env, params = envs.make(
        "TwoArmedBandit", magnitudes_b=(0.0, 1.0, 3.0), probs_b=(0.5, 0.25, 0.25)
    )
    all_locs, all_probs = env.action_return_distributions(params, 0.9)
    assert all_locs.shape == all_probs.shape == (2, 3)
    kept = all_probs[action] > 0
    locs, probs = all_locs[action][kept], all_probs[action][kept]
    check_atoms(locs, probs)
    returns, _, _ = rollout_returns(env, params, 0.9, NUM_ROLLOUTS, seed=2, action=action)
    snapped, _ = snap_to_atoms(returns, locs)
    assert sup_cdf_distance(snapped, locs, probs) <= dkw_bound(NUM_ROLLOUTS)


def test_variable_probability_cue_distributions_match_rollouts():
    env, params = envs.make("VariableProbability-mouse")
    gamma = 0.9
    returns, start, _ = rollout_returns(env, params, gamma, NUM_ROLLOUTS, seed=1)
    cues = np.asarray(start.cue)
    for cue, reward_prob in enumerate(params.reward_probs):
        locs, probs = env.true_return_distribution(params, gamma, cue=cue)
        np.testing.assert_allclose(locs, [0.0, gamma**params.delay])
        np.testing.assert_allclose(probs, [1 - reward_prob, reward_prob])
        # The start state is one reward-free step before the cue state.
        from_cue, _ = snap_to_atoms(returns[cues == cue] / gamma, locs)
        assert sup_cdf_distance(from_cue, locs, probs) <= dkw_bound(from_cue.size)


@pytest.mark.parametrize("name", envs.own_names())
def test_jit_vmap_auto_reset_and_spaces(name):
    env, params = envs.make(name)
    num_envs, num_steps = 1_000, 12
    obs_space, action_space = env.observation_space(params), env.action_space(params)
    assert action_space.n == env.num_actions

    @jax.jit
    def run(key):
        reset_key, key = jax.random.split(key)
        start_obs, state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(reset_key, num_envs), params
        )

        def one_step(state, key):
            action_key, step_key = jax.random.split(key)
            actions = jax.vmap(action_space.sample)(jax.random.split(action_key, num_envs))
            obs, state, reward, terminated, truncated, info = jax.vmap(
                env.step, in_axes=(0, 0, 0, None)
            )(jax.random.split(step_key, num_envs), state, actions, params)
            in_spaces = jnp.all(jax.vmap(obs_space.contains)(obs)) & jnp.all(
                jax.vmap(action_space.contains)(actions)
            )
            done = terminated | truncated
            return state, (obs, state.time, done, info["final_observation"], reward, in_spaces)

        _, records = jax.lax.scan(one_step, state, jax.random.split(key, num_steps))
        return start_obs, records

    start_obs, records = run(jax.random.key(0))
    obs, time, done, final_obs, reward, in_spaces = map(np.asarray, records)
    assert start_obs.shape == (num_envs, *obs_space.shape) and start_obs.dtype == obs_space.dtype
    assert obs.shape == (num_steps, num_envs, *obs_space.shape) and obs.dtype == np.float32
    assert reward.dtype == np.float32
    assert np.all(in_spaces)
    assert done.any(), "no episode ended, so auto-reset went untested"
    # Auto-reset: after the last step of an episode the state is a fresh start.
    assert np.all(time[done] == 0) and np.all(time[~done] > 0)
    np.testing.assert_array_equal(obs[done], np.broadcast_to(start_obs[0], obs[done].shape))
    np.testing.assert_array_equal(final_obs[done], 0.0)


def test_variable_magnitude_defaults_match_the_paper_table():
    env, params = envs.make("VariableMagnitude-mouse")
    np.testing.assert_allclose(sum(params.probs), 1.0, atol=1e-15)
    locs, probs = env.true_return_distribution(params, 1.0)
    np.testing.assert_allclose(locs, [0.1, 0.3, 1.2, 2.5, 5.0, 10.0, 20.0])
    mean = probs @ locs
    sd = math.sqrt(probs @ (locs - mean) ** 2)
    taus = (0.05, 0.25, 0.5, 0.75, 0.95)
    expectiles = [expectile(locs, probs, tau) for tau in taus]
    # Hand-computed from the normalised table (raw frequencies sum to 1.0001).
    np.testing.assert_allclose([mean, sd], [5.20881, 5.27102], atol=5e-6)
    np.testing.assert_allclose(
        expectiles, [1.38893, 3.33593, 5.20881, 7.76854, 13.80516], atol=5e-6
    )
    # docs/science.md quotes the paper's rounded figures, which differ by up to 0.0022.
    paper = [5.208, 5.270, 1.389, 3.335, 5.208, 7.767, 13.803]
    np.testing.assert_allclose([mean, sd, *expectiles], paper, atol=2.5e-3)
    np.testing.assert_allclose(expectiles[2], mean, rtol=1e-9)


def test_variable_magnitude_return_is_discounted_by_the_delay():
    env, params = envs.make("VariableMagnitude-mouse", delay=4)
    locs, _ = env.true_return_distribution(params, 0.5)
    np.testing.assert_allclose(locs, np.asarray(params.magnitudes) / 16)


def test_stochastic_chain_tends_to_uniform_with_gamma_half():
    env, params = envs.make("StochasticChain", length=16, p=0.5, reward_size=1.0)
    locs, probs = env.true_return_distribution(params, 0.5)
    assert env.true_return_error(params, 0.5) == (0.0, 0.0)
    assert locs.size == 2**16
    # Uniform[0, 2] by the midpoints of 2^20 cells, itself within 2^-22 of it in W1.
    grid = (np.arange(2**20) + 0.5) * 2.0 / 2**20
    w1 = stats.wasserstein_distance(locs, grid, u_weights=probs)
    assert w1 < 2.0**-15
    np.testing.assert_allclose(w1, 2.0**-16, rtol=1e-3)


def test_stochastic_chain_tends_to_cantor_with_gamma_third():
    env, params = envs.make("StochasticChain", length=16, p=0.5, reward_size=2.0)
    locs, probs = env.true_return_distribution(params, 1 / 3)
    cdf = np.cumsum(probs)

    def cantor(x, digits=40):
        """The Cantor function on [0, 1], from x's ternary digits."""
        value, weight = 0.0, 0.5
        for _ in range(digits):
            x *= 3
            digit = int(x)
            x -= digit
            if digit == 1:
                return value + weight
            value += weight * digit / 2
            weight /= 2
        return value

    # Z = 3 X with X Cantor-distributed; 16 steps leave each atom 2^-16 of mass.
    for x in (0.05, 0.1, 0.2, 0.25, 0.5, 0.7, 0.75, 0.9, 0.95):
        chain_cdf = cdf[np.searchsorted(locs, 3 * x, side="right") - 1]
        assert abs(chain_cdf - cantor(x)) <= 2.0**-16 + 1e-12


def test_stochastic_chain_discretised_beyond_exact_limit_states_its_error():
    env, params = envs.make("StochasticChain", length=40, p=0.5, reward_size=1.0)
    locs, probs = env.true_return_distribution(params, 0.5)
    error = env.true_return_error(params, 0.5)
    assert locs.size <= 2**16
    # 24 steps go to the tail: range 2^-15 (1 - 2^-24), sd 2^-16 (1 - 4^-24)^(1/2) / sqrt(3).
    assert 0 < error.wasserstein1 <= 2.0**-15
    assert 0 < error.sup_cdf <= 2 * 2.0**-16
    np.testing.assert_allclose(probs @ locs, 0.5 * (2 - 2.0**-39), rtol=1e-12)


def test_stochastic_chain_with_gamma_one_is_binomial_at_any_length():
    env, params = envs.make("StochasticChain", length=100, p=0.3)
    locs, probs = env.true_return_distribution(params, 1.0)
    assert env.true_return_error(params, 1.0) == (0.0, 0.0)
    np.testing.assert_allclose(locs, np.arange(101))
    np.testing.assert_allclose(probs, stats.binom.pmf(np.arange(101), 100, 0.3), atol=1e-12)


def test_terminal_reward_chain_discounts_by_length_minus_one():
    env, params = envs.make(
        "TerminalRewardChain", length=3, magnitudes=(2.0, 4.0), probs=(0.25, 0.75)
    )
    locs, probs = env.true_return_distribution(params, 0.5)
    np.testing.assert_allclose(locs, [0.5, 1.0])
    np.testing.assert_allclose(probs, [0.25, 0.75])


@pytest.mark.parametrize(("q", "gamma"), [(0.1, 0.9), (0.25, 1.0), (0.01, 0.99), (1.0, 0.5)])
def test_geometric_survival_mean_and_error_bounds(q, gamma):
    env, params = envs.make("GeometricSurvival", q=q, max_steps_in_episode=100_000)
    locs, probs = env.true_return_distribution(params, gamma)
    check_atoms(locs, probs)
    error = env.true_return_error(params, gamma)
    assert error.sup_cdf <= 1e-9 and error.wasserstein1 <= 1e-6
    # Means differ by at most W1.
    assert abs(probs @ locs - 1 / (1 - gamma * (1 - q))) <= error.wasserstein1 + 1e-9


def test_two_armed_bandit_arms_and_tie_break():
    env, params = envs.make("TwoArmedBandit")
    np.testing.assert_allclose(env.arm_return_distribution(params, 0.9, 0), ([1.0], [1.0]))
    np.testing.assert_allclose(env.arm_return_distribution(params, 0.9, 1), ([0, 2], [0.5, 0.5]))
    assert env.optimal_action(params) == 0
    np.testing.assert_allclose(env.true_return_distribution(params, 0.9), ([1.0], [1.0]))
    riskier, riskier_params = envs.make("TwoArmedBandit", magnitudes_b=(0.0, 2.5))
    assert riskier.optimal_action(riskier_params) == 1


@pytest.mark.parametrize(
    ("name", "overrides", "bad_value"),
    [
        ("VariableMagnitude-mouse", {"probs": (0.1, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1)}, "0.8"),
        ("VariableMagnitude-mouse", {"probs": (0.5, 0.5)}, "(0.5, 0.5)"),
        ("VariableMagnitude-mouse", {"delay": -1}, "delay=-1"),
        ("VariableMagnitude-mouse", {"cued": "yes"}, "'yes'"),
        ("VariableMagnitude-mouse", {"colour": 1}, "colour"),
        ("VariableProbability-mouse", {"reward_probs": (0.1, 1.5, 0.9)}, "1.5"),
        ("VariableProbability-mouse", {"cue_probs": (0.5, 0.5)}, "(0.5, 0.5)"),
        ("StochasticChain", {"length": -3}, "length=-3"),
        ("StochasticChain", {"length": 0}, "length=0"),
        ("StochasticChain", {"p": 1.2}, "p=1.2"),
        ("StochasticChain", {"length": 20, "max_steps_in_episode": 10}, "max_steps_in_episode=10"),
        ("TerminalRewardChain", {"probs": (-0.5, 1.5)}, "-0.5"),
        ("TerminalRewardChain", {"length": "-2"}, "length=-2"),
        ("GeometricSurvival", {"q": 0.0}, "q=0.0"),
        ("GeometricSurvival", {"q": 1.5}, "q=1.5"),
        ("GeometricSurvival", {"q": 0.001}, "max_steps_in_episode=10000"),
        ("TwoArmedBandit", {"probs_b": (0.5, 0.6)}, "1.1"),
        ("OneStepReward", {"magnitudes": (0.0, float("nan"))}, "nan"),
    ],
)
def test_invalid_params_raise_env_error_naming_the_value(name, overrides, bad_value):
    with pytest.raises(envs.EnvError) as raised:
        envs.make(name, **overrides)
    message = str(raised.value)
    assert bad_value in message and "\n" not in message


@pytest.mark.parametrize("name", envs.own_names())
@pytest.mark.parametrize("gamma", [-0.1, 1.5, float("nan"), "0.9"])
def test_gamma_outside_unit_interval_raises(name, gamma):
    env, params = envs.make(name)
    with pytest.raises(envs.EnvError, match="gamma="):
        env.true_return_distribution(params, gamma)


def test_variable_probability_rejects_unknown_cue():
    env, params = envs.make("VariableProbability-mouse")
    with pytest.raises(envs.EnvError, match="cue=3"):
        env.true_return_distribution(params, 0.9, cue=3)


def test_own_envs_are_registered_beside_gymnax():
    own = set(envs.own_names())
    assert own == {
        "VariableMagnitude-mouse",
        "VariableProbability-mouse",
        "StochasticChain",
        "TerminalRewardChain",
        "GeometricSurvival",
        "TwoArmedBandit",
        "OneStepReward",
    }
    assert own < set(envs.names()) and "CartPole-v1" in envs.names()
    for name in own:
        env, _ = envs.make(name)
        assert env.name == name


def test_text_overrides_read_as_the_declared_types():
    _, params = envs.make(
        "VariableMagnitude-mouse", cued="FALSE", delay="2", magnitudes="1, 2", probs="(0.25,0.75)"
    )
    assert params.cued is False and params.delay == 2
    assert params.magnitudes == (1.0, 2.0) and params.probs == (0.25, 0.75)
    _, params = envs.make("OneStepReward", magnitudes=[0, 3], probs=[0.5, 0.5])  # suite lists
    assert params.magnitudes == (0.0, 3.0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cued": "no"}, "cued='no' is not a boolean; valid: true, false, 1 or 0 (any case)"),
        ({"cued": 2}, "cued=2 is not a boolean"),
        ({"delay": "2.5"}, "delay='2.5' is not an integer; valid: a whole number such as 3"),
        ({"magnitudes": "1,inf"}, "magnitudes[1]='inf' is not a finite number"),
    ],
)
def test_bad_text_overrides_name_the_env_key_value_and_valid(overrides, message):
    with pytest.raises(envs.EnvError) as raised:
        envs.make("VariableMagnitude-mouse", **overrides)
    assert str(raised.value).startswith(f"VariableMagnitude-mouse: {message}"), str(raised.value)
