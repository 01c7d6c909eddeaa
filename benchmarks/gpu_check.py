"""The accelerator check, in one shot: `python -m benchmarks.gpu_check --out results/gpu`.

On a machine with a GPU (or TPU) and distbench's dependencies (`benchmarks/gpu/run.sh` installs
them, also offline from a wheelhouse), it measures in order of importance, writing
`gpu_check.json` and `README.md` after every step so that a run cut short keeps what it did:

1. seed identity: one seed trained alone equals the same seed trained among many, every value;
2. C51 on CartPole-v1 at the baseline configuration, 4,096 seeds x 500,000 env steps: wall and
   compile time, env steps/s, returns;
3. training throughput of every replay agent at 1 / 64 / 1,024 / 4,096 seeds, with compile
   time and peak device memory.

Each step runs only if the time budget (`--budget`, 8 minutes) has room left; what it skips is
recorded as skipped. `--dry-run` runs the same steps at toy sizes on any platform (CI runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPLAY_AGENTS = ("dqn", "c51", "qrdqn", "iqn", "edrl")
SIZES = {
    "full": {
        "identity": {"seeds": 4096, "steps": 50_000, "seed": 1234},
        "c51": {"seeds": 4096, "steps": 500_000, "learning_starts": None},  # C51's default
        "throughput": {
            "seeds": (1, 64, 1024, 4096),
            "steps": 50_000,
            "learning_starts": 1_000,
            "agents": REPLAY_AGENTS,
        },
    },
    "dry-run": {
        "identity": {"seeds": 8, "steps": 1_000, "seed": 5},
        # Learning starts within the toy runs, so they take gradient steps as the full ones do.
        "c51": {"seeds": 4, "steps": 1_000, "learning_starts": 200},
        "throughput": {
            "seeds": (2,),
            "steps": 1_000,
            "learning_starts": 200,
            "agents": ("dqn", "c51"),
        },
    },
}


def _train(agent_name, seed_ids, steps, *, overrides=None, num_evals=2, eval_episodes=4):
    """Train `agent_name` on CartPole-v1 for seed ids `seed_ids`; returns SeedResults."""
    import agents
    import envs
    from benchmarks.runner import run_seeds
    from benchmarks.train import TrainConfig

    env, params = envs.make("CartPole-v1")
    agent = agents.make(agent_name, **(overrides or {}))
    config = TrainConfig(total_steps=steps, num_evals=num_evals, eval_episodes=eval_episodes)
    return run_seeds(agent, env, params, config, list(seed_ids))


def check_seed_identity(seeds: int, steps: int, seed: int) -> dict:
    """C51 with learning from step 500: seed `seed` alone against among `seeds` seeds."""
    import numpy as np

    overrides = {"learning_starts": 500}
    alone = _train("c51", [seed], steps, overrides=overrides)
    among = _train("c51", range(seeds), steps, overrides=overrides)
    row = list(among.seed_ids).index(seed)
    fields = ("eval_returns", "eval_discounted", "train_returns", "train_loss")
    equal = {f: bool(np.array_equal(getattr(alone, f)[0], getattr(among, f)[row])) for f in fields}
    return {
        "agent": "c51",
        "seed": seed,
        "among": seeds,
        "env_steps": steps,
        "equal": equal,
        "identical": all(equal.values()),
    }


def _every_seed_learned(results) -> bool:
    """Whether every seed took gradient steps (a chunk without any logs a zero loss)."""
    import numpy as np

    return bool(np.all(np.any(np.asarray(results.train_loss) != 0, axis=1)))


def check_c51(seeds: int, steps: int, learning_starts: int | None = None) -> dict:
    """C51 at its defaults (the baseline configuration) on CartPole-v1; `learning_starts`
    overrides C51's own (the dry run's toy runs learn early)."""
    from benchmarks import stats
    from benchmarks.cell import peak_memory_bytes

    overrides = {} if learning_starts is None else {"learning_starts": learning_starts}
    start = time.perf_counter()
    results = _train("c51", range(seeds), steps, overrides=overrides, num_evals=5, eval_episodes=16)
    final = results.eval_returns[:, -1].mean(axis=-1)  # [S] mean over the last evaluation
    return {
        "agent": "c51",
        "seeds": seeds,
        "env_steps_per_seed": steps,
        "wall_seconds": time.perf_counter() - start,
        "compile_seconds": results.compile_seconds,
        "train_seconds": results.train_seconds,
        "env_steps_per_second": results.steps_per_second,
        "iqm_return": float(stats.iqm(final)),
        "mean_return": float(final.mean()),
        "learned": _every_seed_learned(results),
        "peak_memory_bytes": peak_memory_bytes(),
    }


def check_throughput(agent_name: str, seeds: int, steps: int, learning_starts: int) -> dict:
    """Training env steps/s (learning from `learning_starts`) and compile time at one seed
    count."""
    from benchmarks.cell import peak_memory_bytes

    overrides = {"learning_starts": learning_starts}
    results = _train(agent_name, range(seeds), steps, overrides=overrides)
    return {
        "agent": agent_name,
        "seeds": seeds,
        "env_steps_per_second": results.steps_per_second,
        "compile_seconds": results.compile_seconds,
        "learned": _every_seed_learned(results),
        "peak_memory_bytes": peak_memory_bytes(),
    }


def _environment() -> dict:
    import jax

    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "device": device.device_kind,
        "num_devices": jax.device_count(),
        "jax": jax.__version__,
        "python": sys.version.split()[0],
    }


def summary(record: dict) -> str:
    """The README of a check's folder, from its record."""
    env = record.get("environment", {})
    lines = [
        "# distbench on an accelerator",
        "",
        (
            f"`python -m benchmarks.gpu_check{' --dry-run' if record['dry_run'] else ''}`: "
            f"{env.get('num_devices')} x {env.get('device')} ({env.get('platform')}), "
            f"jax {env.get('jax')}, distbench {record.get('commit', 'unknown')}."
        ),
        "",
    ]
    identity = record["steps"].get("seed_identity", {})
    if "identical" in identity:
        verdict = "equal in every value" if identity["identical"] else "NOT equal"
        lines += [
            (
                f"Seed identity: C51 seed {identity['seed']} alone and among {identity['among']:,} "
                f"seeds, {identity['env_steps']:,} env steps: {verdict}."
            ),
            "",
        ]
    c51 = record["steps"].get("c51", {})
    if "wall_seconds" in c51:
        lines += [
            (
                f"C51 on CartPole-v1, {c51['seeds']:,} seeds x {c51['env_steps_per_seed']:,} env "
                f"steps: {c51['wall_seconds']:.0f} s in all ({c51['compile_seconds']:.0f} s "
                f"compiling), {c51['env_steps_per_second']:,.0f} env steps/s, IQM return "
                f"{c51['iqm_return']:.1f}, peak device memory {c51['peak_memory_bytes'] / 2**30:.1f} GiB."
            ),
            "",
        ]
    rows = record["steps"].get("throughput", [])
    if rows:
        lines += [
            "| agent | seeds | env steps/s | compile s | peak memory GiB |",
            "|---|---|---|---|---|",
        ]
        for row in rows:
            if "env_steps_per_second" not in row:
                lines.append(f"| {row['agent']} | {row['seeds']:,} | {row['status']} | | |")
                continue
            lines.append(
                f"| {row['agent']} | {row['seeds']:,} | {row['env_steps_per_second']:,.0f} | "
                f"{row['compile_seconds']:.1f} | {row['peak_memory_bytes'] / 2**30:.2f} |"
            )
        lines.append("")
    for name in ("seed_identity", "c51"):
        status = record["steps"].get(name, {}).get("status", "ok")
        if status != "ok":
            lines += [f"{name}: {status}.", ""]
    return "\n".join(lines)


def _write(out: Path, record: dict) -> None:
    """Both files, each replaced atomically (a kill leaves the previous complete version)."""
    for name, text in (
        ("gpu_check.json", json.dumps(record, indent=2) + "\n"),
        ("README.md", summary(record)),
    ):
        partial = out / f".{name}.partial"
        partial.write_text(text)
        os.replace(partial, out / name)


def _in_subprocess(fn_name: str, *args) -> dict:
    """fn_name(*args) in a fresh process, so that its peak device memory is its own."""
    code = (
        "import json, sys; from benchmarks import gpu_check; "
        f"print(json.dumps(gpu_check.{fn_name}(*json.loads(sys.argv[1]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or [f"exit {out.returncode}"]
        return {"status": f"failed: {lines[-1]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(out: Path, dry_run: bool, budget: float) -> dict:
    from benchmarks.results import git_commit

    sizes = SIZES["dry-run" if dry_run else "full"]
    deadline = time.perf_counter() + budget
    out.mkdir(parents=True, exist_ok=True)
    record = {"dry_run": dry_run, "commit": git_commit(), "environment": _environment()}
    steps = record["steps"] = {}

    def within_budget(name, fn, *args) -> dict:
        if time.perf_counter() > deadline:
            return {"status": "skipped (time budget)"}
        print(f"[gpu_check] {name} ...", flush=True)
        return {"status": "ok", **fn(*args)}

    identity = sizes["identity"]
    steps["seed_identity"] = within_budget(
        "seed identity", check_seed_identity, identity["seeds"], identity["steps"], identity["seed"]
    )
    _write(out, record)
    c51 = sizes["c51"]
    steps["c51"] = within_budget(
        "c51", check_c51, c51["seeds"], c51["steps"], c51["learning_starts"]
    )
    _write(out, record)
    steps["throughput"] = []
    for seeds in sizes["throughput"]["seeds"]:
        for agent_name in sizes["throughput"]["agents"]:
            throughput = sizes["throughput"]
            args = (agent_name, seeds, throughput["steps"], throughput["learning_starts"])
            name = f"throughput {agent_name} x {seeds}"
            row = within_budget(name, _in_subprocess, "check_throughput", *args)
            steps["throughput"].append({"agent": agent_name, "seeds": seeds, **row})
            _write(out, record)
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", default="results/gpu", help="output folder (default results/gpu)")
    parser.add_argument("--dry-run", action="store_true", help="toy sizes, any platform")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds (default 480)")
    args = parser.parse_args(argv)
    if args.budget <= 0:
        print(f"distbench: --budget={args.budget} must be > 0 seconds", file=sys.stderr)
        return 2
    record = run(Path(args.out), args.dry_run, args.budget)
    print(summary(record))
    # Exit 1: the check ran and found a seed that does not reproduce.
    return 1 if record["steps"]["seed_identity"].get("identical") is False else 0


if __name__ == "__main__":
    sys.exit(main())
