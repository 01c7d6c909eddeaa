"""The sorted quantile Huber loss equals rlax's pairwise one: values, gradients, edge cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

import agents
from agents.common import midpoint_taus
from agents.qrdqn import quantile_loss
from agents.quantile_huber import quantile_huber_loss


def rlax_loss(src, taus, target, kappa):
    """rlax.quantile_regression_loss over leading batch dims."""
    taus = jnp.broadcast_to(taus, src.shape)
    flat = jax.vmap(rlax.quantile_regression_loss, in_axes=(0, 0, 0, None))
    out = flat(
        src.reshape(-1, src.shape[-1]),
        taus.reshape(-1, taus.shape[-1]),
        target.reshape(-1, target.shape[-1]),
        kappa,
    )
    return out.reshape(src.shape[:-1])


def random_case(seed, shape_src, num_targets, scale=3.0, offset=0.0, per_example_taus=False):
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    src = offset + scale * jax.random.normal(keys[0], shape_src)
    target = offset + scale * jax.random.normal(keys[1], (*shape_src[:-1], num_targets))
    if per_example_taus:
        taus = jax.random.uniform(keys[2], shape_src)
    else:
        taus = midpoint_taus(shape_src[-1])
    return src, taus, target


def test_hand_computed():
    # s = 0 at tau 0.25 against targets (-2, 0.5, 3), kappa 1:
    #   -2: below by more than kappa, weight 0.75, kappa * 2 - 0.5 = 1.5    -> 1.125
    #  0.5: above within kappa,     weight 0.25, 0.5 * 0.5^2 = 0.125        -> 0.03125
    #    3: above by more than kappa, weight 0.25, 3 - 0.5 = 2.5           -> 0.625
    # mean over the three targets: 1.78125 / 3 = 0.59375.
    loss = quantile_huber_loss(
        jnp.array([0.0]), jnp.array([0.25]), jnp.array([-2.0, 0.5, 3.0]), 1.0
    )
    np.testing.assert_allclose(loss, 0.59375, rtol=1e-6)


@pytest.mark.parametrize("kappa", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize(
    "num_src, num_targets, per_example_taus", [(51, 51, False), (8, 8, True), (5, 13, False)]
)
def test_value_and_gradient_equal_rlax(kappa, num_src, num_targets, per_example_taus):
    src, taus, target = random_case(
        0, (4, 16, num_src), num_targets, per_example_taus=per_example_taus
    )

    def mean_loss(fn, src, target):
        return jnp.mean(fn(src, taus, target, kappa))

    ours = jax.value_and_grad(mean_loss, argnums=(1, 2))(quantile_huber_loss, src, target)
    theirs = jax.value_and_grad(mean_loss, argnums=(1, 2))(rlax_loss, src, target)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours[1][0], theirs[1][0], rtol=1e-5, atol=1e-6)
    assert not np.any(ours[1][1])  # targets are fixed: no gradient


@pytest.mark.parametrize("kappa", [0.0, 1.0])
def test_cartpole_scale_returns(kappa):
    # Returns near 100 with a spread of a few units: the prefix sums are centred, so float32
    # keeps the loss to about 1e-5 of its size and the gradient to 1e-6.
    src, taus, target = random_case(1, (8, 51), 51, scale=4.0, offset=95.0)
    np.testing.assert_allclose(
        quantile_huber_loss(src, taus, target, kappa),
        rlax_loss(src, taus, target, kappa),
        rtol=1e-4,
    )
    grads = [
        jax.grad(lambda s, fn=fn: jnp.sum(fn(s, taus, target, kappa)))(src)
        for fn in (quantile_huber_loss, rlax_loss)
    ]
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-5)


@pytest.mark.parametrize("kappa", [0.0, 1.0])
def test_ties_and_region_boundaries(kappa):
    # Duplicated targets, predictions equal to a target and targets exactly kappa away.
    target = jnp.array([[0.0, 0.0, 1.0, 1.0, -1.0, 2.0, 3.0]])
    src = jnp.array([[0.0, 1.0, -1.0, 2.0, 0.5]])
    taus = midpoint_taus(5)
    np.testing.assert_allclose(
        quantile_huber_loss(src, taus, target, kappa),
        rlax_loss(src, taus, target, kappa),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        jax.grad(lambda s: jnp.sum(quantile_huber_loss(s, taus, target, kappa)))(src),
        jax.grad(lambda s: jnp.sum(rlax_loss(s, taus, target, kappa)))(src),
        atol=1e-6,
    )


def test_under_jit_and_vmap():
    src, taus, target = random_case(2, (3, 10, 51), 51)
    per_seed = jax.jit(jax.vmap(lambda s, t: quantile_huber_loss(s, taus, t, 1.0)))
    np.testing.assert_allclose(per_seed(src, target), rlax_loss(src, taus, target, 1.0), rtol=1e-5)


def test_negative_kappa_is_an_error():
    with pytest.raises(ValueError, match="kappa=-1"):
        quantile_huber_loss(jnp.zeros(2), jnp.array([0.25, 0.75]), jnp.zeros(3), -1.0)


@pytest.mark.parametrize("kappa", [0.0, 1.0])
def test_qrdqn_sorted_loss_equals_rlax_quantile_q_learning(kappa):
    keys = jax.random.split(jax.random.PRNGKey(5), 4)
    batch, actions, num_quantiles = 32, 3, 51
    q_tm1 = 10.0 + 3.0 * jax.random.normal(keys[0], (batch, actions, num_quantiles))
    q_t = 10.0 + 3.0 * jax.random.normal(keys[1], (batch, actions, num_quantiles))
    a_tm1 = jax.random.randint(keys[2], (batch,), 0, actions)
    r_t = jax.random.uniform(keys[3], (batch,), minval=0.0, maxval=2.0)
    discount_t = (jnp.arange(batch) % 7 != 0).astype(jnp.float32)

    def loss(impl, q):
        config = agents.make_config("qrdqn", huber_kappa=kappa, loss=impl)
        return quantile_loss(config, q, a_tm1, r_t, discount_t, q_t)

    for fn in (loss, jax.grad(loss, argnums=1)):
        np.testing.assert_allclose(fn("sorted", q_tm1), fn("rlax", q_tm1), rtol=1e-5, atol=1e-6)
