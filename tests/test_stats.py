"""Tests for benchmarks.stats: IQM, stratified bootstrap, probability of improvement, regressions."""

import numpy as np
import pytest
import scipy.stats

from benchmarks import stats


class TestIqm:
    def test_hand_computed_with_outliers(self):
        # Sorted: -50 1 | 2 3 4 5 | 6 100; the middle half averages to 3.5.
        np.testing.assert_allclose(stats.iqm([100.0, 1, 2, 3, 4, 5, 6, -50]), 3.5)

    def test_matches_trim_mean_over_all_entries(self):
        x = np.random.default_rng(0).standard_cauchy((13, 3))
        np.testing.assert_allclose(stats.iqm(x), scipy.stats.trim_mean(x.ravel(), 0.25))


class TestAggregate:
    def test_point_estimates(self):
        values = np.array([5.0, 1.0, 2.0, 3.0, 4.0, 100.0, 6.0, 7.0])
        result = stats.aggregate(values, num_resamples=50)
        assert result["n"] == 8
        np.testing.assert_allclose(result["mean"]["value"], 16.0)
        np.testing.assert_allclose(result["median"]["value"], 4.5)
        np.testing.assert_allclose(result["iqm"]["value"], 4.5)

    def test_ci_covers_the_true_centre_about_95_percent_of_the_time(self):
        # Normal samples: mean, median and IQM all estimate 3.
        num_trials, hits = 200, {"mean": 0, "median": 0, "iqm": 0}
        for seed in range(num_trials):
            values = np.random.default_rng(seed).normal(3.0, 2.0, 32)
            result = stats.aggregate(values, num_resamples=500, seed=seed)
            for name in hits:
                hits[name] += result[name]["ci_low"] < 3.0 < result[name]["ci_high"]
                assert result[name]["ci_low"] <= result[name]["value"] <= result[name]["ci_high"]
        for name, count in hits.items():
            # The percentile bootstrap undercovers slightly at small n (about 0.93 here).
            assert 0.88 <= count / num_trials <= 0.99, name

    def test_ci_shrinks_as_one_over_sqrt_n(self):
        rng = np.random.default_rng(0)
        widths = []
        for num_runs in (16, 256):
            result = stats.aggregate(rng.normal(3.0, 2.0, num_runs))
            widths.append(result["mean"]["ci_high"] - result["mean"]["ci_low"])
        assert 2.5 < widths[0] / widths[1] < 6.0

    def test_one_run_gives_the_point_as_interval(self):
        result = stats.aggregate([2.5])
        for name in ("mean", "median", "iqm"):
            assert result[name] == {"value": 2.5, "ci_low": 2.5, "ci_high": 2.5}

    def test_bootstrap_is_stratified_by_task(self):
        # Constant within each task: resampling runs inside a task changes nothing, whereas
        # pooling the runs would change how many come from each task.
        values = np.column_stack([np.zeros(10), np.ones(10)])
        result = stats.aggregate(values)
        assert result["mean"] == {"value": 0.5, "ci_low": 0.5, "ci_high": 0.5}

    def test_with_tasks_the_median_is_of_per_task_means(self):
        # Task means 3, 3, 10: median 3, where the median of all nine values is 9.
        values = np.array([[0.0, 0.0, 10.0], [0.0, 0.0, 10.0], [9.0, 9.0, 10.0]])
        np.testing.assert_allclose(stats.aggregate(values)["median"]["value"], 3.0)

    def test_reproducible_with_a_seed_and_varies_without(self):
        values = np.random.default_rng(0).normal(size=20)
        assert stats.aggregate(values, seed=7) == stats.aggregate(values, seed=7)
        assert stats.aggregate(values, seed=7) != stats.aggregate(values, seed=8)

    def test_nan_is_an_error(self):
        with pytest.raises(ValueError, match="NaN"):
            stats.aggregate([1.0, np.nan, 2.0])


class TestProbabilityOfImprovement:
    def test_identical_arrays_give_one_half(self):
        x = np.random.default_rng(0).normal(size=17)
        np.testing.assert_allclose(stats.probability_of_improvement(x, x), 0.5)

    def test_hand_computed(self):
        # Pairs (x > y) of 2 x 3: 3 > 1, 3 > 2, 3 = 3 (counts 1/2), 0 < all: 2.5 / 6.
        np.testing.assert_allclose(stats.probability_of_improvement([3.0, 0.0], [1, 2, 3]), 2.5 / 6)

    def test_averages_over_tasks(self):
        x = np.array([[1.0, 0.0], [1.0, 0.0]])
        y = np.array([[0.0, 1.0], [0.0, 1.0]])  # x always wins task 0, always loses task 1
        np.testing.assert_allclose(stats.probability_of_improvement(x, y), 0.5)


class TestRegressionTest:
    def test_flags_a_planted_20_percent_regression(self):
        rng = np.random.default_rng(0)
        baseline = rng.normal(100.0, 10.0, 64)
        new = 0.8 * rng.normal(100.0, 10.0, 64)
        result = stats.regression_test(baseline, new)
        assert result["significant_regression"] and not result["significant_improvement"]
        assert result["p_value"] < 1e-6
        np.testing.assert_allclose(result["relative_change"], -0.2, atol=0.05)

    def test_the_same_change_is_an_improvement_when_lower_is_better(self):
        rng = np.random.default_rng(1)
        baseline, new = rng.normal(1.0, 0.1, 64), rng.normal(0.8, 0.08, 64)
        result = stats.regression_test(baseline, new, higher_is_better=False)
        assert result["significant_improvement"] and not result["significant_regression"]

    @pytest.mark.parametrize("seed", range(5))
    def test_does_not_flag_two_samples_of_one_distribution(self, seed):
        rng = np.random.default_rng(seed)
        result = stats.regression_test(rng.normal(100.0, 10.0, 64), rng.normal(100.0, 10.0, 64))
        assert not result["significant_regression"] and not result["significant_improvement"]

    def test_significant_but_small_change_is_not_flagged(self):
        # A 1% shift with tiny noise is significant, yet below min_effect.
        rng = np.random.default_rng(2)
        baseline = rng.normal(100.0, 0.1, 64)
        result = stats.regression_test(baseline, baseline - 1.0)
        assert result["p_value"] < 1e-6 and not result["significant_regression"]

    def test_large_but_noisy_change_is_not_flagged(self):
        # Three runs each: a 50% drop, but Mann-Whitney cannot reach p < 0.01.
        result = stats.regression_test([10.0, 11.0, 12.0], [5.0, 5.5, 6.0])
        assert result["relative_change"] < -0.4 and not result["significant_regression"]

    def test_absolute_threshold_guards_a_baseline_near_zero(self):
        rng = np.random.default_rng(3)
        baseline = rng.normal(0.0, 1e-4, 64)
        new = baseline + 1e-3  # enormous relative change, negligible in absolute terms
        assert stats.regression_test(baseline, new, higher_is_better=False)[
            "significant_regression"
        ]
        result = stats.regression_test(baseline, new, higher_is_better=False, min_abs_effect=0.01)
        assert not result["significant_regression"]


def test_holm_rejects_step_down_by_hand():
    # Sorted: 0.005 < 0.05/4, 0.01 < 0.05/3, 0.03 >= 0.05/2 stops; 0.04 is not reached.
    rejected = stats.holm_thresholds([0.01, 0.04, 0.03, 0.005], 0.05)
    assert rejected.tolist() == [True, False, False, True]
    assert stats.holm_thresholds([0.02, 0.001], 0.01).tolist() == [False, True]


def test_signed_rank_smallest_p_and_zero_differences():
    assert stats.signed_rank_p_value(-np.arange(1, 11), alternative="less") == pytest.approx(
        stats.smallest_signed_rank_p(10)
    )
    assert stats.signed_rank_p_value(np.zeros(8), alternative="less") == 1.0
    # Zeros carry no evidence: the same p as without them.
    with_zeros = stats.signed_rank_p_value([-3, -2, -1, 0, 0, 1], alternative="less")
    assert with_zeros == stats.signed_rank_p_value([-3, -2, -1, 1], alternative="less")


def test_detectable_shift_has_its_power_between_independent_draws():
    """The stated shift is detected about 80% of the time by the one-sided signed-rank test."""
    rng = np.random.default_rng(0)
    num_pairs, alpha = 40, 0.01
    shift = stats.detectable_shift(1.0, num_pairs, alpha)
    hits = [
        stats.signed_rank_p_value(
            rng.normal(0, 1, num_pairs) - shift - rng.normal(0, 1, num_pairs), alternative="less"
        )
        < alpha
        for _ in range(400)
    ]
    assert 0.72 <= np.mean(hits) <= 0.88


def test_robust_spread_is_the_standard_deviation_of_normal_values():
    values = np.random.default_rng(1).normal(3.0, 2.0, 20_000)
    assert stats.robust_spread(values) == pytest.approx(2.0, rel=0.03)
    assert stats.robust_spread([1.0, 1.0, 1.0, 5.0]) > 0
