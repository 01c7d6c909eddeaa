"""Scale: the seed axis sharded over several devices gives the single-device results seed for
seed, bit for bit, including seed counts that do not divide the device count (padding)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import agents
import envs
from benchmarks.cli import xla_flags
from benchmarks.runner import run_seeds
from benchmarks.train import TrainConfig

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    import agents, envs
    from benchmarks.runner import run_seeds
    from benchmarks.train import TrainConfig
    agent = agents.make("c51", learning_starts=100, batch_size=16, buffer_size=500,
                        target_period=100, epsilon_steps=500, hidden_sizes=(32,))
    env, params = envs.make("CartPole-v1")
    config = TrainConfig(total_steps=600, num_envs=4, num_evals=2, eval_episodes=3)
    r = run_seeds(agent, env, params, config, [0, 1, 2], keep_state=True)
    print(json.dumps({"devices": jax.device_count(), "num_devices": r.num_devices,
                      "returns": r.eval_returns.tolist(), "loss": r.train_loss.tolist(),
                      "kernel": r.final_state.params["params"]["MLP_0"]["Dense_0"]["kernel"].tolist()}))
    """
)


def _in_subprocess(num_devices: int) -> dict:
    env = dict(os.environ)
    # The CLI's XLA settings, as the test process has them (conftest): same numerics.
    env["XLA_FLAGS"] = xla_flags(f"--xla_force_host_platform_device_count={num_devices}")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=os.path.dirname(os.path.dirname(__file__)),
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_four_devices_match_one_device_seed_for_seed():
    four = _in_subprocess(4)
    assert four["devices"] == 4 and four["num_devices"] == 4  # 3 seeds padded to 4 blocks
    agent = agents.make(
        "c51",
        learning_starts=100,
        batch_size=16,
        buffer_size=500,
        target_period=100,
        epsilon_steps=500,
        hidden_sizes=(32,),
    )
    env, params = envs.make("CartPole-v1")
    config = TrainConfig(total_steps=600, num_envs=4, num_evals=2, eval_episodes=3)
    one = run_seeds(agent, env, params, config, [0, 1, 2], keep_state=True)
    # Bit for bit: the seeds run in the same fixed-size blocks on any device count.
    np.testing.assert_array_equal(four["returns"], one.eval_returns)
    np.testing.assert_array_equal(four["loss"], one.train_loss)
    np.testing.assert_array_equal(
        four["kernel"], one.final_state.params["params"]["MLP_0"]["Dense_0"]["kernel"]
    )


def test_throughput_sweep_reports_ceilings_and_memory(tmp_path, monkeypatch):
    from benchmarks import throughput

    # Each seed count runs in a subprocess with these flags: 3 seeds on 2 devices (padded to 4).
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    overrides = {"batch_size": "16", "train_every": "5"}  # two gradient steps per 10 env steps
    payload = throughput.run("dqn", "CartPole-v1", [3], 400, overrides, tmp_path)
    (row,) = payload["rows"]
    assert row["status"] == "ok" and row["num_seeds"] == 3
    # Both ceilings run as training does, on every device (the learning step alone once ran
    # on one of them and the ceiling came out at half, training at "119% of ceiling").
    assert row["num_devices"] == 2 and row["learning_only_devices"] == 2
    # Training does strictly more work than either ceiling's half.
    assert row["env_steps_per_second"] < row["learning_off_steps_per_second"]
    assert 0 < row["fraction_of_ceiling"] < 2
    # One learning step of one seed, batch 16, torso 4 -> 120 -> 84 -> 2: the matmuls of the
    # online and target forward passes and the backward pass (weight gradients, and input
    # gradients below the first layer) by hand, plus elementwise work (ReLUs, loss, Adam) that
    # adds 10-15%.
    forward = 2 * 16 * (4 * 120 + 120 * 84 + 84 * 2)
    matmuls = 3 * forward + 2 * 16 * (120 * 84 + 84 * 2)
    assert matmuls <= row["update_flops_per_seed"] <= 1.25 * matmuls
    updates_per_second = row["learning_only_steps_per_second"] / 5
    assert row["learning_only_flops_per_second"] == pytest.approx(
        updates_per_second * row["update_flops_per_seed"]
    )
    # One seed's state: replay (10,000 x 2 obs of 4 floats + 3 scalars) dominates.
    assert 10_000 * 11 * 4 <= row["state_bytes_per_seed"] < 2 * 10_000 * 11 * 4 + 2**20
    assert (tmp_path / "dqn_CartPole-v1.md").read_text().count("| 3 |") == 1
    assert (tmp_path / "dqn_CartPole-v1.png").read_bytes()[:4] == b"\x89PNG"


def test_throughput_measures_an_agent_through_its_contract_alone(tmp_path):
    """population_td is a tabular model (no network parameters, no update counter, no
    train_every): measured by init/update and its config's schedule, one learning step per
    transition."""
    from benchmarks import throughput

    # The mouse task's 4 clock states (delay 3); quantile cells need no imputation to compile.
    overrides = {"num_states": "4", "variant": "quantile"}
    payload = throughput.run(
        "population_td", "VariableMagnitude-mouse", [3], 200, overrides, tmp_path
    )
    (row,) = payload["rows"]
    assert row["status"] == "ok", row["status"]
    assert row["num_devices"] == row["learning_only_devices"] == 2
    assert row["update_flops_per_seed"] > 0
    assert row["learning_only_flops_per_second"] == pytest.approx(
        row["learning_only_steps_per_second"] * row["update_flops_per_seed"]
    )


def test_learning_schedule_is_read_from_the_config():
    from agents.base import learning_schedule

    assert learning_schedule(agents.make_config("dqn", learning_starts=5, train_every=4)) == (5, 4)
    # No schedule declared: learning from the first transition, a step per transition.
    assert learning_schedule(agents.make_config("population_td")) == (0, 1)
