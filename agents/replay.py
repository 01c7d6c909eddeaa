"""A circular replay buffer that stores each observation once, in the environment's own dtype.

Envs write in lockstep: the batch added at global env step `written` puts env e's transition in
slot (written + e) % capacity, so the same env's next transition lies num_envs slots further
on. A slot keeps only its transition's observation (a "frame"); the next observation is read
back from where it already is:

- the frame num_envs slots on: the same env's next observation (the usual case);
- `pending`, the next observations of the newest batch, which nothing follows yet;
- a small per-env ring of boundary frames, for an episode cut by the time limit: it
  bootstraps (discount 1) from its true final observation, while the frame after it is the
  reset observation of the next episode.

A terminated transition (discount 0) gets the frame after it, a reset observation, as its
next observation: a loss multiplies that by the zero discount, so it is never used.

Storing frames in the observation dtype (bool for MinAtar, float32 for CartPole) and once
instead of twice (obs and next_obs) makes a pixel buffer several times smaller; samples are
float32, what the networks read.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from agents.base import ConfigError, Transition


class Replay(NamedTuple):
    """The buffer's arrays (a pytree: vmap it over seeds). C = capacity, N = num_envs,
    K = boundary frames per env (`boundary_slots_per_env`)."""

    frames: jnp.ndarray  # [C, *obs_shape] obs dtype: each transition's observation
    action: jnp.ndarray  # [C] int32
    reward: jnp.ndarray  # [C] float32
    discount: jnp.ndarray  # [C] float32
    pending: jnp.ndarray  # [N, *obs_shape] obs dtype: next obs of the newest batch
    head: jnp.ndarray  # int32: slot of the newest batch's env 0
    boundary: jnp.ndarray  # [N, K, *obs_shape] obs dtype: true final obs of truncations
    boundary_slot: jnp.ndarray  # [N, K] int32: the slot each boundary frame belongs to, or -1
    boundary_cursor: jnp.ndarray  # [N] int32: each env's next boundary entry (a FIFO ring)
    size: jnp.ndarray  # int32: number of valid slots


def boundary_slots_per_env(capacity: int, num_envs: int, time_limit: int | None) -> int:
    """Boundary frames each env needs: K = ceil((capacity - num_envs) / (num_envs * time_limit)).

    Proof: an env's truncations are >= time_limit of its own steps apart (the next episode
    starts after one ends and is cut at its time_limit-th step), so when the (K+1)-th overwrites
    the first one's entry they are >= K * time_limit * num_envs >= capacity - num_envs global
    steps apart, and the batch being added overwrites the first one's slot (freeing the entry)
    if nothing earlier did. Without a time limit an env never truncates: one entry keeps the
    shapes valid. (The looser num_envs * (ceil(capacity / (num_envs * time_limit)) + 1)
    entries in all bound the same thing.)
    """
    if time_limit is None:
        return 1
    return max(1, math.ceil((capacity - num_envs) / (num_envs * time_limit)))


def replay_init(
    capacity: int, obs_shape, obs_dtype, num_envs: int, time_limit: int | None
) -> Replay:
    """An empty buffer for `num_envs` lockstep envs whose episodes are cut at `time_limit` steps
    (None: never). Frames are kept in `obs_dtype`, which must hold the observations exactly
    (bool for MinAtar's 0/1 planes, float32 for continuous ones).

    Raises ConfigError if num_envs > capacity: one batch would overwrite itself.
    """
    if not 1 <= num_envs <= capacity:
        raise ConfigError(
            f"buffer_size={capacity} must be >= num_envs={num_envs}: the buffer holds at least "
            "one step of every env"
        )
    if time_limit is not None and time_limit < 1:
        raise ConfigError(f"time_limit={time_limit} must be >= 1 or None")
    slots = boundary_slots_per_env(capacity, num_envs, time_limit)
    return _empty(capacity, tuple(obs_shape), jnp.dtype(obs_dtype), num_envs, slots)


def _empty(capacity: int, obs_shape: tuple, obs_dtype, num_envs: int, slots: int) -> Replay:
    """replay_init with an explicit ring size (tests shrink it below the bound)."""
    zeros = lambda *shape, dtype=jnp.float32: jnp.zeros(shape, dtype)
    return Replay(
        frames=zeros(capacity, *obs_shape, dtype=obs_dtype),
        action=zeros(capacity, dtype=jnp.int32),
        reward=zeros(capacity),
        discount=zeros(capacity),
        pending=zeros(num_envs, *obs_shape, dtype=obs_dtype),
        head=zeros(dtype=jnp.int32),
        boundary=zeros(num_envs, slots, *obs_shape, dtype=obs_dtype),
        boundary_slot=jnp.full((num_envs, slots), -1, jnp.int32),
        boundary_cursor=zeros(num_envs, dtype=jnp.int32),
        size=zeros(dtype=jnp.int32),
    )


def replay_bytes(capacity: int, obs_shape, obs_dtype, num_envs: int, time_limit: int | None) -> int:
    """Bytes replay_init would allocate, computed from shapes alone (nothing is allocated)."""
    shapes = jax.eval_shape(
        lambda: replay_init(capacity, obs_shape, obs_dtype, num_envs, time_limit)
    )
    return replay_nbytes(shapes)


def replay_nbytes(replay) -> int:
    """Bytes held by a buffer's arrays (or by their shapes), over any leading seed axes."""
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(replay))


# --- adding -------------------------------------------------------------------------------------


def replay_add(replay: Replay, batch: Transition, written) -> Replay:
    """Store a batch [num_envs, ...] of transitions, env e's at slot (written + e) % capacity.

    batch.next_obs is kept as `pending` until the next add, which reveals whether it was needed:
    the previous batch's env e truncated (discount != 0, and its next obs differs from the
    obs env e now reports, the reset one) -> its next obs goes to env e's boundary ring.
    Consecutive adds must be consecutive steps of the same envs (as train_iteration makes
    them); `written` must be identical across vmapped seeds, as for agents.common's replay.
    """
    capacity, num_envs = replay.frames.shape[0], replay.pending.shape[0]
    chex.assert_shape(batch.obs, replay.pending.shape)
    chex.assert_shape(batch.next_obs, replay.pending.shape)
    chex.assert_shape([batch.action, batch.reward, batch.discount], (num_envs,))
    obs = batch.obs.astype(replay.frames.dtype)
    replay = _keep_boundaries(replay, obs)
    position = jnp.asarray(written, jnp.int32) % capacity
    replay = _free_boundaries(replay, position)
    rows = (obs, batch.action.astype(jnp.int32), batch.reward, batch.discount)
    rows = tuple(r.astype(s.dtype) for r, s in zip(rows, _columns(replay), strict=True))
    frames, action, reward, discount = _write_windows(_columns(replay), rows, position)
    return replay._replace(
        frames=frames,
        action=action,
        reward=reward,
        discount=discount,
        pending=batch.next_obs.astype(replay.frames.dtype),
        head=position,
        size=jnp.minimum(replay.size + num_envs, capacity),
    )


def _columns(replay: Replay) -> tuple:
    return replay.frames, replay.action, replay.reward, replay.discount


def _keep_boundaries(replay: Replay, obs: jnp.ndarray) -> Replay:
    """Copy the pending next obs of each env that truncated into its boundary ring.

    Where the pending next obs equals the obs now reported, the frame that will follow the slot
    is the right next obs already; where discount is 0 no loss reads it. A select over the small
    ring, not a scatter: the cursors differ per seed under vmap.
    """
    capacity, num_envs = replay.frames.shape[0], replay.pending.shape[0]
    slots = (replay.head + jnp.arange(num_envs)) % capacity  # the pending transitions' slots
    differs = jnp.any((replay.pending != obs).reshape(num_envs, -1), axis=1)
    cut = (replay.size > 0) & (replay.discount[slots] != 0) & differs  # [N]
    ring_size = replay.boundary_slot.shape[1]
    hit = cut[:, None] & (replay.boundary_cursor[:, None] == jnp.arange(ring_size))  # [N, K]
    expand = hit.reshape(hit.shape + (1,) * (replay.pending.ndim - 1))
    return replay._replace(
        boundary=jnp.where(expand, replay.pending[:, None], replay.boundary),
        boundary_slot=jnp.where(hit, slots[:, None], replay.boundary_slot),
        boundary_cursor=(replay.boundary_cursor + cut) % ring_size,
    )


def _free_boundaries(replay: Replay, position: jnp.ndarray) -> Replay:
    """Release the ring entries of the slots the new batch overwrites."""
    capacity, num_envs = replay.frames.shape[0], replay.pending.shape[0]
    overwritten = (replay.boundary_slot - position) % capacity < num_envs
    return replay._replace(boundary_slot=jnp.where(overwritten, -1, replay.boundary_slot))


def _write_windows(storage: tuple, rows: tuple, position: jnp.ndarray) -> tuple:
    """Each storage array [C, ...] with its rows [B, ...] written at slots position, ... (mod C).

    `position` is unbatched under vmap, so each write is one dynamic update slice for all seeds
    (per-seed slots would make it a scatter of single rows, nondeterministic on accelerators),
    and the cond is a real branch. A batch that wraps past the end is written as two windows.
    """
    capacity, batch_size = storage[0].shape[0], rows[0].shape[0]
    fits = position + batch_size <= capacity  # always, when capacity is a multiple of B

    def one_window(storage):
        write = lambda s, x: jax.lax.dynamic_update_slice_in_dim(s, x, position, 0)
        return tuple(map(write, storage, rows))

    def two_windows(storage):
        return tuple(_write_wrapped(s, x, position) for s, x in zip(storage, rows, strict=True))

    return jax.lax.cond(fits, one_window, two_windows, storage)


def _write_wrapped(storage, rows, position):
    """storage with rows written at slots position, position + 1, ... that wrap past its end:
    the slots up to the end, then those from the start, each merged into its window."""
    capacity, batch_size = storage.shape[0], rows.shape[0]
    head = capacity - batch_size  # the first window: the buffer's last B slots
    offset = position - head  # where the batch begins in it
    wrapped = position + batch_size - capacity  # slots written from the start
    index = jnp.arange(batch_size)
    first = _write_window(storage, head, jnp.roll(rows, offset, axis=0), index >= offset)
    rolled = jnp.roll(rows, -(batch_size - wrapped), axis=0)
    return _write_window(first, 0, rolled, index < wrapped)


def _write_window(storage, start, new_rows, keep_new):
    """storage with rows [start, start + B) replaced by new_rows where keep_new [B] holds."""
    window = jax.lax.dynamic_slice_in_dim(storage, start, new_rows.shape[0], axis=0)
    keep_new = keep_new.reshape(keep_new.shape + (1,) * (new_rows.ndim - 1))
    return jax.lax.dynamic_update_slice_in_dim(
        storage, jnp.where(keep_new, new_rows, window), start, 0
    )


# --- reading ------------------------------------------------------------------------------------


def replay_sample(replay: Replay, key: jax.Array, batch_size: int) -> Transition:
    """Uniformly sample `batch_size` stored transitions (with replacement); the same slots as
    agents.common's replay_sample draws with this key."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(replay.size, 1))
    return replay_get(replay, idx)


def replay_get(replay: Replay, idx: jnp.ndarray) -> Transition:
    """The transitions in slots idx [B], observations as float32 (what the networks read)."""
    capacity, num_envs = replay.frames.shape[0], replay.pending.shape[0]
    newest = (idx - replay.head) % capacity  # env index, where < num_envs
    owner = replay.boundary_slot.reshape(-1)
    match = owner[None, :] == idx[:, None]  # [B, N * K]: at most one per row
    boundary = replay.boundary.reshape(-1, *replay.boundary.shape[2:])[jnp.argmax(match, 1)]
    successor = replay.frames[(idx + num_envs) % capacity]
    next_obs = _select(jnp.any(match, axis=1), boundary, successor)
    pending = replay.pending[jnp.minimum(newest, num_envs - 1)]
    next_obs = _select(newest < num_envs, pending, next_obs)
    return Transition(
        obs=replay.frames[idx].astype(jnp.float32),
        action=replay.action[idx],
        reward=replay.reward[idx],
        discount=replay.discount[idx],
        next_obs=next_obs.astype(jnp.float32),
    )


def _select(where: jnp.ndarray, a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Rows of a where `where` [B] holds, else rows of b."""
    return jnp.where(where.reshape(where.shape + (1,) * (a.ndim - 1)), a, b)
