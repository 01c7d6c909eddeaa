"""Imputation: samples whose expectiles are given ones, and exact expectiles of weighted atoms.

Shared by EDRL (targets imputed from next-state expectiles) and the dopamine decoding analysis.
Decoding starts from a smooth maximum-entropy fit; EDRL's per-update targets start from a
closed form built on the upper partial moments the expectiles fix, near-exact and cheap, so
that errors do not pile up over repeated backups. Both are polished by Gauss-Newton.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import jax.scipy.stats

from agents import cpu_kernels

# Step sizes tried along each Newton / Gauss-Newton direction; 0 keeps the iterate, so neither
# stage can ever make its objective worse.
_STEP_SIZES = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.0)
# From the near-exact partial-moment start the polish needs only these: shorter steps changed
# no fit in our checks (chained backups, noisy expectiles), and each candidate costs a residual
# evaluation, the bulk of a Gauss-Newton step.
_POLISH_STEP_SIZES = (1.0, 0.5, 0.0)
# The max-entropy dual starts heavily regularised (robust when the expectiles are inconsistent)
# and the regulariser halves every iteration down to a floor that barely biases exact inputs.
_DUAL_RIDGE_START = 1e-3
_DUAL_RIDGE_FLOOR = 1e-6
_DEFAULT_MARGIN = 0.5
# Gauss-Newton loops of at most this many iterations are unrolled (see `_gauss_newton`).
_MAX_UNROLLED = 4

# Settings for decoding a distribution once (analysis, calibration), rather than per RL update.
DECODING_SETTINGS = {"num_samples": 100, "num_grid": 512, "num_iterations": 50}


def expectiles_of(locs: jnp.ndarray, probs: jnp.ndarray, taus: jnp.ndarray) -> jnp.ndarray:
    """Exact tau-expectiles of the distribution sum_j probs_j delta(locs_j).

    The expectile e solves tau E[(X - e)_+] = (1 - tau) E[(e - X)_+]; the gap
    g(e) = (1 - tau) E[(e - X)_+] - tau E[(X - e)_+] is increasing and linear between sorted atoms,
    so e is found exactly: locate the atom interval where g changes sign, then solve the line.

    Args:
      locs: [..., N] atom locations (any order).
      probs: [..., N] non-negative weights (normalised here).
      taus: [K] or [..., K] levels in (0, 1); batch dimensions broadcast.
    Returns:
      [..., K] expectiles. Cost O(N log N + K N) per distribution.
    """
    locs, probs, taus = jnp.asarray(locs), jnp.asarray(probs), jnp.asarray(taus)
    batch_shape = jnp.broadcast_shapes(locs.shape[:-1], probs.shape[:-1], taus.shape[:-1])
    locs = jnp.broadcast_to(locs, batch_shape + locs.shape[-1:])
    probs = jnp.broadcast_to(probs, batch_shape + probs.shape[-1:])
    taus = jnp.broadcast_to(taus, batch_shape + taus.shape[-1:])
    order = jnp.argsort(locs, axis=-1)
    z = jnp.take_along_axis(locs, order, axis=-1)
    p = jnp.take_along_axis(probs, order, axis=-1)
    p = p / jnp.sum(p, axis=-1, keepdims=True)
    cum_prob = jnp.cumsum(p, axis=-1)
    cum_first_moment = jnp.cumsum(p * z, axis=-1)
    mean = cum_first_moment[..., -1:]
    # E[(e - X)_+] and E[(X - e)_+] evaluated at each atom e = z_j.
    shortfall = z * cum_prob - cum_first_moment
    excess = (mean - cum_first_moment) - z * (1.0 - cum_prob)
    tau = taus[..., :, None]
    gap = (1.0 - tau) * shortfall[..., None, :] - tau * excess[..., None, :]  # [..., K, N]
    # Last atom where the gap is still <= 0; the root lies between it and the next atom.
    index = jnp.clip(jnp.sum(gap <= 0.0, axis=-1) - 1, 0, z.shape[-1] - 1)[..., None]
    gap_at = jnp.take_along_axis(gap, index, axis=-1)[..., 0]
    loc_at = jnp.take_along_axis(jnp.broadcast_to(z[..., None, :], gap.shape), index, axis=-1)
    prob_at = jnp.take_along_axis(
        jnp.broadcast_to(cum_prob[..., None, :], gap.shape), index, axis=-1
    )
    slope = (1.0 - taus) * prob_at[..., 0] + taus * (1.0 - prob_at[..., 0])
    return loc_at[..., 0] - gap_at / slope


def expectile_residuals(
    samples: jnp.ndarray, expectiles: jnp.ndarray, taus: jnp.ndarray
) -> jnp.ndarray:
    """r_k = (1/M) sum_i |tau_k - 1{x_i <= e_k}| (x_i - e_k): zero iff e_k is the samples' expectile.

    Args: samples [..., M], expectiles [..., K], taus [K] or [..., K]. Returns [..., K].
    """
    weights, offsets = _weights_and_offsets(samples, expectiles, taus)
    return jnp.mean(weights * offsets, axis=-1)


def imputation_loss(
    samples: jnp.ndarray, expectiles: jnp.ndarray, taus: jnp.ndarray
) -> jnp.ndarray:
    """L(x) = (1/K) sum_k r_k^2, the objective imputation minimises. Returns [...]."""
    return jnp.mean(expectile_residuals(samples, expectiles, taus) ** 2, axis=-1)


# Starting points of the Gauss-Newton polish (`impute_samples`' `init`).
INITS = ("max_entropy", "gaussian", "partial_moments")


@functools.partial(
    jax.jit,
    static_argnames=(
        "num_samples",
        "margin",
        "num_iterations",
        "num_grid",
        "num_starts",
        "init",
        "kernels",
    ),
)
def impute_samples(
    expectiles: jnp.ndarray,
    taus: jnp.ndarray,
    *,
    num_samples: int | None = None,
    bounds: tuple[jnp.ndarray | float, jnp.ndarray | float] | None = None,
    margin: float = _DEFAULT_MARGIN,
    num_iterations: int = 15,
    num_grid: int = 128,
    key: jax.Array | None = None,
    num_starts: int = 1,
    init: str = "max_entropy",
    kernels: str = "auto",
) -> jnp.ndarray:
    """Samples x_1..x_M whose tau_k-expectiles are e_k (Rowland et al. 2019, "Statistics and
    samples in distributional RL"): minimises L(x) = (1/K) sum_k r_k(x)^2 (`expectile_residuals`)
    with x in [lo, hi].

    Two stages, both a fixed number of iterations, so the function jits and vmaps:
    1. Initialisation: the maximum-entropy distribution on a grid of `num_grid` points in
       [lo, hi] whose expectile conditions hold. Its dual (K variables) is convex and smooth,
       solved by damped Newton with a ridge that anneals from 1e-3 to 1e-6 (so inconsistent
       expectiles, e.g. noisy measurements, get a least-violation compromise instead of a blow-up).
       The M samples are this distribution's quantiles at (i - 1/2)/M.
    2. Polish: projected Gauss-Newton on r(x) (minimum-norm step, variables at a bound that the
       step would push outwards are frozen, best of a few step sizes), which removes the
       discretisation error of stage 1.
    With init="partial_moments" stage 1 is a closed form that is exact whenever M equal-weight
    samples can be (`_partial_moment_samples`): each expectile fixes the upper partial moment
    E[(X - e_k)_+], and choosing how many samples lie above each e_k then fixes how many
    samples, and with what sum, each cell between consecutive expectiles holds. What is left
    (counts that must be rounded, inconsistent inputs) is small and a couple of Gauss-Newton
    steps polish it. It costs a few residual evaluations, and with only two iterations it keeps
    the expectiles through chained imputations (each backup imputes from the last one's
    expectiles) where the other starts drift: meant for per-update imputation (EDRL targets).
    With init="gaussian" stage 1 is the Gaussian whose expectiles best fit e in least squares
    (its quantiles at (i - 1/2)/M), cheaper still; it is exact for Gaussians only, and a few
    Gauss-Newton steps leave skewed, multimodal and two-point inputs several % of the spread
    off, an error that repeated backups compound.
    The convex stage makes random restarts unnecessary; with `key` and `num_starts` > 1 the
    remaining starts are uniform random samples in [lo, hi], polished, and the start with the
    lowest L is kept (the restart scheme of the paper's analysis).

    Bounds: the samples must reach beyond the extreme expectiles (no distribution inside
    [min e, max e] has min e as an expectile of level below 1/2), so without `bounds` the range
    is [min e - margin * spread, max e + margin * spread], spread = max e - min e. Pass the true
    reward or return range when it is known: decoding is markedly better with it.

    Cost per distribution and iteration: O(K^2 num_grid + K^3) for stage 1 and
    O(K^2 M + K^3) for stage 2; the partial-moment start is O(K^2 + K M) once, a fraction of
    one Gauss-Newton step. Inputs get no gradient: imputed samples are targets.

    Args:
      expectiles: [..., K] expectiles (any order).
      taus: [K] or [..., K] their levels in (0, 1).
      num_samples: M (default K).
      bounds: (lo, hi), scalars or arrays of the batch shape [...].
      margin: widening of the default range, in units of the expectiles' spread.
      num_iterations: iterations of each stage.
      num_grid: grid points of stage 1 (init="max_entropy" only).
      key, num_starts: optional random restarts of stage 2.
      init: stage 1, "max_entropy" (smooth, for decoding), "partial_moments" (cheap, near-exact)
        or "gaussian" (cheap, exact for Gaussians only).
      kernels: the linear solves' form (`agents.cpu_kernels.select`): "auto", "reference", "cpu".
    Returns:
      [..., M] samples, sorted ascending.
    """
    expectiles = jnp.asarray(expectiles)
    expectiles = jax.lax.stop_gradient(
        expectiles.astype(jnp.promote_types(expectiles.dtype, jnp.float32))
    )
    batch_shape, num_levels = expectiles.shape[:-1], expectiles.shape[-1]
    num_samples = num_levels if num_samples is None else num_samples
    shared_taus = jnp.ndim(taus) == 1
    taus = jax.lax.stop_gradient(jnp.asarray(taus, expectiles.dtype))
    # With one set of levels for the whole batch what the cheap starts need of them is computed
    # once (sorting a broadcast constant per distribution also makes XLA fold it for seconds).
    shared_basis = _gaussian_basis(taus, num_samples) if shared_taus else None
    shared_levels = _sorted_levels(taus) if shared_taus else None
    taus = jnp.broadcast_to(taus, expectiles.shape)
    if init not in INITS:
        raise ValueError(f"init={init!r} must be one of {INITS}")
    solve = functools.partial(_solve_positive_definite, kernels=kernels)
    if num_starts > 1 and key is None:
        raise ValueError("num_starts > 1 needs a key for the random starts")
    if bounds is None:
        low, high = jnp.min(expectiles, axis=-1), jnp.max(expectiles, axis=-1)
        spread = high - low
        low, high = low - margin * spread, high + margin * spread
    else:
        low = jnp.broadcast_to(jnp.asarray(bounds[0], expectiles.dtype), batch_shape)
        high = jnp.broadcast_to(jnp.asarray(bounds[1], expectiles.dtype), batch_shape)
    batch_size = math.prod(batch_shape)
    keys = jax.random.split(key, batch_size) if num_starts > 1 else None

    def flat(array):
        return array.reshape((batch_size,) + array.shape[len(batch_shape) :])

    def impute_one(e, t, lo, hi, start_key):
        if init == "gaussian":
            basis = shared_basis if shared_taus else _gaussian_basis(t, num_samples)
            x0 = _gaussian_quantiles(e, *basis)
        elif init == "partial_moments":
            levels = shared_levels if shared_taus else _sorted_levels(t)
            x0 = _partial_moment_samples(e, levels, lo, hi, num_samples)
        else:
            x0 = _max_entropy_quantiles(e, t, lo, hi, num_samples, num_grid, num_iterations, solve)
        step_sizes = _POLISH_STEP_SIZES if init == "partial_moments" else _STEP_SIZES
        best = _gauss_newton(x0, e, t, lo, hi, num_iterations, solve, step_sizes)
        if num_starts > 1:
            uniform = jax.random.uniform(start_key, (num_starts - 1, num_samples), e.dtype)
            polished = jax.vmap(_gauss_newton, in_axes=(0, None, None, None, None, None, None))(
                lo + (hi - lo) * uniform, e, t, lo, hi, num_iterations, solve
            )
            polished = jnp.concatenate([best[None], polished], axis=0)
            losses = jax.vmap(imputation_loss, in_axes=(0, None, None))(polished, e, t)
            best = polished[jnp.argmin(losses)]
        return _sort_small(best)

    samples = jax.vmap(impute_one)(flat(expectiles), flat(taus), flat(low), flat(high), keys)
    return jax.lax.stop_gradient(samples.reshape(batch_shape + (num_samples,)))


def _weights_and_offsets(samples, expectiles, taus):
    """|tau_k - 1{x_i <= e_k}| and x_i - e_k, both [..., K, M]."""
    taus = jnp.broadcast_to(taus, expectiles.shape)[..., :, None]
    offsets = samples[..., None, :] - expectiles[..., :, None]
    weights = jnp.where(offsets <= 0.0, 1.0 - taus, taus)
    return weights, offsets


# Systems up to this size may be solved entry by entry on the CPU
# (`cpu_kernels.solve_positive_definite`), whose graph grows as K^3.
_SCALAR_SOLVE_MAX = 12


def _solve_positive_definite(matrix, vector, kernels="auto"):
    """matrix^-1 vector for a symmetric positive definite [K, K] matrix, by Cholesky: column by
    column, or for small K on the CPU (`kernels`) entry by entry, which under vmap is a few fused
    element-wise loops."""
    if matrix.shape[-1] > _SCALAR_SOLVE_MAX:
        return _cholesky_solve(matrix, vector)
    return cpu_kernels.select(kernels, _cholesky_solve, cpu_kernels.solve_positive_definite)(
        matrix, vector
    )


def _cholesky_solve(matrix, vector):
    """The reference form: the factor built column by column from static slices, products and
    selects, then forward and back substitution; an O(K) graph with no scatter and no library
    call (a LAPACK call per matrix, under vmap; on XLA:CPU it can hang a program sharded over
    host devices)."""
    size = matrix.shape[-1]
    index = jnp.arange(size)
    factor = jnp.zeros_like(matrix)  # lower triangular, matrix = factor @ factor.T
    for j in range(size):
        pivot = jnp.sqrt(matrix[j, j] - factor[j, :j] @ factor[j, :j])
        below = (matrix[:, j] - factor[:, :j] @ factor[j, :j]) / pivot
        column = jnp.where(index > j, below, jnp.where(index == j, pivot, 0.0))
        factor = jnp.where(index[None, :] == j, column[:, None], factor)
    forward = jnp.zeros_like(vector)  # factor @ forward = vector
    for i in range(size):
        value = (vector[i] - factor[i, :i] @ forward[:i]) / factor[i, i]
        forward = jnp.where(index == i, value, forward)
    solution = jnp.zeros_like(vector)  # factor.T @ solution = forward
    for i in reversed(range(size)):
        value = (forward[i] - factor[i + 1 :, i] @ solution[i + 1 :]) / factor[i, i]
        solution = jnp.where(index == i, value, solution)
    return solution


def _gaussian_basis(taus, num_samples):
    """The standard normal's quantiles z [M] at (i - 1/2)/M and their sample expectiles c [K]
    at levels taus [K]: what `_gaussian_quantiles` fits, independent of the expectiles."""
    levels = (jnp.arange(num_samples, dtype=taus.dtype) + 0.5) / num_samples
    z = jax.scipy.stats.norm.ppf(levels)
    return z, expectiles_of(z, jnp.ones_like(z), taus)


def _gaussian_quantiles(e, z, c):
    """Cheap stage 1 for one distribution: e [K]; returns [M] quantiles of a Gaussian fit.

    Expectiles and quantiles are location-scale equivariant, so the standard normal's
    quantiles z [M] and their sample expectiles c [K] (`_gaussian_basis`) give the expectiles
    a + b c of the samples a + b z; (a, b) is the least-squares fit of e, with b >= 0 since a
    scale cannot be negative (inconsistently ordered expectiles then start from a point mass at
    their mean).
    """
    c_centred, e_centred = c - jnp.mean(c), e - jnp.mean(e)
    # K = 1 (or all c equal) has no scale information: the tiny floor then gives b = 0.
    scale = jnp.maximum(e_centred @ c_centred, 0.0) / jnp.maximum(
        c_centred @ c_centred, jnp.finfo(e.dtype).tiny
    )
    return jnp.mean(e) + scale * (z - jnp.mean(c))


def _sorted_levels(taus):
    """What the partial-moment start needs of the levels [K] alone, computed once per set:
    weights [K] that read the mean off the sorted expectiles (their interpolation at level 1/2,
    clamped at the ends like jnp.interp), the factors (1 - tau) / (2 tau - 1) [K] of the
    sorted levels (see `_upper_partial_moments`), and which of them is 1/2."""
    levels = _sort_small(taus)
    last = levels.shape[0] - 1
    # The first level >= 1/2 (a count, not a binary search's loop).
    above = jnp.clip(jnp.sum(levels < 0.5), min(1, last), last)
    below = jnp.maximum(above - 1, 0)
    width = levels[above] - levels[below]
    weight = jnp.where(width > 0.0, (0.5 - levels[below]) / jnp.where(width > 0.0, width, 1.0), 0.5)
    weight = jnp.clip(weight, 0.0, 1.0)
    index = jnp.arange(levels.shape[0])
    mean_weights = jnp.where(index == below, 1.0 - weight, 0.0)
    mean_weights = mean_weights + jnp.where(index == above, weight, 0.0)
    centred_level = 2.0 * levels - 1.0
    is_mean = jnp.abs(centred_level) < 1e-6
    factors = (1.0 - levels) / jnp.where(is_mean, 1.0, centred_level)
    return mean_weights, jnp.where(is_mean, 0.0, factors), is_mean


# The partial-moment start works on a dozen numbers per distribution. Under vmap, XLA:CPU runs
# sorts, gathers, cumulative ops and divisions of such short rows slowly, so its loops are
# written out over the entries (static slices, element-wise ops on [batch] vectors, as in
# `cpu_kernels.solve_positive_definite`) and divisions are kept few. Rows up to this length are sorted by a network (`_sort_small`), which also
# serves the final sort of every imputation.
_NETWORK_SORT_MAX = 32


@functools.cache
def _sorting_network(size):
    """Comparator pairs (i, j), i < j, of Batcher's odd-even merge sort of `size` entries: the
    network for the next power of two, less the pairs that reach past `size` (those would
    compare with +inf padding, which never moves)."""
    pairs = []
    padded = 1 << max(size - 1, 0).bit_length()
    merged = 1
    while merged < padded:
        distance = merged
        while distance >= 1:
            for offset in range(distance % merged, padded - distance, 2 * distance):
                for i in range(min(distance, padded - offset - distance)):
                    low, high = i + offset, i + offset + distance
                    if low // (2 * merged) == high // (2 * merged) and high < size:
                        pairs.append((low, high))
            distance //= 2
        merged *= 2
    return tuple(pairs)


def _sort_small(values):
    """values [n] in ascending order: by a sorting network (38 comparators for n = 11) up to
    _NETWORK_SORT_MAX entries, beyond that by jnp.sort (the network's graph grows faster)."""
    if values.shape[0] > _NETWORK_SORT_MAX:
        return jnp.sort(values)
    entries = [values[i] for i in range(values.shape[0])]
    for low, high in _sorting_network(len(entries)):
        entries[low], entries[high] = (
            jnp.minimum(entries[low], entries[high]),
            jnp.maximum(entries[low], entries[high]),
        )
    return jnp.stack(entries)


def _previous(values):
    """values[max(k - 1, 0)] for each k."""
    return jnp.concatenate([values[:1], values[:-1]])


def _next(values):
    """values[min(k + 1, K - 1)] for each k."""
    return jnp.concatenate([values[1:], values[-1:]])


def _running(combine, values):
    """[values[0], combine(that, values[1]), ...]: a cumulative sum / min written out."""
    out = [values[0]]
    for entry in values[1:]:
        out.append(combine(out[-1], entry))
    return out


def _upper_partial_moments(e, sorted_levels):
    """What K expectiles say about the law X: the expectiles sorted z [K], the mean, the upper
    partial moments U_k = E[(X - z_k)_+] [K], and which z_k is the mean (its U is not given);
    sorted_levels from `_sorted_levels`.

    tau E[(X - e)_+] = (1 - tau) E[(e - X)_+] with E[(e - X)_+] = e - mean + E[(X - e)_+] gives
    U(e_k) = (1 - tau_k) (e_k - mean) / (2 tau_k - 1): a distribution has the expectiles iff
    its U passes through these points. The 1/2-expectile is the mean and fixes no U; its U is
    put on its neighbours' chord. Without a 1/2 level the mean is interpolated (a start only).
    Expectiles and levels are sorted separately, so crossing ones are read as ordered.
    """
    mean_weights, factors, is_mean = sorted_levels
    z = _sort_small(e)
    mean = jnp.sum(mean_weights * z)
    moments = factors * (z - mean)
    width = _next(z) - _previous(z)
    fraction = jnp.where(width > 0.0, (z - _previous(z)) / jnp.where(width > 0.0, width, 1.0), 0.5)
    on_chord = (1.0 - fraction) * _previous(moments) + fraction * _next(moments)
    moments = jnp.where(is_mean, on_chord, moments)
    # E[(X - e)_+] >= max(mean - e, 0) for every law (Jensen).
    return z, mean, jnp.maximum(moments, jnp.maximum(mean - z, 0.0)), is_mean


def _nondecreasing_fit(values, weights):
    """Weighted least-squares nondecreasing fit of values [n] (isotonic regression), by the
    max-min formula fit_k = max_{i <= k} min_{j >= k} (weighted mean of values i..j).

    O(n^2) element-wise work with fixed shapes, so it jits and vmaps (n is K + 1 here); pool-
    adjacent-violators would need data-dependent loops. The block means stay fractions
    (numerator, positive weight) compared by cross-multiplying, so only the n results are
    divided: divisions made up most of this function's cost.
    """
    size = values.shape[0]
    cum_weight = [0.0] + _running(jnp.add, [weights[i] for i in range(size)])
    cum_value = [0.0] + _running(jnp.add, [weights[i] * values[i] for i in range(size)])

    def block(first, last):
        return cum_value[last + 1] - cum_value[first], cum_weight[last + 1] - cum_weight[first]

    def smaller(a, b):  # of two fractions (numerator, positive weight)
        take_a = a[0] * b[1] <= b[0] * a[1]
        return jnp.where(take_a, a[0], b[0]), jnp.where(take_a, a[1], b[1])

    def larger(a, b):
        take_a = a[0] * b[1] >= b[0] * a[1]
        return jnp.where(take_a, a[0], b[0]), jnp.where(take_a, a[1], b[1])

    # suffix_min[first] at step k: min over j >= k of the mean of first..j (first <= k).
    suffix_min = [None] * size
    fit = [None] * size
    for k in reversed(range(size)):
        for first in range(k + 1):
            mean = block(first, k)
            suffix_min[first] = mean if k == size - 1 else smaller(suffix_min[first], mean)
        best = suffix_min[0]
        for first in range(1, k + 1):
            best = larger(best, suffix_min[first])
        fit[k] = best[0] / best[1]
    return jnp.stack(fit)


def _free_mean_knot(above, sum_above, mean, is_mean):
    """Counts N_k and sums T_k of the samples above each knot, with the mean's knot made free.

    Its U was only put on its neighbours' chord, and an integer count there would rarely fit
    that guess. The two cells beside it act as one (the neighbours' counts and sums already
    fix its samples and their sum); all of them go on the side of the mean their average is
    on, i.e. the mean's knot copies the count and sum of the neighbour on the other side.
    """
    samples_between = _previous(above) - _next(above)
    all_above_mean = _previous(sum_above) - _next(sum_above) >= mean * samples_between
    above = jnp.where(is_mean, jnp.where(all_above_mean, _previous(above), _next(above)), above)
    sum_above = jnp.where(
        is_mean, jnp.where(all_above_mean, _previous(sum_above), _next(sum_above)), sum_above
    )
    return above, sum_above


def _partial_moment_samples(e, sorted_levels, lo, hi, num_samples):
    """Cheap stage 1 for one distribution: e [K], sorted_levels from `_sorted_levels`; returns
    [M] samples whose expectiles are e exactly when M equal-weight samples in [lo, hi] can have
    them, and nearly otherwise.

    With N_k samples above z_k (the sorted expectiles) their sum must be M U_k + N_k z_k
    (`_upper_partial_moments`), so the counts fix how many samples each cell between
    consecutive knots (lo, z_1, ..., z_K, hi) holds and their sum; anywhere inside its cell a
    sample leaves every expectile as it is. U is convex with slope -P(X > e), so the chords of
    U on either side of z_k bound M P(X > z_k), and any integer N_k between them keeps both
    cells' means inside the cells: exact. The bounds are knots too (U(lo) = mean - lo,
    U(hi) = 0), which keeps samples in the outer cells whenever the tails need them. Where no
    integer fits, the count that moves less of a cell's sum is taken and the small error is
    left to Gauss-Newton. The chord slopes are first made nondecreasing and kept in [-1, 0] (a
    weighted isotonic fit), so noisy or inconsistent inputs give a nearby valid law instead of
    a wild one. Each cell's samples are spread evenly around its mean rather than stacked.
    """
    if e.shape[0] == 1:
        return jnp.clip(jnp.full((num_samples,), e[0]), lo, hi)
    z, mean, moments, is_mean = _upper_partial_moments(e, sorted_levels)
    low_knot, high_knot = jnp.minimum(lo, z[0]), jnp.maximum(hi, z[-1])
    knots = jnp.concatenate([jnp.reshape(low_knot, (1,)), z, jnp.reshape(high_knot, (1,))])
    knot_moments = jnp.concatenate([jnp.reshape(mean - low_knot, (1,)), moments, jnp.zeros((1,))])
    gaps = knots[1:] - knots[:-1]  # [K + 1] cells
    tiny = jnp.finfo(e.dtype).eps * (1.0 + jnp.max(jnp.abs(knots)))
    slopes = (knot_moments[1:] - knot_moments[:-1]) / jnp.maximum(gaps, tiny)
    slopes = _nondecreasing_fit(jnp.clip(slopes, -1.0, 0.0), gaps + tiny)
    # M P(X > z_k) lies in [least, most], from the chords right and left of z_k.
    least, most = -num_samples * slopes[1:], -num_samples * slopes[:-1]
    # A knot with no mass at it has least = most = a whole count, which rounding must not lose.
    low_count, high_count = jnp.ceil(least - 1e-3), jnp.floor(most + 1e-3)
    # No integer in between: floor(most) overfills the right cell, ceil(least) the left one.
    overflow_right = gaps[1:] * (least - high_count)
    overflow_left = gaps[:-1] * (low_count - most)
    above = jnp.where(
        low_count <= high_count,
        jnp.clip(jnp.round(0.5 * (least + most)), low_count, high_count),
        jnp.where(overflow_right <= overflow_left, high_count, low_count),
    )
    above = jnp.clip(above, 0.0, num_samples)
    above = jnp.stack(_running(jnp.minimum, [above[k] for k in range(above.shape[0])]))
    sum_above = num_samples * moments + above * z
    above, sum_above = _free_mean_knot(above, sum_above, mean, is_mean)
    total = jnp.full((1,), num_samples, e.dtype)
    counts = jnp.concatenate([total - above[:1], above[:-1] - above[1:], above[-1:]])  # [K + 1]
    sums = jnp.concatenate(
        [total * mean - sum_above[:1], sum_above[:-1] - sum_above[1:], sum_above[-1:]]
    )
    lower, upper = knots[:-1], knots[1:]
    means = jnp.clip(sums / jnp.maximum(counts, 1.0), lower, upper)
    half_width = jnp.maximum(jnp.minimum(means - lower, upper - means), 0.0)
    # Sample i lies in the cell c with start_c <= i < end_c, at rank i - start_c within it.
    step = half_width / jnp.maximum(counts, 1.0)
    index = jnp.arange(num_samples, dtype=e.dtype)
    samples = jnp.zeros((num_samples,), e.dtype)
    start = jnp.zeros((), e.dtype)
    for cell in range(counts.shape[0]):
        rank = index - start
        offset = (2.0 * rank + 1.0 - counts[cell]) * step[cell]
        inside = (rank >= 0.0) & (rank < counts[cell])
        samples = jnp.where(inside, means[cell] + offset, samples)
        start = start + counts[cell]
    return jnp.clip(samples, lo, hi)


def _max_entropy_quantiles(e, taus, lo, hi, num_samples, num_grid, num_iterations, solve):
    """Stage 1 for one distribution: e, taus [K]; returns [M] quantiles of the max-ent fit."""
    num_levels = e.shape[0]
    # A zero-width range (all expectiles equal) must not divide by zero; the final clip
    # then puts every sample on the point mass.
    width = jnp.maximum(hi - lo, jnp.finfo(e.dtype).eps * (1.0 + jnp.max(jnp.abs(e))))
    grid = lo + width * (jnp.arange(num_grid, dtype=e.dtype) + 0.5) / num_grid
    weights, offsets = _weights_and_offsets(grid, e, taus)
    # Scaling by the width makes the ridge schedule independent of the reward unit.
    features = weights * offsets / width  # [K, G]
    eye = jnp.eye(num_levels, dtype=e.dtype)
    step_sizes = jnp.asarray(_STEP_SIZES, e.dtype)

    def dual(multipliers, ridge):
        return jax.nn.logsumexp(multipliers @ features) + 0.5 * ridge * multipliers @ multipliers

    def newton_step(iteration, multipliers):
        ridge = jnp.maximum(_DUAL_RIDGE_FLOOR, _DUAL_RIDGE_START * 0.5**iteration)
        probs = jax.nn.softmax(multipliers @ features)
        mean_features = features @ probs
        gradient = mean_features + ridge * multipliers
        hessian = (features * probs) @ features.T - jnp.outer(mean_features, mean_features)
        direction = -solve(hessian + ridge * eye, gradient)
        candidates = multipliers[None] + step_sizes[:, None] * direction[None]
        values = jax.vmap(dual, in_axes=(0, None))(candidates, ridge)
        return candidates[jnp.argmin(values)]

    multipliers = jax.lax.fori_loop(0, num_iterations, newton_step, jnp.zeros_like(e))
    probs = jax.nn.softmax(multipliers @ features)
    # Each grid cell's mass is spread uniformly over the cell, so the CDF is piecewise linear.
    edges = lo + width * jnp.arange(num_grid + 1, dtype=e.dtype) / num_grid
    cdf = jnp.concatenate([jnp.zeros((1,), e.dtype), jnp.cumsum(probs)])
    levels = (jnp.arange(num_samples, dtype=e.dtype) + 0.5) / num_samples
    return jnp.clip(jnp.interp(levels, cdf, edges), lo, hi)


def _gram(offsets, taus, active):
    """sum_m active_m w_im w_jm [K, K] for w = |tau - 1{offsets <= 0}| (offsets [K, M]).

    Each weight is 1 - tau_k below expectile k and tau_k above it, so the sum only needs, per
    expectile, how many active samples lie at or below it (C_k): samples below both e_i and
    e_j number min(C_i, C_j), above both A - max(C_i, C_j), and the rest C_i - min or
    C_j - min. K M + K^2 work instead of the K^2 M of a matrix product, equal to it up to
    float rounding (the counts themselves are exact). Under vmap XLA:CPU ran the product as
    thousands of tiny batched dots (docs/performance.md).
    """
    below = offsets <= 0.0
    counts = jnp.sum(below & active[None, :], axis=-1).astype(offsets.dtype)  # C [K]
    total = jnp.sum(active).astype(offsets.dtype)  # A
    taus = jnp.broadcast_to(taus, counts.shape)
    over, under = taus, 1.0 - taus  # a sample's weight above / below an expectile
    both_below = jnp.minimum(counts[:, None], counts[None, :])
    both_above = total - jnp.maximum(counts[:, None], counts[None, :])
    return (
        under[:, None] * under[None, :] * both_below
        + under[:, None] * over[None, :] * (counts[:, None] - both_below)
        + over[:, None] * under[None, :] * (counts[None, :] - both_below)
        + over[:, None] * over[None, :] * both_above
    )


def _gauss_newton(x, e, taus, lo, hi, num_iterations, solve, step_sizes=_STEP_SIZES):
    """Stage 2 for one start: x [M], e, taus [K]; projected Gauss-Newton on r(x), keeping the
    best of `step_sizes` along each direction."""
    num_levels, num_samples = e.shape[0], x.shape[0]
    eye = jnp.eye(num_levels, dtype=x.dtype)
    step_sizes = jnp.asarray(step_sizes, x.dtype)

    def step(_, x):
        weights, offsets = _weights_and_offsets(x, e, taus)
        residuals = jnp.mean(weights * offsets, axis=-1)
        jacobian = weights / num_samples  # r is piecewise linear with these slopes
        gradient = jacobian.T @ residuals
        pushed_out = ((x <= lo) & (gradient > 0.0)) | ((x >= hi) & (gradient < 0.0))
        jacobian = jnp.where(pushed_out[None, :], 0.0, jacobian)
        gram = _gram(offsets, taus, ~pushed_out) / num_samples**2
        # Levenberg damping keeps the step finite when rows are (nearly) proportional,
        # e.g. every sample on the same side of several expectiles.
        damping = 1e-3 * jnp.trace(gram) / num_levels + jnp.finfo(x.dtype).tiny
        direction = -jacobian.T @ solve(gram + damping * eye, residuals)
        candidates = jnp.clip(x[None] + step_sizes[:, None] * direction[None], lo, hi)
        losses = jax.vmap(imputation_loss, in_axes=(0, None, None))(candidates, e, taus)
        return candidates[jnp.argmin(losses)]

    # The few iterations of a per-update imputation are unrolled, which lets XLA fuse across
    # them (markedly faster inside the RL update); long decoding runs keep a compact loop.
    return jax.lax.fori_loop(
        0, num_iterations, step, jnp.clip(x, lo, hi), unroll=num_iterations <= _MAX_UNROLLED
    )
