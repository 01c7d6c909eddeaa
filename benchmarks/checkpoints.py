"""Checkpoints of a run's loop state, so a killed run resumes from its last finished chunk.

`CheckpointStore` wraps an orbax `CheckpointManager`. Each step directory (step = chunks
finished) holds two items, renamed into place together only once both are written, so a save
is complete or invisible:

- "state": the sharded loop state, written shard by shard (nothing is gathered to one array) and
  restored onto whatever shardings the caller asks for (2 devices -> 1 and back).
- "meta": JSON with the run's fingerprint, the host-side history and a checksum of every
  array, recomputed after a restore: orbax reads a garbled array file without complaint when
  its bytes still decode, and a checkpoint is never resumed from silently wrong.

`latest` skips a checkpoint that fails to restore or verify (with a one-line warning) for the
one before it, and refuses one written by a differently configured run (`CheckpointMismatch`).

`CheckpointStore` serves a single process. distbench's processes each train their own seeds
on their own local devices, so in a multi-process run their arrays are process-local; orbax
(0.12) refuses to write a process-local jax.Array when jax.process_count() > 1 and writes numpy
arrays only from process 0. `ProcessStore` therefore writes each process's share itself.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Self

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

FORMAT_VERSION = 1
STATE_ITEM = "state"
META_ITEM = "meta"
MULTI_PROCESS_UNSUPPORTED = (
    "CheckpointStore serves one process: orbax writes only global arrays in a multi-process "
    "run, and each process's loop state is its own (ProcessStore writes those)"
)
# How orbax names a step directory while it is being written (renamed away once complete).
TEMPORARY_SUFFIX = ".orbax-checkpoint-tmp"


class CheckpointMismatch(ValueError):
    """The directory's checkpoints come from a run configured differently from this one."""


class Restored(NamedTuple):
    step: int  # chunks finished when it was saved
    state: Any  # the loop state, on the shardings asked for
    host: dict  # the host-side dict given to `save`, decoded


# --- host-side values <-> JSON --------------------------------------------------------------

_ARRAY_TAG = "__ndarray__"


def encode_host(value, path: str = "host"):
    """`value` as plain JSON types. Numpy arrays and scalars become tagged base64 of their
    bytes so they come back bit for bit; Python floats (NaN and inf included) are written by
    `json` with repr, which reads back exactly. Tuples become lists, NamedTuples and
    dataclasses dicts; anything else is refused rather than stored approximately."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float) and not isinstance(value, np.floating):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise TypeError(f"{path}: object arrays cannot be checkpointed")
        return {
            _ARRAY_TAG: {
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "scalar": isinstance(value, np.generic),
                "bytes": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii"),
            }
        }
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"{path}: key {key!r} is not a str; JSON keys must be")
        if _ARRAY_TAG in value:
            raise TypeError(f"{path}: the key {_ARRAY_TAG!r} is reserved")
        return {key: encode_host(item, f"{path}.{key}") for key, item in value.items()}
    if hasattr(value, "_asdict"):  # a NamedTuple
        return encode_host(dict(value._asdict()), path)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return encode_host(fields, path)
    if isinstance(value, (list, tuple)):
        return [encode_host(item, f"{path}[{index}]") for index, item in enumerate(value)]
    raise TypeError(f"{path}: cannot checkpoint a {type(value).__name__}")


def decode_host(value):
    """The inverse of `encode_host` (tuples come back as lists, NamedTuples and dataclasses as
    dicts)."""
    if isinstance(value, list):
        return [decode_host(item) for item in value]
    if isinstance(value, dict):
        if _ARRAY_TAG in value:
            spec = value[_ARRAY_TAG]
            raw = base64.b64decode(spec["bytes"])
            array = np.frombuffer(raw, np.dtype(spec["dtype"])).reshape(spec["shape"]).copy()
            return array[()] if spec["scalar"] else array
        return {key: decode_host(item) for key, item in value.items()}
    return value


# --- fingerprints ---------------------------------------------------------------------------

_MISSING = "<absent>"


def _flat_fields(tree, prefix: str = "") -> dict[str, Any]:
    """A nested JSON dict as {"a.b.c": leaf}, in insertion order, so a difference can be
    named by its dotted path."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flat_fields(value, f"{prefix}{key}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): tree}


def _same_value(a, b) -> bool:
    """Equality that treats NaN as equal to itself (a NaN in a config is still that config)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def first_difference(saved: dict, current: dict) -> tuple[str, Any, Any] | None:
    """(field, saved value, current value) of the first field that differs, in the current
    fingerprint's order and then the saved one's; None when they agree."""
    saved_fields, current_fields = _flat_fields(saved), _flat_fields(current)
    for field in [*current_fields, *(f for f in saved_fields if f not in current_fields)]:
        old = saved_fields.get(field, _MISSING)
        new = current_fields.get(field, _MISSING)
        if not _same_value(old, new):
            return field, old, new
    return None


# --- array checksums ------------------------------------------------------------------------


def _mix32(x: jnp.ndarray) -> jnp.ndarray:
    """murmur3's 32-bit finaliser: spreads every input bit over every output bit."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _as_uint32_words(leaf: jnp.ndarray) -> jnp.ndarray:
    """The leaf's bytes as a flat vector of uint32 (one word per element of up to 4 bytes, two
    per 8-byte element); typed PRNG keys are hashed by their key data."""
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    if leaf.dtype == jnp.bool_:
        leaf = leaf.astype(jnp.uint8)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[leaf.dtype.itemsize]
    words = jax.lax.bitcast_convert_type(leaf, unsigned)
    return words.astype(jnp.uint32).reshape(-1)


def _leaf_checksum(leaf: jnp.ndarray) -> jnp.ndarray:
    """Two position-keyed 32-bit sums of the leaf's words. Wrapping integer addition gives the
    same sums whatever the sharding or reduction order, so a checksum taken on 2 devices
    verifies the same array restored onto 1."""
    words = _as_uint32_words(leaf)
    index = jnp.arange(words.shape[0], dtype=jnp.uint32)
    first = jnp.sum(_mix32(words ^ _mix32(index * 2 + jnp.uint32(1))), dtype=jnp.uint32)
    second = jnp.sum(_mix32(words + _mix32(index * 2 + jnp.uint32(0x9E3779B9))), dtype=jnp.uint32)
    return jnp.stack([first, second])


@jax.jit
def _tree_checksums(tree) -> list[jnp.ndarray]:
    return [_leaf_checksum(leaf) for leaf in jax.tree.leaves(tree)]


def _leaf_names(tree) -> list[str]:
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def checksums(state) -> dict[str, str]:
    """{leaf path: 16 hex digits} over each array's bytes, computed where the shards live (no
    array is gathered to the host; only the 8-byte sums are)."""
    sums = jax.device_get(_tree_checksums(state))
    return {
        name: f"{int(s[0]):08x}{int(s[1]):08x}"
        for name, s in zip(_leaf_names(state), sums, strict=True)
    }


def _leaf_specs(tree) -> dict[str, list]:
    """{leaf path: [shape, dtype name]}: what a restore target must match."""
    return {
        name: [list(leaf.shape), str(leaf.dtype)]
        for name, leaf in zip(_leaf_names(tree), jax.tree.leaves(tree), strict=True)
    }


def estimate_bytes(abstract_state) -> int:
    """Bytes of the arrays in a checkpoint of this state, before orbax's compression: an upper
    bound, bar small metadata, to report before the first write."""
    total = 0
    for leaf in jax.tree.leaves(abstract_state):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = jax.eval_shape(jax.random.key_data, leaf)
            total += math.prod(data.shape) * data.dtype.itemsize
        else:
            total += math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
    return total


def abstract_like(state):
    """The restore target for `state`: its shapes, dtypes and shardings."""
    return jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding), state
    )


# --- the store ------------------------------------------------------------------------------


def _warn_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first[:200]}"


def _meta(state, host: dict, fingerprint: dict) -> dict:
    """What a checkpoint keeps beside the arrays: the run's fingerprint, the host history, and
    each array's shape, dtype and checksum."""
    return {
        "format": FORMAT_VERSION,
        "fingerprint": encode_host(fingerprint, "fingerprint"),
        "host": encode_host(host),
        "leaves": _leaf_specs(state),
        "checksums": checksums(state),
    }


def mismatch_error(directory: Path, difference: tuple) -> CheckpointMismatch:
    """The one-line refusal of a checkpoint made by another configuration (from
    `first_difference`)."""
    field, saved, now = difference
    return CheckpointMismatch(
        f"checkpoint in {directory} was made with {field}={saved}, this run has {now}; use "
        "--rerun to start over"
    )


class _Unusable(Exception):
    """A checkpoint that cannot be resumed from (unreadable or failing its checksums)."""


def _checked_meta(meta) -> dict:
    """`meta` if it is a complete checkpoint metadata dict this code reads; else _Unusable."""
    expected = {"format", "fingerprint", "host", "leaves", "checksums"}
    if not isinstance(meta, dict) or not expected <= set(meta):
        raise _Unusable("metadata: incomplete")
    if meta["format"] != FORMAT_VERSION:
        raise _Unusable(f"format {meta['format']}, this code reads {FORMAT_VERSION}")
    return meta


def _check_compatible(directory: Path, meta: dict, current_fingerprint, abstract_state) -> None:
    """Raise CheckpointMismatch unless the checkpoint was made by this configuration, with a
    state of the same leaves, shapes and dtypes as `abstract_state`."""
    difference = first_difference(meta["fingerprint"], current_fingerprint)
    if difference is None:
        leaves, wanted = meta["leaves"], _leaf_specs(abstract_state)
        difference = first_difference(
            {f"state{name}": spec for name, spec in leaves.items()},
            {f"state{name}": spec for name, spec in wanted.items()},
        )
    if difference is not None:
        raise mismatch_error(directory, difference)


def _verify_checksums(state, meta: dict) -> None:
    found = checksums(state)
    for name, expected in meta["checksums"].items():
        if found.get(name) != expected:
            raise _Unusable(f"state: checksum of {name} differs from the one saved")


def _skip_warning(directory: Path, step: int, error: _Unusable) -> str:
    return f"warning: checkpoint {step} in {directory} is unusable ({error}); trying the one before"


class CheckpointStore:
    """The checkpoints of one run in `directory`, the newest `keep` of them kept.

    Saves are synchronous: `save` returns once the step is complete on disk, since the run may
    be killed right after. `log` receives one-line warnings (default: stderr)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        keep: int = 2,
        log: Callable[[str], None] | None = None,
    ):
        if keep < 1:
            raise ValueError(f"keep={keep} must be >= 1")
        if jax.process_count() > 1:
            raise NotImplementedError(MULTI_PROCESS_UNSUPPORTED)
        self.directory = Path(directory).absolute()
        self.keep = keep
        self.log = log or _warn_to_stderr
        self._manager = self._open_manager()

    def _open_manager(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=False,
            preservation_policy=ocp.checkpoint_managers.LatestN(self.keep),
            # A killed save leaves "<step>.orbax-checkpoint-tmp"; orbax never lists it as a
            # step, and removes it when a manager opens the directory.
            cleanup_tmp_directories=True,
        )
        return ocp.CheckpointManager(
            self.directory, item_names=(STATE_ITEM, META_ITEM), options=options
        )

    def steps(self) -> list[int]:
        """Complete steps on disk, oldest first (re-read, in case another run wrote some)."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, host: dict, fingerprint: dict) -> None:
        """Write `state` (the sharded loop state), `host` (the host-side history; see
        `encode_host` for what it may hold) and the run's `fingerprint` as `step`. Any
        checkpoint at `step` or later is deleted first: it belongs to the run this one resumed
        past, and would otherwise shadow this one."""
        meta = _meta(state, host, fingerprint)
        for stale in self.steps():
            if stale >= step:
                self._manager.delete(stale)
        self._manager.save(
            step,
            args=ocp.args.Composite(
                **{
                    STATE_ITEM: ocp.args.StandardSave(state),
                    META_ITEM: ocp.args.JsonSave(meta),
                }
            ),
            force=True,
        )
        self._manager.wait_until_finished()

    def latest(self, abstract_state, fingerprint: dict) -> Restored | None:
        """The newest checkpoint that restores and verifies, onto the shardings of
        `abstract_state` (ShapeDtypeStructs with .sharding, e.g. `abstract_like(state)`); None
        when there is none. Unusable ones are skipped with a warning. Raises
        CheckpointMismatch when the newest readable one comes from a different
        configuration or holds a state of other shapes."""
        current = encode_host(fingerprint, "fingerprint")
        for step in reversed(self.steps()):
            try:
                meta = self._read_meta(step)
            except _Unusable as error:
                self._skip(step, error)
                continue
            _check_compatible(self.directory, meta, current, abstract_state)
            try:
                state = self._read_state(step, abstract_state, meta)
            except _Unusable as error:
                self._skip(step, error)
                continue
            return Restored(step, state, decode_host(meta["host"]))
        return None

    def _skip(self, step: int, error: _Unusable) -> None:
        self.log(_skip_warning(self.directory, step, error))

    def _read_meta(self, step: int) -> dict:
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()})
            )
            meta = restored[META_ITEM]
        except Exception as error:  # orbax and tensorstore raise many kinds
            raise _Unusable(f"metadata: {_one_line(error)}") from error
        return _checked_meta(meta)

    def _read_state(self, step: int, abstract_state, meta: dict):
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(abstract_state)}),
            )
            state = restored[STATE_ITEM]
        except Exception as error:  # orbax and tensorstore raise many kinds
            raise _Unusable(f"state: {_one_line(error)}") from error
        _verify_checksums(state, meta)
        return state

    def clear(self) -> None:
        """Delete every checkpoint of the run (for --rerun)."""
        self._manager.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        self._manager = self._open_manager()

    def size_bytes(self) -> int:
        """Bytes the run's checkpoints take on disk now (complete or not)."""
        if not self.directory.exists():
            return 0
        return sum(f.stat().st_size for f in self.directory.rglob("*") if f.is_file())

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- multi-process runs -------------------------------------------------------------------------


# A process offers its newest steps (it keeps fewer) when the processes agree where to resume.
STEPS_OFFERED = 8
_RESTORED, _UNUSABLE, _MISMATCH = 0, 1, 2


def newest_common_step(step_lists: np.ndarray) -> int | None:
    """The newest step in every row of `step_lists` [processes, n] (-1 pads a row); None when
    the processes have no step in common."""
    common = set.intersection(*({int(s) for s in row if s >= 0} for row in step_lists))
    return max(common) if common else None


def _padded_steps(steps: list[int]) -> np.ndarray:
    newest = steps[-STEPS_OFFERED:]
    return np.asarray(newest + [-1] * (STEPS_OFFERED - len(newest)), np.int32)


def allgather(value: np.ndarray) -> np.ndarray:
    """`value` of every process, stacked on a leading process axis."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(value)).reshape(-1, *value.shape)


class ProcessStore:
    """One process's share of a multi-process run's checkpoints, as CheckpointStore's API.

    Each process's seeds live only on its own devices, and orbax 0.12 writes no process-local
    array in a multi-process run, so each process writes its arrays itself, with numpy, into
    DIR/process_I/STEP: a temporary folder renamed into place when complete, with the same
    checksums and fingerprint as CheckpointStore. The processes resume from the newest step
    every one of them has."""

    def __init__(self, directory, *, keep: int = 2, log=None):
        self.directory = Path(directory).absolute() / f"process_{jax.process_index()}"
        self.keep = keep
        self.log = log or _warn_to_stderr

    def steps(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit())

    def save(self, step: int, state, host: dict, fingerprint: dict) -> None:
        meta = _meta(state, host, fingerprint)
        leaves = [np.asarray(jax.device_get(leaf)) for leaf in jax.tree.leaves(state)]
        temporary = self.directory / f"{step}{TEMPORARY_SUFFIX}"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        np.savez(temporary / "state.npz", *leaves)
        (temporary / "meta.json").write_text(json.dumps(meta))
        for stale in self.steps():
            if stale >= step:
                shutil.rmtree(self.directory / str(stale))
        temporary.rename(self.directory / str(step))
        for old in self.steps()[: -self.keep]:
            shutil.rmtree(self.directory / str(old), ignore_errors=True)

    def latest(self, abstract_state, fingerprint: dict) -> Restored | None:
        """The newest step that every process has and every process restores and verifies;
        None when there is none. Every process reaches the same answer: the step lists and
        each try's outcome are all-gathered, and an unusable share (warned of by its process)
        sends all of them to the step before. Raises CheckpointMismatch in every process when
        any process's share comes from a differently configured run."""
        current = encode_host(fingerprint, "fingerprint")
        unusable: set[int] = set()
        while True:
            offered = [step for step in self.steps() if step not in unusable]
            step = newest_common_step(allgather(_padded_steps(offered)))
            if step is None:
                return None
            restored, outcome = None, _RESTORED
            try:
                restored = self._read(step, abstract_state, current)
            except _Unusable as error:
                self.log(_skip_warning(self.directory, step, error))
                outcome = _UNUSABLE
            except CheckpointMismatch as error:
                mismatch, outcome = error, _MISMATCH
            outcomes = allgather(np.asarray(outcome, np.int32))
            if outcome == _MISMATCH:
                raise mismatch
            if np.any(outcomes == _MISMATCH):
                raise CheckpointMismatch(
                    f"checkpoint {step} of another process in {self.directory.parent} was made "
                    "by a differently configured run; use --rerun to start over"
                )
            if np.all(outcomes == _RESTORED):
                return restored
            unusable.add(step)

    def _read(self, step: int, abstract_state, current_fingerprint) -> Restored:
        folder = self.directory / str(step)
        try:
            meta = _checked_meta(json.loads((folder / "meta.json").read_text()))
        except (OSError, ValueError) as error:
            raise _Unusable(f"metadata: {_one_line(error)}") from error
        _check_compatible(self.directory, meta, current_fingerprint, abstract_state)
        targets, treedef = jax.tree.flatten(abstract_state)
        try:
            with np.load(folder / "state.npz") as arrays:
                values = [arrays[f"arr_{i}"] for i in range(len(targets))]
        except Exception as error:  # numpy and zipfile raise many kinds
            raise _Unusable(f"state: {_one_line(error)}") from error
        state = jax.tree.unflatten(
            treedef, [jax.device_put(v, t.sharding) for v, t in zip(values, targets, strict=True)]
        )
        _verify_checksums(state, meta)
        return Restored(step, state, decode_host(meta["host"]))

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def close(self) -> None:
        pass


# --- a run's checkpoints: when to save, resuming, stopping on a signal ----------------------------

# A run estimated to take longer than this (from its first chunk) is checkpointed by default.
AUTO_MIN_SECONDS = 180.0


class Preempted(Exception):
    """The run stopped on SIGTERM or SIGINT after saving a checkpoint; the same command resumes
    it. `signal_number` gives the exit code 128 + N."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number


class StopSignals:
    """While active, SIGTERM and SIGINT ask the run to stop at its next segment boundary (a
    second SIGINT stops at once); `requested` is the signal received, or None."""

    def __init__(self):
        self.requested: int | None = None
        self._previous = {}

    def _handle(self, number, frame):
        if self.requested == signal.SIGINT and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = number

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


class RunCheckpoints:
    """A run's checkpoints in `directory`: resumed from at the start, saved every `every`
    chunks (None: every chunk if the first chunk says the run takes over AUTO_MIN_SECONDS,
    else never), after the last chunk (so a result is never lost between training and being
    written), and at the next segment boundary after a stop signal. The caller calls
    `finished()` once the run's result is written; that removes them."""

    def __init__(self, directory, fingerprint: dict, every: int | None = None, log=print):
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.every = every
        self.log = log
        self.store: CheckpointStore | None = None
        self.signals = StopSignals()
        self._announced = False

    def _open(self) -> CheckpointStore:
        if self.store is None:
            store = CheckpointStore if jax.process_count() == 1 else ProcessStore
            self.store = store(self.directory, log=self.log)
        return self.store

    def resume(self, abstract_state):
        """(step, state, host) of the newest usable checkpoint, or None (no directory yet, or
        none usable). CheckpointMismatch when it is another run's."""
        # Every process of a multi-process run takes part (they agree on a step together).
        if not self.directory.exists() and jax.process_count() == 1:
            return None
        restored = self._open().latest(abstract_state, self.fingerprint)
        if restored is not None:
            self.log(f"resuming from checkpoint {restored.step} in {self.directory}")
        return restored

    def due(self, chunks_done: int, num_chunks: int, chunk_seconds: float) -> bool:
        """Whether to save now, at the end of chunk `chunks_done`."""
        if self.every is None:
            estimate = chunk_seconds * num_chunks
            self.every = 1 if estimate > AUTO_MIN_SECONDS else 0
        if chunks_done == num_chunks:
            return self.every > 0 or self._announced
        return self.every > 0 and chunks_done % self.every == 0

    def save(self, step: int, state, host: dict) -> None:
        if not self._announced:
            size = estimate_bytes(abstract_like(state))
            self.log(f"checkpoints: {self.directory}, {size / 1e6:.1f} MB of arrays each")
            self._announced = True
        self._open().save(step, state, host, self.fingerprint)

    def stop_if_asked(self, step: int, state, host: dict) -> None:
        """On a stop signal: save, then raise Preempted."""
        number = self.signals.requested
        if number is None:
            return
        self.save(step, state, host)
        name = signal.Signals(number).name
        raise Preempted(
            f"stopped by {name}; checkpoint {step} in {self.directory}: run the same command to "
            "resume",
            number,
        )

    def close(self) -> None:
        """Close the store (orbax's threads must stop before the interpreter does)."""
        if self.store is not None:
            self.store.close()
            self.store = None

    def finished(self) -> None:
        """The run's result is written: its checkpoints are no longer needed."""
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)
