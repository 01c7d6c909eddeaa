"""A sweep's throughput against the same number of seeds of one configuration, on this machine.

    python -m benchmarks.speed.sweep_throughput [--agent qrdqn] [--seeds 16] [--steps 50000]
        [--rounds 2] [--out results/sweeps/throughput.json]

S seeds x C configurations of the grid huber_kappa x target_period run as lanes of one
compiled program; the same program runs S x C seeds of the first configuration. Both runs are
timed in the same process, interleaved round by round (a shared machine drifts over minutes),
compile excluded: the ratio sweep / single is what the figure reports. The lanes differ only in
traced values, so the program is the same and the ratio should be 1 up to what the values do to
the work (episodes that end sooner, say).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

GRID = {"huber_kappa": ["0", "1", "10"], "target_period": ["500", "2000"]}


def _machine() -> dict:
    import jax

    from benchmarks.speed.side_by_side import _cpu_model

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "devices": f"{jax.local_device_count()} x {jax.devices()[0].device_kind}",
        "python": platform.python_version(),
        "jax": jax.__version__,
    }


def measure(agent: str, seeds: int, steps: int, rounds: int) -> dict:
    import numpy as np

    from benchmarks import sweep as sweeps

    space = sweeps.SearchSpace(grid=GRID, random={})
    spec = sweeps.SweepSpec.build(
        agent,
        "CartPole-v1",
        space,
        seeds=seeds,
        eval_seeds=0,
        train_overrides={"total_steps": steps, "num_evals": 2, "eval_episodes": 4},
    )
    lanes = seeds * len(spec.configs)
    (program,) = sweeps.programs(spec)
    per_lane = sweeps.lane_bytes(spec, spec.configs[0])
    batch = sweeps.lanes_per_batch(lanes, per_lane, sweeps.default_max_memory(), 4)
    configs = np.repeat(np.asarray(program.indices), seeds)
    plan = sweeps.Plan(
        program, np.tile(np.arange(seeds), len(spec.configs)), configs, per_lane, batch
    )
    single = plan._replace(lane_configs=np.zeros(lanes, np.int64), lane_seeds=np.arange(lanes))
    out = {"sweep": [], "single": []}
    for _ in range(rounds):
        for name, chosen in (("sweep", plan), ("single", single)):
            _, batches = sweeps.run_lanes(
                spec, chosen, chosen.lane_seeds, chosen.lane_configs, base_seed=0
            )
            seconds = sum(b.train_seconds for b in batches)
            out[name].append(lanes * batches[0].env_steps / seconds)
    ratios = [s / o for s, o in zip(out["sweep"], out["single"], strict=True)]
    return {
        "agent": agent,
        "env": "CartPole-v1",
        "grid": GRID,
        "seeds": seeds,
        "configurations": len(spec.configs),
        "lanes": lanes,
        "env_steps_per_lane": steps,
        "sweep_env_steps_per_second": out["sweep"],
        "single_env_steps_per_second": out["single"],
        "ratio_per_round": ratios,
        "ratio_median": statistics.median(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agent", default="qrdqn")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="results/sweeps/throughput.json")
    args = parser.parse_args()
    from benchmarks.cli import _set_xla_flags

    _set_xla_flags()
    record = {
        "method": "env steps/s of compiled training, compile excluded; sweep and single "
        "interleaved in one process; ratio = sweep / single within a round",
        "command": "python -m benchmarks.speed.sweep_throughput "
        f"--agent {args.agent} --seeds {args.seeds} --steps {args.steps} --rounds {args.rounds}",
        "machine": _machine(),
        **measure(args.agent, args.seeds, args.steps, args.rounds),
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
