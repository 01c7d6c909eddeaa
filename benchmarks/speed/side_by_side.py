"""distbench's agents side by side with PureJaxRL's CartPole DQN, on this machine.

    python -m benchmarks.speed.side_by_side --purejaxrl PATH --purejaxrl-deps DIR [--seeds 64]
        [--steps 100000]
        [--rounds 3] [--agents dqn,c51,qrdqn,iqn,edrl] [--out results/speed]
        [--variant LABEL=CHECKOUT[:KEY=VALUE,...]]...

Every agent runs at PureJaxRL's DQN configuration (distbench's defaults: 10 envs per seed,
replay 10,000, batch 128, one gradient step per 10 env steps after 10,000, target copy every
500). A round runs PureJaxRL once, then each distbench agent, each in a fresh process; speed on a
shared machine drifts over minutes, so the figures that count are each round's ratios, agent
against the PureJaxRL run beside it. PATH is a clone of PureJaxRL and DIR holds the packages
its code needs (see purejaxrl_dqn.py for the commit, the packages and the two shims). A --variant runs distbench from another checkout and/or
with agent settings (e.g. `before=/tmp/old` or `reference=.:kernels=reference`); without one,
this checkout runs as `distbench`. Writes OUT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def purejaxrl_rate(checkout: str, deps: str, seeds: int, steps: int) -> dict:
    """PureJaxRL's DQN as its users run it: jax's defaults, one device, no distbench XLA flags."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = deps
    command = [sys.executable, str(HERE / "purejaxrl_dqn.py"), checkout, str(seeds), str(steps)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or [f"exit {out.returncode}"]
        return {"status": f"failed: {lines[-1]}"}
    return {"status": "ok", **json.loads(out.stdout.strip().splitlines()[-1])}


def parse_variant(text: str) -> tuple[str, Path, list[str]]:
    """LABEL=CHECKOUT[:KEY=VALUE,...] -> (label, checkout, ["KEY=VALUE", ...])."""
    label, _, rest = text.partition("=")
    checkout, _, settings = rest.partition(":")
    return label, Path(checkout or ".").resolve(), [s for s in settings.split(",") if s]


def distbench_rate(checkout: Path, settings: list[str], agent: str, seeds: int, steps: int):
    """`distbench train` from `checkout` with agent `settings`: env steps/s, compile seconds."""
    sets = [arg for setting in settings for arg in ("--set", setting)]
    command = [sys.executable, "-m", "benchmarks", "train", "--agent", agent]
    command += ["--env", "CartPole-v1", "--seeds", str(seeds), "--steps", str(steps)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.json"
        command += ["--evals", "2", "--quiet", "--out", str(path), *sets]
        out = subprocess.run(command, capture_output=True, text=True, check=False, cwd=checkout)
        if out.returncode != 0:
            lines = out.stderr.strip().splitlines() or [f"exit {out.returncode}"]
            return {"status": f"failed: {lines[-1]}"}
        cell = json.loads(path.read_text())["cells"][0]
    return {
        "status": "ok",
        "env_steps_per_second": cell["throughput"]["env_steps_per_second"],
        "compile_seconds": cell["throughput"]["compile_seconds"],
    }


def run_round(args, variants, row: dict, save) -> None:
    """PureJaxRL once, then each agent in each variant, into `row`, saved after each run."""
    row["purejaxrl_dqn"] = purejaxrl_rate(
        args.purejaxrl, args.purejaxrl_deps, args.seeds, args.steps
    )
    save()
    for agent in args.agents.split(","):
        for label, checkout, settings in variants:
            if agent == "dqn" and any(s.startswith("kernels=") for s in settings):
                continue  # DQN has no loss kernels to choose
            row[f"{label}/{agent}"] = distbench_rate(
                checkout, settings, agent, args.seeds, args.steps
            )
            save()


def ratios(rounds: list[dict]) -> dict:
    """Each variant/agent's env steps/s over the PureJaxRL run of its round, per round."""
    table = {}
    for row in rounds:
        base = row.get("purejaxrl_dqn", {}).get("env_steps_per_second")
        for name, run in row.items():
            if name != "purejaxrl_dqn" and base and run.get("status") == "ok":
                table.setdefault(name, []).append(run["env_steps_per_second"] / base)
    return {name: {"per_round": r, "median": statistics.median(r)} for name, r in table.items()}


def git_head(path: str) -> str:
    command = ["git", "-C", path, "rev-parse", "HEAD"]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--purejaxrl", required=True, help="a clone of luchris429/purejaxrl")
    parser.add_argument(
        "--purejaxrl-deps", required=True, help="a folder with gymnax 0.0.8 and flashbax 0.1.3"
    )
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--agents", default="dqn,c51,qrdqn,iqn,edrl")
    parser.add_argument("--out", default="results/speed")
    parser.add_argument("--variant", action="append", default=[], help="LABEL=CHECKOUT[:K=V,...]")
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant] or [("distbench", HERE.parents[1], [])]
    if not (Path(args.purejaxrl) / "purejaxrl" / "dqn.py").is_file():
        print(f"distbench: --purejaxrl {args.purejaxrl} holds no purejaxrl/dqn.py", file=sys.stderr)
        return 2
    import jax

    summary = {
        "method": "env steps/s of compiled training, compile excluded; ratios within a round",
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "jax": jax.__version__,
        },
        "variants": {
            label: {"commit": git_head(str(checkout)), "settings": settings}
            for label, checkout, settings in variants
        },
        "purejaxrl_commit": git_head(args.purejaxrl),
        "seeds": args.seeds,
        "env_steps_per_seed": args.steps,
        "rounds": [],
        "ratio_to_purejaxrl": {},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save():
        summary["ratio_to_purejaxrl"] = ratios(summary["rounds"])
        partial = out / ".summary.json.partial"
        partial.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(partial, out / "summary.json")

    for _ in range(args.rounds):
        summary["rounds"].append({})
        run_round(args, variants, summary["rounds"][-1], save)
    for name, ratio in summary["ratio_to_purejaxrl"].items():
        print(f"{name}: {', '.join(f'{v:.2f}x' for v in ratio['per_round'])} of PureJaxRL's DQN")
    return 0


if __name__ == "__main__":
    sys.exit(main())
