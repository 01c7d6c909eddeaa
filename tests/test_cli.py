"""The command line: bad input gives one clear line and exit code 2; commands run end to end."""

import json
import subprocess
import sys

import pytest

from benchmarks import cli
from benchmarks.cli import main


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (
            ["train", "--agent", "rainbow", "--env", "CartPole-v1"],
            "unknown agent 'rainbow'; valid: dqn",
        ),
        (["train", "--agent", "c51", "--env", "CartPole-v9"], "unknown environment 'CartPole-v9'"),
        (
            ["train", "--agent", "c51", "--env", "CartPole-v1", "--set", "num_atoms=1"],
            "num_atoms=1",
        ),
        (
            [
                "train",
                "--agent",
                "c51",
                "--env",
                "CartPole-v1",
                "--set",
                "v_min=10",
                "--set",
                "v_max=0",
            ],
            "v_min=10.0 must be < v_max=0.0",
        ),
        (
            ["train", "--agent", "c51", "--env", "CartPole-v1", "--set", "atoms=5"],
            "unknown c51 config key atoms; valid keys:",
        ),
        (
            ["train", "--agent", "dqn", "--env", "CartPole-v1", "--set", "batch_size=big"],
            "batch_size='big' is not an integer",
        ),
        (["train", "--agent", "dqn", "--env", "CartPole-v1", "--set", "oops"], "key=value"),
        (["train", "--agent", "dqn", "--env", "CartPole-v1", "--seeds", "0"], "--seeds=0"),
        (["train", "--agent", "dqn", "--env", "CartPole-v1", "--steps", "-5"], "steps=-5"),
        (["train", "--agent", "dqn", "--env", "CartPole-v1", "--env-set", "gravity=x"], "gravity"),
        (["train", "--agent", "dqn", "--env", "Pendulum-v1"], "continuous action space"),
        (["run", "--suite", "nosuch"], "unknown suite 'nosuch'; valid:"),
        (["run", "--suite", "quick", "--seeds", "0"], "--seeds=0"),
        (["report", "/nonexistent/results"], "does not exist"),
        (["throughput", "--seeds", "1,x"], "comma-separated integers"),
        (["throughput", "--seeds", "0"], "seed counts >= 1"),
        (["throughput", "--agent", "nope", "--seeds", "1"], "unknown agent 'nope'"),
        (["throughput", "--env", "Pendulum-v1", "--seeds", "1"], "continuous action space"),
        (
            ["train", "--agent", "dqn", "--env", "CartPole-v1", "--set", "learning_rate=inf"],
            "learning_rate='inf' is not a finite number",
        ),
        (
            ["train", "--agent", "c51", "--env", "CartPole-v1", "--set", "v_max=nan"],
            "v_max='nan' is not a finite number",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_list_names_agents_envs_and_suites(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("c51", "qrdqn", "CartPole-v1", "VariableMagnitude-mouse", "quick"):
        assert name in out
    # What cannot be trained, and what population_td is for, is said.
    assert "Pendulum-v1 (continuous: no)" in out and "CartPole-v1 (" not in out
    assert "population_td (tabular dopamine model, for the *-mouse tasks)" in out


def test_train_prints_table_and_writes_json_with_per_seed_values(tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = [
        "train",
        "--agent",
        "dqn",
        "--env",
        "CartPole-v1",
        "--seeds",
        "3",
        "--seed-start",
        "5",
        "--steps",
        "600",
        "--evals",
        "2",
        "--eval-episodes",
        "2",
        "--num-envs",
        "3",
        "--set",
        "learning_starts=100",
        "--set",
        "batch_size=16",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "| dqn | CartPole-v1 | 3 |" in table and "env steps/s" in table
    payload = json.loads(out.read_text())
    cell = payload["cells"][0]
    assert cell["seed_ids"] == [5, 6, 7]
    assert len(cell["per_seed"]["return"]) == 3
    assert cell["spec"]["agent_config"]["learning_starts"] == 100
    throughput = cell["throughput"]
    programs = throughput["compile_seconds_by_program"]
    assert sorted(programs) == ["evaluate", "init", "run_segment"]
    assert all(t > 0 for t in programs.values())
    assert sum(programs.values()) <= throughput["compile_seconds"]
    meta = payload["metadata"]
    for key in ("schema_version", "commit", "versions", "device_kind", "device_count", "xla_flags"):
        assert key in meta
    assert meta["versions"]["jax"]


def test_xla_flags_added_only_where_unset_and_known(monkeypatch):
    from benchmarks import cli

    assert cli._jaxlib_knows("xla_force_host_platform_device_count")
    assert not cli._jaxlib_knows("xla_flag_that_no_jaxlib_defines_" + "x" * 8)
    monkeypatch.setenv("DISTBENCH_CPU_DEVICES", "5")
    monkeypatch.setattr(cli, "_jaxlib_knows", lambda flag: True)
    assert cli.xla_flags("--xla_force_host_platform_device_count=3").split() == [
        "--xla_force_host_platform_device_count=3",
        "--xla_cpu_experimental_ynn_fusion_type=-reduce",
    ]
    # A user's own setting wins; an XLA without the flag never sees it (it would abort).
    assert cli.xla_flags("--xla_cpu_experimental_ynn_fusion_type=+reduce").split() == [
        "--xla_cpu_experimental_ynn_fusion_type=+reduce",
        "--xla_force_host_platform_device_count=5",
    ]
    monkeypatch.setattr(cli, "_jaxlib_knows", lambda flag: False)
    assert cli.xla_flags("") == "--xla_force_host_platform_device_count=5"


def test_xla_flags_are_left_as_xla_read_them_once_its_backends_started(monkeypatch):
    """A caller that started jax before `main` keeps the flags XLA read, so the flags a
    result records are those it ran with (the test process's own backends have started)."""
    import jax

    from benchmarks import cli

    jax.devices()
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    cli._set_xla_flags()
    assert cli.os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
    monkeypatch.setattr(cli, "_jax_backends_started", lambda: False)
    monkeypatch.setattr(cli, "_jaxlib_knows", lambda flag: True)
    cli._set_xla_flags()
    assert "ynn_fusion_type=-reduce" in cli.os.environ["XLA_FLAGS"]


def test_the_cli_knows_every_agent_and_suite_without_jax():
    import agents
    from benchmarks import suites

    assert cli.AGENT_NAMES == tuple(agents.names())
    assert sorted(p.stem for p in cli.SUITES_DIR.glob("*.toml")) == sorted(suites.names())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--agent", "nope", "--env", "CartPole-v1"], "unknown agent 'nope'; valid: dqn"),
        (["run", "--suite", "nope"], "unknown suite 'nope'; valid: baseline"),
        (["throughput", "--agent", "nope"], "unknown agent 'nope'"),
    ],
)
def test_a_misspelt_name_exits_before_jax_is_imported(argv, message):
    # Importing JAX takes seconds: a typo should not.
    code = (
        "import sys; from benchmarks import cli; "
        f"rc = cli.main({argv!r}); "
        "assert 'jax' not in sys.modules, 'jax imported'; sys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"distbench: error: {message}"), lines


def test_progress_in_a_log_says_what_compiles_and_how_long(capsys):
    # stderr is not a terminal under pytest: one line per event instead of a bar.
    from benchmarks.progress import ChunkBar

    bar = ChunkBar("c51/CartPole-v1", 2)
    bar.update(0, 2, {"compile_s": 12.34})
    bar.update(1, 2, {"eval_return": 9.5})
    bar.close()
    assert capsys.readouterr().err.splitlines() == [
        "  c51/CartPole-v1: compiled in 12.3 s",
        "  c51/CartPole-v1: chunk 1/2 eval_return=9.5",
    ]
