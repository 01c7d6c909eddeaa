"""The reference losses: small per-example functions in the style of rlax, dense and fusable.

Each takes one example's arrays and scalars (no Config, no method string) and is vmapped over
the batch by its agent. They are written as broadcast-and-reduce over small matrices, with no
scatter, sort or loop, so that XLA fuses each into a few kernels on any platform and a GPU or
TPU computes them deterministically. They are the default everywhere but XLA:CPU, where
`agents.cpu_kernels` holds faster forms tested equal to these.

Targets get no gradient: each loss regresses its predictions onto fixed targets.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def at_action(values: chex.Array, action: chex.Array) -> chex.Array:
    """values [A, ...] at `action` (a scalar index), by a one-hot select rather than a gather,
    whose gradient would be a scatter-add."""
    chex.assert_rank(action, 0)
    mask = jnp.arange(values.shape[0]) == action
    mask = mask.reshape(mask.shape + (1,) * (values.ndim - 1))
    return jnp.sum(jnp.where(mask, values, 0), axis=0)


def at_actions(values: chex.Array, actions: chex.Array) -> chex.Array:
    """Each example's slice at its action: values [B, A, ...], actions [B] -> [B, ...], by
    `at_action`'s one-hot select (its gradient a select, not a scatter-add; a gather is also a
    scalar loop on XLA:CPU)."""
    return jax.vmap(at_action)(values, actions)


def q_learning(
    q_tm1: chex.Array,
    a_tm1: chex.Array,
    r_t: chex.Array,
    discount_t: chex.Array,
    q_t: chex.Array,
) -> chex.Array:
    """The Q-learning TD error r + discount max_a q_t[a] - q_tm1[a_tm1] for q [A] (as
    rlax.q_learning, with a one-hot select for the taken action); the target is held fixed."""
    chex.assert_rank([q_tm1, q_t], 1)
    target = jax.lax.stop_gradient(r_t + discount_t * jnp.max(q_t))
    return target - at_action(q_tm1, a_tm1)


def categorical_projection(locs: chex.Array, probs: chex.Array, support: chex.Array):
    """Atoms (locs [N], probs [N]) projected onto an evenly spaced support [K]: each atom,
    clipped to the support's range, splits its mass between its two neighbouring support
    points in proportion to closeness (Bellemare et al. 2017, Algorithm 1) -> probs [K].

    Equal to rlax.categorical_l2_project on such a support.
    """
    chex.assert_rank([locs, probs, support], 1)
    chex.assert_equal_shape([locs, probs])
    v_min, v_max = support[0], support[-1]
    # Times the inverse spacing, not divided by the spacing: v_min and v_max may be per-seed
    # values, and XLA rewrites a divide by a broadcast scalar in some pipelines and not others.
    inverse_spacing = (support.shape[0] - 1) / (v_max - v_min)
    distance = jnp.abs(jnp.clip(locs, v_min, v_max)[:, None] - support[None, :]) * inverse_spacing
    return jnp.sum(probs[:, None] * jnp.clip(1.0 - distance, 0.0, 1.0), axis=0)


def categorical_cross_entropy(logits: chex.Array, target: chex.Array) -> chex.Array:
    """-sum_k target_k log softmax(logits)_k for logits, target [K]; the target is held fixed."""
    chex.assert_rank([logits, target], 1)
    chex.assert_equal_shape([logits, target])
    return -jnp.sum(jax.lax.stop_gradient(target) * jax.nn.log_softmax(logits))


def categorical_q_learning(
    logits_tm1: chex.Array,
    a_tm1: chex.Array,
    r_t: chex.Array,
    discount_t: chex.Array,
    logits_t: chex.Array,
    support: chex.Array,
) -> chex.Array:
    """C51's loss for one transition: logits [A, K] on `support` [K]; a_tm1, r_t, discount_t
    scalars (discount_t includes gamma). The next action is greedy on the target network's mean;
    its atoms r + discount z are projected onto the support and the taken action's logits are
    scored by cross-entropy against them (as rlax.categorical_q_learning)."""
    chex.assert_rank([logits_tm1, logits_t], 2)
    chex.assert_equal_shape([logits_tm1, logits_t])
    probs_t = jax.nn.softmax(logits_t)
    a_t = jnp.argmax(probs_t @ support)
    target = categorical_projection(r_t + discount_t * support, at_action(probs_t, a_t), support)
    return categorical_cross_entropy(at_action(logits_tm1, a_tm1), target)


def quantile_huber_loss(
    predictions: chex.Array, taus: chex.Array, targets: chex.Array, kappa: chex.Numeric
) -> chex.Array:
    """sum_i mean_j |tau_i - 1{t_j < s_i}| huber_kappa(t_j - s_i) for predictions s [K] at levels
    taus [K] and target samples t [M]; kappa = 0 gives |t_j - s_i|, the plain quantile loss
    (Dabney et al. 2018). As rlax.quantile_regression_loss, with no gradient to the targets.
    kappa may be traced."""
    chex.assert_rank([predictions, taus, targets], 1)
    chex.assert_equal_shape([predictions, taus])
    delta = jax.lax.stop_gradient(targets)[None, :] - predictions[:, None]  # [K, M]
    weight = jnp.abs(jax.lax.stop_gradient(taus)[:, None] - (delta < 0.0))
    abs_delta = jnp.abs(delta)
    quadratic = jnp.minimum(abs_delta, kappa)
    huber = 0.5 * quadratic * quadratic + kappa * (abs_delta - quadratic)
    error = jnp.where(kappa > 0.0, huber, abs_delta)
    return jnp.sum(jnp.mean(weight * error, axis=-1))


def expectile_loss(predictions: chex.Array, taus: chex.Array, targets: chex.Array) -> chex.Array:
    """sum_k mean_j |tau_k - 1{t_j < e_k}| (t_j - e_k)^2 for expectiles e [K] at levels taus [K]
    and target samples t [M] (Rowland et al. 2019): rlax.expectile_loss summed over k and
    averaged over j."""
    chex.assert_rank([predictions, taus, targets], 1)
    chex.assert_equal_shape([predictions, taus])
    delta = jax.lax.stop_gradient(targets)[None, :] - predictions[:, None]  # [K, M]
    weight = jnp.abs(jax.lax.stop_gradient(taus)[:, None] - (delta < 0.0))
    return jnp.sum(jnp.mean(weight * delta**2, axis=-1))  # integer_pow: one fused multiply
