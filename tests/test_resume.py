"""A long run survives a kill: `distbench train` killed after its first checkpoint and run
again with the same command finishes with every per-seed value bit-identical to a run that was
never interrupted, also when it resumes on another device count (1 -> 2 host devices) and when
it was stopped by SIGTERM (which saves at the next segment and exits 128 + 15). The runs share
a compilation cache, so each program is compiled once per device count."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# 16 seeds x 40,000 steps in 8 chunks, saving after each: long enough on a 2-core CPU to
# kill a run between its first checkpoint and its end.
COMMAND = [
    sys.executable,
    "-m",
    "benchmarks",
    "train",
    "--agent",
    "dqn",
    "--env",
    "CartPole-v1",
    "--seeds",
    "16",
    "--steps",
    "40000",
    "--evals",
    "8",
    "--eval-episodes",
    "4",
    "--set",
    "hidden_sizes=32",
    "--set",
    "learning_starts=500",
    "--set",
    "buffer_size=2000",
    "--set",
    "batch_size=32",
    "--quiet",
    "--checkpoint-every",
    "1",
]


def _command(out: Path, checkpoints: Path) -> list[str]:
    return [*COMMAND, "--out", str(out), "--checkpoint-dir", str(checkpoints)]


CACHE = {}  # the module's compilation cache folder, set by the `reference` fixture


def _env(devices: int) -> dict:
    return {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "DISTBENCH_CPU_DEVICES": str(devices),
        "JAX_COMPILATION_CACHE_DIR": CACHE["dir"],
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


def _run(out: Path, checkpoints: Path, devices: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(out, checkpoints),
        cwd=ROOT,
        env=_env(devices),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _complete_steps(directory: Path) -> list[int]:
    """Checkpoint steps fully written (orbax renames a step's folder into place when done)."""
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _interrupt(out: Path, checkpoints: Path, devices: int, how: int) -> subprocess.Popen:
    """Start the run, wait for its first complete checkpoint, then send `how`."""
    process = subprocess.Popen(
        _command(out, checkpoints),
        cwd=ROOT,
        env=_env(devices),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not _complete_steps(checkpoints):
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    process.send_signal(how)
    process.communicate(timeout=300)
    return process


def _per_seed(path: Path) -> dict:
    cell = json.loads(path.read_text())["cells"][0]
    return {"per_seed": cell["per_seed"], "curve": cell["curve"], "seeds": cell["seed_ids"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    CACHE["dir"] = str(folder / "jax-cache")
    done = _run(folder / "out.json", folder / "checkpoints", devices=2)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (folder / "checkpoints").exists()  # removed once the result is written
    return _per_seed(folder / "out.json")


def test_sigkill_then_the_same_command_on_another_device_count_gives_the_same_numbers(
    reference, tmp_path
):
    out, checkpoints = tmp_path / "out.json", tmp_path / "checkpoints"
    killed = _interrupt(out, checkpoints, devices=1, how=signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL and not out.exists()
    resumed = _run(out, checkpoints, devices=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from checkpoint" in resumed.stderr
    assert _per_seed(out) == reference


def test_sigterm_saves_stops_refuses_another_configuration_and_resumes(reference, tmp_path):
    out, checkpoints = tmp_path / "out.json", tmp_path / "checkpoints"
    stopped = _interrupt(out, checkpoints, devices=2, how=signal.SIGTERM)
    assert stopped.returncode == 128 + signal.SIGTERM and not out.exists()
    other = [*_command(out, checkpoints), "--set", "learning_rate=0.001"]
    refused = subprocess.run(
        other, cwd=ROOT, env=_env(2), capture_output=True, text=True, timeout=300, check=False
    )
    assert refused.returncode == 2
    assert "learning_rate=0.00025, this run has 0.001" in refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr
    resumed = _run(out, checkpoints, devices=2)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _per_seed(out) == reference
