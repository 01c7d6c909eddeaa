"""What the accelerator programs promise, read off their StableHLO: each replay agent's jitted,
vmapped update lowered for a GPU (cuda) and a TPU, from this CPU-only host, holds no
scatter-add (atomics on a GPU: results would differ run to run), no scatter that may write a
slot twice (whose winner is undefined), no sort and no while loop (a serial chain of small
kernels). The one scatter kind left is the replay insert's window write, a dynamic update
slice that vmap turns into a scatter of one window with unique indices. The population model of dopamine neurons is
sequential by design (one trial after another, an iterative decoding): its promise is
determinism alone, no scatter-add."""

import jax
import jax.numpy as jnp
import pytest

import agents
from agents.base import EnvSpec, Transition

SEEDS, NUM_ENVS = 4, 10  # the default train_every is 10: one gradient step per update
REPLAY_AGENTS = [name for name in agents.names() if name != "population_td"]
STORED_COLUMNS = ("frames", "action", "reward", "discount")


def lowered_update(name, platform):
    agent = agents.make(name)
    spec = EnvSpec((4,), 2, jnp.float32, num_envs=NUM_ENVS, time_limit=500)
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    state = jax.eval_shape(jax.vmap(lambda key: agent.init(key, spec)), keys)
    obs = (
        jnp.zeros((SEEDS, NUM_ENVS, 4))
        if name != "population_td"
        else jnp.zeros((SEEDS, NUM_ENVS), jnp.int32)
    )
    transition = Transition(
        obs=obs,
        action=jnp.zeros((SEEDS, NUM_ENVS), jnp.int32),
        reward=jnp.zeros((SEEDS, NUM_ENVS)),
        discount=jnp.ones((SEEDS, NUM_ENVS)),
        next_obs=obs,
    )
    update = jax.vmap(agent.update, in_axes=(0, 0, 0, None))
    traced = jax.jit(update).trace(state, transition, keys, jnp.asarray(20_000))
    return traced.lower(lowering_platforms=(platform,)).as_text()


def op_counts(text):
    # Ops as they are printed (`#stablehlo.scatter<...>` is a scatter's attribute, not an op).
    ops = {
        "while": "stablehlo.while(",
        "scatter": '"stablehlo.scatter"',
        "sort": '"stablehlo.sort"',
    }
    counts = {op: text.count(printed) for op, printed in ops.items()}
    # A scatter's attributes and combiner follow it; an assignment returns the update as is.
    scatters = [s.split("stablehlo.return")[0] for s in text.split('"stablehlo.scatter"')[1:]]
    counts["scatter-add"] = sum("stablehlo.add" in s for s in scatters)
    counts["scatter-not-unique"] = sum("unique_indices = true" not in s for s in scatters)
    return counts


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("name", REPLAY_AGENTS)
def test_accelerator_update_is_deterministic_and_loop_free(name, platform):
    counts = op_counts(lowered_update(name, platform))
    assert counts["while"] == counts["sort"] == 0, counts
    assert counts["scatter-add"] == counts["scatter-not-unique"] == 0, counts
    # The replay insert: one window per stored column (frames, action, reward, discount), two
    # where a batch wraps past the end.
    assert counts["scatter"] == 3 * len(STORED_COLUMNS), counts


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_population_update_has_no_scatter_add(platform):
    assert op_counts(lowered_update("population_td", platform))["scatter-add"] == 0


def test_scatter_adds_are_told_from_assignments():
    def add(x, i):
        return x.at[i].add(1.0)

    def assign(x, i):
        return x.at[i].set(1.0)

    args = (jnp.zeros(8), jnp.array([1, 2]))
    for fn, adds in ((add, 1), (assign, 0)):
        counts = op_counts(jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text())
        assert counts["scatter"] == 1 and counts["scatter-add"] == adds, counts
        assert counts["scatter-not-unique"] == 1  # indices only known at run time


def test_the_cpu_program_carries_the_cpu_kernels():
    # The same update lowered for the CPU takes C51's scatter-add projection ("auto").
    assert op_counts(lowered_update("c51", "cpu"))["scatter"] > 0
