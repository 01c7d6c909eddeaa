"""A fixed reference program timed beside training, so throughput compares across machines.

A baseline committed from one machine gates CI runners of other speeds: each timed segment of
training is followed by the probe, run for a tenth of the segment's time, and `compare` tests
training's rate divided by the probe's rate measured next to it. The probe is a small MLP's gradient steps, vmapped and
sharded like the seeds, so it uses the devices as training does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

WIDTH = 128  # hidden width and batch size of the probe MLP
STEPS = 4  # gradient steps per probe call
COPIES_PER_DEVICE = 2


def _gradient_steps(weights: jnp.ndarray, inputs: jnp.ndarray) -> jnp.ndarray:
    """STEPS of SGD on a two-layer tanh MLP fitting zeros: matmuls and elementwise work."""

    def loss(w):
        hidden = jnp.tanh(inputs @ w[0])
        return jnp.mean(jnp.square(hidden @ w[1]))

    def step(_, w):
        return w - 1e-3 * jax.grad(loss)(w)

    return jax.lax.fori_loop(0, STEPS, step, weights)


def make_probe(sharding: NamedSharding) -> Callable[[], float]:
    """A compiled probe over the devices of `sharding`; calling it returns one call's seconds."""
    copies = COPIES_PER_DEVICE * sharding.mesh.size
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    weights = jax.random.normal(keys[0], (copies, 2, WIDTH, WIDTH)) / jnp.sqrt(WIDTH)
    inputs = jax.random.normal(keys[1], (copies, WIDTH, WIDTH))
    weights, inputs = jax.device_put((weights, inputs), sharding)
    run = jax.jit(jax.vmap(_gradient_steps), in_shardings=sharding, out_shardings=sharding)
    run = run.lower(weights, inputs).compile()
    jax.block_until_ready(run(weights, inputs))

    def timed(min_seconds: float = 0.0) -> float:
        """Seconds per call, averaged over calls repeated for at least `min_seconds`: a probe
        as long as a fair share of the segment it follows sees the same contention for the
        machine, where one short call may slip between another process's time slices."""
        calls, start = 0, time.perf_counter()
        while True:
            jax.block_until_ready(run(weights, inputs))
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                return elapsed / calls

    return timed
