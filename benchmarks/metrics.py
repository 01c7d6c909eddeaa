"""Calibration metrics of a predicted return distribution, given as weighted atoms, against
observed returns; pure jax.numpy, so every metric is jittable and vmappable (seeds, states).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

DEFAULT_COVERAGE_TAUS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _as_float(*arrays):
    """The arrays as jax arrays of one common floating dtype (ints and float64 inputs welcome)."""
    dtype = jnp.result_type(float, *arrays)
    return tuple(jnp.asarray(array, dtype) for array in arrays)


def _normalised_weights(samples, sample_weights):
    """[num_samples] weights summing to 1; uniform when `sample_weights` is None."""
    if sample_weights is None:
        return jnp.full(samples.shape, 1.0 / samples.shape[0], samples.dtype)
    chex.assert_equal_shape([samples, sample_weights])
    sample_weights = jnp.asarray(sample_weights, samples.dtype)
    return sample_weights / jnp.sum(sample_weights)


def _sorted_cdf(locs, probs):
    """Sorted atoms [K] and their CDF levels [K + 1] (a leading 0, so index i means F after i atoms)."""
    order = jnp.argsort(locs)
    levels = jnp.concatenate([jnp.zeros(1, probs.dtype), jnp.cumsum(probs[order])])
    return locs[order], levels


def _evaluate_cdf(sorted_locs, levels, x, side="right"):
    """F(x) (side="right") or the left limit F(x-) (side="left") at points x [...]."""
    # searchsorted counts the atoms <= x (right) or < x (left), so duplicated atoms and ties
    # with x are all counted at once and the result is the true step-function value.
    return levels[jnp.searchsorted(sorted_locs, x, side=side)]


def _cdfs_on_merged_support(locs, probs, samples, sample_weights):
    """F and G at every point of the merged, sorted support.

    Returns (support [K + n], f [K + n], g [K + n]). Both CDFs are constant on each gap
    [support_k, support_{k+1}), and F = G outside [support_0, support_{-1}], so integrals of any
    h(F, G) with h(0, 0) = h(1, 1) = 0 are exact sums over the gaps.
    """
    chex.assert_rank([locs, probs, samples], 1)
    chex.assert_equal_shape([locs, probs])
    locs, probs, samples = _as_float(locs, probs, samples)
    weights = _normalised_weights(samples, sample_weights)
    support = jnp.sort(jnp.concatenate([locs, samples]))
    f = _evaluate_cdf(*_sorted_cdf(locs, probs), support)
    g = _evaluate_cdf(*_sorted_cdf(samples, weights), support)
    return support, f, g


def _integrate_steps(support, values):
    """Integral of a step function equal to values_k on [support_k, support_{k+1})."""
    return jnp.sum(jnp.diff(support) * values[:-1])


def wasserstein1(locs, probs, samples, sample_weights=None):
    """Wasserstein-1 distance W1 = integral |F(x) - G(x)| dx.

    Equals scipy.stats.wasserstein_distance(locs, samples, probs, sample_weights).
    Args (shared by the metrics below):
      locs, probs: [num_atoms] the prediction F = sum_j probs_j delta(locs_j); probs >= 0 sum to
        1; atoms may be unsorted and duplicated.
      samples: [num_samples] observed returns Y_i.
      sample_weights: [num_samples] optional non-negative weights, normalised here (counts
        work), so an exactly known distribution given as atoms can stand in for the samples.
        G is the (weighted) empirical CDF; both CDFs are right-continuous, F(x) = P(X <= x).
    Returns a scalar.
    """
    support, f, g = _cdfs_on_merged_support(locs, probs, samples, sample_weights)
    return _integrate_steps(support, jnp.abs(f - g))


def cramer(locs, probs, samples, sample_weights=None):
    """Squared Cramer (l2) distance integral (F(x) - G(x))^2 dx.

    scipy.stats.energy_distance(locs, samples, probs, sample_weights) = sqrt(2 * cramer).
    Args: locs, probs [num_atoms]; samples, sample_weights [num_samples]. Returns a scalar.
    """
    support, f, g = _cdfs_on_merged_support(locs, probs, samples, sample_weights)
    return _integrate_steps(support, jnp.square(f - g))


def ks(locs, probs, samples, sample_weights=None):
    """Kolmogorov-Smirnov distance sup_x |F(x) - G(x)|.

    The supremum is attained on a gap of the merged support, where both CDFs are constant, so
    checking every support point suffices. Args as `wasserstein1`. Returns a scalar.
    """
    _, f, g = _cdfs_on_merged_support(locs, probs, samples, sample_weights)
    return jnp.max(jnp.abs(f - g))


def crps(locs, probs, samples, sample_weights=None):
    """Mean continuous ranked probability score of F over the samples (lower is better).

    CRPS(F, y) = E|X - y| - 1/2 E|X - X'| = integral (F(x) - 1{y <= x})^2 dx. Averaged over y ~ G
    the integrand is (F - G)^2 + G (1 - G), so the mean costs one sort of the merged support,
    O((K + n) log(K + n)), instead of the O(n K + K^2) pairwise formula. Hence also
    crps - 1/2 E_G|Y - Y'| = cramer.
    Args: locs, probs [num_atoms]; samples, sample_weights [num_samples]. Returns a scalar.
    """
    support, f, g = _cdfs_on_merged_support(locs, probs, samples, sample_weights)
    return _integrate_steps(support, jnp.square(f - g) + g * (1.0 - g))


def crps_quantiles(quantiles, samples, sample_weights=None):
    """Mean CRPS of K quantiles at the midpoint levels tau_i = (2i - 1) / (2K) (QR-DQN's).

    Closed form (2/K) sum_i rho_{tau_i}(y - theta_(i)), rho_tau(u) = u (tau - 1{u < 0}), with
    theta_(i) the sorted quantiles. It equals `crps(quantiles, full(K, 1/K), samples)`: the
    quantile function of equal-weight atoms is theta_(i) on ((i-1)/K, i/K], and the pinball loss
    is linear in tau there, so the midpoint integrates it exactly.
    Args: quantiles [K]; samples, sample_weights [num_samples]. Returns a scalar.
    """
    chex.assert_rank([quantiles, samples], 1)
    quantiles, samples = _as_float(quantiles, samples)
    quantiles, dtype = jnp.sort(quantiles), samples.dtype
    num_quantiles = quantiles.shape[0]
    taus = (2.0 * jnp.arange(num_quantiles, dtype=dtype) + 1.0) / (2.0 * num_quantiles)
    residuals = samples[:, None] - quantiles[None, :]
    pinball = residuals * (taus[None, :] - (residuals < 0).astype(dtype))
    per_sample = 2.0 * jnp.mean(pinball, axis=1)
    return jnp.sum(_normalised_weights(samples, sample_weights) * per_sample)


def quantile_coverage(locs, probs, samples, sample_weights=None, *, taus=None):
    """Coverage c_i = G(q_i) = mean 1{Y <= q_i} of the predicted tau_i-quantiles, [num_taus].

    q_i = inf {x : F(x) >= tau_i} (generalised inverse). `taus` [num_taus] defaults to
    DEFAULT_COVERAGE_TAUS, 0.1, 0.2, ..., 0.9. Averaging c over predictions that each meet one
    return (an evaluation episode's own start state) gives the conditional coverage.
    Args: locs, probs [num_atoms]; samples, sample_weights [num_samples].
    """
    chex.assert_rank([locs, probs, samples], 1)
    chex.assert_equal_shape([locs, probs])
    locs, probs, samples = _as_float(locs, probs, samples)
    taus = jnp.asarray(DEFAULT_COVERAGE_TAUS if taus is None else taus, samples.dtype)
    sorted_locs, levels = _sorted_cdf(locs, probs)
    # levels[1:][i] = F(sorted_locs[i]); the first level reaching tau marks the quantile.
    first_reaching = jnp.searchsorted(levels[1:], taus, side="left")
    predicted_quantiles = sorted_locs[jnp.minimum(first_reaching, locs.shape[0] - 1)]
    weights = _normalised_weights(samples, sample_weights)
    return _evaluate_cdf(*_sorted_cdf(samples, weights), predicted_quantiles)


def quantile_coverage_error(locs, probs, samples, sample_weights=None, *, taus=None):
    """Mean absolute miscoverage of the predicted quantiles: mean_i |c_i - tau_i|.

    c_i as in `quantile_coverage`. When Y shares atoms with a discrete F, c_i = F(q_i) can exceed
    tau_i by up to the mass of the atom at q_i even for a calibrated F; `pit` has no such bias.
    Args: locs, probs [num_atoms]; samples, sample_weights [num_samples]. Returns a scalar.
    """
    taus = jnp.asarray(DEFAULT_COVERAGE_TAUS if taus is None else taus, jnp.float32)
    coverage = quantile_coverage(locs, probs, samples, sample_weights, taus=taus)
    return jnp.mean(jnp.abs(coverage - taus.astype(coverage.dtype)))


def pit(locs, probs, samples, key):
    """Randomised probability integral transform u_i = F(y_i-) + U_i P(X = y_i), U_i ~ U(0, 1).

    The randomisation spreads an atom's mass evenly over its CDF jump, so u ~ Uniform(0, 1)
    exactly when Y ~ F, also for discrete F. For one F per episode, vmap over
    (locs, probs, samples[:, None], keys).
    Args: locs, probs [num_atoms]; samples [num_samples]; key a PRNG key. Returns u [num_samples].
    """
    chex.assert_rank([locs, probs, samples], 1)
    chex.assert_equal_shape([locs, probs])
    locs, probs, samples = _as_float(locs, probs, samples)
    sorted_locs, levels = _sorted_cdf(locs, probs)
    below = _evaluate_cdf(sorted_locs, levels, samples, side="left")
    at_or_below = _evaluate_cdf(sorted_locs, levels, samples, side="right")
    uniforms = jax.random.uniform(key, samples.shape, samples.dtype)
    return jnp.clip(below + uniforms * (at_or_below - below), 0.0, 1.0)


def pit_histogram(u, bins=10):
    """Fraction of PIT values per equal-width bin of [0, 1]: [bins], 1/bins each if calibrated.

    `bins` must be static under jit.
    """
    chex.assert_rank(u, 1)
    counts, _ = jnp.histogram(u, bins=bins, range=(0.0, 1.0))
    return counts / u.shape[0]


def pit_ks_uniform(u):
    """KS distance sup_x |H_n(x) - x| of the empirical CDF H_n of u [n] to Uniform(0, 1).

    Equals scipy.stats.kstest(u, "uniform").statistic. Calibrated: below the DKW bound
    sqrt(ln(2 / delta) / (2 n)) with probability 1 - delta.
    """
    chex.assert_rank(u, 1)
    num = u.shape[0]
    sorted_u = jnp.sort(u)
    ranks = jnp.arange(1, num + 1, dtype=sorted_u.dtype)
    # The supremum sits at a jump: just after it (i/n - u_(i)) or just before it (u_(i) - (i-1)/n).
    return jnp.maximum(jnp.max(ranks / num - sorted_u), jnp.max(sorted_u - (ranks - 1) / num))


def expectile_residual(expectiles, taus, samples, sample_weights=None):
    """Mean |tau_hat_k - tau_k| between the stated levels and those the samples imply.

    The tau-expectile e solves tau E(Y - e)_+ = (1 - tau) E(e - Y)_+, so the level the samples
    imply for e is tau_hat = mean (e - Y)_+ / mean |Y - e|. Where all Y equal e, e is an
    expectile at every level, so tau_hat = tau.
    Args: expectiles, taus [K]; samples, sample_weights [num_samples]. Returns a scalar.
    """
    chex.assert_rank([expectiles, taus, samples], 1)
    chex.assert_equal_shape([expectiles, taus])
    expectiles, taus, samples = _as_float(expectiles, taus, samples)
    weights = _normalised_weights(samples, sample_weights)
    differences = expectiles[:, None] - samples[None, :]
    shortfall = jnp.sum(weights * jnp.maximum(differences, 0.0), axis=1)
    spread = jnp.sum(weights * jnp.abs(differences), axis=1)
    implied_taus = jnp.where(spread > 0, shortfall / jnp.where(spread > 0, spread, 1.0), taus)
    return jnp.mean(jnp.abs(implied_taus - taus))
