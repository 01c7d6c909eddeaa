"""`distbench throughput`: env steps/s, compile seconds and memory against the number of seeds,
with the loop's own ceilings (learning off; the learning step alone) measured in the same run.

Each seed count runs in a fresh subprocess, so its peak memory is its own and an out-of-memory
count is recorded as such instead of ending the sweep.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import agents
import envs
from agents.base import Agent, Transition, learning_schedule
from benchmarks import results as results_io
from benchmarks.cell import peak_memory_bytes
from benchmarks.runner import run_seeds, sharded_seed_keys
from benchmarks.train import TrainConfig, env_spec


def _tree_bytes(tree) -> int:
    return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree)))


def _random_transitions(key: jax.Array, spec, num_envs: int) -> Transition:
    """A batch of num_envs made-up transitions of the env's shapes, for timing the update."""
    obs_key, next_key, action_key, discount_key = jax.random.split(key, 4)
    return Transition(
        obs=jax.random.normal(obs_key, (num_envs, *spec.observation_shape)),
        action=jax.random.randint(action_key, (num_envs,), 0, spec.num_actions),
        reward=jnp.ones((num_envs,)),
        discount=(jax.random.uniform(discount_key, (num_envs,)) > 0.05).astype(jnp.float32),
        next_obs=jax.random.normal(next_key, (num_envs, *spec.observation_shape)),
    )


def _learning_step_rate(
    agent: Agent, spec, num_seeds: int, num_envs: int, iterations: int, repeats: int = 2
) -> tuple[float, int]:
    """Env steps/s the update alone sustains, and the number of devices it ran on: update() on
    random transitions, learning on the agent's schedule as in training, the seeds sharded over
    the devices as in training (padded seeds are not counted); the fastest of `repeats` timed
    runs."""

    def one_seed(key):
        state = agent.init(key, spec)
        transition = _random_transitions(key, spec, num_envs)

        def body(state, i):
            state, _ = agent.update(state, transition, jax.random.fold_in(key, i), i * num_envs)
            return state, None

        state, _ = jax.lax.scan(body, state, jnp.arange(iterations))
        # The whole state: returning less lets XLA drop part of the learning as dead code.
        return state

    keys, sharding = sharded_seed_keys(0, range(num_seeds))
    run = jax.jit(jax.vmap(one_seed), in_shardings=sharding, out_shardings=sharding)
    run = run.lower(keys).compile()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        states = jax.block_until_ready(run(keys))
        best = min(best, time.perf_counter() - start)
    devices = jax.tree.leaves(states)[0].sharding.device_set
    return num_seeds * iterations * num_envs / best, len(devices)


def update_flops(agent: Agent, spec, num_envs: int) -> float:
    """Floating-point operations of one learning step for one seed, as XLA's cost analysis of the
    compiled update counts them (matmuls and elementwise arithmetic; a loop's body once), at a
    constant step where the agent's schedule learns, so that only the learning branch is
    compiled and counted."""

    # A step at which the schedule learns: past its start, crossing a multiple of its period.
    schedule = learning_schedule(agent.config)
    step = schedule.every * (schedule.starts // schedule.every + 1) - 1

    def one_update(state, transition, key):
        return agent.update(state, transition, key, step)

    key = jax.random.PRNGKey(0)
    state = agent.init(key, spec)
    transition = _random_transitions(key, spec, num_envs)
    analysis = jax.jit(one_update).lower(state, transition, key).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
        analysis = analysis[0]
    return float(analysis["flops"])


def without_learning(agent: Agent) -> Agent:
    """The agent with an update that leaves its state as it is: the loop's cost without the
    update, which the learning-only run measures on its own."""

    def update(state, transition, key, step):
        del transition, key, step
        return state, {"loss": jnp.zeros((), jnp.float32)}

    return agent._replace(update=update)


def config_learning_from_start(agent_name: str, overrides: dict):
    """The agent's config, learning from the first step unless the overrides set its warm-up:
    throughput measures learning, not the steps before it."""
    config = agents.make_config(agent_name, **overrides)
    if "learning_starts" in overrides or learning_schedule(config).starts == 0:
        return config
    return agents.make_config(agent_name, **{**overrides, "learning_starts": 0})


def measure_one(
    agent_name: str, env_name: str, num_seeds: int, steps: int, overrides: dict
) -> dict:
    """Training, learning-off and learning-only throughput for one seed count (this process)."""
    env, params = envs.make(env_name)
    config = config_learning_from_start(agent_name, overrides)
    agent = agents.module(agent_name).make(config)
    train_config = TrainConfig(total_steps=steps, num_envs=10, num_evals=2, eval_episodes=1)
    trained = run_seeds(agent, env, params, train_config, range(num_seeds), keep_state=True)
    state_bytes = _tree_bytes(trained.final_state) // num_seeds
    acting = run_seeds(without_learning(agent), env, params, train_config, range(num_seeds))
    spec = env_spec(env, params, train_config.num_envs)
    learning_rate, learning_devices = _learning_step_rate(
        agent, spec, num_seeds, 10, train_config.num_iterations // 2
    )
    ceiling = 1.0 / (1.0 / acting.steps_per_second + 1.0 / learning_rate)
    flops = update_flops(agent, spec, 10)
    learning_steps_per_second = learning_rate / learning_schedule(config).every
    return {
        "num_seeds": num_seeds,
        "env_steps_per_second": trained.steps_per_second,
        "compile_seconds": trained.compile_seconds,
        "learning_off_steps_per_second": acting.steps_per_second,
        "learning_only_steps_per_second": learning_rate,
        "ceiling_steps_per_second": ceiling,
        "fraction_of_ceiling": trained.steps_per_second / ceiling,
        "update_flops_per_seed": flops,
        "learning_only_flops_per_second": learning_steps_per_second * flops,
        "state_bytes_per_seed": state_bytes,
        "peak_memory_bytes": peak_memory_bytes(),
        "num_devices": trained.num_devices,
        "learning_only_devices": learning_devices,
        "status": "ok",
    }


def sweep(
    agent_name: str,
    env_name: str,
    seed_counts: list[int],
    steps: int,
    overrides: dict,
    *,
    timeout: float = 3600.0,
    log=print,
) -> list[dict]:
    rows = []
    for count in seed_counts:
        args = json.dumps([agent_name, env_name, count, steps, overrides])
        code = (
            "import json, sys; from benchmarks import throughput; "
            "print(json.dumps(throughput.measure_one(*json.loads(sys.argv[1]))))"
        )
        start = time.perf_counter()
        try:
            out = subprocess.run(
                [sys.executable, "-c", code, args],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            rows.append({"num_seeds": count, "status": f"timed out after {timeout:.0f}s"})
            log(f"{count} seeds: timed out")
            continue
        if out.returncode != 0:
            killed = (
                out.returncode < 0
                or "RESOURCE_EXHAUSTED" in out.stderr
                or "MemoryError" in out.stderr
            )
            status = "out of memory" if killed else f"failed: {out.stderr.strip().splitlines()[-1]}"
            rows.append({"num_seeds": count, "status": status})
            log(f"{count} seeds: {status}")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["wall_seconds"] = time.perf_counter() - start
        rows.append(row)
        log(
            f"{count} seeds: {row['env_steps_per_second']:,.0f} env steps/s, "
            f"{row['fraction_of_ceiling']:.0%} of ceiling, compile {row['compile_seconds']:.1f}s"
        )
    return rows


def markdown(payload: dict) -> str:
    meta = payload["metadata"]
    lines = [
        f"# Throughput: {payload['agent']} on {payload['env']}",
        "",
        (
            f"{meta['device_count']} x {meta['device_kind']} ({meta['platform']}, "
            f"{meta.get('cpu_count')} CPU cores), commit `{meta['commit'][:12]}`; "
            f"{payload['steps']:,} env steps per seed, 10 envs per seed, learning from step 0."
        ),
        (
            "Ceiling: the loop with the agent's update left out (learning off) and the update "
            "alone on made-up transitions (learning only), combined (1 / (1/a + 1/b)), measured "
            "in the same run. Update MFLOP: one learning step of one seed as XLA's cost analysis "
            "counts it (a loop's body once); learning GFLOP/s: that times the learning-only "
            "run's learning steps per second (one per train_every env steps, or per transition "
            "for an agent without that schedule), over all seeds. XLA's count is of "
            "the operations in the program, not of those a CPU executes: for elementwise-heavy "
            "updates (EDRL's imputation) the rate can exceed the chip's float32 peak, so compare "
            "it only between matmul-bound agents."
        ),
        "",
        (
            "| seeds | env steps/s | compile s | learning off | learning only | % of ceiling | "
            "update MFLOP | learning GFLOP/s | state MiB/seed | peak memory GiB |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in payload["rows"]:
        if row.get("status") != "ok":
            lines.append(f"| {row['num_seeds']} | {row['status']} | | | | | | | | |")
            continue
        lines.append(
            f"| {row['num_seeds']} | {row['env_steps_per_second']:,.0f} | "
            f"{row['compile_seconds']:.1f} | {row['learning_off_steps_per_second']:,.0f} | "
            f"{row['learning_only_steps_per_second']:,.0f} | {row['fraction_of_ceiling']:.0%} | "
            f"{row['update_flops_per_seed'] / 1e6:,.1f} | "
            f"{row['learning_only_flops_per_second'] / 1e9:,.1f} | "
            f"{row['state_bytes_per_seed'] / 2**20:.2f} | {row['peak_memory_bytes'] / 2**30:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot(payload: dict) -> bytes:
    from benchmarks.report import figure, png_bytes

    plt = figure()
    ok = [r for r in payload["rows"] if r.get("status") == "ok"]
    fig, ax = plt.subplots(figsize=(6, 4))
    seeds = [r["num_seeds"] for r in ok]
    for key, label in (
        ("env_steps_per_second", "training"),
        ("learning_off_steps_per_second", "learning off"),
        ("learning_only_steps_per_second", "learning step only"),
    ):
        ax.loglog(seeds, [r[key] for r in ok], marker="o", label=label)
    meta = payload["metadata"]
    ax.set_xlabel("seeds (vmapped)")
    ax.set_ylabel("env steps / s")
    ax.set_title(
        f"{payload['agent']} on {payload['env']}: {meta['device_kind']} x{meta['device_count']}"
    )
    ax.legend()
    data = png_bytes(fig)
    plt.close(fig)
    return data


def check_runnable(agent_name: str, env_name: str, overrides: dict) -> None:
    """Fail fast (ConfigError / EnvError) on a bad name or value, or an env no agent can run
    (continuous actions), before any seed count is measured."""
    config_learning_from_start(agent_name, overrides)
    env, params = envs.make(env_name)
    env_spec(env, params)


def run(
    agent_name: str,
    env_name: str,
    seed_counts: list[int],
    steps: int,
    overrides: dict,
    out_dir: str | Path,
) -> dict:
    check_runnable(agent_name, env_name, overrides)
    rows = sweep(agent_name, env_name, seed_counts, steps, overrides)
    payload = {
        "kind": "throughput",
        "metadata": results_io.metadata(),
        "agent": agent_name,
        "env": env_name,
        "steps": steps,
        "overrides": overrides,
        "rows": rows,
    }
    out_dir = Path(out_dir)
    stem = f"{agent_name}_{env_name}"
    results_io.write_json(out_dir / f"{stem}.json", payload)
    results_io.atomic_write_text(out_dir / f"{stem}.md", markdown(payload))
    results_io.atomic_write_bytes(out_dir / f"{stem}.png", plot(payload))
    return payload
