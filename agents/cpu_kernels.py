"""Faster forms of the reference losses for XLA:CPU, chosen by platform.

`agents.losses` is the default on GPU and TPU: dense per-example functions that fuse there and
compute deterministically. On XLA:CPU some of them run as many small loops; the forms here
compute the same values and gradients (tests/test_cpu_kernels.py checks each against its
reference) in ways that suit the CPU: a scatter-add projection, hand-written gradients that
reuse the forward pass, a fused loop over targets, a polynomial cosine, an unrolled Cholesky.
They are batched (leading [B]) rather than per-example where the trick needs the batch.

`select` picks one form per call site: "reference", "cpu", or "auto", which leaves the choice
to the lowering (`jax.lax.platform_dependent`): a program lowered for a GPU or TPU carries only
the reference form, whichever host traced it. docs/performance.md gives the side-by-side
figures that keep each kernel here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from agents import losses

KERNELS = ("auto", "reference", "cpu")


def select(kernels: str, reference: Callable, cpu: Callable) -> Callable:
    """The function to call for `kernels`: `reference`, `cpu`, or ("auto") the one the program's
    platform is lowered for. Both take the same positional array arguments."""
    if kernels == "reference":
        return reference
    if kernels == "cpu":
        return cpu
    if kernels != "auto":
        raise ValueError(f"kernels={kernels!r} must be one of {KERNELS}")

    def by_platform(*args):
        return jax.lax.platform_dependent(*args, cpu=cpu, default=reference)

    return by_platform


# --- C51 ------------------------------------------------------------------------------------------


def categorical_q_learning(logits_tm1, a_tm1, r_t, discount_t, logits_t, support):
    """Per-example C51 losses [B]; logits [B, A, K], a_tm1, r_t, discount_t [B], support [K]:
    `losses.categorical_q_learning` over the batch.

    Softmax weights are normalised only at the greedy action; the target is projected by one
    scatter-add over the batch (O(K) per example, not the dense O(K^2)); the cross-entropy's
    gradient (softmax - target) is written out so that one exp serves the value and gradient.
    """
    weights_t = jnp.exp(logits_t - _fast_max(logits_t)[..., None])  # [B, A, K]
    totals_t = jnp.sum(weights_t, axis=-1)
    a_t = jnp.argmax(jnp.sum(weights_t * support, axis=-1) / totals_t, axis=-1)
    probs_next = losses.at_actions(weights_t, a_t) / losses.at_actions(totals_t, a_t)[:, None]
    locs = r_t[:, None] + discount_t[:, None] * support
    target = jax.lax.stop_gradient(project_onto_support(locs, probs_next, support))
    return _cross_entropy(losses.at_actions(logits_tm1, a_tm1), target)


def project_onto_support(locs, probs, support):
    """`losses.categorical_projection` for a batch: locs, probs [..., N] -> [..., K].

    An atom at position l + f (l = floor, in support steps) adds (p, p f) at row slot l by one
    scatter-add; the projection is then P - F + F shifted up one support point, i.e. p (1 - f)
    at l and p f at l + 1.
    """
    num_atoms = support.shape[0]
    v_min, v_max = support[0], support[-1]
    inverse_spacing = (num_atoms - 1) / (v_max - v_min)  # as in the reference: no broadcast divide
    position = (jnp.clip(locs, v_min, v_max) - v_min) * inverse_spacing
    lower = jnp.floor(position)
    frac = position - lower
    batch_shape = locs.shape[:-1]
    num_rows = math.prod(batch_shape)
    rows = jnp.arange(num_rows).reshape(*batch_shape, 1) * num_atoms
    updates = jnp.stack([probs, probs * frac], axis=-1).reshape(-1, 2)
    sums = jnp.zeros((num_rows * num_atoms, 2), probs.dtype)
    sums = sums.at[(rows + lower.astype(jnp.int32)).ravel()].add(updates)
    sums = sums.reshape(*batch_shape, num_atoms, 2)
    mass, upper_share = sums[..., 0], sums[..., 1]
    # An atom exactly at v_max has f = 0, so dropping the last point's upward share is exact.
    shifted = jnp.concatenate([jnp.zeros_like(upper_share[..., :1]), upper_share[..., :-1]], -1)
    return mass - upper_share + shifted


def _fast_max(x):
    """max over the last axis by a compare-and-select reduction, which XLA:CPU vectorises over
    the short atom axis where jnp.max's NaN-propagating maximum does not. It only shifts logits,
    where a NaN propagates by itself."""
    return jax.lax.reduce(x, -jnp.inf, lambda a, b: jnp.where(a > b, a, b), (x.ndim - 1,))


@jax.custom_vjp
def _cross_entropy(logits, target):
    """-sum(target * log_softmax(logits)) over the last axis; gradient only to logits."""
    return _cross_entropy_fwd(logits, target)[0]


def _cross_entropy_fwd(logits, target):
    shifted = logits - _fast_max(logits)[..., None]
    log_probs = shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))
    return -jnp.sum(target * log_probs, axis=-1), (log_probs, target)


def _cross_entropy_bwd(residuals, g):
    log_probs, target = residuals
    total = jnp.sum(target, axis=-1, keepdims=True)
    return g[..., None] * (jnp.exp(log_probs) * total - target), None


_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


# --- quantile Huber (QR-DQN, IQN) -----------------------------------------------------------------

_UNROLL = 8  # targets per iteration of the loop over targets


def quantile_huber_loss(src, taus, target, kappa):
    """Per-example `losses.quantile_huber_loss` [B]: src, taus [B, K], target [B, M]. kappa is
    a Python zero (the plain quantile loss: `bind` keeps a zero static) or a positive value,
    possibly traced. One fused loop over the M targets keeps only [B, K] accumulators of the
    loss and its gradient (returned through a custom VJP), where autodiff of the dense form
    builds and reads back several [B, K, M] arrays."""
    plain = not isinstance(kappa, jax.Array) and float(kappa) == 0.0
    kappa = jnp.asarray(kappa, src.dtype)
    return _quantile_huber(src, taus, jax.lax.stop_gradient(target), kappa, plain)


def _pairwise(src, taus, target, kappa, plain: bool):
    """The loss [B] and its gradient wrt src [B, K], accumulated target by target."""
    num_targets = target.shape[-1]

    def accumulate(j, carry):
        loss, gradient = carry
        delta = jax.lax.dynamic_slice_in_dim(target, j, 1, axis=-1) - src  # [B, K]
        below = delta < 0.0
        weight = jnp.where(below, 1.0 - taus, taus)
        if plain:
            loss = loss + weight * jnp.abs(delta)
            # d|t - s|/ds with jnp.abs's derivative at 0 (+1 there), as autodiff gives.
            gradient = gradient + jnp.where(below, 1.0 - taus, -taus)
        else:
            abs_delta = jnp.abs(delta)
            quadratic = jnp.minimum(abs_delta, kappa)
            loss = loss + weight * (0.5 * quadratic * quadratic + kappa * (abs_delta - quadratic))
            gradient = gradient - weight * jnp.clip(delta, -kappa, kappa)
        return loss, gradient

    zeros = jnp.zeros(src.shape, src.dtype)
    loss, gradient = jax.lax.fori_loop(
        0, num_targets, accumulate, (zeros, zeros), unroll=min(_UNROLL, max(num_targets, 1))
    )
    return jnp.sum(loss, axis=-1) / num_targets, gradient / num_targets


def _quantile_huber(src, taus, target, kappa, plain):
    return _pairwise(src, taus, target, kappa, plain)[0]


def _quantile_huber_fwd(src, taus, target, kappa, plain):
    loss, gradient = _pairwise(src, taus, target, kappa, plain)
    return loss, (gradient, kappa)


def _quantile_huber_bwd(plain, residuals, cotangent):
    gradient, kappa = residuals
    return cotangent[..., None] * gradient, None, None, jnp.zeros_like(kappa)


_quantile_huber = jax.custom_vjp(_quantile_huber, nondiff_argnums=(4,))
_quantile_huber.defvjp(_quantile_huber_fwd, _quantile_huber_bwd)


# --- IQN's tau embedding --------------------------------------------------------------------------

# Taylor coefficients of cos(y) in x = y^2 (terms to y^12), Horner order: exact to ~1e-8 on
# [0, pi/2], below float32 rounding.
_COS_COEFFICIENTS = tuple((-1) ** k / math.factorial(2 * k) for k in range(6, -1, -1))


def cosine_embedding(taus, embedding_dim: int):
    """`losses`-style cos(pi i tau), i < embedding_dim: taus [..., T] -> [..., T, E].

    cos(2 pi u) with u = i tau / 2 reduced to its distance from the nearest integer and folded
    onto [0, 1/4], where a short polynomial is exact to float32 rounding: one fused elementwise
    loop, where jnp.cos's general range reduction is a long one on XLA:CPU.
    """
    u = taus[..., None] * (0.5 * jnp.arange(embedding_dim, dtype=jnp.result_type(taus, 1.0)))
    r = jnp.abs(u - jnp.round(u))  # in [0, 1/2]; cos(2 pi u) = cos(2 pi r)
    flip = r > 0.25  # cos(2 pi r) = -cos(2 pi (1/2 - r))
    y = 2.0 * jnp.pi * jnp.where(flip, 0.5 - r, r)  # in [0, pi/2]
    x = y * y
    value = jnp.zeros_like(x)
    for coefficient in _COS_COEFFICIENTS:
        value = value * x + coefficient
    return jnp.where(flip, -value, value)


@jax.custom_vjp
def cosine_dense(taus, kernel, bias):
    """relu(cos(pi i tau) @ kernel + bias): taus [..., T], kernel [E, d] -> [..., T, d], with
    the gradient written out (none to taus): the kernel's as (g^T x)^T over all rows, one matmul
    XLA:CPU runs fast where autodiff's x^T g follows a transposing copy of g, and the bias's
    read off its first row, since the first feature is cos(0) = 1 exactly."""
    return _cosine_dense_fwd(taus, kernel, bias)[0]


def _cosine_dense_fwd(taus, kernel, bias):
    features = cosine_embedding(taus, kernel.shape[0])
    out = nn.relu(features @ kernel + bias)
    return out, (features, out)


def _cosine_dense_bwd(residuals, g):
    features, out = residuals
    g = jnp.where(out > 0, g, 0.0)
    rows = g.reshape(-1, g.shape[-1])  # [R, d]
    d_kernel = (rows.T @ features.reshape(-1, features.shape[-1])).T  # [E, d]
    # sum over rows of g = (g^T 1)^T = the kernel gradient's row for the constant feature cos(0).
    return None, d_kernel, d_kernel[0]


cosine_dense.defvjp(_cosine_dense_fwd, _cosine_dense_bwd)


# --- EDRL's imputation ----------------------------------------------------------------------------


def solve_positive_definite(matrix, vector):
    """matrix^-1 vector for one symmetric positive definite [K, K] matrix by Cholesky, written
    entry by entry: under vmap each entry is one [batch] vector and the solve a few fused
    element-wise loops, where XLA:CPU runs a batched LAPACK solve one tiny matrix at a time.
    The graph grows as K^3: meant for small K."""
    size = matrix.shape[-1]
    factor = [[None] * size for _ in range(size)]  # lower triangle: matrix = L L^T
    for j in range(size):
        pivot = matrix[j, j]
        for k in range(j):
            pivot = pivot - factor[j][k] * factor[j][k]
        factor[j][j] = jnp.sqrt(pivot)
        inverse = 1.0 / factor[j][j]
        for i in range(j + 1, size):
            entry = matrix[i, j]
            for k in range(j):
                entry = entry - factor[i][k] * factor[j][k]
            factor[i][j] = entry * inverse
    forward = [None] * size  # L y = vector
    for i in range(size):
        entry = vector[i]
        for k in range(i):
            entry = entry - factor[i][k] * forward[k]
        forward[i] = entry / factor[i][i]
    solution = [None] * size  # L^T x = y
    for i in reversed(range(size)):
        entry = forward[i]
        for k in range(i + 1, size):
            entry = entry - factor[k][i] * solution[k]
        solution[i] = entry / factor[i][i]
    return jnp.stack(solution)
