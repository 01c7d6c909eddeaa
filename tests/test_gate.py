"""The CI gate on the committed ci suite: every planted regression fails it (exit 1, naming the
cell and metric), seed noise alone passes, and inputs it cannot judge are refused (exit 2).

BASE is the committed results/ci/results.json; NOISE is the same suite run with another base
seed (tests/data/ci_base_seed_1.json): the difference between them is seed noise only.
"""

import copy
import json
from pathlib import Path

import pytest

from benchmarks import compare
from benchmarks.cli import main
from benchmarks.results import write_json

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "results" / "ci" / "results.json"
NOISE = ROOT / "tests" / "data" / "ci_base_seed_1.json"
CALIBRATION = ("wasserstein1", "cramer", "crps", "ks", "quantile_coverage_error", "pit_ks")


@pytest.fixture(scope="module")
def base():
    return json.loads(BASE.read_text())


@pytest.fixture(scope="module")
def noise():
    return json.loads(NOISE.read_text())


def _cells(payload):
    return [f"{c['spec']['agent']}/{c['spec']['env']}" for c in payload["cells"]]


def _flagged(base, new, **kwargs):
    return set(compare.outcome_summary(compare.compare(base, new, **kwargs)))


def _planted(base, change):
    new = copy.deepcopy(base)
    for cell in new["cells"]:
        change(cell)
    return new


def test_the_committed_baseline_and_the_noise_run_are_real_ci_runs(base, noise):
    assert base["suite"] == noise["suite"] == "ci"
    assert _cells(base) == _cells(noise) and len(base["cells"]) == 6
    for before, after in zip(base["cells"], noise["cells"]):
        assert before["seed_ids"] == after["seed_ids"] and len(before["seed_ids"]) >= 32
        assert before["base_seed"] == 0 and after["base_seed"] == 1
        assert before["per_seed"]["return"] != after["per_seed"]["return"]


def test_seed_noise_alone_passes(base, noise, tmp_path):
    assert _flagged(base, noise) == set()
    write_json(tmp_path / "base.json", base)
    write_json(tmp_path / "noise.json", noise)
    assert main(["compare", str(tmp_path / "base.json"), str(tmp_path / "noise.json")]) == 0


def test_a_missing_cell_fails_unless_a_subset_is_allowed(base):
    new = copy.deepcopy(base)
    dropped = new["cells"].pop(2)
    name = f"{dropped['spec']['agent']}/{dropped['spec']['env']}"
    assert _flagged(base, new) == {(name, "cell")}
    assert _flagged(base, new, allow_subset=True) == set()


def test_fewer_seeds_in_a_cell_fail(base):
    new = copy.deepcopy(base)
    cell = new["cells"][0]
    keep = len(cell["seed_ids"]) - 3
    cell["seed_ids"] = cell["seed_ids"][:keep]
    cell["per_seed"] = {k: v[:keep] for k, v in cell["per_seed"].items()}
    assert _flagged(base, new) == {(_cells(base)[0], "seeds")}


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf")])
def test_a_diverged_seed_fails_and_its_metrics_are_not_silently_dropped(base, bad):
    new = copy.deepcopy(base)
    cell = new["cells"][4]
    for metric in ("return", *CALIBRATION):
        cell["per_seed"][metric][7] = bad
    outcome = compare.compare(base, new)
    assert set(compare.outcome_summary(outcome)) == {(_cells(base)[4], "diverged")}
    (row,) = [
        r for r in outcome["rows"] if r["metric"] == "diverged" and r["cell"] == _cells(base)[4]
    ]
    assert row["new"] == pytest.approx(1 / len(cell["seed_ids"]))
    # The metric rows are still there, over the seeds both runs kept finite.
    assert {r["metric"] for r in outcome["rows"] if r["cell"] == _cells(base)[4]} >= {
        "return",
        "W1",
    }


def test_every_return_halved_fails_in_every_cell(base):
    def halve(cell):
        cell["per_seed"]["return"] = [v / 2 for v in cell["per_seed"]["return"]]

    assert _flagged(base, _planted(base, halve)) == {(name, "return") for name in _cells(base)}


def test_returns_halved_in_an_independent_run_fail_in_every_cell(base, noise):
    """Power where the seeds do not pair: the noise run's returns, halved."""
    new = copy.deepcopy(noise)
    for cell in new["cells"]:
        cell["per_seed"]["return"] = [v / 2 for v in cell["per_seed"]["return"]]
    assert _flagged(base, new) == {(name, "return") for name in _cells(base)}


def test_calibration_twice_as_far_from_the_truth_fails(base):
    def double_w1(cell):
        cell["per_seed"]["wasserstein1"] = [2 * v + 0.05 for v in cell["per_seed"]["wasserstein1"]]

    assert _flagged(base, _planted(base, double_w1)) == {(n, "W1") for n in _cells(base)}


@pytest.mark.parametrize("factor", [0.1, 0.75])
def test_a_slowdown_fails_in_every_cell(base, factor):
    def slow(cell):
        values = cell["throughput"][compare.THROUGHPUT]
        cell["throughput"][compare.THROUGHPUT] = [v * factor for v in values]

    assert _flagged(base, _planted(base, slow)) == {(n, "throughput") for n in _cells(base)}


def test_a_slower_machine_is_not_a_slowdown(base):
    """Training and the probe both at 60% speed: the relative throughput is unchanged."""

    def slower_machine(cell):
        throughput = cell["throughput"]
        for key in ("segment_env_steps_per_second", "probe_calls_per_second"):
            throughput[key] = [0.6 * v for v in throughput[key]]
        throughput[compare.THROUGHPUT] = [
            rate / probe
            for rate, probe in zip(
                throughput["segment_env_steps_per_second"], throughput["probe_calls_per_second"]
            )
        ]

    new = _planted(base, slower_machine)
    assert _flagged(base, new) == set()


def test_each_row_states_the_change_it_could_detect(base, noise):
    outcome = compare.compare(base, noise)
    tested = [r for r in outcome["rows"] if "p_value" in r]
    assert len(tested) == 6 * 8
    for row in tested:
        assert row["detectable"] >= row["threshold"] > 0 or row["metric"] == "throughput"
    text = compare.markdown(outcome, "base", "new")
    assert "detectable" in text and "Holm" in text


def test_too_few_seeds_to_ever_be_significant_is_refused(base, tmp_path, capsys):
    def keep_eight(cell):
        cell["seed_ids"] = cell["seed_ids"][:8]
        cell["per_seed"] = {k: v[:8] for k, v in cell["per_seed"].items()}

    small = _planted(base, keep_eight)
    write_json(tmp_path / "a.json", small)
    write_json(tmp_path / "b.json", small)
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "8 paired seeds cannot reach" in err


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda p: p.update(metadata=[1, 2]), "no metadata mapping"),
        (lambda p: p.update(cells=[]), "has no cells"),
        (lambda p: p["cells"][0]["per_seed"]["return"].__setitem__(0, "abc"), "not a number"),
        (lambda p: p["cells"][0].pop("seed_ids"), "seed_ids"),
        (lambda p: p.update(kind="cell"), "resume file"),
    ],
)
def test_wrong_contents_are_one_line_and_exit_2(base, tmp_path, capsys, corrupt, message):
    bad = copy.deepcopy(base)
    corrupt(bad)
    write_json(tmp_path / "base.json", base)
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["compare", str(tmp_path / "base.json"), str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_the_gate_has_room_for_every_test_at_the_ci_seed_count(base):
    """The ci suite's seeds and segments reach Holm's strictest level with room to spare."""
    outcome = compare.compare(base, base)
    strictest = outcome["alpha"] / outcome["num_tests"]
    seeds = len(base["cells"][0]["seed_ids"])
    segments = len(base["cells"][0]["throughput"][compare.THROUGHPUT])
    assert 0.5 ** min(seeds, segments) < strictest / 100
