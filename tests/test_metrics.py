"""Tests for benchmarks.metrics: scipy references, brute-force integrals, jit/vmap, calibration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from benchmarks import metrics

# float32 cumulative sums of a few hundred probabilities are good to about 1e-6.
RTOL, ATOL = 1e-4, 1e-5

SAMPLE_METRICS = {
    "wasserstein1": metrics.wasserstein1,
    "cramer": metrics.cramer,
    "ks": metrics.ks,
    "crps": metrics.crps,
    "quantile_coverage_error": metrics.quantile_coverage_error,
}


# One compiled program for all metrics and each input shape: on a CPU, compiling (about 0.4 s
# a program) is most of this file's run time.
@jax.jit
def sample_metrics(locs, probs, samples, sample_weights=None):
    return {
        name: metric(locs, probs, samples, sample_weights)
        for name, metric in SAMPLE_METRICS.items()
    }


crps_quantiles = jax.jit(metrics.crps_quantiles)
pit = jax.jit(metrics.pit)
pit_ks_uniform = jax.jit(metrics.pit_ks_uniform)
quantile_coverage_error = jax.jit(metrics.quantile_coverage_error)
NUM_ATOMS, NUM_SAMPLES = 24, 40


def random_case(seed, on_lattice):
    """Weighted atoms and weighted samples; on a lattice there are duplicated atoms and ties."""
    rng = np.random.default_rng(seed)
    num_atoms, num_samples = NUM_ATOMS, NUM_SAMPLES
    if on_lattice:
        locs = rng.integers(-6, 7, num_atoms) / 2.0
        samples = rng.integers(-6, 7, num_samples) / 2.0
    else:
        locs = rng.normal(size=num_atoms)
        samples = rng.normal(0.3, 1.5, size=num_samples)
    probs = rng.dirichlet(np.full(num_atoms, 0.7))
    sample_weights = rng.random(num_samples) + 0.05
    return locs, probs, samples, sample_weights


def step_cdf(points, weights, x):
    """Brute-force right-continuous CDF of weighted points at x [m]: O(m * len(points))."""
    return (points[None, :] <= x[:, None]).astype(float) @ (weights / weights.sum())


def grid_integral(locs, probs, samples, sample_weights, integrand):
    """Midpoint rule on a fine grid; the CDFs jump only at lattice points or points of measure 0."""
    support = np.concatenate([locs, samples])
    edges = np.linspace(support.min() - 1.0, support.max() + 1.0, 100_001)
    midpoints = 0.5 * (edges[1:] + edges[:-1])
    f = step_cdf(locs, probs, midpoints)
    g = step_cdf(samples, sample_weights, midpoints)
    return np.sum(integrand(f, g)) * (edges[1] - edges[0])


CASES = [(seed, on_lattice) for seed in range(4) for on_lattice in (False, True)]
EQUAL_PROBS, UNIT_WEIGHTS = np.full(NUM_ATOMS, 1.0 / NUM_ATOMS), np.ones(NUM_SAMPLES)


@pytest.mark.parametrize("seed,on_lattice", CASES)
class TestAgainstReferences:
    def test_wasserstein1_matches_scipy_and_grid(self, seed, on_lattice):
        locs, probs, samples, weights = random_case(seed, on_lattice)
        got = sample_metrics(locs, probs, samples, weights)["wasserstein1"]
        expected = scipy.stats.wasserstein_distance(locs, samples, probs, weights)
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
        brute = grid_integral(locs, probs, samples, weights, lambda f, g: np.abs(f - g))
        np.testing.assert_allclose(got, brute, rtol=1e-3, atol=2e-4)

    def test_cramer_matches_energy_distance_and_grid(self, seed, on_lattice):
        locs, probs, samples, weights = random_case(seed, on_lattice)
        got = sample_metrics(locs, probs, samples, weights)["cramer"]
        energy = scipy.stats.energy_distance(locs, samples, probs, weights)
        np.testing.assert_allclose(np.sqrt(2.0 * got), energy, rtol=RTOL, atol=ATOL)
        brute = grid_integral(locs, probs, samples, weights, lambda f, g: (f - g) ** 2)
        np.testing.assert_allclose(got, brute, rtol=1e-3, atol=2e-4)

    def test_ks_matches_ks_2samp_and_brute_force(self, seed, on_lattice):
        locs, probs, samples, weights = random_case(seed, on_lattice)
        np.testing.assert_allclose(
            sample_metrics(locs, EQUAL_PROBS, samples, UNIT_WEIGHTS)["ks"],
            scipy.stats.ks_2samp(locs, samples).statistic,
            rtol=RTOL,
            atol=ATOL,
        )
        # Weighted: the supremum over every jump point, CDFs evaluated pairwise.
        support = np.concatenate([locs, samples])
        brute = np.max(np.abs(step_cdf(locs, probs, support) - step_cdf(samples, weights, support)))
        got = sample_metrics(locs, probs, samples, weights)["ks"]
        np.testing.assert_allclose(got, brute, rtol=RTOL, atol=ATOL)

    def test_crps_matches_pairwise_atom_formula_and_grid(self, seed, on_lattice):
        locs, probs, samples, weights = random_case(seed, on_lattice)
        weights = weights / weights.sum()
        per_sample = np.abs(samples[:, None] - locs[None, :]) @ probs
        spread = probs @ np.abs(locs[:, None] - locs[None, :]) @ probs
        expected = weights @ per_sample - 0.5 * spread
        got = sample_metrics(locs, probs, samples, weights)["crps"]
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
        brute = grid_integral(
            locs, probs, samples, weights, lambda f, g: (f - g) ** 2 + g * (1.0 - g)
        )
        np.testing.assert_allclose(got, brute, rtol=1e-3, atol=2e-4)

    def test_crps_minus_half_sample_spread_is_cramer(self, seed, on_lattice):
        locs, probs, samples, weights = random_case(seed, on_lattice)
        weights = weights / weights.sum()
        sample_spread = weights @ np.abs(samples[:, None] - samples[None, :]) @ weights
        got = sample_metrics(locs, probs, samples, weights)
        np.testing.assert_allclose(
            got["crps"] - 0.5 * sample_spread, got["cramer"], rtol=RTOL, atol=ATOL
        )

    def test_crps_quantiles_closed_form_equals_equal_weight_atoms(self, seed, on_lattice):
        quantiles, _, samples, weights = random_case(seed, on_lattice)
        np.testing.assert_allclose(
            crps_quantiles(quantiles, samples, weights),
            sample_metrics(quantiles, EQUAL_PROBS, samples, weights)["crps"],
            rtol=RTOL,
            atol=ATOL,
        )

    def test_quantile_coverage_error_matches_brute_force(self, seed, on_lattice):
        locs, probs, samples, weights = random_case(seed, on_lattice)
        taus = np.array(metrics.DEFAULT_COVERAGE_TAUS)
        cdf_at_atoms = step_cdf(locs, probs, locs)
        # Generalised inverse: the smallest atom whose CDF reaches tau.
        quantiles = [locs[cdf_at_atoms >= tau].min() for tau in taus]
        coverage = step_cdf(samples, weights, np.array(quantiles))
        got = sample_metrics(locs, probs, samples, weights)["quantile_coverage_error"]
        np.testing.assert_allclose(got, np.mean(np.abs(coverage - taus)), rtol=RTOL, atol=ATOL)

    def test_pit_lies_within_the_cdf_jump_at_each_sample(self, seed, on_lattice):
        locs, probs, samples, _ = random_case(seed, on_lattice)
        u = pit(locs, probs, samples, jax.random.key(seed))
        below = (locs[None, :] < samples[:, None]).astype(float) @ probs
        at_or_below = step_cdf(locs, probs, samples)
        assert np.all(u >= below - ATOL) and np.all(u <= at_or_below + ATOL)

    def test_weighted_samples_equal_repeated_samples(self, seed, on_lattice):
        locs, probs, samples, _ = random_case(seed, on_lattice)
        rng = np.random.default_rng(seed)
        # Always NUM_SAMPLES extra copies, so the repeated array keeps one shape (one compile).
        counts = 1.0 + rng.multinomial(NUM_SAMPLES, np.full(NUM_SAMPLES, 1.0 / NUM_SAMPLES))
        weighted = sample_metrics(locs, probs, samples, counts)
        repeated = sample_metrics(locs, probs, np.repeat(samples, counts.astype(int)))
        for name in SAMPLE_METRICS:
            np.testing.assert_allclose(weighted[name], repeated[name], rtol=RTOL, atol=ATOL)


class TestIdentitiesAndEdgeCases:
    def test_distances_vanish_for_the_truth_given_as_weighted_samples(self):
        locs = np.array([2.0, 0.0, 2.0, 1.0])  # unsorted, duplicated
        probs = np.array([0.1, 0.4, 0.3, 0.2])
        got = sample_metrics(locs, probs, locs[::-1], probs[::-1])
        for name in ("wasserstein1", "cramer", "ks"):
            np.testing.assert_allclose(got[name], 0.0, atol=1e-6)

    def test_hand_computed_point_masses(self):
        # F = delta(0), G = 1/2 delta(1) + 1/2 delta(3): |F - G| is 1 on [0, 1), 1/2 on [1, 3).
        locs, probs, samples = np.array([0.0]), np.array([1.0]), np.array([1.0, 3.0])
        got = sample_metrics(locs, probs, samples)
        np.testing.assert_allclose(got["wasserstein1"], 2.0, rtol=1e-6)
        np.testing.assert_allclose(got["cramer"], 1.5, rtol=1e-6)
        np.testing.assert_allclose(got["ks"], 1.0, rtol=1e-6)
        np.testing.assert_allclose(got["crps"], 2.0, rtol=1e-6)

    def test_expectile_residual_vanishes_at_the_mouse_task_expectiles(self):
        # docs/science.md section 4: reward distribution and its expectiles, given to 3 decimals.
        rewards = np.array([0.1, 0.3, 1.2, 2.5, 5.0, 10.0, 20.0])
        frequencies = np.array([0.0661, 0.0909, 0.1485, 0.1549, 0.3116, 0.1510, 0.0771])
        taus = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
        expectiles = np.array([1.389, 3.335, 5.208, 7.767, 13.803])
        residual = metrics.expectile_residual(expectiles, taus, rewards, frequencies)
        assert residual < 1e-3
        shifted = metrics.expectile_residual(expectiles + 1.0, taus, rewards, frequencies)
        assert shifted > 0.05

    def test_expectile_residual_of_a_point_mass_is_zero(self):
        residual = metrics.expectile_residual(
            np.array([2.0, 2.0]), np.array([0.1, 0.9]), np.array([2.0, 2.0, 2.0])
        )
        np.testing.assert_allclose(residual, 0.0)

    @pytest.mark.parametrize("a,b", [(2.0, 1.5), (1.5, 2.0)])  # supremum above / below
    def test_pit_ks_uniform_matches_kstest(self, a, b):
        u = np.random.default_rng(0).beta(a, b, size=300)
        np.testing.assert_allclose(
            pit_ks_uniform(u), scipy.stats.kstest(u, "uniform").statistic, rtol=1e-5
        )

    def test_pit_histogram_fractions(self):
        u = jnp.array([0.05, 0.15, 0.15, 0.95])
        np.testing.assert_allclose(
            metrics.pit_histogram(u, bins=4), [0.75, 0.0, 0.0, 0.25], rtol=1e-6
        )

    def test_pit_of_a_point_mass_is_a_uniform_draw_at_the_atom_and_0_or_1_elsewhere(self):
        u = pit(np.array([1.0]), np.array([1.0]), np.array([0.0, 1.0, 2.0]), jax.random.key(0))
        assert u[0] == 0.0 and u[2] == 1.0 and 0.0 < u[1] < 1.0


def dkw_bound(num_samples, delta=1e-3):
    """sup |H_n - H| stays below this with probability 1 - delta (Dvoretzky-Kiefer-Wolfowitz)."""
    return np.sqrt(np.log(2.0 / delta) / (2.0 * num_samples))


class TestCalibration:
    @pytest.mark.parametrize(
        "locs,probs",
        [
            ([0.0, 1.0], [0.3, 0.7]),  # Bernoulli: without randomisation u takes 2 values
            ([5.0, 0.1, 20.0, 5.0, 1.2], [0.2, 0.1, 0.2, 0.3, 0.2]),  # duplicated atom
        ],
    )
    def test_pit_uniform_for_samples_from_discrete_prediction(self, locs, probs):
        locs, probs, num_samples = np.array(locs), np.array(probs), 4000
        samples = np.random.default_rng(0).choice(locs, size=num_samples, p=probs)
        u = pit(locs, probs, samples, jax.random.key(0))
        assert pit_ks_uniform(u) < dkw_bound(num_samples)
        shifted = pit(locs, probs, samples + 0.5, jax.random.key(0))
        assert pit_ks_uniform(shifted) > 0.15

    def test_pit_uniform_with_one_prediction_per_episode(self):
        # Every episode has its own F (its start state); u pools across them.
        rng = np.random.default_rng(1)
        num_episodes, num_atoms = 3000, 8
        offsets = rng.normal(0.0, 5.0, (num_episodes, 1))
        locs = offsets + np.round(rng.normal(size=(num_episodes, num_atoms)))
        probs = rng.dirichlet(np.ones(num_atoms), num_episodes)
        samples = np.array([rng.choice(l, p=p) for l, p in zip(locs, probs)])[:, None]
        keys = jax.random.split(jax.random.key(1), num_episodes)
        per_episode_pit = jax.jit(jax.vmap(metrics.pit))
        u = per_episode_pit(locs, probs, samples, keys)
        assert pit_ks_uniform(u.ravel()) < dkw_bound(num_episodes)
        # Each return scored by another episode's prediction: a state-blind miscalibration.
        mismatched = per_episode_pit(locs, probs, samples[::-1], keys)
        assert pit_ks_uniform(mismatched.ravel()) > 0.2

    def test_quantile_coverage_error_small_for_own_samples_large_when_shifted(self):
        rng = np.random.default_rng(2)
        num_atoms, num_samples = 2000, 5000
        locs = rng.normal(size=num_atoms)
        probs = np.full(num_atoms, 1.0 / num_atoms)
        samples = rng.choice(locs, size=num_samples)
        assert quantile_coverage_error(locs, probs, samples) < 0.015
        assert quantile_coverage_error(locs, probs, samples + 1.0) > 0.2

    def test_quantile_coverage_uses_the_generalised_inverse(self):
        # F: 1/4 at 0, 3/4 at 1, so q_0.25 = 0 and q_0.5 = 1. G: all mass at 0.5, so c = (0, 1).
        error = quantile_coverage_error(
            np.array([1.0, 0.0]), np.array([0.75, 0.25]), np.array([0.5]), taus=[0.25, 0.5]
        )
        np.testing.assert_allclose(error, (0.25 + 0.5) / 2, rtol=1e-6)


def test_jit_and_vmap_over_predictions_match_a_loop():
    rng = np.random.default_rng(3)
    num_predictions, num_atoms = 5, 11
    locs = rng.integers(-4, 5, (num_predictions, num_atoms)) / 2.0
    probs = rng.dirichlet(np.ones(num_atoms), num_predictions)
    samples, weights = rng.integers(-4, 5, 30) / 2.0, rng.random(30)
    got = jax.jit(jax.vmap(sample_metrics, in_axes=(0, 0, None, None)))(
        locs, probs, samples, weights
    )
    for i in range(num_predictions):
        expected = sample_metrics(locs[i], probs[i], samples, weights)
        for name in SAMPLE_METRICS:
            np.testing.assert_allclose(got[name][i], expected[name], rtol=1e-6, atol=1e-6)


def test_jit_and_vmap_of_quantile_and_expectile_metrics_match_a_loop():
    rng = np.random.default_rng(4)
    batch_values = rng.normal(size=(5, 7))  # quantiles or expectiles per prediction
    taus = np.linspace(0.1, 0.9, 7)
    samples = rng.normal(size=30)
    for metric, args, in_axes in (
        (metrics.crps_quantiles, (batch_values, samples), (0, None)),
        (metrics.expectile_residual, (batch_values, taus, samples), (0, None, None)),
    ):
        got = jax.jit(jax.vmap(metric, in_axes=in_axes))(*args)
        single = jax.jit(metric)
        expected = [single(values, *args[1:]) for values in batch_values]
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
