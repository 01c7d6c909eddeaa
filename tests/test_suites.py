"""Suites: parsing with clear errors, resumable runs that survive an interruption, reports."""

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import cell, report, suites
from benchmarks.cli import main
from benchmarks.results import ResultsError

TINY = """
name = "tiny"
seeds = 2
agents = ["dqn", "qrdqn"]

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

[agent.qrdqn]
num_quantiles = 8

[envs."OneStepReward"]
params = { magnitudes = [0.0, 1.0], probs = [0.5, 0.5] }
"""


def _write(tmp_path: Path, text: str, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_shipped_suite_parses():
    assert {"quick", "ci", "full", "dopamine"} <= set(suites.names())
    for name in suites.names():
        suite = suites.load(name)
        assert suite.kind != "train" or len(suite.cells) >= 1


def test_layers_of_agent_overrides(tmp_path):
    suite = suites.load(str(_write(tmp_path, TINY)))
    by_agent = {spec.agent: spec for spec in suite.cells}
    assert by_agent["qrdqn"].agent_config.num_quantiles == 8
    assert by_agent["dqn"].agent_config.hidden_sizes == (16,)
    assert by_agent["qrdqn"].train_config.total_steps == 300


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda t: t.replace("seeds = 2", "seedz = 2"), "line 3): unknown key 'seedz'"),
        (lambda t: t.replace('"qrdqn"]', '"rainbow"]'), "unknown agent 'rainbow'"),
        (
            lambda t: t.replace("batch_size = 16", "batch_sise = 16"),
            "unknown agent key 'batch_sise'",
        ),
        (lambda t: t.replace("num_quantiles = 8", "num_quantiles = 0"), "num_quantiles=0"),
        (lambda t: t.replace("total_steps = 300", "total_stepz = 300"), "unknown train key"),
        (lambda t: t.replace('"OneStepReward"', '"NoSuchEnv"'), "unknown environment 'NoSuchEnv'"),
        (lambda t: t.replace("probs = [0.5, 0.5]", "probs = [0.5, 0.6]"), "probs"),
        (lambda t: t.replace("[train]", "[train"), "not valid TOML"),
        (
            lambda t: t.replace("params = {", 'seeds = "abc"\nparams = {'),
            "line 22): envs.\"OneStepReward\" seeds='abc' must be an integer >= 1",
        ),
        (
            lambda t: t.replace("params = {", "seeds = 0\nparams = {"),
            'line 22): envs."OneStepReward" seeds=0 must be an integer >= 1',
        ),
        (
            lambda t: t.replace('["dqn", "qrdqn"]', '["dqn", "qrdqn", "dqn"]'),
            "line 4): agents lists 'dqn' more than once",
        ),
        (lambda t: t.replace("seeds = 2", "seeds = true"), "line 3): seeds=True must be"),
    ],
)
def test_malformed_suite_names_key_and_line(tmp_path, edit, fragment):
    with pytest.raises(suites.SuiteError, match=None) as info:
        suites.load(str(_write(tmp_path, edit(TINY))))
    assert fragment in str(info.value), str(info.value)
    assert "tiny.toml" in str(info.value)


def test_a_suite_is_named_by_its_name_key_else_its_file(tmp_path):
    named = _write(tmp_path, TINY.replace('name = "tiny"', 'name = "mine"'), "other.toml")
    assert suites.load(str(named)).name == "mine"
    unnamed = _write(tmp_path, TINY.replace('name = "tiny"\n', ""), "unnamed.toml")
    assert suites.load(str(unnamed)).name == "unnamed"
    bad = _write(tmp_path, TINY.replace('name = "tiny"', 'name = "a/b"'), "bad.toml")
    with pytest.raises(suites.SuiteError, match=r"line 2\): name='a/b' must be letters"):
        suites.load(str(bad))


DOPAMINE = """
name = "tiny-dopamine"
kind = "dopamine"

[options]
num_animals = 2
num_trials = 500
averaging_trials = 200
"""


def test_dopamine_options_are_read_with_their_types():
    path = suites.SUITES_DIR / "dopamine.toml"
    assert suites.load(str(path)).options["num_animals"] == 5


@pytest.mark.parametrize(
    "suite_text, argv, fragment",
    [
        (DOPAMINE.replace("num_animals", "animals"), [], "line 6): unknown dopamine option key"),
        (DOPAMINE.replace("= 2", "= -3"), [], "line 6): num_animals=-3 must be >= 1"),
        (DOPAMINE.replace("= 500", '= "many"'), [], "line 7): num_trials='many'"),
        (DOPAMINE.replace("= 200", "= 900"), [], "averaging_trials=900 must be in [1, num_trials]"),
        (DOPAMINE.replace("[options]", "seeds = 8\n[options]"), [], "'seeds' is not a dopamine"),
        (DOPAMINE, ["--seeds", "3"], "--seeds=3: a dopamine suite has no seeds"),
        (TINY + "[options]\nnum_animals = 2\n", [], '[options] is for kind = "dopamine"'),
    ],
)
def test_bad_suite_options_are_one_line_exit_2(tmp_path, capsys, suite_text, argv, fragment):
    path = _write(tmp_path, suite_text)
    assert main(["run", "--suite", str(path), "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()


def _per_seed(payload):
    return {f"{c['spec']['agent']}/{c['spec']['env']}": c["per_seed"] for c in payload["cells"]}


def test_killed_run_resumes_to_the_same_results(tmp_path, monkeypatch):
    suite = suites.load(str(_write(tmp_path, TINY)))
    uninterrupted = suites.run_suite(suite, tmp_path / "a", show_progress=False, log=lambda m: None)

    calls = []
    real_run_cell = suites.cells.run_cell

    def dies_on_second_cell(spec, *args, **kwargs):
        calls.append(spec.agent)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_cell(spec, *args, **kwargs)

    monkeypatch.setattr(suites.cells, "run_cell", dies_on_second_cell)
    with pytest.raises(KeyboardInterrupt):
        suites.run_suite(suite, tmp_path / "b", show_progress=False, log=lambda m: None)
    assert not (tmp_path / "b" / "results.json").exists()
    assert len(list((tmp_path / "b" / "cells").glob("*.json"))) == 1
    assert not list((tmp_path / "b").rglob("*.tmp"))

    calls.clear()
    monkeypatch.setattr(
        suites.cells,
        "run_cell",
        lambda *a, **k: (calls.append(a[0].agent), real_run_cell(*a, **k))[1],
    )
    resumed = suites.run_suite(suite, tmp_path / "b", show_progress=False, log=lambda m: None)
    assert calls == ["qrdqn"]  # the finished dqn cell was kept, not rerun
    a, b = _per_seed(uninterrupted), _per_seed(resumed)
    assert a.keys() == b.keys()
    for name in a:
        for metric in ("return", "discounted_return", "wasserstein1", "crps"):
            np.testing.assert_allclose(a[name][metric], b[name][metric], rtol=1e-6)


def test_changed_config_reruns_the_cell(tmp_path):
    suite = suites.load(str(_write(tmp_path, TINY)))
    suites.run_suite(suite, tmp_path / "out", show_progress=False, log=lambda m: None)
    logs = []
    changed = suites.load(
        str(_write(tmp_path, TINY.replace("num_quantiles = 8", "num_quantiles = 4")))
    )
    suites.run_suite(changed, tmp_path / "out", show_progress=False, log=logs.append)
    assert any("dqn" in m and "kept" in m for m in logs)
    assert any("qrdqn" in m and "kept" not in m for m in logs)


def test_report_regenerates_from_json_alone(tmp_path):
    suite = suites.load(str(_write(tmp_path, TINY)))
    out = tmp_path / "out"
    suites.run_suite(suite, out, show_progress=False, log=lambda m: None)
    for path in [out / "results.md", out / "results.csv", *(out / "plots").glob("*.png")]:
        path.unlink()
    written = report.regenerate(out)
    names = {p.name for p in written}
    assert {"results.md", "results.csv", "curves_OneStepReward.png"} <= names
    assert "calibration_qrdqn_OneStepReward.png" in names
    md = (out / "results.md").read_text()
    assert "| qrdqn | OneStepReward | 2 |" in md and "exact" in md
    assert (out / "plots" / "curves_OneStepReward.png").read_bytes()[:4] == b"\x89PNG"


def test_corrupt_and_wrong_version_results_are_clear_errors(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text('{"metadata": {"schema_version": 1}, "cells": [')
    with pytest.raises(ResultsError, match="corrupt"):
        report.regenerate(bad)
    (bad / "results.json").write_text(
        json.dumps({"kind": "suite", "metadata": {"schema_version": 99}})
    )
    assert main(["report", str(bad)]) == 2
    assert "schema version 99" in capsys.readouterr().err


def test_cell_scoring_uses_exact_truth_where_the_env_has_one():
    spec = cell.CellSpec.build("dqn", "OneStepReward")
    locs, probs = cell.true_distribution(spec)
    np.testing.assert_allclose(np.sum(locs * probs), 0.5)


def test_rerun_runs_finished_cells_again_and_kept_cells_name_their_commit(tmp_path, monkeypatch):
    suite = suites.load(str(_write(tmp_path, TINY)))
    out = tmp_path / "out"
    suites.run_suite(suite, out, show_progress=False, log=lambda m: None)
    # A cell from other code: same spec and seeds, another commit.
    path = next((out / "cells").glob("dqn__*.json"))
    record = json.loads(path.read_text())
    record["metadata"]["commit"] = "0123456789abcdef"
    path.write_text(json.dumps(record))

    calls, logs = [], []
    real_run_cell = suites.cells.run_cell
    monkeypatch.setattr(
        suites.cells,
        "run_cell",
        lambda *a, **k: (calls.append(a[0].agent), real_run_cell(*a, **k))[1],
    )
    suites.run_suite(suite, out, show_progress=False, log=logs.append)
    assert calls == []
    assert any("dqn" in m and "at commit 0123456789ab" in m and "kept" in m for m in logs)
    assert any("qrdqn" in m and "kept" in m and "at commit" not in m for m in logs)

    suites.run_suite(suite, out, show_progress=False, rerun=True, log=logs.append)
    assert sorted(calls) == ["dqn", "qrdqn"]
