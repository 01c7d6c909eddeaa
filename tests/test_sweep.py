"""Sweeps: seeds x configurations as lanes of one compiled program. The invariants users rely
on: a configuration inside a sweep trains exactly as it does alone, a second sweep over other
traced values compiles nothing, memory batches change no number, the memory plan bounds what
XLA allocates, and the winner is retrained on fresh seeds."""

import json

import jax
import numpy as np
import pytest

from agents.base import ConfigError
from benchmarks import cli, report, runner, suites
from benchmarks import sweep as sweeps
from benchmarks.cell import run_cell

SMALL = {
    "hidden_sizes": "16",
    "buffer_size": 400,
    "batch_size": 16,
    "learning_starts": 100,
    "train_every": 4,
}
TRAIN = {"total_steps": 1_200, "num_envs": 4, "num_evals": 2, "eval_episodes": 4}
GRID = {"huber_kappa": ["1", "10"], "learning_rate": ["1e-3", "3e-4"], "target_period": ["40"]}


def small_sweep(grid=GRID, seeds=2, eval_seeds=2, **kwargs):
    space = sweeps.SearchSpace(grid=grid, random={})
    return sweeps.SweepSpec.build(
        "qrdqn",
        "CartPole-v1",
        space,
        seeds=seeds,
        eval_seeds=eval_seeds,
        base_overrides=SMALL,
        train_overrides=TRAIN,
        **kwargs,
    )


@pytest.fixture(scope="module")
def swept():
    spec = small_sweep()
    return spec, sweeps.run_sweep(spec, show_progress=False, log=lambda line: None)


def per_seed(cell):
    return {**cell["per_seed"], "curve": cell["curve"], "seed_ids": cell["seed_ids"]}


def test_a_configuration_in_a_sweep_trains_as_it_does_alone(swept):
    spec, record = swept
    assert len(record["programs"]) == 1  # every configuration differs in traced fields only
    for index in (0, 3):
        alone = run_cell(spec.cell(index), range(spec.seeds), show_progress=False)
        assert per_seed(record["configurations"][index]["cell"]) == per_seed(alone)


def test_traced_values_change_the_training(swept):
    _, record = swept
    losses = [json.dumps(c["cell"]["curve"]["loss"]) for c in record["configurations"]]
    assert len(set(losses)) == len(losses)


def test_a_second_sweep_over_other_traced_values_compiles_nothing(swept):
    compiles = []

    def count(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        other = {"huber_kappa": ["3"], "learning_rate": ["5e-4"], "target_period": ["80", "160"]}
        record = sweeps.run_sweep(
            small_sweep(other, eval_seeds=0), show_progress=False, log=lambda line: None
        )
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert compiles == []
    assert record["programs"][0]["compile_seconds"] < 5.0  # no compile, only the lanes' init


def tight_memory(spec) -> int:
    """Room for one block of 4 lanes on each of the 2 devices: 8 lanes per batch, so 5 seeds
    x 4 configurations = 20 lanes run as 3 batches, the last padded."""
    return int(8 * sweeps.lane_bytes(spec, spec.configs[0]) * sweeps.MEMORY_HEADROOM)


@pytest.fixture(scope="module")
def batched():
    spec5 = small_sweep(seeds=5, eval_seeds=2)
    record = sweeps.run_sweep(
        spec5, max_memory=tight_memory(spec5), show_progress=False, log=lambda s: None
    )
    return spec5, record


def test_memory_batches_give_the_numbers_of_one_run(swept, batched):
    _, record = swept
    _, batched_record = batched
    program = batched_record["programs"][0]
    assert program["batches"] == 3 and program["padded_lanes"] == 4
    for index, configuration in enumerate(batched_record["configurations"]):
        first_two = {
            k: v[:2] if isinstance(v, list) else v
            for k, v in configuration["cell"]["per_seed"].items()
        }
        assert first_two == record["configurations"][index]["cell"]["per_seed"]


def numbers(record):
    """A sweep record's per-seed values and curves, every configuration's and the fresh run's."""
    cells = [c["cell"] for c in record["configurations"]] + [record["selection"]["fresh_cell"]]
    return [per_seed(cell) for cell in cells], record["selection"]["winner"]


def test_a_stopped_sweep_resumes_to_the_numbers_of_one_run(batched, tmp_path, monkeypatch):
    """SIGTERM in the second batch: the sweep stops with a checkpoint of that batch and the
    first kept; run again, it trains only what was left and gives every number of a sweep
    that was never stopped. Another sweep is refused in the same folder."""
    import os
    import signal

    from benchmarks.checkpoints import CheckpointMismatch, Preempted

    spec5, reference = batched
    lines, calls, stopped = [], [], []

    def checkpoints():
        return sweeps.sweep_checkpoints(spec5, 0, 0, tmp_path / "ckpt", 1, lines.append)

    real_run_seeds = sweeps.run_seeds

    def run_seeds(*args, **kwargs):
        calls.append(len(args[4]))
        if len(calls) == 2 and not stopped:  # the second batch: stopped after its first chunk

            def progress(done, total, info):
                if done == 1:
                    stopped.append(done)
                    os.kill(os.getpid(), signal.SIGTERM)

            kwargs["progress"] = progress
        return real_run_seeds(*args, **kwargs)

    monkeypatch.setattr(sweeps, "run_seeds", run_seeds)
    memory = tight_memory(spec5)
    with pytest.raises(Preempted):
        sweeps.run_sweep(spec5, max_memory=memory, checkpoints=checkpoints(), log=lines.append)
    assert (tmp_path / "ckpt" / "program1_batch1.json").is_file()
    assert (tmp_path / "ckpt" / "program1_batch2").is_dir()
    with pytest.raises(CheckpointMismatch, match="seeds"):
        other = small_sweep(seeds=4, eval_seeds=2)
        sweeps.run_sweep(
            other,
            max_memory=memory,
            checkpoints=sweeps.sweep_checkpoints(other, 0, 0, tmp_path / "ckpt", 1, print),
        )
    calls.clear()
    resumed = sweeps.run_sweep(
        spec5, max_memory=memory, checkpoints=checkpoints(), show_progress=False, log=lines.append
    )
    assert len(calls) == 3  # batch 2 (resumed), batch 3 and the fresh seeds; not batch 1
    assert any("program1_batch1: trained earlier, kept" in line for line in lines)
    assert any("resuming from checkpoint" in line for line in lines)
    assert numbers(resumed) == numbers(reference)


def test_the_memory_plan_bounds_what_xla_allocates(swept):
    spec, _ = swept
    per_lane = sweeps.lane_bytes(spec, spec.configs[0])
    (programs, _), *_ = [v for k, v in runner._PROGRAMS.items() if k[0][0] == "qrdqn"]
    lanes_per_device = 2 * len(spec.configs) // jax.local_device_count()
    for name in ("init", "run_segment", "evaluate"):
        stats = getattr(programs, name).func.memory_analysis()
        peak = (
            stats.argument_size_in_bytes
            + stats.output_size_in_bytes
            - stats.alias_size_in_bytes
            + stats.temp_size_in_bytes
        )
        assert peak <= lanes_per_device * per_lane * sweeps.MEMORY_HEADROOM, name


def test_the_winner_is_retrained_on_fresh_seeds(swept):
    _spec, record = swept
    selection = record["selection"]
    iqms = [c["cell"]["aggregates"]["return"]["iqm"]["value"] for c in record["configurations"]]
    assert selection["winner"] == int(np.argmax(iqms))
    assert selection["fresh_cell"]["seed_ids"] == [2, 3]  # after the tuning seeds 0, 1
    assert selection["fresh"]["n"] == 2
    assert (
        selection["tuning"]
        == record["configurations"][selection["winner"]]["cell"]["aggregates"]["return"]
    )


def test_shape_fields_and_zero_switches_form_separate_programs():
    spec = small_sweep({"hidden_sizes": ["8", "16"], "huber_kappa": ["1", "2"]})
    assert [g.indices for g in sweeps.programs(spec)] == [(0, 1), (2, 3)]
    # kappa 0 is the plain quantile loss, a form of its own: the program does not compute it
    # where kappa > 0, so zero and nonzero values compile apart.
    spec = small_sweep({"huber_kappa": ["0", "1", "2"]})
    assert [g.indices for g in sweeps.programs(spec)] == [(0,), (1, 2)]


def test_random_search_is_reproducible_and_respects_types():
    space = sweeps.SearchSpace(
        grid={"huber_kappa": ["1"]},
        random={"learning_rate": "loguniform:1e-5:1e-3", "target_period": "uniform:100:1000"},
        samples=6,
        search_seed=7,
    )
    from agents import qrdqn

    first = sweeps.configurations(space, qrdqn.Config)
    assert first == sweeps.configurations(space, qrdqn.Config)
    assert len(first) == 6
    assert all(1e-5 <= c["learning_rate"] <= 1e-3 for c in first)
    assert all(isinstance(c["target_period"], int) for c in first)
    other = sweeps.configurations(space._replace(search_seed=8), qrdqn.Config)
    assert other != first


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--grid", "num_atoms=3"], "cannot sweep 'num_atoms'"),
        (["--grid", "huber_kappa=-1"], "huber_kappa=-1.0 must be >= 0"),
        (["--random", "learning_rate=normal:0:1"], "must be uniform:LOW:HIGH"),
        (["--random", "learning_rate=loguniform:0:1"], "loguniform needs 0 < LOW"),
        (["--grid", "huber_kappa=1", "--max-memory", "lots"], "--max-memory='lots'"),
        (["--grid", "huber_kappa=1", "--select", "luck"], "select='luck'"),
        ([], "needs at least one --grid or --random"),
    ],
)
def test_bad_sweep_input_is_one_line_and_exit_2(capsys, args, fragment):
    code = cli.main(["sweep", "--agent", "qrdqn", "--env", "CartPole-v1", *args])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and err.count("\n") == 1, err


def test_a_suite_sweep_table_is_checked_with_its_line(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        'kind = "sweep"\nagents = ["qrdqn"]\n[sweep]\ngrid = { huber_kappa = [1.0] }\n'
        'oops = 1\n[envs."CartPole-v1"]\n'
    )
    with pytest.raises(suites.SuiteError, match=r"line 5\): unknown \[sweep\] key 'oops'"):
        suites.load(str(path))
    path.write_text('kind = "sweep"\nagents = ["qrdqn"]\n[envs."CartPole-v1"]\n')
    with pytest.raises(suites.SuiteError, match="needs a \\[sweep\\] table"):
        suites.load(str(path))


def test_a_sweep_suite_runs_resumes_and_reports(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(
        'name = "tiny"\nkind = "sweep"\nseeds = 1\nagents = ["qrdqn"]\n'
        "[sweep]\ngrid = { huber_kappa = [0.0, 1.0] }\neval_seeds = 0\n"
        "[agent]\nhidden_sizes = [16]\nbuffer_size = 400\nbatch_size = 16\n"
        "learning_starts = 100\n"
        '[train]\nnum_envs = 4\nnum_evals = 1\neval_episodes = 2\n[envs."CartPole-v1"]\n'
        "train = { total_steps = 400 }\n"
    )
    out = tmp_path / "out"
    lines = []
    first = suites.run_suite(suites.load(str(path)), out, show_progress=False, log=lines.append)
    assert first["kind"] == "sweep" and len(first["sweeps"][0]["configurations"]) == 2
    again = suites.run_suite(suites.load(str(path)), out, show_progress=False, log=lines.append)
    assert any("finished earlier" in line for line in lines)
    assert again["sweeps"] == first["sweeps"]
    text = (out / "results.md").read_text()
    assert "| huber_kappa |" in text and "Selected by IQM return" in text
    (out / "results.md").unlink()
    report.regenerate(out)
    assert (out / "results.md").read_text() == text
    assert (out / "plots" / "sweep_qrdqn_CartPole-v1.png").stat().st_size > 0


def test_memory_sizes_are_parsed():
    assert sweeps.parse_bytes("4GiB") == 4 * 2**30
    assert sweeps.parse_bytes("512MB") == 512_000_000
    assert sweeps.parse_bytes("2e9") == 2_000_000_000
    with pytest.raises(ConfigError):
        sweeps.parse_bytes("-1GB")
