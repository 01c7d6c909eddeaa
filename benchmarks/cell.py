"""One cell of a benchmark: an agent x env x config trained over many seeds, then scored on
returns, calibration of its predicted return distribution, and throughput.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import agents
import envs
from agents.base import build_config, require
from benchmarks import distributed, metrics, stats
from benchmarks.results import metadata, to_jsonable
from benchmarks.runner import SeedResults, run_seeds
from benchmarks.seed_blocks import map_blocks_padded
from benchmarks.train import TrainConfig

CALIBRATION_METRICS = ("wasserstein1", "cramer", "crps", "ks", "quantile_coverage_error", "pit_ks")
CALIBRATION_BLOCK = 8  # seeds scored per compiled block (see seed_blocks)


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """Everything that defines a cell; validated on construction by `build`."""

    agent: str
    env: str
    agent_config: Any
    env_overrides: dict
    train_config: TrainConfig

    @classmethod
    def build(
        cls, agent: str, env: str, agent_overrides=None, env_overrides=None, train_overrides=None
    ) -> CellSpec:
        """Validate names and values (ConfigError / EnvError naming the bad one)."""
        agent_config = agents.make_config(agent, **(agent_overrides or {}))
        envs.make(env, **(env_overrides or {}))
        train_config = build_config(TrainConfig, train_overrides, what="training")
        return cls(agent, env, agent_config, dict(env_overrides or {}), train_config)

    @property
    def name(self) -> str:
        return f"{self.agent}/{self.env}"

    def to_json(self) -> dict:
        return {
            "agent": self.agent,
            "env": self.env,
            "agent_config": to_jsonable(self.agent_config),
            "env_overrides": to_jsonable(self.env_overrides),
            "train_config": to_jsonable(self.train_config),
        }


def peak_memory_bytes() -> int:
    """Peak device memory where the backend reports it, else this process's peak RSS."""
    peaks = [
        (device.memory_stats() or {}).get("peak_bytes_in_use", 0) for device in jax.local_devices()
    ]
    if sum(peaks) > 0:
        return int(sum(peaks))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def _seed_calibration(locs, probs, returns, actions, key, truth_locs, truth_probs):
    """Calibration of one seed's start-state predictions [E, n] against its returns [E].

    W1, Cramer and KS compare the mixture of the episodes' predictions with the reference:
    where the env has exact laws (truth_locs, truth_probs [A, m], one row per first action),
    the mixture of each episode's law for the action it took (actions [E]), since a prediction
    is of the action taken, not of the optimal one; else the episodes' own returns. CRPS,
    quantile coverage and PIT score each episode's prediction against that episode's return.
    """
    episodes = locs.shape[0]
    mixture_locs = locs.reshape(-1)
    mixture_probs = (probs / episodes).reshape(-1)
    if truth_locs is None:
        ref_samples, ref_weights = returns, None
    else:
        ref_samples = truth_locs[actions].reshape(-1)
        ref_weights = (truth_probs[actions] / episodes).reshape(-1)
    u = jax.vmap(lambda l, p, y, k: metrics.pit(l, p, y[None], k)[0])(
        locs, probs, returns, jax.random.split(key, episodes)
    )
    return {
        "wasserstein1": metrics.wasserstein1(mixture_locs, mixture_probs, ref_samples, ref_weights),
        "cramer": metrics.cramer(mixture_locs, mixture_probs, ref_samples, ref_weights),
        "ks": metrics.ks(mixture_locs, mixture_probs, ref_samples, ref_weights),
        "crps": jnp.mean(
            jax.vmap(lambda l, p, y: metrics.crps(l, p, y[None]))(locs, probs, returns)
        ),
        "quantile_coverage_error": jnp.mean(
            jax.vmap(lambda l, p, y: metrics.quantile_coverage(l, p, y[None]))(
                locs, probs, returns
            ),
            axis=0,
        ),
        "pit": u,
    }


def true_distribution(spec: CellSpec):
    """The env's exact start-state return law of each first action under the agent's gamma,
    (locs [A, n], probs [A, n]) with zero-probability padding, or None where it has none.

    Per action, because each evaluation episode is scored against the action it took.
    """
    env, params = envs.make(spec.env, **spec.env_overrides)
    exact = getattr(env, "action_return_distributions", None)
    if exact is None:
        return None
    locs, probs = exact(params, float(spec.agent_config.gamma))
    return np.asarray(locs, np.float32), np.asarray(probs, np.float32)


def calibration(spec: CellSpec, results: SeedResults, key=None) -> dict[str, Any]:
    """Per-seed calibration metrics, and the PIT values pooled over seeds."""
    truth = true_distribution(spec)
    key = jax.random.PRNGKey(0) if key is None else key
    final = results.final
    start_actions = np.asarray(final["start_actions"])  # [S, E]
    # Each seed's PIT draws use a key of its own id, and seeds are scored in blocks of a fixed
    # size, so a seed's scores do not depend on the seeds beside it.
    seed_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
        key, jnp.asarray(results.seed_ids, jnp.uint32)
    )
    per_seed = map_blocks_padded(
        _seed_calibration,
        CALIBRATION_BLOCK,
        (
            np.asarray(final["start_locs"]),
            np.asarray(final["start_probs"]),
            np.asarray(final["discounted_returns"]),
            start_actions,
            seed_keys,
        ),
        (
            None if truth is None else jnp.asarray(truth[0]),
            None if truth is None else jnp.asarray(truth[1]),
        ),
    )
    taus = np.asarray(metrics.DEFAULT_COVERAGE_TAUS)
    coverage = np.asarray(per_seed.pop("quantile_coverage_error"))  # [S, num_taus]
    pit_per_seed = np.asarray(per_seed.pop("pit"))  # [S, E]
    pit = pit_per_seed.reshape(-1)
    out = {name: np.asarray(value) for name, value in per_seed.items()}
    out["quantile_coverage_error"] = np.mean(np.abs(coverage - taus), axis=-1)
    out["pit_ks"] = np.asarray(
        map_blocks_padded(metrics.pit_ks_uniform, CALIBRATION_BLOCK, (pit_per_seed,), ())
    )
    return {
        "reference": "exact" if truth is not None else "monte_carlo",
        "per_seed": out,
        # Pooled over seeds: S x E values, so far more power than any one seed's E.
        "pit_ks_pooled": float(metrics.pit_ks_uniform(jnp.asarray(pit))),
        "pit_values": pit,
        "pit_histogram": np.asarray(metrics.pit_histogram(jnp.asarray(pit))),
        "truth": None if truth is None else _truth_record(truth, start_actions),
    }


def _truth_record(truth, start_actions) -> dict[str, Any]:
    """What calibration scored against: each action's law, how often each seed took it, and
    (locs, probs) the first seed's reference, the mixture of its episodes' actions' laws,
    which is what its `example_prediction` should match.

    truth: (locs [A, n], probs [A, n]); start_actions [S, E].
    """
    action_locs, action_probs = truth
    first = start_actions[0]
    locs, probs = envs.exact.merge_atoms(action_locs[first], action_probs[first])
    num_actions = action_locs.shape[0]
    return {
        "locs": locs,
        "probs": probs,
        "action_locs": action_locs,
        "action_probs": action_probs,
        "start_action_counts": np.stack(
            [np.bincount(actions, minlength=num_actions) for actions in start_actions]
        ),
    }


def run_cell(
    spec: CellSpec,
    seed_ids,
    *,
    base_seed: int = 0,
    show_progress: bool = True,
    progress_callback=None,
    checkpoints=None,
) -> dict[str, Any]:
    """Train and score one cell over `seed_ids`; returns the cell's JSON-able record.
    `checkpoints` (a RunCheckpoints, see `cell_checkpoints`) makes the training resumable; the
    caller calls its `finished()` once the record is written."""
    seed_ids = list(seed_ids)
    require(len(seed_ids) >= 1, "seeds=0: at least one seed is needed")
    agent = agents.module(spec.agent).make(spec.agent_config)
    env, params = envs.make(spec.env, **spec.env_overrides)
    from benchmarks.progress import chunk_bar

    title = spec.name if show_progress and progress_callback is None else None
    with chunk_bar(title, spec.train_config.num_evals) as bar_update:
        results = run_seeds(
            agent,
            env,
            params,
            spec.train_config,
            distributed.local_share(seed_ids),
            base_seed=base_seed,
            progress=progress_callback or bar_update,
            checkpoints=checkpoints,
        )
        results = distributed.gather(results)
    return cell_record(spec, results, base_seed=base_seed)


def cell_checkpoints(
    spec: CellSpec, seed_ids, base_seed: int, directory, every: int | None, log, rerun=False
):
    """The checkpoints of one cell's training in `directory` (every: chunks between saves,
    None: decided by the run's length, 0: none; rerun: any there are removed first, so the
    run starts over), fingerprinted by everything its numbers
    depend on: the cell, its seeds, the seed block, the code's commit and the process count
    (a multi-process run's processes each keep their own share)."""
    if every == 0:
        return None
    from benchmarks.checkpoints import RunCheckpoints
    from benchmarks.results import git_commit
    from benchmarks.seed_blocks import block_size

    fingerprint = {
        "cell": spec.to_json(),
        "seed_ids": list(seed_ids),
        "base_seed": base_seed,
        "seed_block": block_size(spec.train_config.seed_block),
        "commit": git_commit(),
        "processes": jax.process_count(),
    }
    checkpoints = RunCheckpoints(directory, fingerprint, every, log=log)
    if rerun:
        checkpoints.finished()  # start over
    return checkpoints


def diverged_seeds(results: SeedResults) -> np.ndarray:
    """[S] bools: a seed diverged when its training loss, its final predictions or its returns
    are not finite. Such a seed is a result (recorded as diverged), not an error."""

    def finite_rows(x):
        x = np.asarray(x, np.float64)
        return np.all(np.isfinite(x.reshape(x.shape[0], -1)), axis=1)

    finite = (
        finite_rows(results.train_loss)
        & finite_rows(results.final["start_locs"])
        & finite_rows(results.final["start_probs"])
        & finite_rows(results.final["returns"])
        & finite_rows(results.final["discounted_returns"])
    )
    return ~finite


def _only_seeds(results: SeedResults, keep: np.ndarray) -> SeedResults:
    """The results of the seeds where `keep` holds (what calibration reads)."""
    return dataclasses.replace(
        results,
        seed_ids=results.seed_ids[keep],
        final={name: np.asarray(value)[keep] for name, value in results.final.items()},
    )


def _with_nan_at(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per-seed values of the kept seeds spread back to all seeds, NaN (null) elsewhere."""
    out = np.full(keep.shape, np.nan)
    out[keep] = values
    return out


def _aggregates(per_seed: dict[str, np.ndarray]) -> dict[str, Any]:
    """IQM, mean, median with CIs of each metric over the seeds where it is finite, and how
    many were not; None where no seed is finite."""
    out = {}
    for name, values in per_seed.items():
        values = np.asarray(values, np.float64)
        finite = values[np.isfinite(values)]
        out[name] = (
            {**stats.aggregate(finite), "diverged": int(values.size - finite.size)}
            if finite.size
            else None
        )
    return out


def cell_record(spec: CellSpec, results: SeedResults, *, base_seed: int = 0) -> dict[str, Any]:
    """The cell's JSON record: per-seed values, aggregates, curves, calibration, throughput."""
    diverged = diverged_seeds(results)
    finite = ~diverged
    final_returns = np.where(finite, results.final["returns"].mean(axis=-1), np.nan)  # [S]
    discounted = np.where(finite, results.final["discounted_returns"].mean(axis=-1), np.nan)
    per_seed_calibration = {name: np.full(len(finite), np.nan) for name in CALIBRATION_METRICS}
    calib = {"reference": None, "pit_ks_pooled": None, "pit_values": [], "pit_histogram": None}
    calib["truth"] = None
    example = {"locs": [], "probs": [], "returns": []}
    if finite.any():
        calib = calibration(spec, _only_seeds(results, finite))
        per_seed_calibration = {
            name: _with_nan_at(values, finite) for name, values in calib.pop("per_seed").items()
        }
        # The prediction plotted against the truth or the Monte Carlo returns: the first finite
        # seed's mixture over its evaluation episodes.
        first = int(np.argmax(finite))
        locs, probs = results.final["start_locs"][first], results.final["start_probs"][first]
        example = {
            "locs": locs.reshape(-1),
            "probs": (probs / probs.shape[0]).reshape(-1),
            "returns": results.final["discounted_returns"][first],
        }
    per_seed = {"return": final_returns, "discounted_return": discounted, **per_seed_calibration}
    aggregates = _aggregates(per_seed)
    record = {
        "spec": spec.to_json(),
        "base_seed": base_seed,
        "seed_ids": results.seed_ids,
        "per_seed": {**per_seed, "diverged": diverged},
        "divergence": {
            "diverged": int(diverged.sum()),
            "seeds": len(diverged),
            "rate": float(diverged.mean()),
        },
        "curve": {
            "env_steps": results.eval_steps,
            "eval_return": results.eval_returns.mean(axis=-1),  # [S, num_evals]
            "train_return": results.train_returns,
            "loss": results.train_loss,
        },
        "aggregates": {"return": aggregates["return"]},
        "calibration": {
            **calib,
            "aggregates": {name: aggregates[name] for name in CALIBRATION_METRICS},
            "example_prediction": {"locs": example["locs"], "probs": example["probs"]},
            "example_returns": example["returns"],
        },
        "throughput": throughput_record(results),
    }
    return to_jsonable(record)


def throughput_record(results: SeedResults) -> dict[str, Any]:
    """Speed of the run, with one sample per timed segment for `compare`: the segment's env
    steps per second, and the same divided by the reference probe's calls per second measured
    right after it (env steps per probe call), which is what holds across machines."""
    segment_rate = (
        len(results.seed_ids)
        * results.segment_env_steps
        / np.maximum(results.segment_seconds, 1e-9)
    )
    return {
        "env_steps_per_second": results.steps_per_second,
        "segment_env_steps_per_second": segment_rate,
        "probe_calls_per_second": 1.0 / np.maximum(results.probe_seconds, 1e-9),
        "env_steps_per_probe_call": segment_rate * results.probe_seconds,
        "compile_seconds": results.compile_seconds,
        "compile_seconds_by_program": results.program_compile_seconds,
        "train_seconds": results.train_seconds,
        "eval_seconds": results.eval_seconds,
        "env_steps_per_seed": results.env_steps,
        "num_seeds": len(results.seed_ids),
        "num_devices": results.num_devices,
        "peak_memory_bytes": peak_memory_bytes(),
    }


def train_payload(record: dict) -> dict:
    """The canonical JSON of a single `distbench train` run."""
    return {"kind": "train", "metadata": metadata(), "cells": [record]}
