"""Statistics over seeds: robust aggregates with stratified bootstrap confidence intervals
(rliable, Agarwal et al. 2021), probability of improvement, and a noise-proof regression check.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

_MAX_RESAMPLED_ENTRIES = 1 << 22


def iqm(x):
    """Interquartile mean: the mean of the middle half, scipy.stats.trim_mean(x, 0.25) over all
    entries (rliable's definition; int(n / 4) values are cut from each end)."""
    return float(scipy.stats.trim_mean(np.asarray(x, dtype=float), 0.25, axis=None))


def _checked_array(values):
    values = np.asarray(values, dtype=float)
    if values.ndim not in (1, 2) or values.size == 0:
        raise ValueError(f"expected a non-empty [runs] or [runs, tasks] array, got {values.shape}")
    num_nan = int(np.isnan(values).sum())
    if num_nan:
        raise ValueError(
            f"{num_nan} of {values.size} values are NaN; drop or fix those runs explicitly "
            "(silently ignoring diverged runs would bias every aggregate)"
        )
    return values


def _statistics(scores):
    """mean, median, IQM of scores [..., runs, tasks], each [...] (rliable's aggregates).

    mean and median are of the per-task means (with one task: of the runs); IQM is over all
    runs x tasks.
    """
    task_means = np.mean(scores, axis=-2)
    # With one task the median of its single mean would only repeat the mean: use the runs'.
    if scores.shape[-1] == 1:
        median = np.median(scores[..., 0], axis=-1)
    else:
        median = np.median(task_means, axis=-1)
    flat = scores.reshape(*scores.shape[:-2], -1)
    return {
        "mean": np.mean(task_means, axis=-1),
        "median": median,
        "iqm": scipy.stats.trim_mean(flat, 0.25, axis=-1),
    }


def aggregate(values, *, num_resamples=2000, confidence=0.95, seed=0):
    """Mean, median and IQM with percentile stratified-bootstrap confidence intervals.

    Args:
      values: [runs] (one task) or [runs, tasks] per-seed scores. With tasks, the bootstrap
        resamples runs within each task (the strata), as rliable's StratifiedBootstrap does;
        mean and median are then of the per-task means, the IQM of all runs x tasks.
      num_resamples: bootstrap replicates.
      confidence: coverage of the two-sided percentile interval.
      seed: seeds the resampling, so a result file reproduces exactly.
    Returns:
      {"n": runs, "mean" | "median" | "iqm": {"value", "ci_low", "ci_high"}}, plain floats.
      With one run the interval collapses to the point.
    Raises:
      ValueError on NaN (a diverged run must be handled explicitly, not silently dropped) or an
      empty or wrongly shaped array.
    """
    values = _checked_array(values)
    scores = values[:, None] if values.ndim == 1 else values
    num_runs, num_tasks = scores.shape
    rng = np.random.default_rng(seed)
    # Chunks of replicates bound the memory of the [chunk, runs, tasks] index array.
    chunk_size = max(1, _MAX_RESAMPLED_ENTRIES // scores.size)
    chunks = []
    for start in range(0, num_resamples, chunk_size):
        size = min(chunk_size, num_resamples - start)
        # Independent run indices per task: resampled[r, i, t] = scores[indices[r, i, t], t].
        indices = rng.integers(0, num_runs, size=(size, num_runs, num_tasks))
        chunks.append(_statistics(scores[indices, np.arange(num_tasks)]))
    replicates = {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}
    points = _statistics(scores)
    tail = 100.0 * (1.0 - confidence) / 2.0
    result = {"n": num_runs}
    for name, point in points.items():
        low, high = np.percentile(replicates[name], [tail, 100.0 - tail])
        result[name] = {"value": float(point), "ci_low": float(low), "ci_high": float(high)}
    return result


def probability_of_improvement(x, y):
    """P(X > Y) + 1/2 P(X = Y) for X, Y drawn from the runs of x and y: U / (n m) of Mann-Whitney.

    x: [n] or [n, tasks], y: [m] or [m, tasks] (higher is better); with tasks, the average over
    tasks of the per-task probability (rliable). Identical inputs give 0.5. Returns a float.
    """
    x, y = _checked_array(x), _checked_array(y)
    u_statistic = scipy.stats.mannwhitneyu(x, y, axis=0).statistic
    return float(np.mean(u_statistic / (x.shape[0] * y.shape[0])))


def regression_test(
    baseline,
    new,
    *,
    higher_is_better=True,
    min_effect=0.05,
    min_abs_effect=0.0,
    alpha=0.01,
):
    """Compare per-seed results [n] and [m] of a baseline and a new version (asv's rule).

    Let b and c be the IQMs of baseline and new, change = c - b. A change counts only when both
      1. its size is beyond the threshold: |change| > max(min_effect * |b|, min_abs_effect)
         (min_effect relative; min_abs_effect, in the metric's units, keeps a baseline near
         zero from turning noise into a huge relative change), and
      2. it is significant: the one-sided Mann-Whitney U test in the direction of the change
         has p < alpha.
    It is a regression when it makes things worse (c < b if higher_is_better, else c > b), an
    improvement otherwise. With one run per side p >= 1/2, so nothing is ever flagged.
    Returns:
      {"baseline", "new": the IQMs; "change"; "relative_change": change / |b| (inf or nan at
       b = 0); "p_value": the one-sided p in the direction of the change;
       "significant_regression", "significant_improvement": bools}.
    """
    baseline, new = _checked_array(baseline), _checked_array(new)
    if baseline.ndim != 1 or new.ndim != 1:
        raise ValueError("regression_test compares two 1-D arrays of per-seed values")
    baseline_iqm, new_iqm = iqm(baseline), iqm(new)
    change = new_iqm - baseline_iqm
    with np.errstate(divide="ignore", invalid="ignore"):
        relative_change = float(np.float64(change) / abs(baseline_iqm))
    alternative = "greater" if change > 0 else "less"
    p_value = float(scipy.stats.mannwhitneyu(new, baseline, alternative=alternative).pvalue)
    flagged = abs(change) > max(min_effect * abs(baseline_iqm), min_abs_effect) and p_value < alpha
    got_worse = change < 0 if higher_is_better else change > 0
    return {
        "baseline": baseline_iqm,
        "new": new_iqm,
        "change": change,
        "relative_change": relative_change,
        "p_value": p_value,
        "significant_regression": bool(flagged and got_worse),
        "significant_improvement": bool(flagged and not got_worse),
    }


def signed_rank_p_value(differences, *, alternative: str) -> float:
    """One-sided Wilcoxon signed-rank p of paired differences (new - baseline).

    alternative: "less" (new below baseline) or "greater". Zero differences carry no evidence
    and are dropped; with none left p = 1. Exact below 50 non-zero pairs, normal beyond
    (scipy's rule). The smallest p that n non-zero pairs can reach is 2^-n.
    """
    differences = np.asarray(differences, dtype=float)
    differences = differences[differences != 0]
    if differences.size == 0:
        return 1.0
    return float(scipy.stats.wilcoxon(differences, alternative=alternative).pvalue)


def smallest_signed_rank_p(num_pairs: int) -> float:
    """The smallest one-sided p the signed-rank test can give with `num_pairs` pairs."""
    return 0.5**num_pairs


def holm_thresholds(p_values, alpha: float) -> np.ndarray:
    """Holm's step-down thresholds: the i-th smallest p is tested at alpha / (m - i), and once
    one fails all larger ones fail. Returns, per test, whether it is rejected. Controls the
    chance of any false rejection at alpha, like Bonferroni, with more power."""
    p_values = np.asarray(p_values, dtype=float)
    m = p_values.size
    rejected = np.zeros(m, dtype=bool)
    for rank, index in enumerate(np.argsort(p_values, kind="stable")):
        if p_values[index] >= alpha / (m - rank):
            break
        rejected[index] = True
    return rejected


def detectable_shift(spread: float, num_pairs: int, alpha: float, power: float = 0.8) -> float:
    """The shift of independent draws that a one-sided signed-rank test on `num_pairs` pairs
    detects at level `alpha` with probability `power` (normal approximation).

    Paired differences of independent draws with spread `spread` (a standard deviation) have
    standard deviation sqrt(2) * spread; the signed-rank test needs pi/3 times the pairs a
    t-test needs (its efficiency under normality is 3/pi). Returns inf where num_pairs is 0.
    """
    if num_pairs == 0:
        return float("inf")
    z = scipy.stats.norm.ppf(1 - alpha) + scipy.stats.norm.ppf(power)
    return float(z * np.sqrt(2.0) * spread / np.sqrt(num_pairs * 3.0 / np.pi))


def robust_spread(values) -> float:
    """A standard deviation that ignores outlying seeds: IQR / 1.349 (exact under normality),
    the sample standard deviation where the IQR is 0."""
    values = np.asarray(values, dtype=float)
    q75, q25 = np.percentile(values, [75, 25])
    spread = (q75 - q25) / 1.349
    return float(spread if spread > 0 else np.std(values, ddof=1) if values.size > 1 else 0.0)
