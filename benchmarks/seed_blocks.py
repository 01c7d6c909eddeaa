"""Seeds in fixed-size blocks, so a seed's numbers do not depend on how many run beside it.

XLA compiles a vmapped program for the batch it is given, and its choices (fusion, tiling,
vectorisation) depend on that batch: the same seed trained in a batch of 3 and in a batch of 32
rounds differently and, over thousands of updates, ends with another return. So every device
runs its seeds as blocks of one fixed size: a loop over blocks whose body is the vmapped program
for one block. The body's shapes never change, and the loop's trip count is a runtime value, so
XLA cannot unroll or drop it for a one-block run: the compiled block program is the same for one
seed or thousands, and within a block every position is computed alike.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

# Seeds per block by platform. On the CPU small batches run as fast per seed as large ones; on
# accelerators a block should fill the device, and a run of fewer seeds costs a whole block.
DEFAULT_BLOCK = {"cpu": 4}
ACCELERATOR_BLOCK = 1024


def default_block_size(platform: str) -> int:
    return DEFAULT_BLOCK.get(platform, ACCELERATOR_BLOCK)


def block_size(seed_block: int) -> int:
    """A run's block: its TrainConfig.seed_block, or the platform's default where that is 0."""
    return seed_block or default_block_size(jax.default_backend())


def padded_seed_count(num_seeds: int, num_devices: int, block: int) -> int:
    """Rows the seed axis is padded to: whole blocks on every device."""
    per_device = math.ceil(num_seeds / num_devices)
    return math.ceil(per_device / block) * block * num_devices


def _slice_block(tree, index, block: int):
    return jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, index * block, block), tree)


def _update_block(tree, values, index, block: int):
    return jax.tree.map(
        lambda x, v: jax.lax.dynamic_update_slice_in_dim(x, v, index * block, 0), tree, values
    )


def _blocks_on_one_device(fn: Callable, block: int, num_batched: int, updates_first: bool):
    """fn mapped over the local seed rows, one vmapped block at a time."""

    def local(num_blocks, *args):
        batched, shared = args[:num_batched], args[num_batched:]
        block_fn = jax.vmap(fn, in_axes=(0,) * num_batched + (None,) * len(shared))

        def call(index):
            return block_fn(*_slice_block(batched, index, block), *shared)

        out_shapes = jax.eval_shape(call, 0)
        rows = jax.tree.leaves(batched)[0].shape[0]

        def zeros(shape):
            return jnp.zeros((rows, *shape.shape[1:]), shape.dtype)

        if updates_first:
            # fn returns (new first argument, other outputs): write the new state over the old
            # one, so a donated state is updated in place rather than copied.
            out = (batched[0], jax.tree.map(zeros, out_shapes[1]))
        else:
            out = jax.tree.map(zeros, out_shapes)

        def body(index, out):
            return _update_block(out, call(index), index, block)

        return jax.lax.fori_loop(0, num_blocks, body, out)

    return local


def map_seed_blocks(
    fn: Callable,
    sharding: NamedSharding,
    block: int,
    *,
    num_batched: int,
    num_shared: int = 0,
    updates_first: bool = False,
) -> Callable:
    """fn(*per-seed args, *shared args) as a function of arrays with a leading seed axis sharded
    by `sharding` (a multiple of `block` rows per device). Call it as f(num_blocks, *args),
    num_blocks a device-independent int32 scalar: the number of blocks on each device."""
    seeds, replicated = sharding.spec, PartitionSpec()
    return jax.shard_map(
        _blocks_on_one_device(fn, block, num_batched, updates_first),
        mesh=sharding.mesh,
        in_specs=(replicated,) + (seeds,) * num_batched + (replicated,) * num_shared,
        out_specs=seeds,
        check_vma=False,
    )


def map_blocks_padded(fn: Callable, block: int, batched: tuple, shared: tuple):
    """fn over the leading axis of host arrays `batched`, one compiled call per block of `block`
    rows (the last block padded by repeating the last row, dropped again), `shared` passed to
    every call: per-row results that do not depend on how many rows there are.

    The blocks are looped over on the host: inside one program over all rows, XLA may compute
    a per-row reduction over the whole array after the loop, rounding differently with the
    number of rows. Scoring (once per cell) is cheap enough for one dispatch per block.
    """
    rows = len(batched[0])
    padded = math.ceil(rows / block) * block
    batched = tuple(np.concatenate([x, np.repeat(x[-1:], padded - rows, axis=0)]) for x in batched)
    block_fn = _jitted_blocks(fn, len(batched), len(shared))
    outs = [
        jax.device_get(block_fn(*(x[start : start + block] for x in batched), *shared))
        for start in range(0, padded, block)
    ]
    return jax.tree.map(lambda *parts: np.concatenate(parts)[:rows], *outs)


@functools.lru_cache(maxsize=32)
def _jitted_blocks(fn: Callable, num_batched: int, num_shared: int) -> Callable:
    """One jitted vmap of fn per signature, so scoring many cells compiles it once."""
    return jax.jit(jax.vmap(fn, in_axes=(0,) * num_batched + (None,) * num_shared))
