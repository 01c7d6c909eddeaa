"""Tests for benchmarks.dopamine: the measurement helpers, and the Dabney et al. signatures
(present for distributional TD, absent for classical TD) on a small, fast simulation."""

import json

import numpy as np
import pytest

from benchmarks import dopamine
from benchmarks import results as results_io

FAST = {"num_animals": 3, "num_cells": 30, "num_trials": 8_000, "averaging_trials": 4_000}


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("dopamine")
    return out_dir, dopamine.run_dopamine_analysis(out_dir, seed=0, **FAST)


class TestMeasurement:
    def test_hinge_fit_finds_an_asymmetric_reversal_point_exactly(self):
        # Kink at 3.5 between magnitudes 2.5 and 5 with slopes 0.9 above, 0.1 below: linear
        # interpolation between those two magnitudes would put the zero crossing at 2.6.
        magnitudes = np.asarray(dopamine.MAGNITUDES)
        offsets = magnitudes - 3.5
        responses = np.where(offsets > 0, 0.9, 0.1) * offsets
        assert dopamine.hinge_reversal_points(magnitudes, responses) == pytest.approx(3.5, abs=0.01)
        no_crossing = dopamine.hinge_reversal_points(magnitudes, np.abs(responses) + 1.0)
        assert np.isnan(no_crossing)

    def test_slopes_of_a_straight_line_are_symmetric_wherever_the_kink_is(self):
        magnitudes = np.asarray(dopamine.MAGNITUDES)
        line = 0.5 * (magnitudes - 5.2)
        for kink in (3.0, 5.2, 8.0):
            alpha_plus, alpha_minus = dopamine.hinge_slopes(magnitudes, line, np.array(kink))
            assert float(alpha_plus) == pytest.approx(0.5) and float(alpha_minus) == pytest.approx(
                0.5
            )
        asymmetry = dopamine.measured_asymmetries(np.array([0.3, -0.1]), np.array([0.1, 0.2]))
        np.testing.assert_allclose(asymmetry, [0.75, np.nan])

    def test_correlation_is_within_animals(self):
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(4, 50)), rng.normal(size=(4, 50))
        offsets = np.arange(4.0)[:, None] * 10.0  # animals differ, cells within them do not
        within = dopamine.correlation(x + offsets, y + offsets)
        assert abs(within["r"]) < 0.2 and within["p"] > 0.01 and within["n"] == 200
        related = dopamine.correlation(x, x + 0.1 * y)
        assert related["r"] > 0.9 and related["p"] < 1e-10
        assert dopamine.correlation(x, np.full_like(x, 0.5))["r"] is None


class TestAnalysis:
    def test_distributional_population_is_decoded_better_than_a_matched_gaussian(self, analysis):
        _, payload = analysis
        expectile, gaussian = payload["variants"]["expectile"], payload["reference_w1"]["gaussian"]
        assert gaussian == pytest.approx(1.86, abs=0.02)
        assert expectile["decoded_w1"] <= 0.6 < gaussian
        assert np.isclose(np.sum(expectile["decoded"]["probs"]), 1.0)

    def test_distributional_signatures_present(self, analysis):
        _, payload = analysis
        for variant in ("expectile", "quantile"):
            summary = payload["variants"][variant]
            assert summary["asymmetry_vs_reversal"]["r"] > 0.5
            assert summary["asymmetry_vs_reversal"]["p"] < 0.01
            assert summary["split_half"]["r"] > 0.5 and summary["split_half"]["p"] < 0.01
        # The expectile cells' measured reversal points sit on their true expectiles.
        assert payload["variants"]["expectile"]["reversal_error_mae"] < 0.3

    def test_classical_control_shows_no_signature(self, analysis):
        _, payload = analysis
        classical = payload["variants"]["classical"]
        assert classical["asymmetry_vs_reversal"]["p"] > 0.05
        assert classical["split_half"]["p"] > 0.05
        assert classical["reversal_sd_across_cells"] < 0.2  # only noise spreads them
        assert classical["decoded_w1"] > 2 * payload["variants"]["expectile"]["decoded_w1"]

    def test_probability_task_cue_values_and_optimism(self, analysis):
        _, payload = analysis
        for task in payload["probability_task"].values():
            assert np.all(np.diff(task["reversal_mean_per_cue"]) > 0.2)
        expectile = payload["probability_task"]["expectile"]
        assert max(expectile["value_error_mae_per_cue"]) < 0.05
        assert expectile["optimism_vs_asymmetry"]["p"] < 0.01
        assert expectile["optimism_vs_asymmetry"]["r"] > 0
        assert payload["probability_task"]["classical"]["optimism_vs_asymmetry"]["p"] > 0.05

    def test_outputs_are_written_and_parse(self, analysis):
        out_dir, payload = analysis
        stored = results_io.read_json(out_dir / "dopamine.json", kind="dopamine")
        assert (
            stored["variants"]["expectile"]["decoded_w1"]
            == payload["variants"]["expectile"]["decoded_w1"]
        )
        json.dumps(stored, allow_nan=False)  # NaNs were written as null
        table = (out_dir / "dopamine.md").read_text()
        for row in ("| expectile |", "| quantile |", "| classical |", "| Gaussian"):
            assert row in table
        for name in (
            "dopamine_decoding.png",
            "dopamine_asymmetry_vs_reversal.png",
            "dopamine_responses.png",
        ):
            assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert not list(out_dir.glob(".*.tmp"))  # atomic writes leave no temporary files
