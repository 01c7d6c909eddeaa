"""agents/cpu_kernels.py: every CPU kernel equals its reference form in value and gradient, and
`select` chooses by the platform a program is lowered for."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import cpu_kernels, imputation, iqn, losses, qrdqn
from benchmarks.cli import xla_flags


def normal(seed, *shape, scale=1.0, offset=0.0):
    # numpy, not jax.random: eager jax.random compiles for every new shape.
    return jnp.asarray(offset + scale * np.random.default_rng(seed).standard_normal(shape), "f4")


def uniform(seed, *shape):
    return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), jnp.float32)


def c51_case():
    batch, actions, atoms = 32, 3, 51
    logits_tm1 = normal(0, batch, actions, atoms)
    logits_t = normal(1, batch, actions, atoms, scale=3.0)
    a_tm1 = jnp.asarray(np.arange(batch) % actions)
    r_t = jnp.linspace(-5.0, 15.0, batch)
    discount_t = 0.97 * (jnp.arange(batch) % 5 != 0)
    support = jnp.linspace(-10.0, 40.0, atoms)
    reference = jax.vmap(losses.categorical_q_learning, in_axes=(0, 0, 0, 0, 0, None))
    args = (logits_tm1, a_tm1, r_t, discount_t, logits_t, support)
    return reference, cpu_kernels.categorical_q_learning, args, (0, 4)


def projection_case():
    support = jnp.linspace(-2.0, 3.0, 11)
    locs = normal(2, 64, 7, scale=3.0).at[:, 0].set(support[4]).at[:, 1].set(-2.0)
    locs = locs.at[:, 2].set(3.0)
    probs = jax.nn.softmax(normal(3, 64, 7), axis=-1)
    reference = jax.vmap(losses.categorical_projection, in_axes=(0, 0, None))
    # The projected target is held fixed: only its probabilities' gradient is defined alike.
    return reference, cpu_kernels.project_onto_support, (locs, probs, support), (1,)


def quantile_case(kappa, num_src, num_targets, offset=0.0, scale=3.0):
    def case():
        src = normal(4, 16, num_src, scale=scale, offset=offset)
        target = normal(5, 16, num_targets, scale=scale, offset=offset)
        # Ties: a target equal to a prediction, targets exactly kappa away.
        target = target.at[0, 0].set(src[0, 0]).at[0, 1].set(src[0, 1] + kappa)
        taus = uniform(6, 16, num_src)
        reference = jax.vmap(functools.partial(losses.quantile_huber_loss, kappa=kappa))
        fast = functools.partial(cpu_kernels.quantile_huber_loss, kappa=kappa)
        return reference, fast, (src, taus, target), (0, 1, 2)

    return case


def cosine_case():
    taus = uniform(7, 6, 5)
    kernel, bias = normal(8, 16, 8), normal(9, 8, scale=0.1)
    return iqn.cosine_dense, cpu_kernels.cosine_dense, (taus, kernel, bias), (0, 1, 2)


def solve_case():
    jacobian = uniform(10, 32, 11, 11)
    matrix = jacobian @ jnp.swapaxes(jacobian, 1, 2) + 0.1 * jnp.eye(11)
    vector = normal(11, 32, 11)
    return (
        jax.vmap(imputation._cholesky_solve),
        jax.vmap(cpu_kernels.solve_positive_definite),
        (matrix, vector),
        # Imputation gives its inputs no gradient; wrt the matrix only the symmetric part of
        # the gradient is defined alike (one form reads the lower triangle).
        (1,),
    )


CASES = {
    "c51": c51_case,
    "c51 projection": projection_case,
    **{
        f"quantile huber kappa={k} K={n} M={m}": quantile_case(k, n, m)
        for k in (0.0, 1.0, 2.0)
        for n, m in ((51, 51), (8, 8), (5, 13))
    },
    "quantile huber at CartPole's returns": quantile_case(1.0, 51, 51, offset=95.0, scale=40.0),
    "iqn cosine embedding": cosine_case,
    "edrl imputation solve": solve_case,
}


@pytest.mark.parametrize("name", list(CASES))
def test_cpu_kernel_equals_reference_in_value_and_gradient(name):
    reference, fast, args, differentiable = CASES[name]()
    weights = normal(12, *jax.eval_shape(reference, *args).shape)

    def weighted(fn):  # a random-signed weighted sum of the outputs
        return lambda *a: jnp.sum(weights * fn(*a))

    want = jax.jit(reference)(*args)
    got = jax.jit(fast)(*args)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * (1 + np.abs(want).max()))
    want_grads = jax.jit(jax.grad(weighted(reference), argnums=differentiable))(*args)
    got_grads = jax.jit(jax.grad(weighted(fast), argnums=differentiable))(*args)
    for i, g, w in zip(differentiable, got_grads, want_grads):
        scale = 1 + np.abs(w).max()
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale, err_msg=f"argument {i}")


def test_cpu_cosine_matches_float64_cosine_everywhere():
    # The range-reduced polynomial against numpy's float64 cos over the whole tau range at the
    # default 64 features (arguments up to 63 pi), including the fold points.
    taus = np.concatenate([np.linspace(0.0, 1.0, 4001), [1 / 3, 0.25, 0.75, 1 - 1e-7]])
    taus = taus.astype(np.float32)
    expected = np.cos(np.pi * np.arange(64) * taus.astype(np.float64)[:, None])
    embedding = jax.jit(cpu_kernels.cosine_embedding, static_argnums=1)(jnp.asarray(taus), 64)
    assert embedding.shape == (taus.size, 64)
    # float32 rounding of the argument alone allows ~1e-5 at 63 pi; jnp.cos does worse.
    plain = jnp.cos(jnp.pi * jnp.arange(64) * jnp.asarray(taus)[:, None])
    error, plain_error = (np.abs(np.asarray(e) - expected).max() for e in (embedding, plain))
    assert error < 1e-5 and error <= plain_error, (error, plain_error)


def count_ops(fn, args, platform):
    text = jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()
    return text.count("stablehlo.scatter")


@pytest.mark.parametrize("kernels, cpu_scatters", [("auto", True), ("reference", False)])
def test_select_chooses_by_the_platform_lowered_for(kernels, cpu_scatters):
    # The CPU projection scatters, the reference does not: "auto" lowers the CPU form for the
    # CPU only, and a GPU or TPU program carries the reference form whichever host traced it.
    reference, fast, args, _ = projection_case()
    fn = cpu_kernels.select(kernels, reference, fast)
    assert (count_ops(fn, args, "cpu") > 0) == cpu_scatters
    assert count_ops(fn, args, "cuda") == 0 and count_ops(fn, args, "tpu") == 0
    assert count_ops(cpu_kernels.select("cpu", reference, fast), args, "cuda") > 0


def test_select_refuses_an_unknown_form():
    with pytest.raises(ValueError, match="kernels='gpu' must be one of"):
        cpu_kernels.select("gpu", None, None)


def test_qrdqn_loss_in_both_forms_equals_rlax():
    import rlax

    batch, actions, num_quantiles = 32, 3, 51
    q_tm1 = normal(13, batch, actions, num_quantiles, scale=3.0, offset=10.0)
    q_t = normal(14, batch, actions, num_quantiles, scale=3.0, offset=10.0)
    a_tm1 = jnp.asarray(np.arange(batch) % actions)
    r_t = jnp.linspace(0.0, 2.0, batch)
    discount_t = (jnp.arange(batch) % 7 != 0).astype(jnp.float32)
    taus = (2.0 * jnp.arange(1, num_quantiles + 1) - 1.0) / (2.0 * num_quantiles)

    def theirs(q):
        def one(q_tm1, a, r, d, q_t):
            return rlax.quantile_q_learning(q_tm1.T, taus, a, r, 0.99 * d, q_t.T, q_t.T, 1.0)

        return jnp.mean(jax.vmap(one)(q, a_tm1, r_t, discount_t, q_t))

    for kernels in ("reference", "cpu"):
        config = qrdqn.Config(kernels=kernels, gamma=0.99)

        def ours(q, config=config):
            return qrdqn.quantile_loss(config, q, a_tm1, r_t, discount_t, q_t)

        for fn in (lambda f: f, jax.grad):
            np.testing.assert_allclose(fn(ours)(q_tm1), fn(theirs)(q_tm1), rtol=1e-5, atol=1e-6)


def test_reference_forms_train_on_two_cpu_devices():
    # The reference forms must run on the CPU too (`--set kernels=reference`), sharded over two
    # host devices: EDRL's solve by LAPACK inside such a program hung it. A subprocess with a
    # timeout, so a hang fails the test instead of the run.
    code = """
import agents, envs
from benchmarks.runner import run_seeds
from benchmarks.train import TrainConfig
env, params = envs.make("CartPole-v1")
config = TrainConfig(total_steps=600, num_envs=10, num_evals=1, eval_episodes=1)
for name in ("c51", "edrl"):
    agent = agents.make(name, kernels="reference", learning_starts=100, batch_size=16)
    results = run_seeds(agent, env, params, config, [0, 1, 2])
    assert results.num_devices == 2 and results.train_loss.size, name
"""
    env = {**os.environ, "XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=2")}
    command = [sys.executable, "-c", code]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
