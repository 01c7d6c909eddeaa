"""agents/replay.py, the buffer that stores each observation once in the env's dtype, against
the obs/next_obs buffer it replaced (kept here as the reference): driven by the same fake vectorised env, with
terminations and time-limit truncations, it must hold and sample the same transitions (the next
obs of a terminated one aside: no loss reads it)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.base import Transition
from agents.replay import (
    _empty,
    boundary_slots_per_env,
    replay_add,
    replay_bytes,
    replay_get,
    replay_init,
    replay_nbytes,
    replay_sample,
)

SAMPLES = 64


# --- the reference: the obs/next_obs buffer agents/replay.py replaced --------------------------


class ReferenceReplay(NamedTuple):
    """A uniform circular replay buffer of transitions (arrays with a leading capacity axis)."""

    storage: Transition
    size: jnp.ndarray  # number of valid slots


def reference_replay_init(capacity: int, example: Transition) -> ReferenceReplay:
    """Empty buffer shaped like one transition `example` (no batch axis)."""
    storage = jax.tree.map(lambda x: jnp.zeros((capacity, *x.shape), x.dtype), example)
    return ReferenceReplay(storage, jnp.zeros((), jnp.int32))


def reference_replay_add(
    replay: ReferenceReplay, batch: Transition, written: jnp.ndarray
) -> ReferenceReplay:
    """Write a batch [B, ...] of transitions at slots written .. written + B - 1 (mod capacity),
    overwriting the oldest: the plain indexed write (B <= capacity, so slots are unique)."""
    capacity = replay.storage.reward.shape[0]
    batch_size = batch.reward.shape[0]
    slots = (written + jnp.arange(batch_size)) % capacity
    storage = jax.tree.map(lambda s, x: s.at[slots].set(x), replay.storage, batch)
    return ReferenceReplay(storage, jnp.minimum(replay.size + batch_size, capacity))


def reference_replay_sample(replay: ReferenceReplay, key: jax.Array, batch_size: int) -> Transition:
    """Uniformly sample `batch_size` stored transitions (with replacement)."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(replay.size, 1))
    return jax.tree.map(lambda s: s[idx], replay.storage)


class FakeEnvs:
    """num_envs gymnax-like envs with integer-valued observations: each step terminates with
    probability p_terminate and truncates at the time limit; an ended env auto-resets, to an
    observation equal to its final one now and then. Transitions are made as train_iteration
    makes them: next_obs is the final observation, discount = 1 - terminated."""

    def __init__(self, seed, num_envs, time_limit, p_terminate, obs_shape=(2,), dtype=np.int32):
        self.rng = np.random.default_rng(seed)
        self.time_limit, self.p_terminate = time_limit, p_terminate
        self.shape, self.dtype = (num_envs, *obs_shape), dtype
        self.obs = self._draw()
        self.time = np.zeros(num_envs, np.int64)
        self.truncations = 0  # episodes cut by the time limit (not terminated)

    def _draw(self):
        if self.dtype == np.bool_:
            return self.rng.random(self.shape) < 0.5
        return self.rng.integers(-50, 1000, self.shape)

    def stagger(self, offsets):
        """Start each env's episode clock at its offset (truncations at different steps)."""
        self.time = np.asarray(offsets, np.int64)
        return self

    def step(self) -> Transition:
        num_envs = self.shape[0]
        self.time += 1
        terminated = self.rng.random(num_envs) < self.p_terminate
        truncated = np.zeros(num_envs, bool)
        if self.time_limit is not None:
            truncated = self.time >= self.time_limit
        final, reset = self._draw(), self._draw()
        reset = np.where(self._rows(self.rng.random(num_envs) < 0.1), final, reset)
        done = terminated | truncated
        self.truncations += int(np.sum(truncated & ~terminated))
        transition = Transition(
            obs=jnp.asarray(self.obs, jnp.float32),
            action=jnp.asarray(self.rng.integers(0, 4, num_envs), jnp.int32),
            reward=jnp.asarray(self.rng.integers(-3, 4, num_envs), jnp.float32),
            discount=jnp.asarray(1.0 - terminated, jnp.float32),
            next_obs=jnp.asarray(final, jnp.float32),
        )
        self.obs = np.where(self._rows(done), reset, final)
        self.time = np.where(done, 0, self.time)
        return transition

    def _rows(self, mask):
        return mask.reshape(mask.shape + (1,) * (len(self.shape) - 1))


def reference_init(capacity, obs_shape):
    """The layout it replaced: full float32 obs and next_obs rows."""
    obs = jnp.zeros(obs_shape, jnp.float32)
    zero = jnp.zeros((), jnp.float32)
    example = Transition(obs, jnp.zeros((), jnp.int32), zero, zero, obs)
    return reference_replay_init(capacity, example)


@jax.jit
def advance(ours, reference, batch, written, key):
    """Both buffers after the add, every slot of each, and a sample of each with one key."""
    ours = replay_add(ours, batch, written)
    reference = reference_replay_add(reference, batch, written)
    slots = jnp.arange(reference.storage.reward.shape[0])
    views = (
        replay_get(ours, slots),
        reference.storage,
        replay_sample(ours, key, SAMPLES),
        reference_replay_sample(reference, key, SAMPLES),
    )
    return ours, reference, views


def assert_same(got: Transition, want: Transition, rows: int):
    """Every field equal over the first `rows`; next_obs only where it bootstraps."""
    got, want = (jax.tree.map(lambda x: np.asarray(x[:rows]), t) for t in (got, want))
    assert got.obs.dtype == got.next_obs.dtype == np.float32
    for field in ("obs", "action", "reward", "discount"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
    bootstraps = want.discount != 0
    np.testing.assert_array_equal(got.next_obs[bootstraps], want.next_obs[bootstraps])
    assert np.all(np.isfinite(got.next_obs))


def drive(ours, envs, capacity, num_adds, seed=0):
    """Add num_adds batches to `ours` and to the reference, comparing after every add."""
    num_envs = envs.shape[0]
    reference = reference_init(capacity, envs.shape[1:])
    key = jax.random.PRNGKey(seed)
    for i in range(num_adds):
        batch = envs.step()
        key, sample_key = jax.random.split(key)
        ours, reference, views = advance(ours, reference, batch, i * num_envs, sample_key)
        got_all, want_all, got_sample, want_sample = views
        size = int(reference.size)
        assert int(ours.size) == size
        assert_same(got_all, want_all, size)
        assert_same(got_sample, want_sample, SAMPLES)
    return ours


# (num_envs, capacity, time_limit): multiples of num_envs and not (wrapping windows), a buffer
# under two batches, one of exactly one batch, and envs without a time limit.
CASES = [
    (1, 7, 3),
    (3, 12, 4),
    (3, 13, 4),
    (4, 16, 3),
    (4, 18, 5),
    (4, 6, 2),
    (3, 3, 2),
    (4, 10, None),
]


@pytest.mark.parametrize("num_envs, capacity, time_limit", CASES)
def test_matches_the_obs_next_obs_replay(num_envs, capacity, time_limit):
    envs = FakeEnvs(num_envs * capacity, num_envs, time_limit, p_terminate=0.15)
    ours = replay_init(capacity, (2,), jnp.int32, num_envs, time_limit)
    num_adds = 8 * capacity // num_envs + 5  # wraps the buffer about eight times
    ours = drive(ours, envs, capacity, num_adds)
    assert ours.frames.dtype == jnp.int32
    assert (envs.truncations > 0) == (time_limit is not None)


def test_bool_observations_are_stored_as_bool_and_come_back_exactly():
    envs = FakeEnvs(1, 3, 4, p_terminate=0.1, obs_shape=(3, 2), dtype=np.bool_)
    ours = replay_init(10, (3, 2), jnp.bool_, 3, 4)
    assert ours.frames.dtype == ours.pending.dtype == ours.boundary.dtype == jnp.bool_
    drive(ours, envs, 10, 40)


@pytest.mark.parametrize("capacity", [24, 28])
def test_truncations_at_the_fastest_rate_keep_every_boundary_frame(capacity):
    # Every env truncates every time_limit steps, the envs out of phase: the bound's worst case.
    num_envs, time_limit = 3, 4
    fresh = lambda: FakeEnvs(5, num_envs, time_limit, 0.0).stagger([0, 1, 3])
    slots = boundary_slots_per_env(capacity, num_envs, time_limit)
    ours = replay_init(capacity, (2,), jnp.int32, num_envs, time_limit)
    assert ours.boundary.shape[:2] == (num_envs, slots)
    drive(ours, fresh(), capacity, 60)
    # One boundary frame fewer per env loses one: the bound is not slack.
    smaller = _empty(capacity, (2,), jnp.int32, num_envs, slots - 1)
    with pytest.raises(AssertionError):
        drive(smaller, fresh(), capacity, 60)


def test_the_ring_is_small_for_cartpole():
    # 1000 steps per env in the buffer, an episode is cut after 500 at the earliest.
    assert boundary_slots_per_env(10_000, 10, 500) == 2
    ring = replay_init(10_000, (4,), jnp.float32, 10, 500).boundary
    assert ring.shape == (10, 2, 4)  # 20 frames, where 10 * (ceil(10_000 / 5000) + 1) = 30
    assert boundary_slots_per_env(10_000, 10, None) == 1
    assert boundary_slots_per_env(100_000, 10, 1000) == 10
    with pytest.raises(ValueError, match="num_envs=5"):
        replay_init(4, (4,), jnp.float32, 5, 500)


SEEDS = 3


def vmapped_add():
    return jax.jit(jax.vmap(replay_add, in_axes=(0, 0, None)))


def test_vmapped_over_seeds_equals_each_seed_alone():
    num_envs, capacity, time_limit = 3, 13, 4
    envs = [FakeEnvs(seed, num_envs, time_limit, 0.15) for seed in range(SEEDS)]
    one = replay_init(capacity, (2,), jnp.int32, num_envs, time_limit)
    alone = [one] * SEEDS
    together = jax.tree.map(lambda x: jnp.stack([x] * SEEDS), one)
    add, add_vmapped = jax.jit(replay_add), vmapped_add()
    sample = jax.jit(replay_sample, static_argnums=2)
    sample_vmapped = jax.jit(jax.vmap(replay_sample, in_axes=(0, 0, None)), static_argnums=2)
    for i in range(20):
        batches = [e.step() for e in envs]
        alone = [add(r, b, i * num_envs) for r, b in zip(alone, batches, strict=True)]
        stacked = jax.tree.map(lambda *x: jnp.stack(x), *batches)
        together = add_vmapped(together, stacked, i * num_envs)
        keys = jax.random.split(jax.random.PRNGKey(i), SEEDS)
        samples = sample_vmapped(together, keys, 16)
        for seed in range(SEEDS):
            pick = lambda x, s=seed: x[s]
            jax.tree.map(np.testing.assert_array_equal, jax.tree.map(pick, together), alone[seed])
            want = sample(alone[seed], keys[seed], 16)
            jax.tree.map(np.testing.assert_array_equal, jax.tree.map(pick, samples), want)


def op_counts(text):
    """As tests/test_lowering.py counts them: scatters, those that add, those whose indices may
    repeat, while loops and sorts."""
    scatters = [s.split("stablehlo.return")[0] for s in text.split('"stablehlo.scatter"')[1:]]
    return {
        "scatter": len(scatters),
        "scatter-add": sum("stablehlo.add" in s for s in scatters),
        "scatter-not-unique": sum("unique_indices = true" not in s for s in scatters),
        "while": text.count("stablehlo.while("),
        "sort": text.count('"stablehlo.sort"'),
    }


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_vmapped_add_lowers_to_unique_window_writes_only(platform):
    num_envs, capacity = 10, 10_005  # not a multiple: both the one- and two-window branches
    replay = jax.eval_shape(
        jax.vmap(lambda _: replay_init(capacity, (10, 10, 4), jnp.bool_, num_envs, 1000)),
        jnp.arange(SEEDS),
    )
    obs = jnp.zeros((SEEDS, num_envs, 10, 10, 4))
    zeros = jnp.zeros((SEEDS, num_envs))
    batch = Transition(obs, zeros.astype(jnp.int32), zeros, zeros, obs)
    traced = vmapped_add().trace(replay, batch, jnp.asarray(20_000))
    counts = op_counts(traced.lower(lowering_platforms=(platform,)).as_text())
    assert counts["while"] == counts["sort"] == 0, counts
    assert counts["scatter-add"] == counts["scatter-not-unique"] == 0, counts
    # One window per stored column (frames, action, reward, discount), two where a batch wraps;
    # the boundary ring is written by selects.
    assert counts["scatter"] == 3 * 4, counts
    sample = jax.jit(jax.vmap(replay_sample, in_axes=(0, 0, None)), static_argnums=2)
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    text = sample.trace(replay, keys, 128).lower(lowering_platforms=(platform,)).as_text()
    assert op_counts(text)["scatter"] == 0


def old_and_new_bytes(env_name, capacity, obs_dtype=None):
    """(today's bytes, the new buffer's bytes) for an env's observations, 10 envs."""
    gymnax = pytest.importorskip("gymnax")
    env, params = gymnax.make(env_name)
    space = env.observation_space(params)
    shape, dtype = tuple(space.shape), obs_dtype or space.dtype
    old = replay_nbytes(jax.eval_shape(lambda: reference_init(capacity, shape)))
    new = replay_bytes(capacity, shape, dtype, 10, int(params.max_steps_in_episode))
    print(f"{env_name} capacity {capacity} ({np.dtype(dtype).name}): {old:,} -> {new:,} bytes")
    return old, new


@pytest.mark.parametrize("capacity", [10_000, 100_000])
def test_cartpole_stores_one_float32_frame_per_slot(capacity):
    old, new = old_and_new_bytes("CartPole-v1", capacity)
    # Per slot 2 * 16 + 12 bytes -> 16 + 12 (action, reward, discount): 44 / 28.
    assert old / new >= 1.55, (old, new)


@pytest.mark.parametrize("capacity", [10_000, 100_000])
def test_minatar_breakout_stores_one_bool_frame_per_slot(capacity):
    gymnax = pytest.importorskip("gymnax")
    env, params = gymnax.make("Breakout-MinAtar")
    # gymnax declares a float32 box, but its frames are 0/1 planes: bool holds them exactly.
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    for step in range(30):
        obs, state, *_ = env.step(jax.random.PRNGKey(step), state, step % 3, params)
        assert set(np.unique(np.asarray(obs))) <= {0.0, 1.0}
    old, new = old_and_new_bytes("Breakout-MinAtar", capacity, jnp.bool_)
    # Per slot 2 * 1600 + 12 bytes -> 400 + 12: 3212 / 412 = 7.8.
    assert old / new >= 7.7, (old, new)
    old, new_float = old_and_new_bytes("Breakout-MinAtar", capacity)  # the declared float32
    assert old / new_float >= 1.95, (old, new_float)


@pytest.mark.parametrize("name", __import__("envs").registry.BINARY_OBSERVATIONS)
def test_binary_observation_envs_only_ever_show_0_or_1(name):
    import envs
    from benchmarks.train import VectorEnv, env_spec

    env, params = envs.make(name)
    assert env_spec(env, params).observation_dtype == jnp.bool_
    vector_env = VectorEnv(env, params)

    def step(carry, key):
        env_state, seen = carry
        action_key, step_key = jax.random.split(key)
        action = jax.random.randint(action_key, (8,), 0, env.action_space(params).n)
        obs, env_state, *_ = vector_env.step(step_key, env_state, action)
        binary = jnp.all((obs == 0.0) | (obs == 1.0))
        return (env_state, seen & binary), None

    obs, env_state = vector_env.reset(jax.random.PRNGKey(0), 8)
    start = jnp.all((obs == 0.0) | (obs == 1.0))
    keys = jax.random.split(jax.random.PRNGKey(1), 500)
    (_, binary), _ = jax.jit(lambda s: jax.lax.scan(step, (s, start), keys))(env_state)
    assert bool(binary)
