"""Run one agent on one env for many seeds: jit(vmap(...)) over the seed axis, sharded over
every device, in chunks so progress and greedy evaluation happen between compiled calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from agents.base import Agent
from benchmarks import seed_blocks
from benchmarks.probe import make_probe
from benchmarks.seed_blocks import map_seed_blocks, padded_seed_count
from benchmarks.train import Evaluation, SegmentLog, TrainConfig, Trainer, make_train


def seed_keys(base_seed: int, seed_ids) -> jax.Array:
    """Seed id k always gets fold_in(PRNGKey(base_seed), k), whatever runs beside it."""
    base = jax.random.PRNGKey(base_seed)
    return jax.vmap(lambda k: jax.random.fold_in(base, k))(jnp.asarray(seed_ids, jnp.uint32))


@dataclasses.dataclass
class SeedResults:
    """Per-seed outcomes of a run (numpy arrays with a leading seed axis)."""

    seed_ids: np.ndarray  # [S]
    eval_steps: np.ndarray  # [num_evals] env steps per seed at each evaluation
    eval_returns: np.ndarray  # [S, num_evals, E] greedy undiscounted returns
    eval_discounted: np.ndarray  # [S, num_evals, E]
    final: dict[str, np.ndarray]  # last evaluation: returns, discounted_returns, start_locs, ...
    train_returns: np.ndarray  # [S, num_evals] mean return of exploring episodes per chunk
    train_loss: np.ndarray  # [S, num_evals]
    compile_seconds: float
    train_seconds: float  # compiled segments only, excluding compile and evaluation
    segment_seconds: np.ndarray  # [num_segments] wall time of each compiled training segment
    segment_env_steps: np.ndarray  # [num_segments] env steps per seed in each segment
    probe_seconds: np.ndarray  # [num_segments] the reference probe's time, right after each
    eval_seconds: float
    env_steps: int  # per seed
    num_devices: int
    final_state: Any = None
    # Compile time of each program (init, run_segment, evaluate); compile_seconds is their sum
    # plus running init once.
    program_compile_seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def steps_per_second(self) -> float:
        return len(self.seed_ids) * self.env_steps / max(self.train_seconds, 1e-9)


def results_to_host(results: SeedResults) -> dict:
    """`results` (its final state left out) as plain JSON types, arrays bit for bit (see
    checkpoints.encode_host): how a sweep keeps a finished batch."""
    from benchmarks.checkpoints import encode_host

    fields = {f.name: getattr(results, f.name) for f in dataclasses.fields(SeedResults)}
    fields.pop("final_state")
    return encode_host(fields, "results")


def results_from_host(host: dict) -> SeedResults:
    """The inverse of `results_to_host`."""
    from benchmarks.checkpoints import decode_host

    return SeedResults(**decode_host(host))


# SeedResults' fields with a leading seed axis (the others are the run's timings).
PER_SEED_FIELDS = ("seed_ids", "eval_returns", "eval_discounted", "train_returns", "train_loss")


def select_rows(results: SeedResults, rows) -> SeedResults:
    """The results of the seeds (lanes) at `rows`; the run's timings as they are."""
    rows = np.asarray(rows, np.int64)
    return dataclasses.replace(
        results,
        **{name: np.asarray(getattr(results, name))[rows] for name in PER_SEED_FIELDS},
        final={name: np.asarray(value)[rows] for name, value in results.final.items()},
        final_state=None,
    )


def concat_rows(parts: list[SeedResults]) -> SeedResults:
    """Several runs' seeds in order, as one result: per-seed rows concatenated, the first run's
    timings with the seconds of all of them added up."""
    first = parts[0]
    return dataclasses.replace(
        first,
        **{name: np.concatenate([getattr(p, name) for p in parts]) for name in PER_SEED_FIELDS},
        final={name: np.concatenate([p.final[name] for p in parts]) for name in first.final},
        train_seconds=sum(p.train_seconds for p in parts),
        eval_seconds=sum(p.eval_seconds for p in parts),
        compile_seconds=sum(p.compile_seconds for p in parts),
        final_state=None,
    )


def _mesh_sharding() -> NamedSharding:
    # Local devices: in a multi-process run each process trains its own share of the seeds.
    return NamedSharding(Mesh(np.array(jax.local_devices()), ("seeds",)), PartitionSpec("seeds"))


def _padded_rows(values: np.ndarray, rows: int) -> np.ndarray:
    """values [n, ...] padded to `rows` rows by repeating the last."""
    return np.concatenate([values, np.repeat(values[-1:], rows - len(values), axis=0)])


def sharded_seed_keys(base_seed: int, seed_ids, block: int = 1) -> tuple[jax.Array, NamedSharding]:
    """The seeds' keys, padded to whole blocks of `block` seeds on every local device by
    repeating the last seed (callers drop the padded rows) and sharded over those devices; and
    that sharding."""
    seed_ids = np.asarray(list(seed_ids), dtype=np.int64)
    padded = padded_seed_count(len(seed_ids), jax.local_device_count(), block)
    sharding = _mesh_sharding()
    keys = seed_keys(base_seed, _padded_rows(seed_ids, padded))
    return jax.device_put(keys, sharding), sharding


def lane_hparams(defaults: dict, hparams: dict | None, num_lanes: int) -> dict[str, np.ndarray]:
    """Each lane's traced hyperparameters [num_lanes] per name: `hparams`' values where given
    (arrays [num_lanes]), else `defaults` (the agent config's own) repeated."""
    hparams = dict(hparams or {})
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise ValueError(f"{unknown[0]} is not a traced hyperparameter; traced: {sorted(defaults)}")
    out = {}
    for name, default in defaults.items():
        value = np.asarray(hparams.get(name, np.repeat(np.asarray(default), num_lanes)))
        if value.shape != (num_lanes,):
            raise ValueError(f"{name} has shape {value.shape}; expected ({num_lanes},)")
        # Zero switches a form off, fixed in the program (agents.base.bind): lanes must agree.
        if np.any((value == 0) != (np.asarray(default) == 0)):
            raise ValueError(
                f"{name}: lanes that are zero and lanes that are not need two programs"
            )
        out[name] = value.astype(np.asarray(default).dtype)
    return out


def sharded_lane_hparams(hparams: dict[str, np.ndarray], rows: int, sharding: NamedSharding):
    """Lane hyperparameters padded like the keys (`sharded_seed_keys`) and sharded alike."""
    return {
        name: jax.device_put(_padded_rows(value, rows), sharding) for name, value in hparams.items()
    }


class Programs(NamedTuple):
    """The compiled programs of a run over blocks of seeds, and each one's compile seconds.
    Each takes the same arguments as the trainer's function, with a leading seed axis."""

    init: Any
    run_segment: Any
    evaluate: Any
    fold_in: Any
    compile_seconds: dict[str, float]
    abstract_state: Any  # the loop state's shapes, dtypes and shardings (what a restore needs)


def compile_programs(
    trainer: Trainer, keys: jax.Array, sharding: NamedSharding, block: int
) -> Programs:
    """The trainer's functions over the sharded seed axis in blocks of `block` seeds per device
    (`seed_blocks`), jitted, compiled and timed."""
    seconds = {}
    num_blocks = jnp.asarray(keys.shape[0] // (sharding.mesh.size * block), jnp.int32)

    def compile_timed(name, fn, *args, donate=False, **block_args):
        blocked = map_seed_blocks(fn, sharding, block, **block_args)
        jitted = jax.jit(blocked, donate_argnums=(1,) if donate else ())
        start = time.perf_counter()
        compiled = jitted.lower(num_blocks, *args).compile()
        seconds[name] = time.perf_counter() - start
        return functools.partial(compiled, num_blocks)

    fold_in = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)), out_shardings=sharding)
    hparams = {
        name: jax.ShapeDtypeStruct(keys.shape[:1], np.asarray(value).dtype, sharding=sharding)
        for name, value in trainer.default_hparams.items()
    }
    init = compile_timed("init", trainer.init, keys, hparams, num_batched=2)
    state = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        jax.eval_shape(jax.vmap(trainer.init), keys, hparams),
    )
    index = jnp.asarray(0, jnp.int32)
    run_segment = compile_timed(
        "run_segment",
        trainer.run_segment,
        state,
        index,
        index,
        donate=True,
        num_batched=1,
        num_shared=2,
        updates_first=True,
    )
    evaluate = compile_timed("evaluate", trainer.evaluate, state, keys, num_batched=2)
    return Programs(init, run_segment, evaluate, fold_in, seconds, state)


# The probe after each segment runs for this fraction of the segment's time.
PROBE_FRACTION = 0.1


class ChunkTiming(NamedTuple):
    segment_seconds: list[float]
    segment_iterations: list[int]
    probe_seconds: list[float]


class Position(NamedTuple):
    """Where a run stands between two segments: its chunk, the first iteration of the chunk's
    next segment, and the chunk's finished segments' summed SegmentLog (None before the first)
    and timing."""

    chunk: int
    first: int
    sums: Any
    timing: ChunkTiming

    @classmethod
    def start_of(cls, chunk: int, config: TrainConfig) -> Position:
        return cls(chunk, chunk * config.chunk_length, None, ChunkTiming([], [], []))

    def segments_done(self, config: TrainConfig) -> int:
        """Segments run so far in the whole run (a checkpoint's step)."""
        return self.chunk * config.segments_per_chunk + len(self.timing.segment_seconds)


def train_chunk(programs: Programs, state, config: TrainConfig, position: Position, probe, stop):
    """The rest of a chunk (the iterations between two evaluations) from `position`, as
    separately timed segments, the probe timed after each; stops early after a segment where
    `stop()` holds. Returns the loop state and the position after the last segment run (at
    the chunk's end: first == the chunk's last iteration + 1)."""
    chunk = position.chunk
    chunk_end = min((chunk + 1) * config.chunk_length, config.num_iterations)
    timing, sums = position.timing, position.sums
    for first in range(position.first, chunk_end, config.segment_length):
        if first > position.first and stop():
            return state, Position(chunk, first, sums, timing)
        start = time.perf_counter()
        state, log = programs.run_segment(
            state, jnp.asarray(first, jnp.int32), jnp.asarray(chunk_end, jnp.int32)
        )
        jax.block_until_ready(state)
        timing.segment_seconds.append(time.perf_counter() - start)
        timing.segment_iterations.append(min(config.segment_length, chunk_end - first))
        timing.probe_seconds.append(probe(PROBE_FRACTION * timing.segment_seconds[-1]))
        log = jax.tree.map(lambda x: np.asarray(x, np.float64), jax.device_get(log))
        sums = log if sums is None else jax.tree.map(np.add, sums, log)
    return state, Position(chunk, chunk_end, sums, timing)


class CompiledRun(NamedTuple):
    """A run ready to train: its compiled programs, each seed's evaluation key, the probe, and
    the seconds it took to get here."""

    programs: Programs
    eval_keys: jax.Array
    probe: Callable[[float], float]
    sharding: NamedSharding
    compile_seconds: float  # compiling every program, initialising the seeds and the probe


# Compiled programs and probes by the caller's program key, so a second run of the same static
# program (a sweep over other values of the traced hyperparameters) compiles nothing.
_PROGRAMS: dict = {}
_PROGRAMS_KEPT = 4


def _programs_for(program_key, trainer, keys, sharding, block) -> tuple[Programs, Callable]:
    """The compiled programs and probe for these padded keys: from the cache when the caller's
    `program_key` (hashable, naming everything that shapes the program) was compiled before
    for the same rows, block and devices; else compiled now (and cached under the key)."""
    devices = tuple(device.id for device in sharding.mesh.devices.flat)
    key = None if program_key is None else (program_key, keys.shape[0], block, devices)
    if key is not None and key in _PROGRAMS:
        programs, probe = _PROGRAMS[key]
        return programs._replace(
            compile_seconds=dict.fromkeys(programs.compile_seconds, 0.0)
        ), probe
    programs = compile_programs(trainer, keys, sharding, block)
    probe = make_probe(sharding)
    if key is not None:
        while len(_PROGRAMS) >= _PROGRAMS_KEPT:
            _PROGRAMS.pop(next(iter(_PROGRAMS)))
        _PROGRAMS[key] = (programs, probe)
    return programs, probe


def compile_run(
    agent: Agent,
    env,
    env_params,
    config: TrainConfig,
    seed_ids: np.ndarray,
    base_seed: int,
    hparams: dict | None = None,
    program_key=None,
) -> tuple[CompiledRun, Any]:
    """The run's compiled programs over the sharded, padded lanes, and every lane's initial
    loop state. A lane is a seed id with the agent's traced hyperparameters: `hparams` maps
    names to per-lane values [len(seed_ids)] (others: the agent config's own)."""
    trainer = make_train(agent, env, env_params, config)
    block = seed_blocks.block_size(config.seed_block)
    lanes = lane_hparams(trainer.default_hparams, hparams, len(seed_ids))
    keys, sharding = sharded_seed_keys(base_seed, seed_ids, block)
    start = time.perf_counter()
    programs, probe = _programs_for(program_key, trainer, keys, sharding, block)
    train_keys = programs.fold_in(keys, jnp.asarray(0, jnp.uint32))
    eval_keys = programs.fold_in(keys, jnp.asarray(1, jnp.uint32))
    lane_values = sharded_lane_hparams(lanes, keys.shape[0], sharding)
    state = jax.block_until_ready(programs.init(train_keys, lane_values))
    seconds = time.perf_counter() - start
    return CompiledRun(programs, eval_keys, probe, sharding, seconds), state


def evaluate_chunk(run: CompiledRun, state, chunk: int):
    """Every seed's greedy evaluation after `chunk`, on the host, and its seconds."""
    start = time.perf_counter()
    chunk_key = run.programs.fold_in(run.eval_keys, jnp.asarray(chunk, jnp.uint32))
    evaluation = jax.device_get(run.programs.evaluate(state, chunk_key))
    return evaluation, time.perf_counter() - start


class ChunkHistory(NamedTuple):
    """What each chunk of a run left, in chunk order (seed axes still padded)."""

    timings: list[ChunkTiming]
    logs: list  # the chunk's summed SegmentLog
    evaluations: list  # Evaluation after the chunk
    eval_seconds: list[float]


def run_chunks(
    run: CompiledRun, state, config: TrainConfig, num_seeds: int, progress, checkpoints=None
):
    """Train chunk by chunk, evaluating after each and reporting it to `progress`; returns the
    final loop state and the chunks' history. With `checkpoints` (a RunCheckpoints), resume
    from the newest checkpoint, save as it says, and stop at a segment boundary on a signal."""
    history = ChunkHistory([], [], [], [])
    position = Position.start_of(0, config)
    stop = (lambda: False) if checkpoints is None else lambda: checkpoints.signals.requested
    with contextlib.ExitStack() as stack:
        if checkpoints is not None:
            stack.callback(checkpoints.close)
            restored = checkpoints.resume(run.programs.abstract_state)
            if restored is not None:
                state, (history, position) = restored.state, _from_host(restored.host)
            stack.enter_context(checkpoints.signals)
        while position.chunk < config.num_evals:
            start = time.perf_counter()
            state, position = train_chunk(run.programs, state, config, position, run.probe, stop)
            chunk = position.chunk
            if position.first >= min((chunk + 1) * config.chunk_length, config.num_iterations):
                evaluation, seconds = evaluate_chunk(run, state, chunk)
                _append(history, position, evaluation, seconds)
                position = Position.start_of(chunk + 1, config)
                if progress is not None:
                    progress(
                        chunk + 1,
                        config.num_evals,
                        {"eval_return": float(np.mean(evaluation.returns[:num_seeds]))},
                    )
                if checkpoints is not None and checkpoints.due(
                    chunk + 1, config.num_evals, time.perf_counter() - start
                ):
                    checkpoints.save(
                        position.segments_done(config), state, _to_host(history, position)
                    )
            if checkpoints is not None:
                checkpoints.stop_if_asked(
                    position.segments_done(config), state, _to_host(history, position)
                )
    return state, history


def _append(history: ChunkHistory, position: Position, evaluation, seconds: float) -> None:
    history.timings.append(position.timing)
    history.logs.append(position.sums)
    history.evaluations.append(evaluation)
    history.eval_seconds.append(seconds)


def _to_host(history: ChunkHistory, position: Position) -> dict:
    """What a checkpoint keeps beside the loop state: the finished chunks and where the run is."""
    return {"history": history._asdict(), "position": position._asdict()}


def _from_host(host: dict) -> tuple[ChunkHistory, Position]:
    """The inverse of `_to_host` (checkpoints return NamedTuples as dicts)."""
    raw = host["history"]
    logs = [SegmentLog(**log) for log in raw["logs"]]
    history = ChunkHistory(
        [ChunkTiming(**timing) for timing in raw["timings"]],
        logs,
        [Evaluation(**evaluation) for evaluation in raw["evaluations"]],
        list(raw["eval_seconds"]),
    )
    position = host["position"]
    sums = None if position["sums"] is None else SegmentLog(**position["sums"])
    timing = ChunkTiming(**position["timing"])
    return history, Position(position["chunk"], position["first"], sums, timing)


def run_seeds(
    agent: Agent,
    env,
    env_params,
    config: TrainConfig,
    seed_ids,
    *,
    base_seed: int = 0,
    progress: Callable[[int, int, dict], None] | None = None,
    keep_state: bool = False,
    hparams: dict | None = None,
    program_key=None,
    checkpoints=None,
) -> SeedResults:
    """Train seeds `seed_ids` in one compiled program; evaluate greedily after every chunk.
    With `checkpoints` (benchmarks.checkpoints.RunCheckpoints) the run resumes from and saves
    checkpoints of its whole state.

    `hparams` gives each seed (lane) its own traced hyperparameters and `program_key` lets a
    later run reuse this one's compiled programs (`compile_run`): what a sweep uses.

    The seed axis is padded to whole blocks of `config.seed_block` seeds per device (padded
    seeds are dropped), sharded over all local devices and run block by block (`seed_blocks`),
    so a seed's results do not depend on how many seeds run beside it.
    `progress(chunk_done, num_chunks, info)` is called once compiled (chunk_done 0, info
    {"compile_s": seconds}) and after every chunk (info {"eval_return": mean}).
    """
    seed_ids = np.asarray(list(seed_ids), dtype=np.int64)
    run, state = compile_run(
        agent, env, env_params, config, seed_ids, base_seed, hparams, program_key
    )
    if progress is not None:
        progress(0, config.num_evals, {"compile_s": run.compile_seconds})
    state, history = run_chunks(run, state, config, len(seed_ids), progress, checkpoints)
    final_state = _unpadded(state.agent_state, len(seed_ids)) if keep_state else None
    return seed_results(seed_ids, config, run, history, final_state)


def eval_env_steps(config: TrainConfig) -> np.ndarray:
    """[num_evals] env steps per seed at each evaluation."""
    return np.minimum(
        (np.arange(1, config.num_evals + 1) * config.chunk_length) * config.num_envs,
        config.num_iterations * config.num_envs,
    )


def _unpadded(tree, num_seeds: int):
    """The tree on the host without the padded seeds' rows."""
    return jax.tree.map(lambda x: np.asarray(x)[:num_seeds], jax.device_get(tree))


def seed_results(
    seed_ids: np.ndarray, config: TrainConfig, run: CompiledRun, history: ChunkHistory, final_state
) -> SeedResults:
    """The run's per-seed outcomes (padded seeds dropped), curves over chunks and timings."""
    num_seeds = len(seed_ids)

    def stack(values):  # per-chunk values [S, ...] -> [S, num_chunks, ...]
        return np.stack([np.asarray(v)[:num_seeds] for v in values], axis=1)

    def flat(field):
        return np.asarray([x for timing in history.timings for x in getattr(timing, field)])

    segment_seconds = flat("segment_seconds")
    evaluations, logs = history.evaluations, history.logs
    return SeedResults(
        seed_ids=seed_ids,
        eval_steps=eval_env_steps(config),
        eval_returns=stack([e.returns for e in evaluations]),
        eval_discounted=stack([e.discounted_returns for e in evaluations]),
        final={k: np.asarray(v)[:num_seeds] for k, v in evaluations[-1]._asdict().items()},
        train_returns=stack([log.return_sum / np.maximum(log.episodes, 1.0) for log in logs]),
        train_loss=stack([log.loss_sum / np.maximum(log.iterations, 1.0) for log in logs]),
        compile_seconds=run.compile_seconds,
        train_seconds=float(np.sum(segment_seconds)),
        segment_seconds=segment_seconds,
        segment_env_steps=flat("segment_iterations") * config.num_envs,
        probe_seconds=flat("probe_seconds"),
        eval_seconds=float(sum(history.eval_seconds)),
        env_steps=config.num_iterations * config.num_envs,
        num_devices=run.sharding.mesh.size,
        program_compile_seconds=run.programs.compile_seconds,
        final_state=final_state,
    )
