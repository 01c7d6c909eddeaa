"""Plots of a results payload: every plot draws from a small synthetic payload, as PNG bytes,
the same bytes each time; and the numbers drawn are the ones the plots say they are."""

import numpy as np
import pytest

from benchmarks import plots, stats

PNG = b"\x89PNG\r\n\x1a\n"
TRUE_ATOMS = [0.0, 1.0, 3.0]
TRUE_PROBS = [0.25, 0.5, 0.25]


def _cell(agent, env, returns, *, exact=False, episodes=4, seed=0):
    """A cell record as cell.cell_record writes it, with `returns` per seed (None: diverged)."""
    rng = np.random.default_rng(seed)
    finite = [r for r in returns if r is not None]
    pit = rng.uniform(size=len(finite) * episodes).tolist()
    prediction = {"locs": [0.5, 1.0, 2.5], "probs": [0.3, 0.4, 0.3]} if finite else None
    truth = {"locs": TRUE_ATOMS, "probs": TRUE_PROBS} if exact and finite else None
    return {
        "spec": {"agent": agent, "env": env},
        "seed_ids": list(range(len(returns))),
        "per_seed": {
            "return": list(returns),
            "wasserstein1": [None if r is None else 0.1 for r in returns],
        },
        "curve": {
            "env_steps": [10, 20],
            "eval_return": [[None, None] if r is None else [r / 2, r] for r in returns],
        },
        "aggregates": {
            "return": {**stats.aggregate(finite, num_resamples=100), "diverged": 0}
            if finite
            else None
        },
        "calibration": {
            "reference": ("exact" if exact else "monte_carlo") if finite else None,
            "pit_ks_pooled": 0.1 if finite else None,
            "pit_values": pit,
            "pit_histogram": np.histogram(pit, bins=10, range=(0, 1))[0].tolist() if pit else None,
            "truth": truth,
            "example_prediction": prediction or {"locs": [], "probs": []},
            "example_returns": [1.0] * episodes if finite else [],
        },
    }


@pytest.fixture(scope="module")
def suite_cells():
    return [
        _cell("dqn", "CartPole-v1", [100.0, 200.0, None, 400.0], seed=1),
        _cell("qrdqn", "CartPole-v1", [300.0, 350.0, 500.0, 450.0], seed=2),
        _cell("dqn", "Chain", [1.0, 2.0, 2.0, 1.5], exact=True, seed=3),
        _cell("qrdqn", "Chain", [1.0, 2.0, 2.0, 1.5], exact=True, seed=4),
    ]


@pytest.fixture(scope="module")
def drawn(suite_cells):
    return plots.draw_all(suite_cells)


def test_a_suite_gets_every_plot(drawn):
    assert set(drawn) == {
        "curves_CartPole-v1.png",
        "curves_Chain.png",
        "calibration_dqn_CartPole-v1.png",
        "calibration_qrdqn_CartPole-v1.png",
        "calibration_dqn_Chain.png",
        "calibration_qrdqn_Chain.png",
        "aggregate_iqm.png",
        "performance_profiles.png",
        "probability_of_improvement.png",
        "reliability_CartPole-v1.png",
        "reliability_Chain.png",
        "pit_CartPole-v1.png",
        "pit_Chain.png",
        "distribution_Chain.png",  # only the exact env has a true distribution
    }
    assert all(data.startswith(PNG) for data in drawn.values())


def test_plots_are_the_same_bytes_each_time_and_name_no_software(suite_cells, drawn):
    assert plots.draw_all(suite_cells) == drawn
    assert not any(b"matplotlib" in data for data in drawn.values())


@pytest.mark.parametrize(
    "draw",
    [
        plots.plot_aggregate_iqm,
        plots.plot_performance_profiles,
        plots.plot_probability_of_improvement,
    ],
)
def test_each_suite_plot_draws_alone(suite_cells, draw):
    first, second = draw(suite_cells), draw(suite_cells)
    assert first.startswith(PNG) and first == second


@pytest.mark.parametrize(
    "draw", [plots.plot_reliability, plots.plot_pit_histograms, plots.plot_exact_distributions]
)
def test_each_env_plot_draws_alone(suite_cells, draw):
    chain = [cell for cell in suite_cells if cell["spec"]["env"] == "Chain"]
    first, second = draw(chain), draw(chain)
    assert first.startswith(PNG) and first == second


def test_a_train_run_and_a_diverged_one_are_drawn_without_pairs():
    for returns in ([1.0, 2.0, 3.0], [None, None, None]):
        drawn = plots.draw_all([_cell("c51", "Chain", returns, exact=True)])
        assert "probability_of_improvement.png" not in drawn
        assert "reliability_Chain.png" in drawn and "aggregate_iqm.png" in drawn
        assert all(data.startswith(PNG) for data in drawn.values())


def test_normalised_scores_use_every_agents_range_and_seeds_finite_everywhere(suite_cells):
    dqn = plots.normalised_scores(suite_cells, "dqn")
    # Seed 2 diverged on CartPole, so it is left out on both envs; CartPole spans 100..500
    # over both agents, Chain 1..2.
    np.testing.assert_allclose(dqn, [[0.0, 0.0], [0.25, 1.0], [0.75, 0.5]])
    assert plots.normalised_scores(suite_cells, "iqn") is None


def test_a_constant_env_normalises_to_one():
    np.testing.assert_array_equal(plots.normalise([3.0, 3.0], 3.0, 3.0), [1.0, 1.0])


def test_pit_values_split_into_the_seeds_that_did_not_diverge(suite_cells):
    assert plots.seed_pit_values(suite_cells[0]).shape == (3, 4)
    assert plots.seed_pit_values(_cell("dqn", "Chain", [None, None])) is None


def test_reliability_is_the_fraction_of_pit_values_at_or_below_each_level():
    pit = np.tile(np.linspace(0.0, 1.0, 101), (3, 1))
    curve = plots.reliability(pit, levels=[0.1, 0.5])
    np.testing.assert_allclose(curve["value"], [11 / 101, 51 / 101])
    too_high = plots.reliability(np.zeros((3, 5)), levels=[0.1, 0.9])
    np.testing.assert_array_equal(too_high["value"], [1.0, 1.0])


def test_performance_profile_counts_the_runs_above_each_threshold():
    profile = plots.performance_profile(np.array([0.0, 0.5, 1.0]), np.array([-1, 0.25, 0.75, 1]))
    np.testing.assert_allclose(profile["value"], [1.0, 2 / 3, 1 / 3, 0.0])
    assert np.all(profile["ci_low"] <= profile["value"])
    assert np.all(profile["value"] <= profile["ci_high"])


def test_stratified_mean_interval_is_stats_aggregate_mean_per_column():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(40, 3, 2))
    interval = plots.stratified_mean_interval(values)
    for column in range(2):
        expected = stats.aggregate(values[:, :, column])["mean"]
        assert interval["value"][column] == pytest.approx(expected["value"])
        # Different draws of the same bootstrap: the intervals agree to within their noise.
        for end in ("ci_low", "ci_high"):
            assert interval[end][column] == pytest.approx(expected[end], abs=0.03)


class _NoResampling:
    """An rng whose every resample is the data itself."""

    def multinomial(self, n, probs, size):
        return np.ones((size, len(probs)), dtype=int)


def test_improvement_replicates_are_the_mann_whitney_probability():
    x, y = np.array([1.0, 2.0, 2.0, 5.0]), np.array([2.0, 3.0, 0.0])
    replicates = plots.improvement_replicates(x, y, _NoResampling(), num_resamples=3)
    np.testing.assert_allclose(replicates, stats.probability_of_improvement(x, y))


def test_improvement_interval_averages_envs_and_covers_its_point():
    x = [np.array([1.0, 2.0, 3.0, 4.0]), np.array([5.0, 5.0, 5.0])]
    y = [np.array([0.0, 1.0, 2.0]), np.array([5.0, 5.0, 5.0, 5.0])]
    interval = plots.improvement_interval(x, y)
    expected = (stats.probability_of_improvement(x[0], y[0]) + 0.5) / 2
    assert interval["value"] == pytest.approx(expected)
    assert interval["ci_low"] <= interval["value"] <= interval["ci_high"]


def test_mass_near_atoms_gives_each_atom_the_mass_closest_to_it():
    mass = plots.mass_near_atoms([0.0, 1.0, 3.0], [-5.0, 0.4, 0.6, 2.1, 9.0], [0.1] * 4 + [0.6])
    np.testing.assert_allclose(mass, [0.2, 0.1, 0.7])


def test_titles_say_where_every_agent_has_the_same_returns(suite_cells):
    chain = [cell for cell in suite_cells if cell["spec"]["env"] == "Chain"]
    cartpole = [cell for cell in suite_cells if cell["spec"]["env"] == "CartPole-v1"]
    assert "every agent's returns are the same" in plots._env_title("Chain", chain)
    assert plots._env_title("CartPole-v1", cartpole) == "CartPole-v1"
