"""Hyperparameter sweeps: seeds x configurations of one agent on one env, as lanes of one
compiled program.

A lane is a seed with its configuration's traced hyperparameters (agents/base.py): configurations
that differ only in traced fields share one program, vmapped over seeds and configurations alike
and sharded over the devices; a field that sets a shape or the learning schedule splits them into
one program per value. Lanes run in memory-planned batches of one size, so every batch reuses the
same compiled program, and a lane's numbers do not depend on its batch (benchmarks/seed_blocks.py).

Selection is honest: the best configuration is chosen on the tuning seeds and trained again on
fresh ones, and both figures are reported, so the winner's curse shows.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

import agents
import envs
from agents.base import ConfigError, hyperparams, require, static_config, traced_fields
from agents.coercion import field_types
from benchmarks import seed_blocks
from benchmarks.cell import CALIBRATION_METRICS, CellSpec, cell_record
from benchmarks.progress import chunk_bar
from benchmarks.results import metadata, to_jsonable
from benchmarks.runner import (
    SeedResults,
    concat_rows,
    results_from_host,
    results_to_host,
    run_seeds,
    select_rows,
)
from benchmarks.train import TrainConfig, make_train

DISTRIBUTIONS = ("uniform", "loguniform", "choice")
# Selection metrics: the IQM over seeds of the final greedy return (higher is better) or of a
# calibration score (lower is better).
SELECT_METRICS = ("return", *CALIBRATION_METRICS)
# Peak memory of a run over its state's bytes: the state, updated in place by each segment, and
# what XLA holds beside it (on the CPU about 1.3 states: the block loop's carry, activations).
# tests/test_sweep.py checks XLA's own accounting of the compiled programs stays below it.
MEMORY_HEADROOM = 3.0
# --max-memory's default: this share of the devices' memory (of the host's RAM on the CPU).
DEFAULT_MEMORY_FRACTION = {"cpu": 0.5}
ACCELERATOR_MEMORY_FRACTION = 0.8


# --- the search space -----------------------------------------------------------------------------


class SearchSpace(NamedTuple):
    """Configurations to try: the product of `grid`'s values, each with `samples` random draws
    of the `random` fields (drawn with `search_seed`, so a sweep is reproducible)."""

    grid: dict[str, list]  # field -> values (text or numbers, read as the field's type)
    random: dict[str, str]  # field -> "uniform:LOW:HIGH", "loguniform:LOW:HIGH" or "choice:A,B"
    samples: int = 1
    search_seed: int = 0

    def to_json(self) -> dict:
        return to_jsonable(self._asdict())


def parse_grid(pairs: list[str]) -> dict[str, list[str]]:
    """`--grid KEY=V1,V2,...` flags -> {KEY: [V1, V2, ...]}; values separated by ';' where a
    value itself has commas (hidden_sizes=64,64;128,128)."""
    grid = {}
    for pair in pairs:
        key, values = _key_value(pair, "--grid")
        separator = ";" if ";" in values else ","
        items = [v.strip() for v in values.split(separator) if v.strip()]
        require(bool(items), f"--grid {pair!r} lists no values")
        require(key not in grid, f"--grid {key} is given twice; list all its values in one flag")
        grid[key] = items
    return grid


def parse_random(pairs: list[str]) -> dict[str, str]:
    """`--random KEY=DIST:...` flags -> {KEY: "DIST:..."}, each checked by `_draw`'s rules."""
    random = {}
    for pair in pairs:
        key, spec = _key_value(pair, "--random")
        _distribution(key, spec)
        random[key] = spec
    return random


def _key_value(pair: str, flag: str) -> tuple[str, str]:
    require("=" in pair and bool(pair.split("=", 1)[0].strip()), f"{flag} {pair!r} is not KEY=...")
    key, value = pair.split("=", 1)
    return key.strip(), value.strip()


def _distribution(key: str, spec: str) -> tuple[str, list[str]]:
    """(kind, arguments) of a random field's spec, or ConfigError naming it and what is valid."""
    kind, _, rest = str(spec).partition(":")
    usage = f"{key}={spec!r} must be uniform:LOW:HIGH, loguniform:LOW:HIGH or choice:A,B,..."
    require(kind in DISTRIBUTIONS, usage)
    if kind == "choice":
        options = [o.strip() for o in rest.split(",") if o.strip()]
        require(bool(options), usage)
        return kind, options
    bounds = rest.split(":")
    require(len(bounds) == 2, usage)
    try:
        low, high = float(bounds[0]), float(bounds[1])
    except ValueError:
        raise ConfigError(usage) from None
    require(low < high, f"{key}={spec!r}: LOW must be < HIGH")
    require(kind == "uniform" or low > 0, f"{key}={spec!r}: loguniform needs 0 < LOW")
    return kind, bounds


def _draw(rng: np.random.Generator, key: str, spec: str, annotation) -> Any:
    """One draw of a random field; integers are rounded (log-uniform target periods, say)."""
    kind, args = _distribution(key, spec)
    if kind == "choice":
        return args[int(rng.integers(len(args)))]
    low, high = (float(a) for a in args)
    if kind == "loguniform":
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    return round(float(value)) if annotation is int else float(value)


def configurations(space: SearchSpace, config_cls: type) -> list[dict]:
    """The swept values of every configuration, grid order first, then the random draws."""
    names = list(space.grid)
    points = [dict(zip(names, values)) for values in itertools.product(*space.grid.values())]
    if not space.random:
        return points
    rng = np.random.default_rng(space.search_seed)
    types = field_types(config_cls)
    draws = [
        {key: _draw(rng, key, spec, types.get(key)) for key, spec in space.random.items()}
        for _ in range(space.samples)
    ]
    return [{**point, **draw} for point in points for draw in draws]


# --- the sweep's definition -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """One agent on one env over `configs`, each trained on `seeds` seeds; the winner by
    `select` is trained again on `eval_seeds` fresh seeds."""

    agent: str
    env: str
    env_overrides: dict
    train_config: TrainConfig
    base_overrides: dict  # agent overrides every configuration shares
    space: SearchSpace
    points: tuple[dict, ...]  # the swept fields' values of each configuration
    configs: tuple[Any, ...]  # the validated agent Config of each
    seeds: int
    eval_seeds: int
    select: str = "return"

    @classmethod
    def build(
        cls,
        agent: str,
        env: str,
        space: SearchSpace,
        *,
        seeds: int,
        eval_seeds: int,
        select: str = "return",
        base_overrides=None,
        env_overrides=None,
        train_overrides=None,
    ) -> SweepSpec:
        """Validate everything before anything is compiled: names, every configuration's
        values, seed counts and the selection metric (ConfigError naming the bad one)."""
        require(seeds >= 1, f"seeds={seeds} must be >= 1")
        require(eval_seeds >= 0, f"eval_seeds={eval_seeds} must be >= 0 (0: no fresh seeds)")
        require(select in SELECT_METRICS, f"select={select!r}; valid: {', '.join(SELECT_METRICS)}")
        require(space.samples >= 1, f"samples={space.samples} must be >= 1")
        require(bool(space.grid or space.random), "a sweep needs at least one --grid or --random")
        swept = [*space.grid, *space.random]
        duplicated = sorted(set(space.grid) & set(space.random))
        require(not duplicated, f"{', '.join(duplicated)} is both in the grid and random")
        base = CellSpec.build(agent, env, base_overrides, env_overrides, train_overrides)
        config_cls = agents.module(agent).Config
        fields = {f.name for f in dataclasses.fields(config_cls)}
        for name in swept:
            require(
                name in fields,
                f"cannot sweep {name!r}: not a {agent} config field; valid: "
                + ", ".join(sorted(fields)),
            )
        configs = tuple(
            agents.make_config(agent, **{**dict(base_overrides or {}), **point})
            for point in configurations(space, config_cls)
        )
        # Each configuration's swept values as its Config read them (numbers, not the text).
        points = tuple({name: getattr(config, name) for name in swept} for config in configs)
        return cls(
            agent,
            env,
            dict(env_overrides or {}),
            base.train_config,
            dict(base_overrides or {}),
            space,
            points,
            configs,
            seeds,
            eval_seeds,
            select,
        )

    @property
    def name(self) -> str:
        return f"{self.agent}/{self.env}"

    def cell(self, index: int) -> CellSpec:
        """Configuration `index` as a cell (what its record is scored and described as)."""
        return CellSpec(
            self.agent, self.env, self.configs[index], self.env_overrides, self.train_config
        )


# --- planning: programs and memory ---------------------------------------------------------------


class Program(NamedTuple):
    """Configurations that share one compiled program (they differ only in traced fields)."""

    static_config: Any
    indices: tuple[int, ...]  # into SweepSpec.configs


def programs(spec: SweepSpec) -> list[Program]:
    """The configurations grouped by their static part, in order of first appearance."""
    groups: dict[Any, list[int]] = {}
    for index, config in enumerate(spec.configs):
        groups.setdefault(static_config(config), []).append(index)
    return [Program(config, tuple(indices)) for config, indices in groups.items()]


def lane_bytes(spec: SweepSpec, config) -> int:
    """Bytes of one lane's training state (agent, replay, envs), from shapes alone: nothing is
    compiled or allocated."""
    env, params = envs.make(spec.env, **spec.env_overrides)
    trainer = make_train(agents.module(spec.agent).make(config), env, params, spec.train_config)
    shapes = jax.eval_shape(trainer.init, jax.random.PRNGKey(0), trainer.default_hparams)
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes)))


def default_max_memory() -> int:
    """Bytes a sweep may plan for: a share of the local devices' memory, or of the host's RAM
    where the devices report none (the CPU)."""
    devices = jax.local_devices()
    limits = [(d.memory_stats() or {}).get("bytes_limit", 0) for d in devices]
    if all(limit > 0 for limit in limits):
        return int(ACCELERATOR_MEMORY_FRACTION * sum(limits))
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(DEFAULT_MEMORY_FRACTION.get(jax.default_backend(), 0.5) * ram)


def parse_bytes(text: str) -> int:
    """'512MB', '4GiB', '2e9' -> bytes; ConfigError naming the value otherwise."""
    units = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}
    units |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
    if match is None or match.group(2) not in units:
        raise ConfigError(f"--max-memory={text!r} must be bytes, e.g. 2e9, 512MB or 4GiB")
    value = int(float(match.group(1)) * units[match.group(2)])
    require(value > 0, f"--max-memory={text!r} must be > 0")
    return value


def lanes_per_batch(num_lanes: int, bytes_per_lane: int, max_memory: int, block: int) -> int:
    """Lanes each batch runs: all of them if they fit in max_memory (with MEMORY_HEADROOM), else
    as many whole blocks per device as fit; at least one block per device."""
    devices = jax.local_device_count()
    unit = block * devices  # lanes are padded to whole blocks on every device anyway
    fitting = int(max_memory // (bytes_per_lane * MEMORY_HEADROOM))
    whole = seed_blocks.padded_seed_count(num_lanes, devices, block)
    return max(unit, min(whole, fitting // unit * unit))


class Plan(NamedTuple):
    """How a program's lanes run: lane_seeds/lane_configs [L] per lane, in batches of
    `batch_lanes`."""

    program: Program
    lane_seeds: np.ndarray
    lane_configs: np.ndarray  # index into SweepSpec.configs
    bytes_per_lane: int
    batch_lanes: int

    @property
    def num_batches(self) -> int:
        return math.ceil(len(self.lane_seeds) / self.batch_lanes)

    def to_json(self) -> dict:
        return {
            "configurations": list(self.program.indices),
            "lanes": len(self.lane_seeds),
            "bytes_per_lane": self.bytes_per_lane,
            "batch_lanes": self.batch_lanes,
            "batches": self.num_batches,
        }


def plan(spec: SweepSpec, seed_ids, max_memory: int) -> list[Plan]:
    """Every program's lanes (each configuration x each seed) and its batches."""
    block = seed_blocks.block_size(spec.train_config.seed_block)
    plans = []
    for program in programs(spec):
        lane_configs = np.repeat(np.asarray(program.indices), len(seed_ids))
        lane_seeds = np.tile(np.asarray(seed_ids), len(program.indices))
        per_lane = lane_bytes(spec, spec.configs[program.indices[0]])
        batch = lanes_per_batch(len(lane_seeds), per_lane, max_memory, block)
        plans.append(Plan(program, lane_seeds, lane_configs, per_lane, batch))
    return plans


# --- running ---------------------------------------------------------------------------------------


class SweepCheckpoints:
    """A sweep's progress in `directory`, so that a killed sweep resumes where it stopped.

    The batch being trained keeps its loop checkpoints in DIR/NAME/ (RunCheckpoints, as
    `train` does); a trained batch is kept as its results, arrays bit for bit, in
    DIR/NAME.json, and its loop checkpoints removed. Each is fingerprinted by the sweep and
    the batch's lanes: another sweep's is refused (CheckpointMismatch, one line naming the
    field). `finished()` removes everything once the sweep's results are written."""

    def __init__(self, directory, fingerprint: dict, every: int | None = None, log=print):
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.every = every
        self.log = log

    def _batch_fingerprint(self, lanes: dict) -> dict:
        return {**self.fingerprint, "lanes": to_jsonable(lanes)}

    def _results_path(self, name: str) -> Path:
        # Each process keeps its own copy: a multi-process run need not share a filesystem.
        suffix = "" if jax.process_count() == 1 else f".process_{jax.process_index()}"
        return self.directory / f"{name}{suffix}.json"

    def trained(self, name: str, lanes: dict) -> SeedResults | None:
        """The batch's kept results, or None where it is still to train (in every process,
        unless all of them have it)."""
        from benchmarks.checkpoints import encode_host, first_difference, mismatch_error

        path = self._results_path(name)
        kept = None
        payload = _read_kept(path, self.log)
        if payload is not None:
            current = encode_host(self._batch_fingerprint(lanes), "fingerprint")
            difference = first_difference(payload["fingerprint"], current)
            if difference is not None:
                raise mismatch_error(self.directory, difference)
            kept = payload["results"]
        if jax.process_count() > 1:
            from benchmarks.checkpoints import allgather

            if not allgather(np.asarray(kept is not None)).all():
                kept = None
        if kept is None:
            return None
        self.log(f"{name}: trained earlier, kept ({path})")
        return results_from_host(kept)

    def run_checkpoints(self, name: str, lanes: dict):
        """The loop checkpoints of the batch about to train."""
        from benchmarks.checkpoints import RunCheckpoints

        fingerprint = self._batch_fingerprint(lanes)
        return RunCheckpoints(self.directory / name, fingerprint, self.every, log=self.log)

    def keep(self, name: str, lanes: dict, results: SeedResults, run_checkpoints) -> None:
        """The batch is trained: keep its results, drop its loop checkpoints."""
        from benchmarks.checkpoints import encode_host
        from benchmarks.results import atomic_write_text

        payload = {
            "fingerprint": encode_host(self._batch_fingerprint(lanes), "fingerprint"),
            "results": results_to_host(results),
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self._results_path(name), json.dumps(payload))
        run_checkpoints.finished()

    def finished(self) -> None:
        """The sweep's results are written (or it starts over): remove its checkpoints."""
        shutil.rmtree(self.directory, ignore_errors=True)


def _read_kept(path: Path, log) -> dict | None:
    """A kept batch's payload; None (trained again, with a warning) where it is unreadable."""
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
        if isinstance(payload, dict) and {"fingerprint", "results"} <= set(payload):
            return payload
        problem = "incomplete"
    except (OSError, ValueError) as error:
        problem = f"{type(error).__name__}"
    log(f"warning: {path} is unusable ({problem}); training that batch again")
    return None


def sweep_checkpoints(
    spec: SweepSpec,
    seed_start: int,
    base_seed: int,
    directory,
    every: int | None,
    log,
    rerun: bool = False,
) -> SweepCheckpoints | None:
    """The checkpoints of one sweep in `directory` (every: chunks between saves of a training
    batch, None: decided by its length, 0: none; rerun: any there are removed first),
    fingerprinted by everything its numbers depend on: its configurations, seeds, selection,
    seed block and the code's commit."""
    if every == 0:
        return None
    from benchmarks.results import git_commit

    fingerprint = {
        "agent": spec.agent,
        "env": spec.env,
        "env_overrides": to_jsonable(spec.env_overrides),
        "configs": to_jsonable(spec.configs),
        "train_config": to_jsonable(spec.train_config),
        "seeds": [seed_start, spec.seeds, spec.eval_seeds],
        "base_seed": base_seed,
        "select": spec.select,
        "seed_block": seed_blocks.block_size(spec.train_config.seed_block),
        "commit": git_commit(),
        "processes": jax.process_count(),
    }
    checkpoints = SweepCheckpoints(directory, fingerprint, every, log)
    if rerun:
        checkpoints.finished()  # start over
    return checkpoints


def program_key(spec: SweepSpec, program: Program) -> tuple:
    """What names a compiled program: all but the traced values (runner's program cache)."""
    return (
        spec.agent,
        program.static_config,
        spec.env,
        repr(sorted(spec.env_overrides.items())),
        spec.train_config,
    )


def run_lanes(
    spec: SweepSpec,
    plan_: Plan,
    lane_seeds,
    lane_configs,
    *,
    base_seed: int,
    label: str = "",
    checkpoints: SweepCheckpoints | None = None,
    name: str = "lanes",
) -> tuple[SeedResults, list[SeedResults]]:
    """Train the lanes (seed, configuration) in batches of plan_.batch_lanes (the last padded
    with copies of its last lane, dropped again), all through one compiled program; a progress
    bar per batch where `label` is given. With `checkpoints`, batch B is NAME_batchB there: a
    kept one is not trained again, the one training resumes. Returns the lanes' results in
    order and each batch's own (for its timing)."""
    agent = agents.module(spec.agent).make(spec.configs[plan_.program.indices[0]])
    env, params = envs.make(spec.env, **spec.env_overrides)
    key = program_key(spec, plan_.program)
    lane_seeds, lane_configs = np.asarray(lane_seeds), np.asarray(lane_configs)
    parts, batches = [], []
    starts = range(0, len(lane_seeds), plan_.batch_lanes)
    for number, start in enumerate(starts, 1):
        rows = np.arange(start, min(start + plan_.batch_lanes, len(lane_seeds)))
        padded = np.concatenate([rows, np.repeat(rows[-1:], plan_.batch_lanes - len(rows))])
        batch_name = f"{name}_batch{number}"
        lanes = {"seeds": lane_seeds[padded], "configs": lane_configs[padded]}
        results = None if checkpoints is None else checkpoints.trained(batch_name, lanes)
        if results is None:
            run_checkpoints = (
                None if checkpoints is None else checkpoints.run_checkpoints(batch_name, lanes)
            )
            title = f"{label} batch {number}/{len(starts)}" if label else None
            with chunk_bar(title, spec.train_config.num_evals) as bar_update:
                results = run_seeds(
                    agent,
                    env,
                    params,
                    spec.train_config,
                    lane_seeds[padded],
                    base_seed=base_seed,
                    progress=bar_update,
                    hparams=_lane_values(spec, lane_configs[padded]),
                    program_key=key,
                    checkpoints=run_checkpoints,
                )
            if checkpoints is not None:
                checkpoints.keep(batch_name, lanes, results, run_checkpoints)
        batches.append(results)
        parts.append(select_rows(results, np.arange(len(rows))))
    return concat_rows(parts), batches


def _lane_values(spec: SweepSpec, lane_configs: np.ndarray) -> dict[str, np.ndarray]:
    """Each lane's traced hyperparameters [L] per name, from its configuration."""
    values = [hyperparams(spec.configs[i]) for i in lane_configs]
    names = traced_fields(spec.configs[0])
    return {name: np.asarray([np.asarray(v[name]) for v in values]) for name in names}


def _configuration_record(spec: SweepSpec, index: int, results: SeedResults, base_seed: int):
    """The standard cell record of one configuration, its program's throughput left out (it is
    the sweep's, shared by every configuration: see `throughput`)."""
    record = cell_record(spec.cell(index), results, base_seed=base_seed)
    record.pop("throughput")
    return {"overrides": to_jsonable(spec.points[index]), "cell": record}


def score(cell: dict, metric: str) -> float | None:
    """A configuration's selection score (higher is better), None where no seed is finite."""
    aggregate = (
        cell["aggregates"]["return"]
        if metric == "return"
        else cell["calibration"]["aggregates"][metric]
    )
    if aggregate is None:
        return None
    value = aggregate["iqm"]["value"]
    return value if metric == "return" else -value


def select_winner(records: list[dict], metric: str) -> int | None:
    """Index of the best-scoring configuration (the first among equals), None if none scored."""
    scores = [score(r["cell"], metric) for r in records]
    finite = [(s, -i) for i, s in enumerate(scores) if s is not None and np.isfinite(s)]
    return -max(finite)[1] if finite else None


def _throughput(batches: list[SeedResults], plan_: Plan) -> dict:
    lanes = sum(len(b.seed_ids) for b in batches)
    seconds = sum(b.train_seconds for b in batches)
    env_steps = sum(len(b.seed_ids) * b.env_steps for b in batches)
    return {
        **plan_.to_json(),
        "env_steps_per_second": env_steps / max(seconds, 1e-9),
        "train_seconds": seconds,
        "compile_seconds": sum(b.compile_seconds for b in batches),
        "padded_lanes": lanes - len(plan_.lane_seeds),
        "num_devices": batches[0].num_devices,
    }


def run_sweep(
    spec: SweepSpec,
    *,
    seed_start: int = 0,
    base_seed: int = 0,
    max_memory: int | None = None,
    log: Callable[[str], None] = print,
    show_progress: bool = True,
    checkpoints: SweepCheckpoints | None = None,
) -> dict[str, Any]:
    """Train every configuration on seeds seed_start.. (+ spec.seeds), select the best by
    spec.select, train it again on the next spec.eval_seeds seeds; the sweep's record. With
    `checkpoints` (see `sweep_checkpoints`) a killed sweep resumes where it stopped."""
    max_memory = max_memory or default_max_memory()
    seed_ids = list(range(seed_start, seed_start + spec.seeds))
    plans = plan(spec, seed_ids, max_memory)
    log(_plan_line(spec, plans, max_memory))
    lane_results: dict[int, SeedResults] = {}
    throughput = []
    for number, plan_ in enumerate(plans, 1):
        label = f"{spec.name} program {number}/{len(plans)}" if show_progress else ""
        results, batches = run_lanes(
            spec,
            plan_,
            plan_.lane_seeds,
            plan_.lane_configs,
            base_seed=base_seed,
            label=label,
            checkpoints=checkpoints,
            name=f"program{number}",
        )
        throughput.append(_throughput(batches, plan_))
        for index in plan_.program.indices:
            lane_results[index] = select_rows(results, np.flatnonzero(plan_.lane_configs == index))
    records = [
        _configuration_record(spec, i, lane_results[i], base_seed) for i in range(len(spec.configs))
    ]
    selection = _selection(
        spec, records, plans, seed_start, base_seed, log, show_progress, checkpoints
    )
    return to_jsonable(
        {
            "agent": spec.agent,
            "env": spec.env,
            "env_overrides": spec.env_overrides,
            "train_config": spec.train_config,
            "base_overrides": spec.base_overrides,
            "search": spec.space.to_json(),
            "swept": [*spec.space.grid, *spec.space.random],
            "seed_ids": seed_ids,
            "base_seed": base_seed,
            "max_memory_bytes": max_memory,
            "configurations": records,
            "selection": selection,
            "programs": throughput,
        }
    )


def _selection(
    spec, records, plans, seed_start, base_seed, log, show_progress, checkpoints=None
) -> dict:
    """The winner on the tuning seeds and, retrained on fresh seeds, its figures there."""
    winner = select_winner(records, spec.select)
    out = {"metric": spec.select, "winner": winner, "tuning": None, "fresh": None}
    if winner is None:
        log(f"{spec.name}: no configuration has a finite {spec.select}; nothing selected")
        return out
    out["tuning"] = _selected_aggregate(records[winner]["cell"], spec.select)
    if spec.eval_seeds == 0:
        return out
    fresh_ids = np.arange(seed_start + spec.seeds, seed_start + spec.seeds + spec.eval_seeds)
    plan_ = next(p for p in plans if winner in p.program.indices)
    # The winner's program, over as few lanes as the fresh seeds need (padding them to the
    # sweep's batch would train that many lanes for nothing).
    block = seed_blocks.block_size(spec.train_config.seed_block)
    needed = seed_blocks.padded_seed_count(len(fresh_ids), jax.local_device_count(), block)
    plan_ = plan_._replace(batch_lanes=min(plan_.batch_lanes, needed))
    log(f"{spec.name}: winner {_describe(spec.points[winner])}; {len(fresh_ids)} fresh seeds")
    label = f"{spec.name} fresh seeds" if show_progress else ""
    results, _ = run_lanes(
        spec,
        plan_,
        fresh_ids,
        np.full(len(fresh_ids), winner),
        base_seed=base_seed,
        label=label,
        checkpoints=checkpoints,
        name="fresh",
    )
    fresh = _configuration_record(spec, winner, results, base_seed)["cell"]
    out["fresh"] = _selected_aggregate(fresh, spec.select)
    out["fresh_cell"] = fresh
    return out


def _selected_aggregate(cell: dict, metric: str) -> dict | None:
    if metric == "return":
        return cell["aggregates"]["return"]
    return cell["calibration"]["aggregates"][metric]


def _describe(point: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def _plan_line(spec: SweepSpec, plans: list[Plan], max_memory: int) -> str:
    lanes = sum(len(p.lane_seeds) for p in plans)
    batches = sum(p.num_batches for p in plans)
    per_lane = max(p.bytes_per_lane for p in plans)
    return (
        f"{spec.name}: {len(spec.configs)} configurations x {spec.seeds} seeds = {lanes} lanes "
        f"in {len(plans)} program(s), {batches} batch(es); {per_lane / 1e6:.2f} MB per lane, "
        f"planned within {max_memory / 1e9:.1f} GB"
    )


def sweep_payload(sweeps: list[dict], *, suite: str | None = None, source: str = "") -> dict:
    """The canonical JSON of a sweep run (`distbench sweep`, or a suite's [sweep] table)."""
    payload = {"kind": "sweep", "metadata": metadata(), "sweeps": sweeps}
    if suite is not None:
        payload |= {"suite": suite, "suite_source": source}
    return payload


def selection_summary(sweep: dict) -> str:
    """One line: the winner and its figures on tuning and fresh seeds."""
    selection = sweep["selection"]
    if selection["winner"] is None:
        return f"{sweep['agent']}/{sweep['env']}: no configuration had a finite score"
    point = sweep["configurations"][selection["winner"]]["overrides"]
    parts = [f"{sweep['agent']}/{sweep['env']}: best by {selection['metric']}: {_describe(point)}"]
    for name in ("tuning", "fresh"):
        aggregate = selection[name]
        if aggregate is not None:
            parts.append(f"{name} IQM {_interval(aggregate)}")
    return "; ".join(parts)


def _interval(aggregate: dict) -> str:
    iqm = aggregate["iqm"]
    return f"{iqm['value']:.4g} [{iqm['ci_low']:.4g}, {iqm['ci_high']:.4g}] (n={aggregate['n']})"
