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
from benchmarks.train import TrainConfig

CALIBRATION_METRICS = ("wasserstein1", "cramer", "crps", "ks", "quantile_coverage_error", "pit_ks")


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


def _seed_calibration(locs, probs, returns, truth_locs, truth_probs, key):
    """Calibration of one seed's start-state predictions [E, n] against its returns [E].

    W1, Cramer and KS compare the mixture of the episodes' predictions with the reference: the
    exact return distribution where the env has one, else the episodes' own returns. CRPS,
    quantile coverage and PIT score each episode's prediction against that episode's return.
    """
    episodes = locs.shape[0]
    mixture_locs = locs.reshape(-1)
    mixture_probs = (probs / episodes).reshape(-1)
    ref_samples, ref_weights = (returns, None) if truth_locs is None else (truth_locs, truth_probs)
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
    """The env's exact start-state return distribution under the agent's gamma, or None."""
    env, params = envs.make(spec.env, **spec.env_overrides)
    exact = getattr(env, "true_return_distribution", None)
    if exact is None:
        return None
    locs, probs = exact(params, float(spec.agent_config.gamma))
    return np.asarray(locs, np.float32), np.asarray(probs, np.float32)


def calibration(spec: CellSpec, results: SeedResults, key=None) -> dict[str, Any]:
    """Per-seed calibration metrics, and the PIT values pooled over seeds."""
    truth = true_distribution(spec)
    key = jax.random.PRNGKey(0) if key is None else key
    final = results.final
    num_seeds = len(results.seed_ids)
    per_seed = jax.jit(jax.vmap(_seed_calibration, in_axes=(0, 0, 0, None, None, 0)))(
        jnp.asarray(final["start_locs"]),
        jnp.asarray(final["start_probs"]),
        jnp.asarray(final["discounted_returns"]),
        None if truth is None else jnp.asarray(truth[0]),
        None if truth is None else jnp.asarray(truth[1]),
        jax.random.split(key, num_seeds),
    )
    taus = np.asarray(metrics.DEFAULT_COVERAGE_TAUS)
    coverage = np.asarray(per_seed.pop("quantile_coverage_error"))  # [S, num_taus]
    pit_per_seed = per_seed.pop("pit")  # [S, E]
    pit = np.asarray(pit_per_seed).reshape(-1)
    out = {name: np.asarray(value) for name, value in per_seed.items()}
    out["quantile_coverage_error"] = np.mean(np.abs(coverage - taus), axis=-1)
    out["pit_ks"] = np.asarray(jax.vmap(metrics.pit_ks_uniform)(pit_per_seed))
    return {
        "reference": "exact" if truth is not None else "monte_carlo",
        "per_seed": out,
        # Pooled over seeds: S x E values, so far more power than any one seed's E.
        "pit_ks_pooled": float(metrics.pit_ks_uniform(jnp.asarray(pit))),
        "pit_values": pit,
        "pit_histogram": np.asarray(metrics.pit_histogram(jnp.asarray(pit))),
        "truth": None if truth is None else {"locs": truth[0], "probs": truth[1]},
    }


def run_cell(
    spec: CellSpec,
    seed_ids,
    *,
    base_seed: int = 0,
    show_progress: bool = True,
    progress_callback=None,
) -> dict[str, Any]:
    """Train and score one cell over `seed_ids`; returns the cell's JSON-able record."""
    seed_ids = list(seed_ids)
    require(len(seed_ids) >= 1, "seeds=0: at least one seed is needed")
    agent = agents.module(spec.agent).make(spec.agent_config)
    env, params = envs.make(spec.env, **spec.env_overrides)
    progress = progress_callback
    bar = None
    if show_progress and progress is None:
        from benchmarks.progress import ChunkBar

        bar = ChunkBar(spec.name, spec.train_config.num_evals)
        progress = bar.update
    try:
        results = run_seeds(
            agent,
            env,
            params,
            spec.train_config,
            distributed.local_share(seed_ids),
            base_seed=base_seed,
            progress=progress,
        )
        results = distributed.gather(results)
    finally:
        if bar is not None:
            bar.close()
    return score(spec, results, base_seed=base_seed)


def score(spec: CellSpec, results: SeedResults, *, base_seed: int = 0) -> dict[str, Any]:
    final_returns = results.final["returns"].mean(axis=-1)  # [S]
    calib = calibration(spec, results)
    per_seed_calibration = calib.pop("per_seed")
    # The prediction plotted against the truth or the Monte Carlo returns: the first seed's
    # mixture over its evaluation episodes.
    first_locs = results.final["start_locs"][0].reshape(-1)
    first_probs = (results.final["start_probs"][0] / results.final["start_probs"].shape[1]).reshape(
        -1
    )
    record = {
        "spec": spec.to_json(),
        "base_seed": base_seed,
        "seed_ids": results.seed_ids,
        "per_seed": {
            "return": final_returns,
            "discounted_return": results.final["discounted_returns"].mean(axis=-1),
            **per_seed_calibration,
        },
        "curve": {
            "env_steps": results.eval_steps,
            "eval_return": results.eval_returns.mean(axis=-1),  # [S, num_evals]
            "train_return": results.train_returns,
            "loss": results.train_loss,
        },
        "aggregates": {"return": stats.aggregate(final_returns)},
        "calibration": {
            **calib,
            "aggregates": {
                name: stats.aggregate(values)
                for name, values in per_seed_calibration.items()
                if np.all(np.isfinite(values))
            },
            "example_prediction": {"locs": first_locs, "probs": first_probs},
            "example_returns": results.final["discounted_returns"][0],
        },
        "throughput": {
            "env_steps_per_second": results.steps_per_second,
            # One sample per compiled chunk: what `compare` tests throughput changes on.
            "chunk_env_steps_per_second": len(results.seed_ids)
            * np.diff(results.eval_steps, prepend=0)
            / np.maximum(results.chunk_seconds, 1e-9),
            "compile_seconds": results.compile_seconds,
            "compile_seconds_by_program": results.program_compile_seconds,
            "train_seconds": results.train_seconds,
            "eval_seconds": results.eval_seconds,
            "env_steps_per_seed": results.env_steps,
            "num_seeds": len(results.seed_ids),
            "num_devices": results.num_devices,
            "peak_memory_bytes": peak_memory_bytes(),
        },
    }
    return to_jsonable(record)


def train_payload(record: dict) -> dict:
    """The canonical JSON of a single `distbench train` run."""
    return {"kind": "train", "metadata": metadata(), "cells": [record]}
