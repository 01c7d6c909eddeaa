"""The one-shot accelerator check (benchmarks/gpu/run.sh) in its dry-run form, on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    # A plumbing test at toy sizes: compiling is nearly all of its time, so XLA skips its
    # expensive optimisations (numerics may differ from an optimised build, but every run of
    # the check uses the same flags, so seed identity is compared like for like) and the
    # check's programs that repeat (seed identity's alone and among runs have the same padded
    # shape) are compiled once, through a compilation cache of the test's own.
    env["XLA_FLAGS"] = (
        "--xla_force_host_platform_device_count=2"
        " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    )
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "jax-cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu/run.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )


def test_dry_run_writes_every_check(tmp_path):
    out = tmp_path / "gpu"
    result = run_script("--dry-run", "--out", str(out), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "gpu_check.json").read_text())
    assert record["dry_run"] and record["environment"]["platform"] == "cpu"
    identity = record["steps"]["seed_identity"]
    assert identity["status"] == "ok" and identity["identical"], identity
    c51 = record["steps"]["c51"]
    assert c51["status"] == "ok" and c51["env_steps_per_second"] > 0 and c51["iqm_return"] > 0
    assert c51["learned"]  # the toy runs take gradient steps, as the full ones do
    rows = record["steps"]["throughput"]
    assert {row["agent"] for row in rows} == {"dqn", "c51"}  # every agent on a real device
    assert all(row["status"] == "ok" and row["peak_memory_bytes"] > 0 for row in rows), rows
    assert all(row["learned"] for row in rows), rows
    readme = (out / "README.md").read_text()
    assert "equal in every value" in readme and "| c51 | 2 |" in readme
    assert not list(out.glob(".*partial"))


def test_budget_spent_skips_and_says_so(tmp_path):
    out = tmp_path / "gpu"
    result = run_script("--dry-run", "--budget", "0.001", "--out", str(out), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "gpu_check.json").read_text())
    assert record["steps"]["c51"]["status"] == "skipped (time budget)"
    assert "c51: skipped (time budget)." in (out / "README.md").read_text()


def test_bad_arguments_are_one_line_and_exit_2(tmp_path):
    for args, fragment in (
        (["--fast"], "unknown argument --fast"),
        (["--wheelhouse", str(tmp_path)], "holds no wheels"),
        (["--dry-run", "--budget", "0"], "--budget=0.0 must be > 0"),
    ):
        result = run_script(*args, tmp_path=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (args, lines)
