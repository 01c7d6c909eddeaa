"""Tests for agents.population_td: what each variant's cells converge to, responses, the contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import population_td
from agents.base import ConfigError, EnvSpec, Transition, build_config
from agents.imputation import expectiles_of
from envs import mouse

# The variable-magnitude task, as the environment defines it.
MAGNITUDES = np.asarray(mouse.MAGNITUDES)
PROBS = np.asarray(mouse.MAGNITUDE_PROBS)
MEAN = float(np.sum(MAGNITUDES * PROBS))
SAMPLER = population_td.reward_sampler(MAGNITUDES, PROBS)


def _train_animals(config, num_animals, sampler=SAMPLER, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), num_animals)
    return jax.jit(jax.vmap(lambda key: population_td.train(config, key, sampler)))(keys)


def _rates_for(taus, rate):
    taus = np.asarray(taus)
    return tuple(float(a) for a in 2 * rate * taus), tuple(float(a) for a in 2 * rate * (1 - taus))


class TestConvergence:
    def test_expectile_cells_converge_to_their_expectiles(self):
        # Overall rate alpha = 0.01: a cell's value jitters with SD about sqrt(alpha / 2) * SD(R)
        # ~ 0.4 ul and decorrelates over ~1 / alpha_min trials (up to a few hundred for the most
        # asymmetric cells), so its mean over 10k trials has SD <= ~0.1 ul; 0.3 ul is 3 SD.
        config = population_td.Config(
            num_cells=20, learning_rate=0.01, num_trials=20_000, averaging_trials=10_000
        )
        states, mean_values = _train_animals(config, num_animals=3)
        taus = jax.vmap(population_td.asymmetries)(states)
        truth = expectiles_of(jnp.asarray(MAGNITUDES), jnp.asarray(PROBS), taus)
        errors = np.asarray(mean_values[:, 0, :] - truth)
        assert np.abs(errors).max() < 0.3
        assert np.sqrt(np.mean(errors**2)) < 0.1
        # Optimistic cells settle above the mean and pessimistic ones below.
        above = np.asarray(mean_values[:, 0, :] > MEAN)
        np.testing.assert_array_equal(above, np.asarray(taus > 0.5))

    def test_quantile_cells_converge_to_their_quantiles(self):
        # Levels away from the CDF's jumps (0.066, 0.157, 0.306, 0.460, 0.772, 0.923), where the
        # quantile is one magnitude; sign updates of alpha = 0.05 ul leave the value within about
        # one step of it.
        taus = np.array([0.03, 0.11, 0.23, 0.38, 0.6, 0.85, 0.97])
        alpha_plus, alpha_minus = _rates_for(taus, 0.05)
        config = population_td.Config(
            variant="quantile",
            num_cells=len(taus),
            alpha_plus=alpha_plus,
            alpha_minus=alpha_minus,
            num_trials=20_000,
            averaging_trials=5_000,
        )
        _, mean_values = _train_animals(config, num_animals=2)
        np.testing.assert_allclose(mean_values[:, 0, :], np.tile(MAGNITUDES, (2, 1)), atol=0.15)

    def test_classical_cells_all_sit_at_the_mean(self):
        config = population_td.Config(
            variant="classical", num_cells=10, learning_rate=0.01, num_trials=10_000
        )
        states, mean_values = _train_animals(config, num_animals=2)
        np.testing.assert_allclose(mean_values, MEAN, atol=0.25)
        np.testing.assert_allclose(jax.vmap(population_td.asymmetries)(states), 0.5)
        # One shared rate and one reward stream: the cells are copies of each other.
        np.testing.assert_allclose(np.ptp(states.values, axis=-1), 0.0, atol=1e-5)

    def test_vmapped_animals_differ(self):
        config = population_td.Config(num_cells=5, num_trials=100, averaging_trials=10)
        states, mean_values = _train_animals(config, num_animals=3)
        taus = np.asarray(jax.vmap(population_td.asymmetries)(states))
        assert len({tuple(np.round(t, 6)) for t in taus}) == 3
        assert not np.allclose(mean_values[0], mean_values[1])

    def test_imputed_bootstrap_is_sound_and_sampling_cells_is_biased(self):
        # Two steps: state 0 (no reward), then state 1 with the task's reward; gamma = 1/2, so
        # the cells at state 0 should learn the expectiles of R / 2.
        def chain(key):
            reward_trial = population_td.reward_sampler(MAGNITUDES, PROBS, state=1)(key)
            return population_td.Trial(
                jnp.array([0, 1]), jnp.concatenate([jnp.zeros(1), reward_trial.rewards])
            )

        errors = {}
        for bootstrap in population_td.BOOTSTRAPS:
            config = population_td.Config(
                num_cells=10,
                num_states=2,
                gamma=0.5,
                bootstrap=bootstrap,
                learning_rate=0.02,
                num_trials=6_000,
                averaging_trials=3_000,
            )
            states, mean_values = _train_animals(config, num_animals=1, sampler=chain)
            taus = population_td.asymmetries(jax.tree.map(lambda a: a[0], states))
            truth = expectiles_of(jnp.asarray(MAGNITUDES), jnp.asarray(PROBS), taus)
            errors[bootstrap] = np.abs(np.asarray(mean_values[0, 0] - 0.5 * truth))
        assert errors["impute"].max() < 0.3
        # Treating other cells' expectiles as samples shrinks the spread: extreme cells miss.
        assert errors["sample"].max() > 3 * errors["impute"].max()


class TestResponses:
    STATE = population_td.PopulationState(
        values=jnp.array([[2.0, 5.0]]),
        alpha_plus=jnp.array([0.3, 0.1]),
        alpha_minus=jnp.array([0.1, 0.2]),
    )

    def test_gain_normalised_asymmetric_errors_by_hand(self):
        config = population_td.Config(num_cells=2)
        got = population_td.responses(config, self.STATE, jnp.array([1.0, 2.0, 4.0, 6.0]))
        # Slopes alpha+- over the mean rate: 1.5 / 0.5 for cell 0, 2/3 / 4/3 for cell 1.
        expected = [[-0.5, 0.0, 3.0, 6.0], [-16 / 3, -4.0, -4 / 3, 2 / 3]]
        np.testing.assert_allclose(got, expected, atol=1e-6)

    def test_noise_has_the_configured_sd_and_needs_a_key(self):
        config = population_td.Config(num_cells=2, response_noise=0.5)
        rewards = jnp.full((20_000,), 2.0)
        noisy = population_td.responses(config, self.STATE, rewards, key=jax.random.PRNGKey(0))
        assert noisy.shape == (2, 20_000)
        np.testing.assert_allclose(np.std(noisy, axis=1), 0.5, rtol=0.03)
        with pytest.raises(ValueError, match="key"):
            population_td.responses(config, self.STATE, rewards)


class TestConfig:
    @pytest.mark.parametrize(
        "overrides, message",
        [
            ({"variant": "median"}, "variant"),
            ({"num_cells": 0}, "num_cells"),
            ({"asymmetry_low": 0.6, "asymmetry_high": 0.4}, "asymmetry"),
            ({"learning_rate": 0.6}, "rates up to"),
            ({"alpha_plus": "0.1,0.2"}, "both"),
            ({"num_cells": 3, "alpha_plus": "0.1,0.2", "alpha_minus": "0.1,0.2"}, "num_cells"),
            (
                {"variant": "classical", "num_cells": 1, "alpha_plus": 0.1, "alpha_minus": 0.1},
                "shared",
            ),
            ({"averaging_trials": 10, "num_trials": 5}, "averaging_trials"),
            ({"bootstrap": "guess"}, "bootstrap"),
        ],
    )
    def test_impossible_values_are_rejected(self, overrides, message):
        with pytest.raises(ConfigError, match=message):
            build_config(population_td.Config, overrides)

    def test_string_overrides_build_explicit_rates(self):
        config = build_config(
            population_td.Config,
            {"num_cells": "2", "alpha_plus": "0.1,0.3", "alpha_minus": "(0.3,0.1)"},
        )
        state = population_td.init(config, jax.random.PRNGKey(0))
        np.testing.assert_allclose(population_td.asymmetries(state), [0.25, 0.75])
        # Quantile steps are in reward units, so large explicit rates are allowed there.
        build_config(
            population_td.Config,
            {"variant": "quantile", "num_cells": 1, "alpha_plus": 2.0, "alpha_minus": 2.0},
        )


class TestAgentContract:
    @pytest.mark.parametrize("variant", population_td.VARIANTS)
    def test_update_and_distribution_shapes(self, variant):
        config = population_td.Config(variant=variant, num_cells=6, num_states=2)
        agent = population_td.make(config)
        state = agent.init(jax.random.PRNGKey(0), EnvSpec((), 1))
        obs = jnp.array([0, 0, 1, 1])
        transition = Transition(
            obs=obs,
            action=jnp.zeros(4, jnp.int32),
            reward=jnp.array([1.0, 2.0, 0.0, 3.0]),
            discount=jnp.array([0.0, 0.0, 1.0, 0.0]),
            next_obs=jnp.array([0, 0, 0, 1]),
        )
        update = jax.jit(agent.update)
        for step in range(3):
            state, metrics = update(state, transition, jax.random.PRNGKey(step), step)
        assert np.isfinite(float(metrics["loss"]))
        np.testing.assert_array_equal(agent.act(state, obs, None, 0, True), 0)
        atoms = agent.distribution(state, jax.nn.one_hot(obs, 2))
        assert atoms.locs.shape == atoms.probs.shape == (4, 1, 6)
        np.testing.assert_allclose(atoms.probs.sum(-1), 1.0, rtol=1e-6)
        assert agent.greedy_values(state, obs).shape == (4, 1)
        assert float(jnp.min(state.values[0])) > 0  # rewards were positive: values moved up
