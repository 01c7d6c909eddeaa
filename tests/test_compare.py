"""`distbench compare`: flags a planted regression, not seed noise; refuses mismatched inputs."""

import numpy as np
import pytest

from benchmarks import compare
from benchmarks.cli import main
from benchmarks.results import SCHEMA_VERSION, ResultsError, write_json


def _payload(rng, *, suite="ci", return_scale=1.0, w1_scale=1.0, speed_scale=1.0, seeds=32):
    cells = []
    for agent in ("dqn", "c51"):
        cells.append(
            {
                "spec": {"agent": agent, "env": "CartPole-v1"},
                "seed_ids": list(range(seeds)),
                "per_seed": {
                    "return": (rng.normal(200.0, 20.0, seeds) * return_scale).tolist(),
                    "wasserstein1": (rng.gamma(4.0, 1.0, seeds) * w1_scale).tolist(),
                    "ks": rng.uniform(0.1, 0.3, seeds).tolist(),
                },
                "throughput": {
                    "env_steps_per_probe_call": (rng.normal(500.0, 20.0, 20) * speed_scale).tolist()
                },
            }
        )
    return {
        "kind": "suite",
        "suite": suite,
        "metadata": {"schema_version": SCHEMA_VERSION},
        "cells": cells,
    }


@pytest.mark.parametrize("seed", range(20))
def test_seed_noise_alone_is_not_a_regression(seed):
    rng = np.random.default_rng(seed)
    outcome = compare.compare(_payload(rng), _payload(rng))
    assert outcome["regressions"] == 0, [r for r in outcome["rows"] if r["verdict"] == "REGRESSION"]


@pytest.mark.parametrize(
    "kwargs, metric",
    [
        ({"return_scale": 0.75}, "return"),
        ({"w1_scale": 2.0}, "W1"),
        ({"speed_scale": 0.5}, "throughput"),
    ],
)
def test_planted_regression_is_flagged(kwargs, metric):
    rng = np.random.default_rng(0)
    outcome = compare.compare(_payload(rng), _payload(rng, **kwargs))
    flagged = {(r["cell"], r["metric"]) for r in outcome["rows"] if r["verdict"] == "REGRESSION"}
    assert ("dqn/CartPole-v1", metric) in flagged and ("c51/CartPole-v1", metric) in flagged
    assert {m for _, m in flagged} == {metric}


def test_improvement_is_not_a_failure():
    rng = np.random.default_rng(1)
    outcome = compare.compare(_payload(rng), _payload(rng, return_scale=1.3))
    assert outcome["regressions"] == 0
    assert any(r["verdict"] == "improvement" for r in outcome["rows"])


def test_cli_exit_codes_and_markdown(tmp_path, capsys):
    rng = np.random.default_rng(2)
    base, same, worse = tmp_path / "base.json", tmp_path / "same.json", tmp_path / "worse.json"
    write_json(base, _payload(rng))
    write_json(same, _payload(rng))
    write_json(worse, _payload(rng, return_scale=0.7))
    assert main(["compare", str(base), str(same)]) == 0
    assert main(["compare", str(base), str(worse), "--markdown-out", str(tmp_path / "c.md")]) == 1
    out = capsys.readouterr().out
    assert "| dqn/CartPole-v1 | return |" in out and "**REGRESSION**" in out
    assert "REGRESSION" in (tmp_path / "c.md").read_text()


def test_different_suites_refuse_to_compare(tmp_path, capsys):
    rng = np.random.default_rng(3)
    write_json(tmp_path / "a.json", _payload(rng, suite="ci"))
    write_json(tmp_path / "b.json", _payload(rng, suite="quick"))
    with pytest.raises(ResultsError, match="different suites"):  # CompareError is one
        compare.run(str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert "different suites: 'ci' vs 'quick'" in capsys.readouterr().err


def test_corrupt_baseline_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "a.json").write_text("not json at all")
    write_json(tmp_path / "b.json", _payload(np.random.default_rng(4)))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert "is corrupt" in capsys.readouterr().err


def test_missing_cells_are_reported():
    rng = np.random.default_rng(5)
    new = _payload(rng)
    new["cells"] = new["cells"][:1]
    outcome = compare.compare(_payload(rng), new)
    assert compare.outcome_summary(outcome) == [("c51/CartPole-v1", "cell")]
