"""Tests for benchmarks.dopamine: the measurement helpers, and the Dabney et al. signatures
(present for distributional TD, absent for classical TD) on a small, fast simulation."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from agents.imputation import expectiles_of
from benchmarks import dopamine
from benchmarks import results as results_io
from benchmarks.dopamine import solver
from envs import mouse

FAST = {
    "num_animals": 3,
    "num_cells": 30,
    "num_trials": 8_000,
    "averaging_trials": 4_000,
    "noise_levels": (1.0, 10.0, 20.0),
}


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("dopamine")
    progress = []
    payload = dopamine.run_dopamine_analysis(out_dir, seed=0, log=progress.append, **FAST)
    return out_dir, payload, progress


def _exact_expectiles(magnitudes, taus):
    """The tau-expectiles of the variable-magnitude probabilities on these magnitudes."""
    locs, probs = jnp.asarray(magnitudes, jnp.float32), jnp.asarray(mouse.MAGNITUDE_PROBS)
    return np.asarray(expectiles_of(locs, probs, jnp.asarray(taus, jnp.float32)), np.float64)


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

    def test_task_constants_come_from_the_environments(self):
        assert dopamine.MAGNITUDES == mouse.MAGNITUDES
        assert dopamine.MAGNITUDE_PROBS == mouse.MAGNITUDE_PROBS
        assert dopamine.CUE_PROBABILITIES == mouse.VariableProbabilityParams().reward_probs
        assert dopamine.PROBABILITY_TASK_REWARD == mouse.VariableProbabilityParams().reward_size
        assert dopamine.TRUE_REWARD_RANGE == (min(mouse.MAGNITUDES), max(mouse.MAGNITUDES))


class TestDecoding:
    TAUS = (np.arange(20) + 0.5) / 20

    def test_default_bounds_come_from_the_data_not_the_task(self):
        # The same distribution moved to [30.1, 50]: the default decoding must follow the
        # reversal points there, not stay inside the variable-magnitude task's [0.1, 20].
        shifted = np.asarray(mouse.MAGNITUDES) + 30.0
        expectiles = _exact_expectiles(shifted, self.TAUS)
        rng = np.random.default_rng(0)
        decoded = dopamine.decode("expectile", expectiles, self.TAUS, rng)
        assert decoded.bounds == dopamine.data_bounds(expectiles)
        assert decoded.bounds[0] < expectiles.min() and decoded.bounds[1] > expectiles.max()
        assert decoded.locs.min() > 20.0
        w1 = scipy.stats.wasserstein_distance(
            decoded.locs, shifted, decoded.probs, mouse.MAGNITUDE_PROBS
        )
        assert w1 < 0.5
        # Only an explicit request uses the true range.
        truth_bounded = dopamine.decode(
            "expectile", expectiles, self.TAUS, rng, bounds=dopamine.TRUE_REWARD_RANGE
        )
        assert truth_bounded.bounds == dopamine.TRUE_REWARD_RANGE
        assert np.all(truth_bounded.locs <= 20.0)
        np.testing.assert_allclose(dopamine.data_bounds(np.array([2.0, np.nan, 10.0])), (-2, 14))

    def test_exact_expectiles_decode_close_to_the_truth(self):
        expectiles = _exact_expectiles(mouse.MAGNITUDES, self.TAUS)
        for bounds, limit in ((None, 0.5), (dopamine.TRUE_REWARD_RANGE, 0.3)):
            decoded = dopamine.decode(
                "expectile", expectiles, self.TAUS, np.random.default_rng(0), bounds
            )
            assert np.isclose(decoded.probs.sum(), 1.0)
            assert dopamine.w1_to_task(decoded.locs, decoded.probs) < limit
            residuals = dopamine.expectile_residuals(decoded.locs, expectiles, self.TAUS)
            assert np.abs(residuals).max() < 0.01  # ul: the samples' expectiles are the inputs
        # Quantile atoms need no bounds.
        assert dopamine.decode("quantile", expectiles, self.TAUS, None).bounds is None

    def test_positive_definite_solve_matches_lapack(self):
        rng = np.random.default_rng(0)
        factors = rng.normal(size=(3, 25, 10))
        matrices = factors @ np.swapaxes(factors, -1, -2) + 1e-3 * np.eye(25)
        vectors = rng.normal(size=(3, 25))
        expected = np.linalg.solve(matrices, vectors[..., None])[..., 0]
        got = solver._solve_positive_definite(matrices, vectors)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


class TestAnalysis:
    def test_distributional_population_is_decoded_better_than_a_matched_gaussian(self, analysis):
        _, payload, _ = analysis
        refs = payload["reference_w1"]
        assert refs["gaussian"] == pytest.approx(1.86, abs=0.02)
        decodings = payload["variants"]["expectile"]["decodings"]
        # Without the true range, each animal's cells alone still beat the Gaussian.
        assert decodings["data_bounds"]["per_animal_w1_max"] < refs["gaussian"]
        assert decodings["data_bounds"]["pooled_w1"] < 0.8
        assert decodings["true_bounds"]["pooled_w1"] < refs["gaussian_clipped_to_true_range"]
        for decoding in decodings.values():
            assert np.isclose(np.sum(decoding["pooled"]["probs"]), 1.0)

    def test_analysis_decodes_with_bounds_from_each_population(self, analysis):
        _, payload, _ = analysis
        for variant in ("expectile", "classical"):
            reversal = np.asarray(payload["cells"][variant]["reversal"], np.float64)
            data = payload["variants"][variant]["decodings"]["data_bounds"]
            expected = [list(dopamine.data_bounds(animal)) for animal in reversal]
            np.testing.assert_allclose(data["per_animal_bounds"], expected)
            np.testing.assert_allclose(data["pooled_bounds"], dopamine.data_bounds(reversal))
            truth = payload["variants"][variant]["decodings"]["true_bounds"]
            assert truth["pooled_bounds"] == list(dopamine.TRUE_REWARD_RANGE)

    def test_distributional_signatures_present(self, analysis):
        _, payload, _ = analysis
        for variant in ("expectile", "quantile"):
            summary = payload["variants"][variant]
            assert summary["asymmetry_vs_reversal"]["r"] > 0.5
            assert summary["asymmetry_vs_reversal"]["p"] < 0.01
            assert summary["split_half"]["r"] > 0.5 and summary["split_half"]["p"] < 0.01
        # The expectile cells' measured reversal points sit on their true expectiles.
        assert payload["variants"]["expectile"]["reversal_error_mae"] < 0.3

    def test_classical_control_shows_no_signature(self, analysis):
        _, payload, _ = analysis
        classical = payload["variants"]["classical"]
        assert classical["asymmetry_vs_reversal"]["p"] > 0.05
        assert classical["split_half"]["p"] > 0.05
        assert classical["reversal_sd_across_cells"] < 0.2  # only noise spreads them
        # Cells that all reverse at the mean imply a narrow distribution around it: worse than
        # the Gaussian once the decoding is not told the true range.
        data = classical["decodings"]["data_bounds"]
        expectile = payload["variants"]["expectile"]["decodings"]["data_bounds"]
        assert data["per_animal_w1_min"] > payload["reference_w1"]["gaussian"]
        assert data["pooled_w1"] > 2 * expectile["pooled_w1"]

    def test_split_half_reliability_falls_with_response_noise(self, analysis):
        _, payload, _ = analysis
        sweep = payload["noise_sweep"]
        assert sweep["variant"] == "expectile"
        levels = sweep["levels"]
        assert [row["response_noise"] for row in levels] == list(FAST["noise_levels"])
        split_half = [row["split_half"]["r"] for row in levels]
        assert split_half[0] > 0.95 and split_half[-1] < 0.6
        assert all(np.diff(split_half) < 0)
        # The first level is the main analysis' noise, recorded with the same draws.
        expectile = payload["variants"]["expectile"]
        assert levels[0]["split_half"] == expectile["split_half"]
        per_animal = expectile["decodings"]["data_bounds"]["per_animal_w1_mean"]
        assert levels[0]["decoded_w1_per_animal_mean"] == per_animal

    def test_probability_task_cue_values_and_optimism(self, analysis):
        _, payload, _ = analysis
        for task in payload["probability_task"].values():
            assert np.all(np.diff(task["reversal_mean_per_cue"]) > 0.2)
        expectile = payload["probability_task"]["expectile"]
        assert max(expectile["value_error_mae_per_cue"]) < 0.05
        assert expectile["optimism_vs_asymmetry"]["p"] < 0.01
        assert expectile["optimism_vs_asymmetry"]["r"] > 0
        assert payload["probability_task"]["classical"]["optimism_vs_asymmetry"]["p"] > 0.05

    def test_both_decodings_are_reported_and_labelled(self, analysis):
        out_dir, _, _ = analysis
        stored = results_io.read_json(out_dir / "dopamine.json", kind="dopamine")
        assert stored["config"]["decoding"]["default"] == "data_bounds"
        assert stored["config"]["decoding"]["labels"] == dopamine.DECODINGS
        assert dopamine.DECODINGS["true_bounds"].startswith("truth-bounded")
        table = (out_dir / "dopamine.md").read_text()
        assert dopamine.DECODINGS["data_bounds"] in table
        assert dopamine.DECODINGS["true_bounds"] in table
        header = next(line for line in table.splitlines() if "per animal, truth-bounded" in line)
        assert "per animal, bounds from data" in header and "pooled, truth-bounded" in header
        for variant, summary in stored["variants"].items():
            assert set(summary["decodings"]) == set(dopamine.DECODINGS)
            for name, decoding in summary["decodings"].items():
                assert decoding["label"] == dopamine.DECODINGS[name]
                assert len(decoding["per_animal_w1"]) == FAST["num_animals"]
            start = f"| {variant} | {summary['decoding']} |"
            row = next(line for line in table.splitlines() if line.startswith(start))
            for decoding in summary["decodings"].values():
                assert f"{decoding['pooled_w1']:.2f}" in row
                assert f"{decoding['per_animal_w1_mean']:.2f} +- " in row

    def test_report_states_noise_and_the_quantile_responses(self, analysis):
        out_dir, _, _ = analysis
        table = (out_dir / "dopamine.md").read_text()
        assert "noise of SD 1.0 ul per response" in table
        assert "## Response noise and split-half reliability" in table
        assert "linear in the prediction error" in table and "sign of the prediction error" in table

    def test_progress_is_logged_for_every_stage(self, analysis):
        _, _, progress = analysis
        for variant in ("expectile", "quantile", "classical"):
            assert any(line.startswith(f"{variant}: training") for line in progress)
            assert any(line.startswith(f"{variant}: decoding") for line in progress)
        assert progress[-1] == "done"

    def test_outputs_are_written_and_parse(self, analysis):
        out_dir, payload, _ = analysis
        stored = results_io.read_json(out_dir / "dopamine.json", kind="dopamine")
        pooled = stored["variants"]["expectile"]["decodings"]["data_bounds"]["pooled_w1"]
        assert pooled == payload["variants"]["expectile"]["decodings"]["data_bounds"]["pooled_w1"]
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
