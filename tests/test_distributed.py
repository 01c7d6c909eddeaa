"""Many hosts: two processes on localhost (jax.distributed, CPU) each train their share of the
seeds, and process 0 writes one result equal, seed for seed, to a single-process run."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_two_processes_write_one_result_equal_to_one_process(tmp_path):
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks",
                "run",
                "--suite",
                str(suite),
                "--out",
                str(tmp_path / "multi"),
                "--quiet",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(rank),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
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
    for metric in ("return", "discounted_return", "wasserstein1"):
        np.testing.assert_allclose(a["per_seed"][metric], b["per_seed"][metric], rtol=1e-5)


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
