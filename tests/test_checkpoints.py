"""The checkpoint store: a run's loop state and host history come back bit for bit, onto any
device count; an unusable checkpoint (corrupt, half written, killed mid-save) is skipped for
the one before, never resumed from; a differently configured run is refused by name.

In-process tests run on the two host devices conftest forces; the subprocess tests set their
own device counts.
"""

import math
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
import envs
from benchmarks import runner, train
from benchmarks.checkpoints import (
    TEMPORARY_SUFFIX,
    CheckpointMismatch,
    CheckpointStore,
    ProcessStore,
    abstract_like,
    checksums,
    estimate_bytes,
    newest_common_step,
)
from benchmarks.cli import xla_flags

ROOT = Path(__file__).resolve().parent.parent
NUM_SEEDS = 4
FINGERPRINT = {
    "agent": "c51",
    "agent_config": {"learning_rate": 0.001, "hidden_sizes": (32, 32)},
    "train_config": {"total_steps": 40, "num_envs": 2},
}
HOST = {
    "chunks_done": 1,
    "eval_seconds": [0.1 + 0.2, float("nan"), float("inf"), -float("inf"), -0.0, 5e-324],
    "logs": [{"return_sum": np.array([1.0 / 3.0, np.nan, np.inf], np.float64)}],
    "returns": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    "episodes": np.array([3, -1], np.int64),
    "scalar": np.float64(math.pi),
    "name": "CartPole-v1",
    "nothing": None,
    "flag": True,
}


def _loop_init(num_seeds: int):
    """The c51-on-CartPole trainer's init over `num_seeds` seeds and its sharded arguments."""
    trainer = train.make_train(
        agents.make("c51", buffer_size=64, batch_size=8, learning_starts=0),
        *envs.make("CartPole-v1"),
        train.TrainConfig(total_steps=40, num_envs=2, num_evals=2),
    )
    keys, sharding = runner.sharded_seed_keys(0, range(num_seeds))
    args = [keys]
    if getattr(trainer, "default_hparams", None) is not None:  # traced hyperparameters
        rows = keys.shape[0]
        args.append(
            {
                name: jax.device_put(np.repeat(np.asarray(value), rows), sharding)
                for name, value in trainer.default_hparams.items()
            }
        )
    return jax.vmap(trainer.init), args, sharding


def loop_state(num_seeds: int = NUM_SEEDS):
    """The real training loop state, seeds sharded over every device."""
    init, args, _ = _loop_init(num_seeds)
    return jax.jit(init)(*args)


def abstract_loop_state(num_seeds: int = NUM_SEEDS):
    """What `loop_state` would give, without compiling or running init: the restore target."""
    init, args, sharding = _loop_init(num_seeds)
    return jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        jax.eval_shape(init, *args),
    )


def small_state(offset: float = 0.0, rows: int = 4):
    """A few sharded arrays of several dtypes, cheap to save many times."""
    sharding = runner._mesh_sharding()
    state = {
        "weights": jnp.arange(rows * 8, dtype=jnp.float32).reshape(rows, 8) / 3 + offset,
        "counts": jnp.arange(rows, dtype=jnp.int32),
        "done": jnp.arange(rows) % 2 == 0,
        "raw_key": jax.vmap(jax.random.PRNGKey)(jnp.arange(rows)),
        "typed_key": jax.random.split(jax.random.key(7), rows),
    }
    return jax.device_put(state, sharding)


def host_bits(leaf) -> np.ndarray:
    """The leaf's bytes on the host (typed keys by their key data), for bitwise comparison."""
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    array = np.asarray(leaf)
    return np.frombuffer(np.ascontiguousarray(array).tobytes(), np.uint8)


def assert_bit_identical(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for path, x, y in zip(
        jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(a), jax.tree.leaves(b)
    ):
        name = jax.tree_util.keystr(path[0])
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(host_bits(x), host_bits(y)), name


def assert_host_identical(a, b, path="host") -> None:
    """Equal values of equal types, floats bit for bit (NaN, -0.0 and subnormals included)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for key in a:
            assert_host_identical(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, list) and len(a) == len(b), path
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_host_identical(x, y, f"{path}[{index}]")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape, path
        assert a.tobytes() == b.tobytes(), path
    elif isinstance(a, float):
        assert type(b) is float and np.float64(a).tobytes() == np.float64(b).tobytes(), path
    else:
        assert type(a) is type(b) and a == b, path


@pytest.fixture(scope="module")
def state():
    return loop_state()


def test_round_trip_of_the_loop_state_is_bit_identical(state, tmp_path):
    store = CheckpointStore(tmp_path / "ckpt")
    store.save(1, state, HOST, FINGERPRINT)
    target = abstract_like(state)
    restored = store.latest(target, FINGERPRINT)
    assert restored is not None and restored.step == 1
    assert_bit_identical(state, restored.state)
    for leaf, wanted in zip(jax.tree.leaves(restored.state), jax.tree.leaves(target)):
        assert leaf.sharding == wanted.sharding
    assert_host_identical(HOST, restored.host)
    assert 0 < estimate_bytes(target) and 0 < store.size_bytes() < 2 * estimate_bytes(target)


def test_typed_and_raw_prng_keys_round_trip(tmp_path):
    saved = small_state()
    store = CheckpointStore(tmp_path / "ckpt")
    store.save(1, saved, {}, FINGERPRINT)
    restored = store.latest(abstract_like(saved), FINGERPRINT)
    assert jnp.issubdtype(restored.state["typed_key"].dtype, jax.dtypes.prng_key)
    assert_bit_identical(saved, restored.state)


CROSS_DEVICE_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax, numpy as np
    sys.path.insert(0, "tests")
    import test_checkpoints as t
    from benchmarks.checkpoints import CheckpointStore
    written_on_two, write_here, dump = sys.argv[1:]
    assert jax.device_count() == 1
    restored = CheckpointStore(written_on_two).latest(t.abstract_loop_state(), t.FINGERPRINT)
    assert restored.step == 1
    assert all(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(restored.state))
    t.assert_host_identical(t.HOST, restored.host)
    CheckpointStore(write_here).save(2, restored.state, t.HOST, t.FINGERPRINT)
    np.savez(dump, *[t.host_bits(x) for x in jax.tree.leaves(restored.state)])
    """
)


def _with_devices(count: int) -> dict:
    devices = f"--xla_force_host_platform_device_count={count}"
    return {**os.environ, "XLA_FLAGS": xla_flags(devices)}


def test_written_on_two_devices_restores_on_one_and_back(state, tmp_path):
    assert jax.device_count() == 2
    CheckpointStore(tmp_path / "two").save(1, state, HOST, FINGERPRINT)
    dump = tmp_path / "leaves.npz"
    # The one-device process restores the two-device checkpoint and saves it again, on one.
    result = subprocess.run(
        [sys.executable, "-c", CROSS_DEVICE_SCRIPT, tmp_path / "two", tmp_path / "one", dump],
        cwd=ROOT,
        env=_with_devices(1),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    on_one_device = np.load(dump)
    for index, leaf in enumerate(jax.tree.leaves(state)):
        assert np.array_equal(on_one_device[f"arr_{index}"], host_bits(leaf)), index
    restored = CheckpointStore(tmp_path / "one").latest(abstract_like(state), FINGERPRINT)
    assert restored.step == 2
    assert_bit_identical(state, restored.state)
    assert all(len(leaf.sharding.device_set) == 2 for leaf in jax.tree.leaves(restored.state))


def test_keep_prunes_older_steps(tmp_path):
    store = CheckpointStore(tmp_path / "ckpt", keep=2)
    for step in range(1, 5):
        store.save(step, small_state(step), {"step": step}, FINGERPRINT)
    assert store.steps() == [3, 4]
    assert sorted(p.name for p in store.directory.iterdir() if p.name.isdigit()) == ["3", "4"]
    restored = store.latest(abstract_like(small_state()), FINGERPRINT)
    assert restored.step == 4 and restored.host == {"step": 4}
    assert_bit_identical(small_state(4), restored.state)


def saved_at(step: int, size: int = 64 * 256):
    """A state with one large array of incompressible values (so an array file is mostly
    array bytes, and a save takes a while), different at every step."""
    state = small_state(step)
    state["big"] = jax.random.normal(jax.random.key(step), (4, size))
    return jax.device_put(state, runner._mesh_sharding())


def _largest_array_file(step_dir: Path) -> Path:
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=_size)


def _size(path: Path) -> int:
    return path.stat().st_size


def _flip_bytes(step_dir: Path) -> None:
    path = _largest_array_file(step_dir)
    data = bytearray(path.read_bytes())
    for offset in range(len(data) // 2, len(data) // 2 + 16):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(step_dir: Path) -> None:
    path = _largest_array_file(step_dir)
    path.write_bytes(path.read_bytes()[: _size(path) // 2])


def _delete_array_file(step_dir: Path) -> None:
    _largest_array_file(step_dir).unlink()


def _garble_metadata(step_dir: Path) -> None:
    (step_dir / "meta" / "metadata").write_text('{"format": 1, "fingerp')


# When one array of a restore fails to read, orbax drops its other reads un-awaited.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "corrupt, caught_by",
    [
        # Garbled array bytes still decode: only the checksum notices.
        (_flip_bytes, "checksum of ['big']"),
        (_truncate, "state:"),
        (_delete_array_file, "state:"),
        (_garble_metadata, "metadata:"),
    ],
)
def test_corrupt_newest_checkpoint_falls_back_to_the_previous(corrupt, caught_by, tmp_path):
    warnings = []
    store = CheckpointStore(tmp_path / "ckpt", keep=3, log=warnings.append)
    for step in (1, 2):
        store.save(step, saved_at(step), {"step": step}, FINGERPRINT)
    corrupt(store.directory / "2")
    restored = store.latest(abstract_like(saved_at(0)), FINGERPRINT)
    assert restored.step == 1 and restored.host == {"step": 1}
    assert_bit_identical(saved_at(1), restored.state)
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "checkpoint 2" in warnings[0] and caught_by in warnings[0], warnings[0]
    # Resuming from 1 and saving 2 again replaces the corrupt one.
    store.save(2, saved_at(2), {"step": 2}, FINGERPRINT)
    assert store.latest(abstract_like(saved_at(0)), FINGERPRINT).host == {"step": 2}


def test_leftover_temporary_directory_is_ignored(tmp_path):
    store = CheckpointStore(tmp_path / "ckpt")
    store.save(1, small_state(1), {"step": 1}, FINGERPRINT)
    # What a save killed before its final rename leaves: the step under orbax's temporary name.
    partial = store.directory / f"2{TEMPORARY_SUFFIX}"
    shutil.copytree(store.directory / "1", partial)
    _truncate(partial)
    assert store.latest(abstract_like(small_state()), FINGERPRINT).step == 1
    reopened = CheckpointStore(tmp_path / "ckpt")
    assert reopened.latest(abstract_like(small_state()), FINGERPRINT).step == 1


def test_fingerprint_mismatch_names_the_field_and_clear_starts_over(tmp_path):
    store = CheckpointStore(tmp_path / "ckpt")
    store.save(1, small_state(), HOST, FINGERPRINT)
    other = {**FINGERPRINT, "agent_config": {"learning_rate": 0.0005, "hidden_sizes": (32, 32)}}
    with pytest.raises(CheckpointMismatch) as error:
        store.latest(abstract_like(small_state()), other)
    message = str(error.value)
    assert "agent_config.learning_rate=0.001, this run has 0.0005" in message, message
    assert "--rerun" in message and "\n" not in message
    with pytest.raises(
        CheckpointMismatch, match=r"state\['counts'\]=\[\[4\], 'int32'\], this run has \[\[6\]"
    ):
        store.latest(abstract_like(small_state(rows=6)), FINGERPRINT)
    store.clear()
    assert store.steps() == [] and store.latest(abstract_like(small_state()), other) is None
    store.save(1, small_state(), HOST, other)  # the store stays usable
    assert store.latest(abstract_like(small_state()), other).step == 1


KILLED_SAVER_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax.numpy as jnp
    sys.path.insert(0, "tests")
    import test_checkpoints as t
    from benchmarks.checkpoints import CheckpointStore
    store = CheckpointStore(sys.argv[1], keep=2)
    for step in range(1, 10_000):
        store.save(step, t.saved_at(step, 256 * 1024), {"step": step}, t.FINGERPRINT)
        print(step, flush=True)
    """
)


def test_sigkill_during_save_never_leaves_a_loadable_half_checkpoint(tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    directory = tmp_path / "ckpt"
    saver = subprocess.Popen(
        [sys.executable, "-c", KILLED_SAVER_SCRIPT, directory],
        cwd=ROOT,
        env=_with_devices(2),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        first = saver.stdout.readline()  # the first save, compiling included
        assert first.strip() == "1", f"saver died before its first save (seed {seed})"
        start = time.perf_counter()
        saver.stdout.readline()
        one_save = time.perf_counter() - start
        time.sleep(rng.uniform(0.0, 2.0 * one_save))
    finally:
        saver.send_signal(signal.SIGKILL)
        saver.wait(timeout=60)
    warnings = []
    restored = CheckpointStore(directory, keep=2, log=warnings.append).latest(
        abstract_like(saved_at(0, 256 * 1024)), FINGERPRINT
    )
    assert restored is not None, f"seed {seed}"
    assert restored.host == {"step": restored.step}, f"seed {seed}"
    assert_bit_identical(saved_at(restored.step, 256 * 1024), restored.state)


def test_checksums_do_not_depend_on_the_sharding(state):
    on_one_device = jax.device_put(state, jax.devices()[0])
    assert checksums(on_one_device) == checksums(state)
    changed = checksums(state._replace(obs=state.obs.at[0, 0, 0].add(1.0)))
    assert [name for name, value in changed.items() if value != checksums(state)[name]] == [".obs"]


# --- the multi-process store, in one process (tests/test_distributed.py runs two) -------------


def test_processes_resume_from_the_newest_step_all_of_them_have():
    def lists(*rows):
        return np.asarray([row + [-1] * (4 - len(row)) for row in rows])

    assert newest_common_step(lists([1, 2], [2, 3])) == 2
    assert newest_common_step(lists([3, 4], [1, 2, 3, 4])) == 4
    # A process far ahead has pruned every step the other has: all start over together.
    assert newest_common_step(lists([4, 5], [2, 3])) is None
    assert newest_common_step(lists([], [1])) is None
    assert newest_common_step(lists([7])) == 7


def process_state(step: int):
    """Sharded arrays as the training loop holds them (raw uint32 keys), different per step."""
    state = small_state(step)
    del state["typed_key"]
    state["big"] = jax.random.normal(jax.random.key(step), (4, 4096))
    return jax.device_put(state, runner._mesh_sharding())


def test_process_store_round_trip_prunes_and_refuses_another_configuration(tmp_path):
    store = ProcessStore(tmp_path / "ckpt", keep=2)
    for step in (1, 2, 3):
        store.save(step, process_state(step), {**HOST, "step": step}, FINGERPRINT)
    assert store.steps() == [2, 3] and store.directory.name == "process_0"
    target = abstract_like(process_state(0))
    restored = store.latest(target, FINGERPRINT)
    assert restored.step == 3
    assert_bit_identical(process_state(3), restored.state)
    assert_host_identical({**HOST, "step": 3}, restored.host)
    for leaf, wanted in zip(jax.tree.leaves(restored.state), jax.tree.leaves(target)):
        assert leaf.sharding == wanted.sharding
    other = {**FINGERPRINT, "train_config": {"total_steps": 80, "num_envs": 2}}
    with pytest.raises(CheckpointMismatch, match="train_config.total_steps=40, this run has 80"):
        store.latest(target, other)


def _flip_npz_bytes(step_dir: Path) -> None:
    path = step_dir / "state.npz"
    data = bytearray(path.read_bytes())
    for offset in range(len(data) // 2, len(data) // 2 + 16):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _garble_process_metadata(step_dir: Path) -> None:
    (step_dir / "meta.json").write_text('{"format": 1, "fingerp')


@pytest.mark.parametrize(
    "corrupt, caught_by",
    [
        (_flip_npz_bytes, "state:"),
        (lambda step_dir: (step_dir / "state.npz").unlink(), "state:"),
        (_garble_process_metadata, "metadata:"),
    ],
)
def test_process_store_skips_a_corrupt_newest_step(corrupt, caught_by, tmp_path):
    warnings = []
    store = ProcessStore(tmp_path / "ckpt", keep=3, log=warnings.append)
    for step in (1, 2):
        store.save(step, process_state(step), {"step": step}, FINGERPRINT)
    corrupt(store.directory / "2")
    restored = store.latest(abstract_like(process_state(0)), FINGERPRINT)
    assert restored.step == 1 and restored.host == {"step": 1}
    assert_bit_identical(process_state(1), restored.state)
    assert len(warnings) == 1 and "checkpoint 2" in warnings[0] and caught_by in warnings[0]
