"""Tests for agents.imputation: exact expectiles of atoms, and samples imputed from expectiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from agents import edrl
from agents.imputation import (
    DECODING_SETTINGS,
    INITS,
    expectile_residuals,
    expectiles_of,
    imputation_loss,
    impute_samples,
)
from envs import mouse

# The variable-magnitude task of Dabney et al. 2020 (docs/science.md section 4).
MAGNITUDES = np.asarray(mouse.MAGNITUDES)
PROBS = np.asarray(mouse.MAGNITUDE_PROBS)
# 20 levels at the midpoints of 20 equal bins of (0, 1): 0.025, 0.075, ..., 0.975.
TAUS_20 = (np.arange(20) + 0.5) / 20
TAUS_10 = (np.arange(10) + 0.5) / 10


def _task_expectiles(taus):
    return expectiles_of(jnp.asarray(MAGNITUDES), jnp.asarray(PROBS), jnp.asarray(taus))


def _w1_to_task(samples):
    return scipy.stats.wasserstein_distance(np.asarray(samples), MAGNITUDES, v_weights=PROBS)


class TestExpectilesOf:
    def test_task_expectiles_match_the_published_values(self):
        expectiles = _task_expectiles([0.05, 0.25, 0.5, 0.75, 0.95])
        # docs/science.md rounds to about three decimals.
        np.testing.assert_allclose(expectiles, [1.389, 3.335, 5.208, 7.767, 13.803], atol=3e-3)

    def test_symmetric_two_point_by_hand(self):
        # For +-1 with probability 1/2: 0.75 * (1 - e) / 2 = 0.25 * (e + 1) / 2  =>  e = 1/2.
        expectiles = expectiles_of(
            jnp.array([-1.0, 1.0]), jnp.array([0.5, 0.5]), jnp.array([0.25, 0.5, 0.75])
        )
        np.testing.assert_allclose(expectiles, [-0.5, 0.0, 0.5], atol=1e-6)

    def test_matches_scipy_on_samples(self):
        rng = np.random.default_rng(0)
        samples = rng.gamma(2.0, 1.5, size=500)
        weights = rng.uniform(0.1, 1.0, size=500)
        taus = np.array([0.02, 0.2, 0.5, 0.8, 0.98])
        ours = expectiles_of(jnp.asarray(samples), jnp.asarray(weights), jnp.asarray(taus))
        scipy_values = [scipy.stats.expectile(samples, alpha=t, weights=weights) for t in taus]
        np.testing.assert_allclose(ours, scipy_values, rtol=1e-4)

    def test_batched_levels_per_distribution(self):
        locs = jnp.array([[0.0, 1.0], [0.0, 10.0]])
        probs = jnp.array([[0.5, 0.5], [0.9, 0.1]])
        taus = jnp.array([[0.5], [0.5]])
        np.testing.assert_allclose(expectiles_of(locs, probs, taus)[:, 0], [0.5, 1.0], atol=1e-6)


class TestImputeSamples:
    def test_decodes_the_task_distribution_better_than_a_matched_gaussian(self):
        expectiles = _task_expectiles(TAUS_20)
        mean = np.sum(MAGNITUDES * PROBS)
        sd = np.sqrt(np.sum((MAGNITUDES - mean) ** 2 * PROBS))
        gaussian = scipy.stats.norm(mean, sd).ppf((np.arange(10_000) + 0.5) / 10_000)
        gaussian_w1 = _w1_to_task(gaussian)
        assert gaussian_w1 == pytest.approx(1.86, abs=0.05)
        # Without side information the range is only extrapolated from the expectiles.
        samples = impute_samples(expectiles, jnp.asarray(TAUS_20), **DECODING_SETTINGS)
        assert samples.shape == (100,)
        assert _w1_to_task(samples) <= 0.6 < gaussian_w1 / 3
        # With the reward range known (as the experimenter knows it) decoding is sharper.
        bounded = impute_samples(
            expectiles, jnp.asarray(TAUS_20), bounds=(0.1, 20.0), **DECODING_SETTINGS
        )
        assert _w1_to_task(bounded) <= 0.3

    def test_imputed_samples_have_the_given_expectiles(self):
        taus = jnp.asarray(TAUS_20)
        expectiles = _task_expectiles(TAUS_20)
        samples = impute_samples(expectiles, taus, **DECODING_SETTINGS)
        assert float(imputation_loss(samples, expectiles, taus)) < 1e-5
        uniform = jnp.full(samples.shape, 1.0 / samples.shape[-1])
        np.testing.assert_allclose(expectiles_of(samples, uniform, taus), expectiles, atol=0.02)

    def test_cheap_default_fits_a_batch_of_different_distributions_under_jit(self):
        # A batch of Bernoulli(p) returns, as EDRL sees next states with different values.
        taus = (jnp.arange(10) + 0.5) / 10
        p = jnp.array([0.1, 0.5, 0.9])
        locs = jnp.stack([jnp.zeros(3), jnp.ones(3)], axis=-1)
        expectiles = expectiles_of(locs, jnp.stack([1 - p, p], axis=-1), taus)
        samples = jax.jit(lambda e: impute_samples(e, taus, bounds=(0.0, 1.0)))(expectiles)
        assert samples.shape == (3, 10)
        np.testing.assert_allclose(samples.mean(axis=-1), p, atol=1e-3)  # tau = 1/2 -> the mean
        assert float(jnp.max(jnp.abs(expectile_residuals(samples, expectiles, taus)))) < 1e-3
        vmapped = jax.vmap(lambda e: impute_samples(e, taus, bounds=(0.0, 1.0)))(expectiles)
        np.testing.assert_allclose(vmapped, samples, atol=1e-5)
        one = impute_samples(expectiles[1], taus, bounds=(0.0, 1.0))
        np.testing.assert_allclose(one, samples[1], atol=1e-5)

    def test_per_distribution_levels_and_bounds(self):
        taus = jnp.array([[0.2, 0.5, 0.8], [0.1, 0.5, 0.9]])
        locs = jnp.array([[0.0, 1.0], [-2.0, 2.0]])
        expectiles = expectiles_of(locs, jnp.full((2, 2), 0.5), taus)
        samples = impute_samples(
            expectiles, taus, num_samples=8, bounds=(locs[:, 0], locs[:, 1]), num_iterations=30
        )
        np.testing.assert_allclose(samples.mean(axis=-1), [0.5, 0.0], atol=1e-3)
        assert bool(jnp.all(samples >= locs[:, :1])) and bool(jnp.all(samples <= locs[:, 1:]))

    def test_point_mass_gives_samples_at_the_point(self):
        taus = (jnp.arange(5) + 0.5) / 5
        expectiles = jnp.full((5,), 3.0)
        np.testing.assert_allclose(impute_samples(expectiles, taus), 3.0, atol=1e-6)
        # Only the point mass fits exactly inside wide bounds: a limit the iterations approach.
        wide = impute_samples(
            expectiles, taus, bounds=(0.0, 10.0), num_samples=20, num_iterations=30
        )
        np.testing.assert_allclose(wide, 3.0, atol=0.01)

    @pytest.mark.parametrize("init", INITS)
    @pytest.mark.parametrize(
        "expectiles, taus",
        [([2.0], [0.5]), ([1.0, 1.0, 1.0], [0.1, 0.5, 0.9]), ([3.0, 1.0], [0.2, 0.8])],
        ids=["one_level", "all_equal", "inconsistent_order"],
    )
    def test_degenerate_inputs_give_finite_samples(self, expectiles, taus, init):
        samples = impute_samples(jnp.array(expectiles), jnp.array(taus), num_samples=5, init=init)
        assert samples.shape == (5,)
        assert bool(jnp.all(jnp.isfinite(samples)))

    def test_random_starts_never_worsen_the_fit(self):
        # Ten levels keep the linear solves in the scalar form, which compiles several times
        # faster than the column form twenty need; uniform random starts still fit these
        # expectiles far worse than the max-entropy start (keeping the worst start instead of
        # the best raises the loss from ~1e-5 to ~3), so a selection that lost the first start
        # would fail here.
        taus = jnp.asarray(TAUS_10)
        expectiles = _task_expectiles(TAUS_10)
        settings = {"num_samples": 40, "num_iterations": 20}
        single = impute_samples(expectiles, taus, **settings)
        several = impute_samples(
            expectiles, taus, key=jax.random.PRNGKey(0), num_starts=4, **settings
        )
        assert float(imputation_loss(several, expectiles, taus)) <= float(
            imputation_loss(single, expectiles, taus)
        )
        with pytest.raises(ValueError, match="key"):
            impute_samples(expectiles, taus, num_starts=2)

    def test_samples_are_targets_without_gradient(self):
        taus = (jnp.arange(5) + 0.5) / 5
        gradient = jax.grad(lambda e: jnp.sum(impute_samples(e, taus) ** 2))(jnp.arange(5.0))
        np.testing.assert_array_equal(gradient, 0.0)


class TestGaussianInit:
    """init="gaussian": a cheap start, exact for Gaussians (EDRL's default before
    "partial_moments", which `TestRepeatedBackups` shows to keep the expectiles)."""

    TAUS_11 = (np.arange(11) + 0.5) / 11  # EDRL's default levels
    LEVELS = (np.arange(1000) + 0.5) / 1000

    @staticmethod
    def _relative_expectile_error(locs, probs, num_iterations):
        """max_k |expectile_k(imputed samples) - e_k| / (max e - min e), and the samples."""
        taus = jnp.asarray(TestGaussianInit.TAUS_11, jnp.float32)
        expectiles = expectiles_of(
            jnp.asarray(locs, jnp.float32), jnp.asarray(probs, jnp.float32), taus
        )
        samples = impute_samples(expectiles, taus, num_iterations=num_iterations, init="gaussian")
        fitted = expectiles_of(samples, jnp.ones_like(samples), taus)
        spread = jnp.max(expectiles) - jnp.min(expectiles)
        return float(jnp.max(jnp.abs(fitted - expectiles)) / spread), samples

    def test_a_gaussian_is_fitted_by_the_start_itself(self):
        gaussian = 2.0 + 3.0 * scipy.stats.norm.ppf(self.LEVELS)
        error, _ = self._relative_expectile_error(gaussian, np.ones(1000), num_iterations=1)
        assert error < 2e-3

    @pytest.mark.parametrize(
        "locs, probs, num_iterations",
        [
            (scipy.stats.expon.ppf(LEVELS), np.ones(1000), 2),
            (MAGNITUDES, PROBS, 2),
            # Heavier skew is further from the Gaussian start: EDRL's two iterations leave
            # ~8% here, four reach the max-entropy start's accuracy.
            (scipy.stats.gamma(0.5).ppf(LEVELS), np.ones(1000), 4),
        ],
        ids=["exponential", "task", "gamma_half"],
    )
    def test_skewed_distributions_within_one_percent_of_the_spread(
        self, locs, probs, num_iterations
    ):
        error, _ = self._relative_expectile_error(locs, probs, num_iterations)
        assert error < 0.01

    def test_two_point_distributions_are_only_roughly_fitted(self):
        # The fast path's known weakness (max-entropy fits these about twice as well): a
        # Gaussian start with K = M samples and few iterations leaves errors of ~10-20% of the
        # spread, but the samples stay finite, inside the default range and near the mean.
        for p in (0.2, 0.3, 0.5):
            error, samples = self._relative_expectile_error(
                np.array([0.0, 10.0]), np.array([1.0 - p, p]), num_iterations=2
            )
            assert error < 0.25
            assert bool(jnp.all(jnp.isfinite(samples)))
            assert abs(float(jnp.mean(samples)) - 10.0 * p) < 0.6

    def test_batched_and_vmapped_agree_and_unknown_init_is_rejected(self):
        taus = jnp.asarray(self.TAUS_11, jnp.float32)
        locs = jnp.array([[0.0, 1.0, 4.0], [-2.0, 0.0, 2.0]])
        expectiles = expectiles_of(locs, jnp.full((2, 3), 1.0 / 3), taus)
        batched = impute_samples(expectiles, taus, init="gaussian")
        vmapped = jax.vmap(lambda e: impute_samples(e, taus, init="gaussian"))(expectiles)
        # Float32 rounding differs between the two traces and Gauss-Newton amplifies it a little.
        np.testing.assert_allclose(batched, vmapped, atol=5e-4)
        with pytest.raises(ValueError, match="init"):
            impute_samples(expectiles, taus, init="uniform")


class TestPartialMomentInit:
    """init="partial_moments": samples placed cell by cell between the expectiles from the
    upper partial moments the expectiles fix."""

    @pytest.mark.parametrize(
        "locs, probs, num_samples",
        [
            # Two of ten samples at 1: whole samples can carry Bernoulli(0.2).
            (np.array([0.0, 1.0]), np.array([0.8, 0.2]), 10),
            # Eleven distinct points, imputed back into eleven samples.
            (np.random.default_rng(3).normal(size=11), np.ones(11), 11),
            (MAGNITUDES[[0, 2, 4, 4, 5, 6]], np.ones(6), 12),
        ],
        ids=["bernoulli_in_tenths", "eleven_points", "task_atoms_with_a_tie"],
    )
    def test_the_closed_form_alone_is_exact_when_whole_samples_can_be(
        self, locs, probs, num_samples
    ):
        # Without any Gauss-Newton step: the start itself reproduces the expectiles.
        from agents import imputation

        taus = jnp.asarray(TestGaussianInit.TAUS_11, jnp.float32)
        expectiles = expectiles_of(jnp.asarray(locs, jnp.float32), jnp.asarray(probs), taus)
        bounds = (float(np.min(locs)) - 1.0, float(np.max(locs)) + 1.0)
        samples = imputation._partial_moment_samples(
            expectiles, imputation._sorted_levels(taus), *bounds, num_samples
        )
        fitted = expectiles_of(samples, jnp.ones_like(samples), taus)
        spread = float(jnp.max(expectiles) - jnp.min(expectiles))
        np.testing.assert_allclose(fitted, expectiles, atol=1e-4 * spread)

    def test_noisy_expectiles_are_fitted_at_least_as_well_as_from_the_gaussian_start(self):
        # Network outputs are never exactly consistent: the isotonic projection must keep the
        # start sensible, so the polished fit is no worse than from the Gaussian start.
        taus = jnp.asarray(TestGaussianInit.TAUS_11, jnp.float32)
        key = jax.random.PRNGKey(0)
        returns = jax.random.gamma(key, 0.7, (256, 40))
        # One compiled call instead of ~30 op-by-op dispatches at this shape.
        clean = jax.jit(expectiles_of)(returns, jnp.ones_like(returns), taus)
        noisy = clean + 0.03 * jax.random.normal(jax.random.fold_in(key, 1), clean.shape)
        losses = {
            init: imputation_loss(
                impute_samples(noisy, taus, num_iterations=2, init=init), noisy, taus
            )
            for init in ("gaussian", "partial_moments")
        }
        assert bool(jnp.all(jnp.isfinite(losses["partial_moments"])))
        assert float(jnp.median(losses["partial_moments"])) < float(jnp.median(losses["gaussian"]))


class TestRepeatedBackups:
    """EDRL's targets are imputed from expectiles learned from earlier imputed targets. Along a
    chain of zero-reward backups (impute samples, scale them by gamma, take their expectiles,
    impute again) an imputation that misses the expectiles adds its error at every step; with
    EDRL's default settings the error after 10 backups must stay below 5% of the spread."""

    LEVELS = (np.arange(1000) + 0.5) / 1000
    NUM_BACKUPS = 10

    @staticmethod
    def _chain_errors(locs, probs, num_backups):
        """max_k |e_k after n backups - gamma^n e_k| / spread, for n = 1..num_backups."""
        config = edrl.Config()
        taus = config.taus
        impute = jax.jit(
            lambda e: impute_samples(
                e,
                taus,
                num_samples=config.num_imputed_samples or config.num_expectiles,
                num_iterations=config.imputation_iterations,
                num_grid=config.imputation_grid,
                init=config.imputation_init,
            )
        )
        start = expectiles_of(jnp.asarray(locs, jnp.float32), jnp.asarray(probs, jnp.float32), taus)
        expectiles, errors = start, []
        for backup in range(1, num_backups + 1):
            samples = config.gamma * impute(expectiles)
            expectiles = expectiles_of(samples, jnp.ones_like(samples), taus)
            target = config.gamma**backup * start
            spread = jnp.max(target) - jnp.min(target)
            errors.append(float(jnp.max(jnp.abs(expectiles - target)) / spread))
        return errors

    @pytest.mark.parametrize(
        "locs, probs",
        [
            (scipy.stats.gamma(0.5).ppf(LEVELS), np.ones(1000)),
            (
                np.concatenate(
                    [
                        scipy.stats.norm(-2.0, 0.3).ppf(LEVELS),
                        scipy.stats.norm(3.0, 0.5).ppf(LEVELS),
                    ]
                ),
                np.concatenate([np.full(1000, 0.6), np.full(1000, 0.4)]),
            ),
            (np.array([0.0, 1.0]), np.array([0.8, 0.2])),
            (np.array([0.0, 1.0]), np.array([0.1, 0.9])),
        ],
        ids=["skewed_gamma_half", "bimodal", "bernoulli_0.2", "bernoulli_0.9"],
    )
    def test_expectiles_survive_ten_backups(self, locs, probs):
        errors = self._chain_errors(locs, probs, self.NUM_BACKUPS)
        assert errors[-1] < 0.05, f"errors over backups: {np.round(errors, 3)}"
        # Not compounding: ten backups are hardly worse than one.
        assert errors[-1] <= errors[0] + 0.01, f"errors over backups: {np.round(errors, 3)}"


def test_both_cholesky_forms_solve_batched_systems():
    # The scalar CPU form (small K, EDRL's per-update solves) and the column form (any K),
    # under vmap, against numpy's float64 solve on well-conditioned SPD systems.
    from agents import cpu_kernels, imputation

    forms = (
        (5, cpu_kernels.solve_positive_definite),
        (5, imputation._cholesky_solve),
        (13, imputation._cholesky_solve),  # beyond the scalar form's limit (12)
    )
    for size, solve in forms:
        jacobian = jax.random.uniform(jax.random.PRNGKey(size), (32, size, size))
        matrix = jacobian @ jnp.swapaxes(jacobian, 1, 2) + 0.1 * jnp.eye(size)
        vector = jax.random.normal(jax.random.PRNGKey(size + 1), (32, size))
        expected = np.linalg.solve(
            np.asarray(matrix, np.float64), np.asarray(vector, np.float64)[..., None]
        )[..., 0]
        solved = np.asarray(jax.jit(jax.vmap(solve))(matrix, vector))
        np.testing.assert_allclose(solved, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
        # The unbatched dispatcher's shape, traced only (run eagerly it dispatched ~100 ops).
        unbatched = jax.eval_shape(imputation._solve_positive_definite, matrix[0], vector[0])
        assert unbatched.shape == (size,)


@pytest.mark.parametrize("num_levels, num_samples", [(11, 11), (5, 40), (20, 100)])
def test_gram_by_counts_equals_the_matrix_product(num_levels, num_samples):
    # Gauss-Newton's J J^T from how many active samples lie below each expectile, against the
    # product of the masked weight matrix itself: unordered expectiles, a sample tied with an
    # expectile (offset 0 counts as below) and inactive (pushed-out) samples included.
    from agents import imputation

    key = jax.random.PRNGKey(num_samples)
    samples = jax.random.normal(key, (num_samples,))
    expectiles = jax.random.normal(jax.random.fold_in(key, 1), (num_levels,))
    samples = samples.at[3].set(expectiles[2])
    taus = (jnp.arange(num_levels, dtype=jnp.float32) + 0.5) / num_levels
    active = jax.random.uniform(jax.random.fold_in(key, 2), (num_samples,)) < 0.8
    assert not bool(jnp.all(active))
    weights, offsets = imputation._weights_and_offsets(samples, expectiles, taus)
    jacobian = np.where(np.asarray(active)[None, :], np.asarray(weights), 0.0)
    expected = np.asarray(jacobian, np.float64) @ np.asarray(jacobian, np.float64).T
    # Float32 sums of up to num_samples terms: equal to rounding.
    np.testing.assert_allclose(
        imputation._gram(offsets, taus, active), expected, rtol=2e-6, atol=1e-6
    )


def test_sorting_network_sorts_every_zero_one_input():
    # By the 0-1 principle a comparator network that sorts every 0/1 input sorts every input.
    import itertools

    from agents import imputation

    for size in range(1, 13):
        for bits in itertools.product((0, 1), repeat=size):
            entries = list(bits)
            for low, high in imputation._sorting_network(size):
                if entries[low] > entries[high]:
                    entries[low], entries[high] = entries[high], entries[low]
            assert entries == sorted(entries), size
    values = jax.random.normal(jax.random.PRNGKey(0), (64, 11))
    np.testing.assert_array_equal(jax.vmap(imputation._sort_small)(values), jnp.sort(values))


def test_nondecreasing_fit_matches_pool_adjacent_violators():
    from agents import imputation

    def pool_adjacent_violators(values, weights):
        blocks = []  # [mean, weight, length]
        for value, weight in zip(values, weights):
            blocks.append([value, weight, 1])
            while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
                (m1, w1, n1), (m2, w2, n2) = blocks[-2], blocks.pop()
                blocks[-1] = [(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2]
        return np.concatenate([np.full(n, m) for m, _, n in blocks])

    rng = np.random.default_rng(0)
    for _ in range(20):
        values, weights = rng.normal(size=12), rng.uniform(0.1, 2.0, size=12)
        fitted = imputation._nondecreasing_fit(jnp.asarray(values), jnp.asarray(weights))
        expected = pool_adjacent_violators(values, weights)
        np.testing.assert_allclose(fitted, expected, rtol=1e-5, atol=1e-5)
