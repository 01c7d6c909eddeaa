"""A failure loses nothing and says one line: a diverged agent is a recorded result, an output
that cannot be written fails before any training, and the quick start never rewrites the
committed results."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import cell, report
from benchmarks.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--steps", "400", "--num-envs", "4", "--evals", "2", "--eval-episodes", "3", "--quiet"]
SMALL = ["--set", "learning_starts=40", "--set", "batch_size=16", "--set", "buffer_size=400"]
# Adam steps each parameter by about the learning rate: at 1e38 the first update overflows
# float32 (inf), and the next losses are NaN.
DIVERGING = ["--set", "learning_rate=1e38", "--set", "hidden_sizes=16"]


def test_a_diverged_agent_is_a_result_written_recorded_and_reported(tmp_path, capsys):
    out = tmp_path / "diverged.json"
    argv = ["train", "--agent", "c51", "--env", "CartPole-v1", "--seeds", "3", *TINY, *SMALL]
    assert main([*argv, *DIVERGING, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    record = json.loads(out.read_text())["cells"][0]
    assert record["per_seed"]["diverged"] == [True, True, True]
    assert record["divergence"] == {"diverged": 3, "seeds": 3, "rate": 1.0}
    assert all(v is None for v in record["per_seed"]["return"])
    assert all(v is None for v in record["per_seed"]["wasserstein1"])
    assert record["aggregates"]["return"] is None
    assert "| diverged |" in table and "3/3" in table
    # The report of a diverged run is made too, in a folder of the file's own name.
    written = report.regenerate(out)
    assert any(p.name.startswith("calibration_") for p in written)
    assert (tmp_path / "diverged" / "results.md").is_file()
    assert not (tmp_path / "results.md").exists()


def test_aggregates_use_the_finite_seeds_and_count_the_others():
    aggregates = cell._aggregates({"return": np.asarray([1.0, np.nan, 3.0])})
    assert aggregates["return"]["n"] == 2 and aggregates["return"]["diverged"] == 1
    assert aggregates["return"]["mean"]["value"] == pytest.approx(2.0)
    assert cell._aggregates({"return": np.asarray([np.nan])})["return"] is None


@pytest.mark.parametrize(
    "where, fragment",
    [
        (lambda tmp: tmp, "is a directory; give a file path"),
        (
            lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt" / "out.json",
            "cannot write in",
        ),
        (lambda tmp: Path("/proc/distbench_out.json"), "cannot write in"),
    ],
)
def test_an_output_that_cannot_be_written_fails_before_training(
    tmp_path, capsys, monkeypatch, where, fragment
):
    def no_training(*args, **kwargs):
        raise AssertionError("training started before --out was checked")

    monkeypatch.setattr(cell, "run_cell", no_training)
    argv = ["train", "--agent", "dqn", "--env", "CartPole-v1", *TINY, "--out", str(where(tmp_path))]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (
            ["--steps", "1001"],
            (
                "steps=1001 must be a multiple of num_envs=10 (each iteration steps every env "
                "once): e.g. 1000 or 1010"
            ),
        ),
        (["--steps", "7", "--num-envs", "4"], "e.g. 4 or 8"),
        (["--seeds", "abc"], "argument --seeds: invalid int value: 'abc'"),
        (["--evals"], "argument --evals: expected one argument"),
    ],
)
def test_bad_training_flags_are_one_line_exit_2(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_info:
        if main(["train", "--agent", "dqn", "--env", "CartPole-v1", *argv]) == 2:
            raise SystemExit(2)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err and fragment in err, err


def test_a_run_too_short_to_learn_says_so(capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cell, "run_cell", interrupted)
    assert main(["train", "--agent", "dqn", "--env", "CartPole-v1", "--steps", "5000"]) == 130
    err = capsys.readouterr().err
    assert "warning: learning_starts=10000 >= steps=5000: the agent takes no gradient step" in err


def test_a_suite_output_that_is_a_file_fails_before_training(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    assert main(["run", "--suite", "ci", "--out", str(tmp_path / "taken")]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def test_bad_cpu_device_count_is_one_line():
    env = {**os.environ, "DISTBENCH_CPU_DEVICES": "abc"}
    env.pop("XLA_FLAGS", None)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "list"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "distbench: error: DISTBENCH_CPU_DEVICES='abc' must be a whole number of devices >= 1"
    )


SUITE = """
name = "tiny"
seeds = 2
agents = ["dqn"]
[train]
total_steps = 200
num_envs = 4
num_evals = 1
eval_episodes = 2
[agent]
learning_starts = 40
batch_size = 16
buffer_size = 200
hidden_sizes = [8]
[envs."OneStepReward"]
"""


def test_a_suite_run_writes_under_runs_not_results(tmp_path, monkeypatch, capsys):
    (tmp_path / "tiny.toml").write_text(SUITE)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--suite", "tiny.toml", "--quiet"]) == 0
    assert (tmp_path / "runs" / "tiny" / "results.json").is_file()
    assert not (tmp_path / "results").exists()
    assert "results in runs/tiny/" in capsys.readouterr().out


def test_the_commit_is_recorded_after_a_non_editable_install(tmp_path):
    """pip records the folder it installed from; the commit is read from that checkout."""
    target = tmp_path / "site"
    # setuptools builds in the source folder's build/: leave the checkout as it was found.
    had_build = (ROOT / "build").exists()
    try:
        install = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(target),
                str(ROOT),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        if not had_build:
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    assert install.returncode == 0, install.stderr[-2000:]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    code = "from benchmarks.results import git_commit; print(git_commit())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith(head)
    assert (
        str(target)
        in subprocess.run(
            [sys.executable, "-c", "import benchmarks; print(benchmarks.__file__)"],
            env={**os.environ, "PYTHONPATH": str(target)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )


def test_a_diverged_suite_cell_is_written_kept_on_rerun_and_reported(tmp_path, monkeypatch, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text(
        SUITE.replace("hidden_sizes = [8]", "hidden_sizes = [8]\nlearning_rate = 1e38")
    )
    out = tmp_path / "out"
    argv = ["run", "--suite", str(suite), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert "diverged" in (out / "results.md").read_text()
    assert (out / "results.csv").is_file() and list((out / "plots").glob("*.png"))
    # A rerun keeps the finished (diverged) cell, and the report regenerates from the JSON.
    assert main(argv) == 0
    assert "kept" in capsys.readouterr().out
    assert report.regenerate(out)


def test_rewritten_results_do_not_mark_the_code_dirty(tmp_path):
    """A suite run into results/ rewrites tracked files; the next run's commit stays clean
    until code changes."""
    from benchmarks import results

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "results.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    subfolder = tmp_path / "results"  # git_commit asks from the package's folder
    (tmp_path / "results" / "results.json").write_text('{"new": 1}\n')
    assert not results._code_changed(subfolder)
    (tmp_path / "code.py").write_text("x = 2\n")
    assert results._code_changed(subfolder)
