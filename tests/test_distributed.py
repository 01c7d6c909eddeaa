"""Many hosts: two processes on localhost (jax.distributed, CPU) each train their share of the
seeds, and process 0 writes one result equal, seed for seed, to a single-process run."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cli import main

ROOT = Path(__file__).resolve().parent.parent
SUITE = """
name = "tiny"
seeds = 3
agents = ["dqn"]
[train]
total_steps = 300
num_envs = 5
num_evals = 2
eval_episodes = 4
[agent]
learning_starts = 50
batch_size = 16
buffer_size = 500
hidden_sizes = [16]
[envs."OneStepReward"]
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _two_processes(command: list[str]) -> list[subprocess.Popen]:
    """`python -m benchmarks COMMAND` as processes 0 and 1 of a localhost run, one device each."""
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks", *command, "--coordinator", f"127.0.0.1:{port}"]
            + ["--num-processes", "2", "--process-id", str(rank)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]


def test_two_processes_write_one_result_equal_to_one_process(tmp_path):
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    procs = _two_processes(
        ["run", "--suite", str(suite), "--out", str(tmp_path / "multi"), "--quiet"]
    )
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
    multi = json.loads((tmp_path / "multi" / "results.json").read_text())
    assert multi["metadata"]["process_count"] == 2
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "single"), "--quiet"]) == 0
    single = json.loads((tmp_path / "single" / "results.json").read_text())
    a, b = multi["cells"][0], single["cells"][0]
    assert a["seed_ids"] == b["seed_ids"] == [0, 1, 2]
    assert a["per_seed"] == b["per_seed"]
    assert a["curve"] == b["curve"]


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--coordinator", "127.0.0.1:1"], "go together"),
        (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
        (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "--process-id=2"),
    ],
)
def test_bad_distributed_flags(flags, fragment, capsys):
    assert main(["run", "--suite", "quick", *flags]) == 2
    assert fragment in capsys.readouterr().err


TRAIN = [
    "train",
    "--agent",
    "dqn",
    "--env",
    "CartPole-v1",
    "--seeds",
    "4",
    "--steps",
    "40000",
    "--evals",
    "8",
    "--eval-episodes",
    "2",
    "--set",
    "hidden_sizes=16",
    "--set",
    "learning_starts=500",
    "--set",
    "buffer_size=1000",
    "--quiet",
    "--checkpoint-every",
    "1",
]


def _killable_train(tmp_path, out: Path) -> list[str]:
    return [*TRAIN, "--out", str(out), "--checkpoint-dir", str(tmp_path / "checkpoints")]


def test_two_processes_killed_after_a_checkpoint_resume_to_one_process_numbers(tmp_path):
    import signal
    import time

    out = tmp_path / "multi.json"
    procs = _two_processes(_killable_train(tmp_path, out))
    folders = [tmp_path / "checkpoints" / f"process_{rank}" for rank in (0, 1)]
    deadline = time.monotonic() + 300
    try:
        while not all(f.is_dir() and any(p.name.isdigit() for p in f.iterdir()) for f in folders):
            assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no checkpoint in both processes within 300 s"
            time.sleep(0.05)
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.communicate()
    assert not out.exists()
    procs = _two_processes(_killable_train(tmp_path, out))
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-2000:]
    assert "resuming from checkpoint" in outputs[0][1]
    single = tmp_path / "single.json"
    assert main([*TRAIN[:-2], "--checkpoint-every", "0", "--out", str(single)]) == 0
    multi_cell = json.loads(out.read_text())["cells"][0]
    single_cell = json.loads(single.read_text())["cells"][0]
    assert multi_cell["per_seed"] == single_cell["per_seed"]
    assert multi_cell["curve"] == single_cell["curve"]
