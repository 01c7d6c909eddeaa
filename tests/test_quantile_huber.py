"""agents/quantile_huber.py equals rlax.quantile_regression_loss: values, gradients, edge cases."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

import agents
from agents.qrdqn import quantile_loss
from agents.quantile_huber import (
    _bitonic_sort,
    _prefers_sorted,
    quantile_huber_loss,
)

KAPPAS = [0.0, 0.5, 1.0, 2.0]
FORMS = ["pairwise", "sorted"]
VALUE_TOL = {"rtol": 1e-5, "atol": 1e-4}
GRAD_TOL = {"rtol": 1e-5, "atol": 1e-5}  # gradients of a sum over examples: entries are O(1)


def rlax_loss(src, taus, target, kappa):
    """rlax.quantile_regression_loss over leading batch dims (taus [K] or [..., K])."""
    taus = jnp.broadcast_to(taus, src.shape)
    per_example = jax.vmap(rlax.quantile_regression_loss, in_axes=(0, 0, 0, None))
    out = per_example(
        src.reshape(-1, src.shape[-1]),
        taus.reshape(-1, taus.shape[-1]),
        target.reshape(-1, target.shape[-1]),
        kappa,
    )
    return out.reshape(src.shape[:-1])


@functools.partial(jax.jit, static_argnums=(0, 4))
def value_and_grads(fn, src, taus, target, kappa):
    """Per-example losses, d(sum of losses)/d src and d(sum of losses)/d target."""
    grads = jax.grad(lambda s, t: jnp.sum(fn(s, taus, t, kappa)), argnums=(0, 1))(src, target)
    return fn(src, taus, target, kappa), *grads


@functools.partial(jax.jit, static_argnums=3)
def all_value_and_grads(src, taus, target, kappa):
    """value_and_grads of rlax and of each form, in one compilation (the tests' main cost)."""
    fns = {"rlax": rlax_loss}
    fns.update({form: functools.partial(quantile_huber_loss, method=form) for form in FORMS})
    return {name: value_and_grads(fn, src, taus, target, kappa) for name, fn in fns.items()}


def assert_matches_rlax(src, taus, target, kappa):
    results = all_value_and_grads(src, taus, target, kappa)
    want_loss, want_grad, _ = results["rlax"]
    for form in FORMS:
        loss, grad, target_grad = results[form]
        np.testing.assert_allclose(loss, want_loss, **VALUE_TOL, err_msg=form)
        np.testing.assert_allclose(grad, want_grad, **GRAD_TOL, err_msg=form)
        assert not np.any(target_grad), form  # a fixed target: no gradient


def random_case(seed, batch, num_src, num_targets, scale=3.0, offset=0.0, per_example_taus=False):
    # numpy, not jax.random: eager jax.random compiles for every new shape (seconds in all).
    rng = np.random.default_rng(seed)
    src = offset + scale * rng.standard_normal((*batch, num_src))
    target = offset + scale * rng.standard_normal((*batch, num_targets))
    if per_example_taus:  # IQN: sampled taus per example
        taus = rng.uniform(size=(*batch, num_src))
    else:  # QR-DQN: the midpoints (2i - 1) / 2K
        taus = (2.0 * np.arange(1, num_src + 1) - 1.0) / (2.0 * num_src)
    return tuple(jnp.asarray(x, jnp.float32) for x in (src, taus, target))


def test_hand_computed():
    # s = 0 at tau = 0.25 against targets (-2, 0.5, 3), kappa = 1:
    #   t = -2:  below by more than kappa, weight 0.75, huber = 0.5 + (2 - 1) = 1.5 -> 1.125
    #   t = 0.5: above within kappa,       weight 0.25, huber = 0.5 * 0.5^2 = 0.125 -> 0.03125
    #   t = 3:   above by more than kappa, weight 0.25, huber = 0.5 + (3 - 1) = 2.5 -> 0.625
    # loss = (1.125 + 0.03125 + 0.625) / 3 = 1.78125 / 3 = 0.59375.
    # dL/ds = (0.75 * 1 - 0.25 * 0.5 - 0.25 * 1) / 3 = 0.375 / 3 = 0.125.
    src, taus, target = jnp.array([0.0]), jnp.array([0.25]), jnp.array([-2.0, 0.5, 3.0])
    results = all_value_and_grads(src, taus, target, 1.0)
    for name, (loss, grad, _) in results.items():
        np.testing.assert_allclose(loss, 0.59375, rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(grad, [0.125], rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("kappa", KAPPAS)
@pytest.mark.parametrize(
    "num_src, num_targets, per_example_taus", [(51, 51, False), (8, 8, True), (5, 13, False)]
)
def test_value_and_gradient_equal_rlax(kappa, num_src, num_targets, per_example_taus):
    src, taus, target = random_case(0, (2, 16), num_src, num_targets, 3.0, 0.0, per_example_taus)
    assert_matches_rlax(src, taus, target, kappa)


@pytest.mark.parametrize("kappa", [0.0, 1.0])
@pytest.mark.parametrize("scale", [4.0, 40.0])
def test_cartpole_scale_returns(kappa, scale):
    # Returns near 100 (CartPole-v1), narrow or wide: the sorted form's prefix sums of t and t^2
    # are centred on the targets' mean, so float32 cancellation stays small.
    src, taus, target = random_case(1, (8,), 51, 51, scale=scale, offset=95.0)
    assert_matches_rlax(src, taus, target, kappa)


@pytest.mark.parametrize("kappa", KAPPAS)
def test_ties_and_region_boundaries(kappa):
    # Duplicated targets, predictions equal to targets, and targets exactly 0.5, 1 and 2 away
    # (every kappa here), all exact in binary floating point.
    target = jnp.array([[0.0, 0.0, 1.0, 1.0, -1.0, 2.0, 3.0, 0.5]])
    src = jnp.array([[0.0, 1.0, -1.0, 2.0, 0.5, 1.5, 3.0]])
    taus = jnp.array([[0.1, 0.25, 0.5, 0.75, 0.9, 0.3, 0.6]])
    assert_matches_rlax(src, taus, target, kappa)
    assert_matches_rlax(src, taus, jnp.zeros_like(target), kappa)  # all targets tied


def test_under_jit_and_vmap():
    # Seeds [3] x examples [10], per-example taus; vmapped over seeds, batched inside.
    src, taus, target = random_case(2, (3, 10), 8, 13, per_example_taus=True)

    def per_seed(s, tau, t):
        return jax.value_and_grad(lambda s: jnp.sum(quantile_huber_loss(s, tau, t, 1.0)))(s)

    loss, grad = jax.jit(jax.vmap(per_seed))(src, taus, target)
    want_loss, want_grad, _ = value_and_grads(rlax_loss, src, taus, target, 1.0)
    np.testing.assert_allclose(loss, jnp.sum(want_loss, axis=-1), **VALUE_TOL)
    np.testing.assert_allclose(grad, want_grad, **GRAD_TOL)
    # One example at a time (taus [K] shared), vmapped twice.
    one = jax.vmap(jax.vmap(lambda s, t: quantile_huber_loss(s, taus[0, 0], t, 0.5)))
    want = jax.jit(rlax_loss, static_argnums=3)(src, taus[0, 0], target, 0.5)
    np.testing.assert_allclose(jax.jit(one)(src, target), want, **VALUE_TOL)


def test_taus_get_no_gradient():
    src, taus, target = random_case(3, (4,), 5, 7, per_example_taus=True)
    grad = jax.jit(jax.grad(lambda tau: jnp.sum(quantile_huber_loss(src, tau, target, 1.0))))(taus)
    assert grad.shape == taus.shape and not np.any(grad)


def test_choice_of_form():
    assert not _prefers_sorted(51, 51)
    assert not _prefers_sorted(8, 8)
    assert not _prefers_sorted(8, 4096)  # few predictions: the pairs are cheaper than a sort
    assert _prefers_sorted(1024, 1024)
    assert _prefers_sorted(4096, 4096)


@pytest.mark.parametrize("size", [1, 5, 8, 51])
def test_bitonic_sort(size):
    x = jnp.asarray(np.round(4.0 * np.random.default_rng(size).standard_normal((3, size))))  # ties
    out = jax.jit(_bitonic_sort)(x)
    np.testing.assert_array_equal(out[:, :size], jnp.sort(x, axis=-1))
    assert out.shape[-1] >= size and np.all(np.isinf(out[:, size:]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="kappa=-1"):
        quantile_huber_loss(jnp.zeros(2), jnp.array([0.25, 0.75]), jnp.zeros(3), -1.0)
    with pytest.raises(ValueError, match="method"):
        quantile_huber_loss(jnp.zeros(2), jnp.array([0.25, 0.75]), jnp.zeros(3), 1.0, "bogus")


@pytest.mark.parametrize("kappa", [0.0, 1.0])
def test_qrdqn_fast_loss_equals_rlax_quantile_q_learning(kappa):
    rng = np.random.default_rng(5)
    batch, actions, num_quantiles = 32, 3, 51
    q_tm1 = jnp.asarray(
        10.0 + 3.0 * rng.standard_normal((batch, actions, num_quantiles)), jnp.float32
    )
    q_t = jnp.asarray(
        10.0 + 3.0 * rng.standard_normal((batch, actions, num_quantiles)), jnp.float32
    )
    a_tm1 = jnp.asarray(rng.integers(0, actions, batch), jnp.int32)
    r_t = jnp.asarray(rng.uniform(0.0, 2.0, batch), jnp.float32)
    discount_t = (jnp.arange(batch) % 7 != 0).astype(jnp.float32)

    def loss(impl, q):
        config = agents.make_config("qrdqn", huber_kappa=kappa, loss=impl)
        return quantile_loss(config, q, a_tm1, r_t, discount_t, q_t)

    for fn in (loss, jax.grad(loss, argnums=1)):
        np.testing.assert_allclose(fn("fast", q_tm1), fn("rlax", q_tm1), rtol=1e-5, atol=1e-6)
