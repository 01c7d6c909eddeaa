"""The `distbench` command line: list, train, sweep, run, report, compare, throughput.

Bad input is reported in one line naming the bad value and what is valid (exit code 2).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _jaxlib_knows(flag: str) -> bool:
    """Whether the installed jaxlib's XLA defines `flag` (an unknown flag in XLA_FLAGS aborts
    the process), found without importing jax: its name is a string in one of jaxlib's
    shared libraries. Any doubt means no."""
    import importlib.util
    import mmap

    try:
        spec = importlib.util.find_spec("jaxlib")
        folder = Path(spec.origin).parent if spec and spec.origin else None
        for library in (
            sorted(folder.glob("*.so"), key=lambda p: -p.stat().st_size) if folder else ()
        ):
            with open(library, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if m.find(flag.encode()) >= 0:
                    return True
    except (OSError, ValueError):
        pass
    return False


def xla_flags(flags: str) -> str:
    """XLA_FLAGS with distbench's CPU settings added where `flags` does not set them (see
    docs/design.md).

    * One host device per core: XLA runs these small vmapped programs on about one core per
      device, so on the CPU the seed axis is split over the cores.
    * No YNNPACK reduce fusions on the CPU: XLA hands reductions to YNNPACK, which is slow on
      the short minor axes these agents reduce over (11 expectiles, 51 atoms); the figures
      are in docs/performance.md. It also rounds reductions in another order, so a result's
      bits depend on this flag: results record the XLA_FLAGS they ran with.
      Set `--xla_cpu_experimental_ynn_fusion_type=+reduce` in XLA_FLAGS to keep XLA's default.
    """
    if "xla_force_host_platform_device_count" not in flags:
        cpu_devices = os.environ.get("DISTBENCH_CPU_DEVICES", str(os.cpu_count() or 1))
        if not cpu_devices.strip().isdigit() or int(cpu_devices) < 1:
            raise UsageError(
                f"DISTBENCH_CPU_DEVICES={cpu_devices!r} must be a whole number of devices >= 1"
            )
        flags += f" --xla_force_host_platform_device_count={int(cpu_devices)}"
    ynn = "xla_cpu_experimental_ynn_fusion_type"
    if ynn not in flags and _jaxlib_knows(ynn):
        flags += f" --{ynn}=-reduce"
    return flags.strip()


def _jax_backends_started() -> bool:
    """Whether this process's XLA backends have started (and so have read XLA_FLAGS)."""
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bridge is not None and bridge.backends_are_initialized()


def _set_xla_flags() -> None:
    """Set distbench's XLA flags before jax starts its backends. Where they have started (a
    caller that used jax before calling `main`), XLA_FLAGS is left as XLA read it, so the
    flags a result records are the ones it ran with."""
    if not _jax_backends_started():
        os.environ["XLA_FLAGS"] = xla_flags(os.environ.get("XLA_FLAGS", ""))


EXIT_USAGE = 2
# Where runs write unless --out says otherwise: outside results/, which holds the published
# record, so a quick start never rewrites a committed result.
RUNS_DIR = Path("runs")


class UsageError(ValueError):
    """A bad command-line value."""


def _parse_sets(pairs: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        if "=" not in pair or not pair.split("=", 1)[0]:
            raise UsageError(f"{flag} {pair!r} is not of the form key=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{name}={value} must be >= 1")


# What population_td is for: a tabular model with one state per task phase, not a deep agent.
_AGENT_NOTES = {"population_td": "tabular dopamine model, for the *-mouse tasks"}
# gymnax envs whose constructor fetches a data set: `list` does not build them.
_DOWNLOADS_ON_CREATION = {"MNISTBandit-bsuite"}


def _env_label(name: str) -> str:
    """The env's name, marked where no distbench agent can train on it."""
    import envs

    if name in _DOWNLOADS_ON_CREATION:
        return f"{name} (downloads data when built)"
    env, params = envs.make(name)
    return name if hasattr(env.action_space(params), "n") else f"{name} (continuous: no)"


def cmd_list(args) -> int:
    import agents
    from benchmarks import suites

    labels = [f"{a} ({_AGENT_NOTES[a]})" if a in _AGENT_NOTES else a for a in agents.names()]
    print("agents:       " + ", ".join(labels))
    import envs

    print("environments: " + ", ".join(_env_label(name) for name in envs.names()))
    print("              (continuous: no) = continuous actions, cannot be trained")
    print("suites:       " + ", ".join(suites.names()))
    return 0


def cmd_train(args) -> int:
    from benchmarks import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    from benchmarks import cell

    _positive("--seeds", args.seeds)
    if args.seed_start < 0:
        raise UsageError(f"--seed-start={args.seed_start} must be >= 0")
    if args.out:
        from benchmarks import results

        results.check_output_file(args.out)
    spec = cell.CellSpec.build(
        agent=args.agent,
        env=args.env,
        agent_overrides=_parse_sets(args.set, "--set"),
        env_overrides=_parse_sets(args.env_set, "--env-set"),
        train_overrides=_train_overrides(args),
    )
    _warn_if_never_learning(spec.agent_config, spec.train_config)
    seed_ids = range(args.seed_start, args.seed_start + args.seeds)
    directory = args.checkpoint_dir or _default_checkpoints(spec, args)
    checkpoints = cell.cell_checkpoints(
        spec, seed_ids, args.base_seed, directory, args.checkpoint_every, _log, args.rerun
    )
    record = cell.run_cell(
        spec,
        seed_ids,
        base_seed=args.base_seed,
        show_progress=not args.quiet,
        checkpoints=checkpoints,
    )
    if distributed.is_main_process():
        from benchmarks import tables

        print(tables.cells_markdown([record]))
        if args.out:
            from benchmarks import results

            results.write_json(args.out, cell.train_payload(record))
            print(f"wrote {args.out}")
    if checkpoints is not None:
        checkpoints.finished()
    return 0


def _warn_if_never_learning(agent_config, train_config) -> None:
    """A run too short to reach the agent's learning_starts takes no gradient step: say so."""
    starts = getattr(agent_config, "learning_starts", None)
    if starts is not None and starts >= train_config.total_steps:
        _log(
            f"warning: learning_starts={starts} >= steps={train_config.total_steps}: the agent "
            "takes no gradient step (set e.g. --set learning_starts=N with N < --steps)"
        )


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _default_checkpoints(spec, args) -> Path:
    """Where `train` keeps checkpoints unless told: beside --out, else under runs/, named by
    the run (so the same command finds them again)."""
    import hashlib

    key = " ".join(sys.argv[1:]) if args.out is None else str(Path(args.out).resolve())
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    name = f"{spec.agent}__{spec.env}__{digest}"
    folder = Path(args.out).parent if args.out else RUNS_DIR
    return folder / "checkpoints" / name


def _add_training_flags(parser) -> None:
    """What `train` and `sweep` share: agent, env, seeds, schedule and overrides."""
    parser.add_argument("--agent", required=True, help="agent name (see `distbench list`)")
    parser.add_argument("--env", required=True, help="environment name (see `distbench list`)")
    parser.add_argument("--seeds", type=int, default=8, help="number of seeds (default 8)")
    parser.add_argument("--seed-start", type=int, default=0, help="first seed id (default 0)")
    parser.add_argument("--base-seed", type=int, default=0, help="root PRNG seed (default 0)")
    parser.add_argument("--steps", type=int, help="env steps per seed (default 500000)")
    parser.add_argument("--num-envs", type=int, help="parallel envs per seed (default 10)")
    parser.add_argument("--evals", type=int, help="greedy evaluations during training (default 10)")
    parser.add_argument("--eval-episodes", type=int, help="episodes per evaluation (default 16)")
    parser.add_argument(
        "--seed-block",
        type=int,
        help="seeds per compiled block on each device (default or 0: 4 on CPU, 1024 on GPU/TPU); "
        "a seed's results are bit-identical across runs with the same block",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="agent config override, repeatable (e.g. --set num_atoms=101)",
    )
    parser.add_argument(
        "--env-set",
        action="append",
        metavar="KEY=VALUE",
        help="environment parameter override, repeatable",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_checkpoint_flags(parser, where: str) -> None:
    group = parser.add_argument_group("checkpoints (resume a killed run with the same command)")
    group.add_argument("--checkpoint-dir", metavar="DIR", help=f"where to keep them: {where}")
    group.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help="save every N chunks (default: every chunk when the first chunk says the run "
        "takes over 3 minutes; 0: never); also after the last chunk and on SIGTERM/SIGINT",
    )


def _add_distributed_flags(parser) -> None:
    group = parser.add_argument_group("many hosts (jax.distributed)")
    group.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0")
    group.add_argument("--num-processes", type=int, help="number of processes in the run")
    group.add_argument("--process-id", type=int, help="this process's index, 0..N-1")


def cmd_run(args) -> int:
    from benchmarks import distributed

    # Before anything (gymnax's imports included) can start the XLA backend.
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    from benchmarks import suites, tables

    _positive("--seeds", args.seeds)
    _positive("--steps", args.steps)
    suite = suites.load(args.suite, seeds=args.seeds, steps=args.steps)
    out = Path(args.out) if args.out else RUNS_DIR / suite.name
    from benchmarks import results

    results.check_output_dir(out)
    payload = suites.run_suite(
        suite,
        out,
        base_seed=args.base_seed,
        show_progress=not args.quiet,
        rerun=args.rerun,
        checkpoint_every=args.checkpoint_every,
        checkpoint_dir=args.checkpoint_dir,
    )
    if not distributed.is_main_process():
        return 0
    if suite.kind == "train":
        print(tables.cells_markdown(payload["cells"]))
    print(f"results in {out}/")
    return 0


def cmd_sweep(args) -> int:
    from benchmarks import sweep as sweeps

    _positive("--seeds", args.seeds)
    _positive("--samples", args.samples)
    if args.eval_seeds < 0:
        raise UsageError(f"--eval-seeds={args.eval_seeds} must be >= 0 (0: no fresh seeds)")
    if args.seed_start < 0:
        raise UsageError(f"--seed-start={args.seed_start} must be >= 0")
    max_memory = sweeps.parse_bytes(args.max_memory) if args.max_memory else None
    space = sweeps.SearchSpace(
        grid=sweeps.parse_grid(args.grid or []),
        random=sweeps.parse_random(args.random or []),
        samples=args.samples,
        search_seed=args.search_seed,
    )
    spec = sweeps.SweepSpec.build(
        args.agent,
        args.env,
        space,
        seeds=args.seeds,
        eval_seeds=args.eval_seeds,
        select=args.select,
        base_overrides=_parse_sets(args.set, "--set"),
        env_overrides=_parse_sets(args.env_set, "--env-set"),
        train_overrides=_train_overrides(args),
    )
    latest_start = max(spec.configs, key=lambda c: getattr(c, "learning_starts", 0))
    _warn_if_never_learning(latest_start, spec.train_config)
    out = Path(args.out) if args.out else RUNS_DIR / f"sweep-{args.agent}-{args.env}"
    from benchmarks import results

    results.check_output_dir(out)
    checkpoints = sweeps.sweep_checkpoints(
        spec,
        args.seed_start,
        args.base_seed,
        args.checkpoint_dir or out / "checkpoints",
        args.checkpoint_every,
        _log,
        args.rerun,
    )
    record = sweeps.run_sweep(
        spec,
        seed_start=args.seed_start,
        base_seed=args.base_seed,
        max_memory=max_memory,
        log=_log,
        show_progress=not args.quiet,
        checkpoints=checkpoints,
    )
    payload = sweeps.sweep_payload([record])
    results.write_json(out / "results.json", payload)
    from benchmarks import report, sweep_report

    report.write_report(out, payload)
    if checkpoints is not None:
        checkpoints.finished()
    print(sweep_report.sweep_markdown(record))
    print(f"results in {out}/")
    return 0


def _train_overrides(args) -> dict:
    """The training flags a command was given (others keep TrainConfig's defaults)."""
    given = {
        "total_steps": args.steps,
        "num_envs": args.num_envs,
        "num_evals": args.evals,
        "eval_episodes": args.eval_episodes,
        "seed_block": args.seed_block,
    }
    return {key: value for key, value in given.items() if value is not None}


def cmd_report(args) -> int:
    from benchmarks import report

    for path in report.regenerate(args.dir):
        print(path)
    return 0


def cmd_compare(args) -> int:
    from benchmarks import compare

    if not 0 < args.alpha < 1:
        raise UsageError(f"--alpha={args.alpha} must be in (0, 1)")
    if args.markdown_out:
        from benchmarks.results import check_output_file

        check_output_file(args.markdown_out, "--markdown-out")
    code, text = compare.run(
        args.baseline, args.new, alpha=args.alpha, allow_subset=args.allow_subset
    )
    print(text)
    if args.markdown_out:
        from benchmarks.results import atomic_write_text

        atomic_write_text(args.markdown_out, text + "\n")
    return code


def cmd_throughput(args) -> int:
    from benchmarks import throughput

    try:
        counts = [int(c) for c in args.seeds.split(",") if c.strip()]
    except ValueError:
        raise UsageError(f"--seeds={args.seeds!r} must be comma-separated integers") from None
    if not counts or min(counts) < 1:
        raise UsageError(f"--seeds={args.seeds!r} must list seed counts >= 1")
    _positive("--steps", args.steps)
    out = Path(args.out) if args.out else RUNS_DIR / "throughput"
    from benchmarks import results

    results.check_output_dir(out)
    throughput.check_runnable(args.agent, args.env, _parse_sets(args.set, "--set"))
    payload = throughput.run(
        args.agent, args.env, counts, args.steps, _parse_sets(args.set, "--set"), out
    )
    print(throughput.markdown(payload))
    print(f"wrote {out}/")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in one line (exit 2), as all bad input is."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="distbench",
        description="Benchmark distributional RL agents in JAX: many seeds, calibration, speed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "CPU settings (XLA_FLAGS, set when a command starts unless XLA_FLAGS already has "
            "them;\nrecorded in every result's metadata):\n"
            "  --xla_force_host_platform_device_count=N  one XLA device per core "
            "(N = DISTBENCH_CPU_DEVICES,\n"
            "                                            default: the number of cores)\n"
            "  --xla_cpu_experimental_ynn_fusion_type=-reduce  no YNNPACK reduce fusions "
            "(slow on short axes)\n"
            "exit codes: 0 done, 1 compare found a regression, 2 bad input (one line on stderr)"
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list agents, environments and suites").set_defaults(func=cmd_list)

    train = sub.add_parser("train", help="train one agent on one env over many vmapped seeds")
    _add_training_flags(train)
    train.add_argument("--out", help="write the canonical JSON result here")
    _add_checkpoint_flags(train, "DIR (default: checkpoints/ beside --out, else under runs/)")
    train.add_argument(
        "--rerun", action="store_true", help="start over, ignoring the run's checkpoints"
    )
    _add_distributed_flags(train)
    train.set_defaults(func=cmd_train)

    sweep = sub.add_parser(
        "sweep",
        help="tune one agent on one env: seeds x configurations in one compiled program",
        description=(
            "Train every configuration of a grid (or random search) on the same seeds, the "
            "traced hyperparameters of all of them vmapped in one program; pick the best on "
            "those seeds and train it again on fresh ones (--eval-seeds)."
        ),
    )
    _add_training_flags(sweep)
    sweep.add_argument(
        "--grid",
        action="append",
        metavar="KEY=V1,V2",
        help="values to try, repeatable; the grid is their product (';' separates values "
        "that contain commas: hidden_sizes=64,64;128,128)",
    )
    sweep.add_argument(
        "--random",
        action="append",
        metavar="KEY=DIST",
        help="random search, repeatable: uniform:LOW:HIGH, loguniform:LOW:HIGH, choice:A,B",
    )
    sweep.add_argument("--samples", type=int, default=1, help="random draws (default 1)")
    sweep.add_argument("--search-seed", type=int, default=0, help="seed of the draws (default 0)")
    sweep.add_argument(
        "--eval-seeds",
        type=int,
        default=8,
        help="fresh seeds the winner is retrained on (default 8; 0: none)",
    )
    sweep.add_argument(
        "--select",
        default="return",
        help="what picks the winner: return (IQM, higher) or a calibration metric (IQM, lower): "
        "wasserstein1, cramer, crps, ks, quantile_coverage_error, pit_ks",
    )
    sweep.add_argument(
        "--max-memory",
        help="memory the lanes may use, e.g. 40GB (default: 80%% of the accelerators' memory, "
        "50%% of RAM on the CPU); more lanes run in batches that fit",
    )
    sweep.add_argument("--out", help="output folder (default runs/sweep-AGENT-ENV)")
    _add_checkpoint_flags(sweep, "DIR (default: OUT/checkpoints); a trained batch is kept there")
    sweep.add_argument(
        "--rerun", action="store_true", help="start over, ignoring the sweep's checkpoints"
    )
    sweep.set_defaults(func=cmd_sweep)

    run = sub.add_parser("run", help="run a suite (resumable): every agent x env cell")
    run.add_argument("--suite", default="quick", help="suite name or .toml path (default quick)")
    run.add_argument("--seeds", type=int, help="override the suite's seeds per cell")
    run.add_argument("--steps", type=int, help="override the suite's env steps per seed")
    run.add_argument("--base-seed", type=int, default=0, help="root PRNG seed (default 0)")
    run.add_argument("--out", help="output folder (default runs/SUITE)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument(
        "--rerun",
        action="store_true",
        help="run every cell again, even those already finished in the output folder",
    )
    _add_checkpoint_flags(run, "DIR/CELL for each cell (default: OUT/checkpoints/CELL)")
    _add_distributed_flags(run)
    run.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="regenerate tables and plots from DIR/results.json")
    rep.add_argument("dir", help="a results folder (or its results.json)")
    rep.set_defaults(func=cmd_report)

    cmp_ = sub.add_parser(
        "compare", help="exit 1 on any regression from BASELINE (exit 2: inputs not comparable)"
    )
    cmp_.add_argument("baseline", help="baseline results folder or results.json")
    cmp_.add_argument("new", help="new results folder or results.json")
    cmp_.add_argument("--alpha", type=float, default=0.01, help="significance level (0.01)")
    cmp_.add_argument(
        "--allow-subset",
        action="store_true",
        help="NEW may lack cells or seeds of BASELINE (by default that is a regression)",
    )
    cmp_.add_argument("--markdown-out", help="also write the Markdown table here")
    cmp_.set_defaults(func=cmd_compare)

    thr = sub.add_parser("throughput", help="env steps/s, compile time, memory vs seed count")
    thr.add_argument("--agent", default="c51", help="agent (default c51)")
    thr.add_argument("--env", default="CartPole-v1", help="environment (default CartPole-v1)")
    thr.add_argument(
        "--seeds",
        default="1,8,64,256,1024,4096",
        help="comma-separated seed counts (default 1,8,64,256,1024,4096)",
    )
    thr.add_argument("--steps", type=int, default=5_000, help="env steps per seed (default 5000)")
    thr.add_argument("--set", action="append", metavar="KEY=VALUE", help="agent config override")
    thr.add_argument("--out", help="output folder (default runs/throughput)")
    thr.set_defaults(func=cmd_throughput)
    return parser


# The agent names and the shipped suites' folder, known without importing JAX, so that a
# misspelt name exits at once (tests/test_cli.py checks the list against agents.names()).
AGENT_NAMES = ("dqn", "c51", "qrdqn", "iqn", "edrl", "population_td")
SUITES_DIR = Path(__file__).resolve().parent / "suites"


def _check_names(args) -> None:
    """Bad agent and suite names, refused before anything imports JAX."""
    agent = getattr(args, "agent", None)
    if agent is not None and agent not in AGENT_NAMES:
        raise UsageError(f"unknown agent {agent!r}; valid: {', '.join(AGENT_NAMES)}")
    suite = getattr(args, "suite", None)
    if suite is not None and not suite.endswith(".toml"):
        shipped = sorted(path.stem for path in SUITES_DIR.glob("*.toml"))
        if suite not in shipped:
            raise UsageError(f"unknown suite {suite!r}; valid: {', '.join(shipped)}")


def _usage_errors() -> tuple[type, ...]:
    """The exceptions that mean bad input. Imported only when one is raised: importing envs
    (gymnax) starts the XLA backend, which a multi-process run must initialise first."""
    from agents.base import ConfigError
    from benchmarks.checkpoints import CheckpointMismatch
    from benchmarks.results import ResultsError
    from benchmarks.suites import SuiteError
    from envs.registry import EnvError

    return (UsageError, ConfigError, EnvError, ResultsError, SuiteError, CheckpointMismatch)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_names(args)
        # Before any command imports jax: XLA reads its flags when its backends start.
        _set_xla_flags()
        return args.func(args)
    except KeyboardInterrupt:
        print("distbench: interrupted", file=sys.stderr)
        return 130
    except ValueError as err:
        if not isinstance(err, UsageError) and not isinstance(err, _usage_errors()):
            raise
        print(f"distbench: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except _stopped() as err:
        print(f"distbench: {err}", file=sys.stderr)
        return 128 + err.signal_number


def _stopped() -> type:
    """The exception of a run stopped by a signal after saving a checkpoint (imported only when
    an exception reaches it, as `_usage_errors`)."""
    from benchmarks.checkpoints import Preempted

    return Preempted


if __name__ == "__main__":
    sys.exit(main())
