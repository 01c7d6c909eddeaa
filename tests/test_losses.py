"""agents/losses.py: hand-computed values, and equal to rlax in value and gradient."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from agents import losses

KAPPAS = [0.0, 0.5, 1.0, 2.0]
TOL = {"rtol": 1e-5, "atol": 1e-5}


def random_arrays(seed, *shapes, scale=3.0):
    # numpy, not jax.random: eager jax.random compiles for every new shape.
    rng = np.random.default_rng(seed)
    return [jnp.asarray(scale * rng.standard_normal(shape), jnp.float32) for shape in shapes]


class TestCategorical:
    def test_projection_hand_computed(self):
        # Support {0, 1, 2}: 0.5 splits evenly onto 0 and 1; 1.75 puts 1/4 on 1 and 3/4 on 2;
        # -3 is clipped to 0; 2 sits on 2.
        locs = jnp.array([0.5, 1.75, -3.0, 2.0])
        probs = jnp.array([0.4, 0.4, 0.1, 0.1])
        got = losses.categorical_projection(locs, probs, jnp.array([0.0, 1.0, 2.0]))
        np.testing.assert_allclose(got, [0.2 + 0.1, 0.2 + 0.1, 0.3 + 0.1], rtol=1e-6)

    def test_projection_equals_rlax(self):
        # Atoms inside, outside, on support points and at both ends of an 11-point support.
        support = jnp.linspace(-2.0, 3.0, 11)
        (locs,) = random_arrays(3, (64, 7))
        locs = locs.at[:, 0].set(support[4]).at[:, 1].set(-2.0).at[:, 2].set(3.0)
        probs = jax.nn.softmax(random_arrays(4, (64, 7))[0], axis=-1)
        project = jax.vmap(losses.categorical_projection, in_axes=(0, 0, None))
        theirs = jax.vmap(rlax.categorical_l2_project, in_axes=(0, 0, None))
        np.testing.assert_allclose(
            project(locs, probs, support), theirs(locs, probs, support), atol=1e-6
        )

    def test_q_learning_hand_computed(self):
        # Support {0, 1}, discount 0.5, r 0.5. Next action 0 has probs (.5, .5), mean .5;
        # action 1 (.75, .25), mean .25: greedy 0. Its atoms shift to {0.5, 1.0}; 0.5 splits
        # evenly: target (0.25, 0.75). Online probs (.5, .5): cross-entropy ln 2.
        logits_t = jnp.array([[0.0, 0.0], [jnp.log(3.0), 0.0]])
        loss = losses.categorical_q_learning(
            jnp.zeros((2, 2)), jnp.asarray(1), 0.5, 0.5, logits_t, jnp.array([0.0, 1.0])
        )
        np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-6)

    def test_q_learning_equals_rlax_in_value_and_gradient(self):
        batch, actions, atoms = 32, 3, 51
        logits_tm1, logits_t = random_arrays(5, (batch, actions, atoms), (batch, actions, atoms))
        a_tm1 = jnp.asarray(np.arange(batch) % actions)
        r_t = jnp.linspace(-5.0, 15.0, batch)
        discount_t = 0.97 * (jnp.arange(batch) % 5 != 0)
        support = jnp.linspace(-10.0, 40.0, atoms)
        args = (a_tm1, r_t, discount_t, logits_t)

        def ours(logits, a, r, d, lt):
            per_example = jax.vmap(losses.categorical_q_learning, in_axes=(0, 0, 0, 0, 0, None))
            return jnp.sum(per_example(logits, a, r, d, lt, support))

        def theirs(logits, a, r, d, lt):
            per_example = jax.vmap(rlax.categorical_q_learning, in_axes=(None, 0, 0, 0, 0, None, 0))
            return jnp.sum(per_example(support, logits, a, r, d, support, lt))

        for fn in (lambda f: f, jax.grad):
            np.testing.assert_allclose(
                fn(ours)(logits_tm1, *args), fn(theirs)(logits_tm1, *args), **TOL
            )


class TestQuantileHuber:
    def test_hand_computed(self):
        # s = 0 at tau = 0.25 against targets (-2, 0.5, 3), kappa = 1:
        #   t = -2:  below by more than kappa, weight 0.75, huber 0.5 + (2 - 1) = 1.5 -> 1.125
        #   t = 0.5: above within kappa,       weight 0.25, huber 0.5 * 0.5^2 = 0.125 -> 0.03125
        #   t = 3:   above by more than kappa, weight 0.25, huber 0.5 + (3 - 1) = 2.5 -> 0.625
        # loss = 1.78125 / 3 = 0.59375; dL/ds = (0.75 - 0.25 * 0.5 - 0.25) / 3 = 0.125.
        s, tau, t = jnp.array([0.0]), jnp.array([0.25]), jnp.array([-2.0, 0.5, 3.0])
        loss, grad = jax.value_and_grad(losses.quantile_huber_loss)(s, tau, t, 1.0)
        np.testing.assert_allclose(loss, 0.59375, rtol=1e-6)
        np.testing.assert_allclose(grad, [0.125], rtol=1e-6)

    @pytest.mark.parametrize("kappa", KAPPAS)
    def test_equals_rlax_in_value_and_gradient(self, kappa):
        # Random cases plus ties: duplicated targets, predictions equal to targets, targets
        # exactly 0.5, 1 and 2 away (every kappa here).
        src, target = random_arrays(0, (16, 13), (16, 9))
        taus = jnp.asarray(np.random.default_rng(1).uniform(size=(16, 13)), jnp.float32)
        src = src.at[0, :7].set(jnp.array([0.0, 1.0, -1.0, 2.0, 0.5, 1.5, 3.0]))
        target = target.at[0, :8].set(jnp.array([0.0, 0.0, 1.0, 1.0, -1.0, 2.0, 3.0, 0.5]))
        target = target.at[1].set(0.0)
        ours = jax.vmap(functools.partial(losses.quantile_huber_loss, kappa=kappa))
        theirs = jax.vmap(functools.partial(rlax.quantile_regression_loss, huber_param=kappa))
        for fn in (lambda f: f, lambda f: jax.grad(lambda *a: jnp.sum(f(*a)))):
            np.testing.assert_allclose(
                fn(ours)(src, taus, target), fn(theirs)(src, taus, target), **TOL
            )

    def test_targets_and_taus_get_no_gradient(self):
        src, taus, target = random_arrays(2, (5,), (5,), (7,))
        grads = jax.grad(losses.quantile_huber_loss, argnums=(1, 2))(src, taus, target, 1.0)
        assert not any(np.any(g) for g in grads)

    def test_traced_kappa(self):
        src, taus, target = random_arrays(3, (5,), (5,), (7,))
        for kappa in (0.0, 1.0):
            traced = jax.jit(losses.quantile_huber_loss)(src, taus, target, kappa)
            np.testing.assert_allclose(
                traced, rlax.quantile_regression_loss(src, taus, target, kappa), rtol=1e-6
            )


class TestExpectile:
    def test_hand_computed(self):
        # e = (0, 1) at taus (0.25, 0.75); targets (-1, 2).
        # k=0: z=-1 < 0 -> (1-0.25)*1 = 0.75; z=2 -> 0.25*4 = 1.0; mean 0.875.
        # k=1: z=-1 < 1 -> 0.25*4 = 1.0; z=2 -> 0.75*1 = 0.75; mean 0.875. Sum 1.75.
        loss = losses.expectile_loss(
            jnp.array([0.0, 1.0]), jnp.array([0.25, 0.75]), jnp.array([-1.0, 2.0])
        )
        np.testing.assert_allclose(loss, 1.75, rtol=1e-6)

    def test_equals_rlax_in_value_and_gradient(self):
        e, t = random_arrays(6, (11,), (17,))
        taus = (2.0 * jnp.arange(1, 12) - 1.0) / 22.0

        def theirs(e):
            grid = jnp.broadcast_to(e[:, None], (11, 17))
            return jnp.sum(
                jnp.mean(
                    rlax.expectile_loss(grid, jnp.broadcast_to(t, grid.shape), taus[:, None]), 1
                )
            )

        for fn in (lambda f: f, jax.grad):
            np.testing.assert_allclose(
                fn(lambda e: losses.expectile_loss(e, taus, t))(e), fn(theirs)(e), **TOL
            )


def test_at_action_selects_and_its_gradient_is_one_hot():
    values = jnp.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(losses.at_action(values, jnp.asarray(1)), values[1])
    grad = jax.grad(lambda v: jnp.sum(losses.at_action(v, jnp.asarray(2))))(values)
    np.testing.assert_array_equal(grad, np.eye(3)[2][:, None] * np.ones(4))


def test_shapes_are_checked():
    with pytest.raises(AssertionError):
        losses.quantile_huber_loss(jnp.zeros(3), jnp.zeros(4), jnp.zeros(5), 1.0)
    with pytest.raises(AssertionError):
        losses.categorical_projection(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.zeros(5))
    with pytest.raises(AssertionError):
        losses.expectile_loss(jnp.zeros((2, 3)), jnp.zeros(3), jnp.zeros(5))
