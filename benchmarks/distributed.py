"""Many hosts: each process of a `jax.distributed` run trains its share of the seeds on its
local devices; per-seed results are all-gathered so process 0 writes one result file.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from agents.base import ConfigError
from benchmarks.runner import PER_SEED_FIELDS, SeedResults


def initialize(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """Join a multi-process run (no-op when no flag is given); every flag or none is required."""
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if not any(given):
        return
    if not all(given):
        raise ConfigError(
            "--coordinator, --num-processes and --process-id go together; give all three"
        )
    if ":" not in coordinator:
        raise ConfigError(f"--coordinator={coordinator!r} must be HOST:PORT")
    if num_processes < 1:
        raise ConfigError(f"--num-processes={num_processes} must be >= 1")
    if not 0 <= process_id < num_processes:
        raise ConfigError(f"--process-id={process_id} must be in [0, {num_processes - 1}]")
    # CPU processes need a collectives backend for the all-gather; accelerators bring their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)


def is_main_process() -> bool:
    return jax.process_index() == 0


def local_share(seed_ids) -> list[int]:
    """This process's contiguous share of the seed ids (shares differ in size by at most one)."""
    seed_ids = list(seed_ids)
    if jax.process_count() == 1:
        return seed_ids
    if len(seed_ids) < jax.process_count():
        raise ConfigError(
            f"seeds={len(seed_ids)} is fewer than the {jax.process_count()} processes; give at "
            "least one seed per process"
        )
    return np.array_split(np.asarray(seed_ids), jax.process_count())[jax.process_index()].tolist()


def _allgather_rows(local: np.ndarray, counts: list[int]) -> np.ndarray:
    """Concatenate every process's [n_p, ...] array in process order (padded to one shape).

    Rows travel as their bytes: JAX without x64 would carry float64 curves and int64 ids as
    32-bit values, and the gathered result must equal a single process's bit for bit."""
    from jax.experimental import multihost_utils

    local = np.ascontiguousarray(local)
    raw = local.reshape(local.shape[0], -1).view(np.uint8)  # [n_p, bytes per row]
    padded = np.zeros((max(counts), raw.shape[1]), np.uint8)
    padded[: raw.shape[0]] = raw
    gathered = np.asarray(multihost_utils.process_allgather(padded))  # [P, max, bytes]
    rows = np.concatenate([gathered[p, :n] for p, n in enumerate(counts)], axis=0)
    return np.ascontiguousarray(rows).view(local.dtype).reshape(-1, *local.shape[1:])


def gather(local: SeedResults) -> SeedResults:
    """All processes' per-seed results, seeds in order; times are the slowest process's."""
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    counts = (
        np.asarray(multihost_utils.process_allgather(np.asarray(len(local.seed_ids))))
        .reshape(-1)
        .tolist()
    )
    programs = sorted(local.program_compile_seconds)
    # Timings: the slowest process's, element by element (every process runs the same segments).
    slowest = np.asarray(
        multihost_utils.process_allgather(
            np.asarray(
                [
                    local.compile_seconds,
                    local.eval_seconds,
                    *(local.program_compile_seconds[name] for name in programs),
                    *local.segment_seconds,
                    *local.probe_seconds,
                ]
            )
        )
    ).max(axis=0)
    num_segments = len(local.segment_seconds)
    segments = slowest[2 + len(programs) : 2 + len(programs) + num_segments]
    probes = slowest[2 + len(programs) + num_segments :]
    rows = {name: _allgather_rows(getattr(local, name), counts) for name in PER_SEED_FIELDS}
    final = {name: _allgather_rows(value, counts) for name, value in local.final.items()}
    return dataclasses.replace(
        local,
        **rows,
        final=final,
        compile_seconds=float(slowest[0]),
        eval_seconds=float(slowest[1]),
        program_compile_seconds={
            name: float(value) for name, value in zip(programs, slowest[2 : 2 + len(programs)])
        },
        segment_seconds=segments,
        probe_seconds=probes,
        train_seconds=float(np.sum(segments)),
        num_devices=jax.device_count(),
        final_state=None,
    )
