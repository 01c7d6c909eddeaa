"""`distbench compare BASELINE NEW`: per cell and metric, the change and its significance; any
regression fails the CI job (exit 1).

What counts as worse, in this order:
* coverage: a cell of the baseline missing in NEW, or a seed of a cell missing (unless the
  caller allows a subset);
* divergence: more seeds with non-finite results in NEW than in the baseline (a diverged seed is
  a regression, never silently dropped);
* a metric that got worse, significantly and by more than its threshold: per seed id (per timed
  segment for throughput) the paired difference NEW - BASELINE, tested with the one-sided
  Wilcoxon signed-rank test, Holm's correction over every test of the comparison.

Seeds pair by id: the same id has the same key, so the same initial network, environment resets
and exploration noise in both runs. Throughput pairs by segment (the same stretch of training)
and is measured relative to a fixed probe program timed beside each segment, so a baseline from
one machine gates a run on another.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from benchmarks import results as results_io
from benchmarks import stats

THROUGHPUT = "env_steps_per_probe_call"
# Absolute floors, so a change of a metric near zero is not judged by its relative size alone.
# In the units of a return: this fraction of the cell's return scale (the baseline's |IQM
# return|, or its spread where that is larger), as if the predicted and true CDFs differed by
# this much across the whole scale. The Cramer distance integrates the squared difference of
# the CDFs, so its floor is the square of that fraction times the scale. Probabilities (KS,
# coverage, PIT KS) have a floor of their own.
RETURN_FLOOR_FRACTION = 0.005
PROBABILITY_FLOOR = 0.02


class Rule(NamedTuple):
    """How one metric is judged: its direction, the relative change it must exceed, and the
    units its absolute floor follows."""

    label: str
    higher_is_better: bool
    min_effect: float  # relative to the baseline's IQM
    units: str | None  # "return", "squared_cdf" (Cramer), "probability" or None


RULES = {
    "return": Rule("return", True, 0.10, "return"),
    "wasserstein1": Rule("W1", False, 0.20, "return"),
    "cramer": Rule("Cramer", False, 0.20, "squared_cdf"),
    "crps": Rule("CRPS", False, 0.20, "return"),
    "ks": Rule("KS", False, 0.20, "probability"),
    "quantile_coverage_error": Rule("quantile coverage", False, 0.20, "probability"),
    "pit_ks": Rule("PIT KS per seed", False, 0.20, "probability"),
    # Relative to the probe. Shared machines are noisy, so a fifth slower to count: a slowdown
    # by a quarter is flagged.
    THROUGHPUT: Rule("throughput", True, 0.20, None),
}


class CompareError(results_io.ResultsError):
    """Inputs that cannot be compared (exit 2): wrong contents, or too few samples."""


# --- reading and checking the inputs ------------------------------------------------------------


def _load(path: str | Path) -> dict:
    path = Path(path)
    payload = results_io.read_json(path / "results.json" if path.is_dir() else path)
    _check_payload(payload, str(path))
    return payload


def _is_number_or_null(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _check_payload(payload: dict, path: str) -> None:
    """One line naming what is wrong with a results file's contents."""

    def fail(what: str):
        raise CompareError(f"results file {path!r}: {what}")

    if payload.get("kind") == "cell":
        fail("is one cell's resume file; compare a suite's results.json or a train --out file")
    cells = payload.get("cells")
    if not isinstance(cells, list) or not cells:
        fail("has no cells (expected a non-empty list 'cells')")
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict) or not isinstance(cell.get("spec"), dict):
            fail(f"cell {index} has no 'spec' mapping")
        if not all(isinstance(cell["spec"].get(k), str) for k in ("agent", "env")):
            fail(f"cell {index}'s spec needs string 'agent' and 'env'")
        seed_ids = cell.get("seed_ids")
        if not isinstance(seed_ids, list) or not all(isinstance(s, int) for s in seed_ids):
            fail(f"cell {_name(cell)} has no list of integer 'seed_ids'")
        per_seed = cell.get("per_seed")
        if not isinstance(per_seed, dict):
            fail(f"cell {_name(cell)} has no 'per_seed' mapping")
        for metric, values in per_seed.items():
            if metric == "diverged":
                continue
            if not isinstance(values, list) or len(values) != len(seed_ids):
                fail(f"cell {_name(cell)}: per_seed.{metric} is not a list of one value per seed")
            if not all(_is_number_or_null(v) for v in values):
                fail(f"cell {_name(cell)}: per_seed.{metric} holds a value that is not a number")
        throughput = cell.get("throughput", {})
        if not isinstance(throughput, dict):
            fail(f"cell {_name(cell)}: 'throughput' is not a mapping")
        samples = throughput.get(THROUGHPUT)
        if samples is not None and not (
            isinstance(samples, list) and all(_is_number_or_null(v) for v in samples)
        ):
            fail(f"cell {_name(cell)}: throughput.{THROUGHPUT} is not a list of numbers")


def _name(cell: dict) -> str:
    return f"{cell['spec']['agent']}/{cell['spec']['env']}"


def _values(cell: dict, metric: str) -> np.ndarray | None:
    """Per-seed (throughput: per-segment) values, NaN where null; None where absent."""
    values = (cell.get("throughput") or {}) if metric == THROUGHPUT else cell["per_seed"]
    values = values.get(metric)
    if values is None:
        return None
    return np.asarray([np.nan if v is None else v for v in values], dtype=float)


def _diverged(cell: dict) -> np.ndarray:
    """[S] bools: recorded as diverged, or any per-seed value not finite."""
    per_seed = cell["per_seed"]
    flags = np.asarray(per_seed.get("diverged") or [False] * len(cell["seed_ids"]), dtype=bool)
    for metric in RULES:
        values = _values(cell, metric) if metric != THROUGHPUT else None
        if values is not None:
            flags |= ~np.isfinite(values)
    return flags


# --- the comparison -----------------------------------------------------------------------------


class Test(NamedTuple):
    """One metric of one cell, paired, ready for the signed-rank test."""

    cell: str
    metric: str
    rule: Rule
    before: np.ndarray  # finite pairs only
    after: np.ndarray
    num_pairs: int  # pairs by design (seeds or segments in both), before dropping non-finite
    floor: float
    spread: float  # of one sample's noise, for the detectable change


def _return_scale(cell: dict) -> float:
    returns = _values(cell, "return")
    returns = returns[np.isfinite(returns)] if returns is not None else np.zeros(0)
    if returns.size == 0:
        return 0.0
    return max(abs(stats.iqm(returns)), stats.robust_spread(returns))


def _floor(rule: Rule, return_scale: float) -> float:
    if rule.units == "return":
        return RETURN_FLOOR_FRACTION * return_scale
    if rule.units == "squared_cdf":
        return RETURN_FLOOR_FRACTION**2 * return_scale
    if rule.units == "probability":
        return PROBABILITY_FLOOR
    return 0.0


def _noise_spread(metric: str, values: np.ndarray) -> float:
    """Seeds: the spread over seeds. Throughput: the spread of successive segments'
    differences / sqrt(2), which leaves out the slow drift of speed over training."""
    if metric == THROUGHPUT and values.size > 2:
        return stats.robust_spread(np.diff(values)) / math.sqrt(2.0)
    return stats.robust_spread(values) if values.size > 1 else 0.0


def _pairs(base_cell: dict, new_cell: dict, metric: str):
    """(before, after, number of pairs by design) over seeds both ran (by id), or over the
    segments both timed (by index) for throughput; None where a side lacks the metric."""
    before, after = _values(base_cell, metric), _values(new_cell, metric)
    if before is None or after is None:
        return None
    if metric == THROUGHPUT:
        n = min(before.size, after.size)
        return before[:n], after[:n], n
    new_index = {seed: i for i, seed in enumerate(new_cell["seed_ids"])}
    shared = [(i, new_index[s]) for i, s in enumerate(base_cell["seed_ids"]) if s in new_index]
    rows = np.asarray([i for i, _ in shared], dtype=int)
    cols = np.asarray([j for _, j in shared], dtype=int)
    return before[rows], after[cols], len(shared)


def _coverage_rows(base_cells, new_cells, allow_subset: bool) -> list[dict]:
    rows = []
    verdict = "missing (allowed)" if allow_subset else "REGRESSION"
    for name, base_cell in base_cells.items():
        if name not in new_cells:
            rows.append(
                {"cell": name, "metric": "cell", "verdict": verdict, "detail": "missing in new"}
            )
            continue
        missing = set(base_cell["seed_ids"]) - set(new_cells[name]["seed_ids"])
        if missing:
            rows.append(
                {
                    "cell": name,
                    "metric": "seeds",
                    "verdict": verdict,
                    "detail": f"{len(missing)} of {len(base_cell['seed_ids'])} seeds missing in new",
                }
            )
    return rows


def _divergence_row(name: str, base_cell: dict, new_cell: dict) -> dict:
    base_div, new_div = _diverged(base_cell), _diverged(new_cell)
    worse = int(new_div.sum()) > int(base_div.sum())
    return {
        "cell": name,
        "metric": "diverged",
        "baseline": float(base_div.mean()),
        "new": float(new_div.mean()),
        "verdict": "REGRESSION" if worse else "no change",
        "detail": f"{int(base_div.sum())}/{base_div.size} -> {int(new_div.sum())}/{new_div.size}",
    }


def _tests(base_cells, new_cells) -> tuple[list[Test], list[dict]]:
    tests, rows = [], []
    for name, base_cell in base_cells.items():
        if name not in new_cells:
            continue
        new_cell = new_cells[name]
        scale = _return_scale(base_cell)
        for metric, rule in RULES.items():
            pairs = _pairs(base_cell, new_cell, metric)
            if pairs is None:
                if _values(base_cell, metric) is not None:
                    rows.append(
                        {
                            "cell": name,
                            "metric": rule.label,
                            "verdict": "REGRESSION",
                            "detail": "missing in new",
                        }
                    )
                continue
            before, after, num_pairs = pairs
            finite = np.isfinite(before) & np.isfinite(after)
            before, after = before[finite], after[finite]
            spread = _noise_spread(metric, before)
            tests.append(
                Test(name, metric, rule, before, after, num_pairs, _floor(rule, scale), spread)
            )
    return tests, rows


def _check_power(tests: list[Test], alpha: float) -> None:
    """Refuse a comparison in which some test could never be significant."""
    strictest = alpha / max(len(tests), 1)
    for test in tests:
        if stats.smallest_signed_rank_p(test.num_pairs) >= strictest:
            needed = math.floor(math.log2(1.0 / strictest)) + 1
            what = "timed segments" if test.metric == THROUGHPUT else "paired seeds"
            raise CompareError(
                f"cell {test.cell} metric {test.rule.label}: {test.num_pairs} {what} cannot "
                f"reach p < {strictest:.2g} (alpha {alpha} over {len(tests)} tests); at least "
                f"{needed} are needed: run more seeds or a larger --alpha"
            )


def _test_row(test: Test, p_worse: float, p_better: float, rejected: bool, alpha_m: float):
    rule = test.rule
    if test.before.size == 0:
        return {
            "cell": test.cell,
            "metric": rule.label,
            "verdict": "no finite pairs",
            "detail": "every pair has a diverged seed",
        }
    before, after = stats.iqm(test.before), stats.iqm(test.after)
    change = after - before
    threshold = max(rule.min_effect * abs(before), test.floor)
    worse = change < 0 if rule.higher_is_better else change > 0
    big = abs(change) > threshold
    verdict = "no change"
    if worse and big and rejected:
        verdict = "REGRESSION"
    elif not worse and big and p_better < alpha_m:
        verdict = "improvement"
    detectable = max(stats.detectable_shift(test.spread, test.before.size, alpha_m), threshold)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = float(np.float64(change) / abs(before))
        detectable_relative = float(np.float64(detectable) / abs(before))
    return {
        "cell": test.cell,
        "metric": rule.label,
        "baseline": before,
        "new": after,
        "change": change,
        "relative_change": relative,
        "p_value": p_worse,
        "threshold": threshold,
        "detectable": detectable,
        "detectable_relative": detectable_relative,
        "pairs": int(test.before.size),
        "verdict": verdict,
    }


def compare(baseline: dict, new: dict, *, alpha: float = 0.01, allow_subset: bool = False) -> dict:
    """Rows per cell and metric with their verdicts; raises CompareError where the samples are
    too few for any test to be significant."""
    if baseline.get("suite") != new.get("suite"):
        raise CompareError(
            f"cannot compare results of different suites: {baseline.get('suite')!r} vs "
            f"{new.get('suite')!r}"
        )
    base_cells = {_name(c): c for c in baseline["cells"]}
    new_cells = {_name(c): c for c in new["cells"]}
    rows = _coverage_rows(base_cells, new_cells, allow_subset)
    rows += [_divergence_row(n, c, new_cells[n]) for n, c in base_cells.items() if n in new_cells]
    tests, missing_rows = _tests(base_cells, new_cells)
    rows += missing_rows
    _check_power(tests, alpha)
    p_worse, p_better = [], []
    for test in tests:
        differences = test.after - test.before
        worse_side = "less" if test.rule.higher_is_better else "greater"
        better_side = "greater" if worse_side == "less" else "less"
        p_worse.append(stats.signed_rank_p_value(differences, alternative=worse_side))
        p_better.append(stats.signed_rank_p_value(differences, alternative=better_side))
    rejected = stats.holm_thresholds(p_worse, alpha) if tests else []
    alpha_m = alpha / max(len(tests), 1)
    rows += [_test_row(*args, alpha_m) for args in zip(tests, p_worse, p_better, rejected)]
    return {
        "rows": rows,
        "new_only": sorted(set(new_cells) - set(base_cells)),
        "regressions": sum(r["verdict"] == "REGRESSION" for r in rows),
        "num_tests": len(tests),
        "alpha": alpha,
    }


# --- output -------------------------------------------------------------------------------------


def _format_row(row: dict) -> str:
    verdict = f"**{row['verdict']}**" if row["verdict"] == "REGRESSION" else row["verdict"]
    if "p_value" not in row:
        baseline = f"{row['baseline']:.3g}" if "baseline" in row else "-"
        new = f"{row['new']:.3g}" if "new" in row else "-"
        return (
            f"| {row['cell']} | {row['metric']} | {baseline} | {new} | {row.get('detail', '-')} "
            f"| - | - | {verdict} |"
        )

    def relative(value, absolute):
        return f"{100 * value:+.1f}%" if math.isfinite(value) else f"{absolute:+.3g}"

    detectable = relative(row["detectable_relative"], row["detectable"]).lstrip("+")
    return (
        f"| {row['cell']} | {row['metric']} | {row['baseline']:.4g} | {row['new']:.4g} | "
        f"{relative(row['relative_change'], row['change'])} | {row['p_value']:.2g} | "
        f"{detectable} | {verdict} |"
    )


def markdown(outcome: dict, baseline_path: str, new_path: str) -> str:
    """A table usable as a CI comment."""
    lines = [
        f"### distbench compare: `{baseline_path}` -> `{new_path}`",
        "",
        (
            "IQM over seeds (throughput: env steps per probe call, over timed segments). A metric "
            "regresses when it got worse by more than its threshold and the one-sided Wilcoxon "
            "signed-rank test of the paired differences (by seed id; by segment for throughput) "
            f"rejects under Holm's correction over {outcome['num_tests']} tests at alpha "
            f"{outcome['alpha']}. `detectable`: the change detected 80% of the time between "
            "independent runs at these sample sizes. A missing cell or seed, or more diverged "
            "seeds, is a regression."
        ),
        "",
        "| cell | metric | baseline | new | change | p | detectable | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [_format_row(row) for row in outcome["rows"]]
    for name in outcome["new_only"]:
        lines.append(f"| {name} | - | - | - | new cell | - | - | new cell |")
    lines += ["", f"**{outcome['regressions']} regression(s).**"]
    return "\n".join(lines)


def run(
    baseline_path: str, new_path: str, *, alpha: float = 0.01, allow_subset: bool = False
) -> tuple[int, str]:
    """(exit code, Markdown): 1 on any regression, else 0."""
    outcome = compare(_load(baseline_path), _load(new_path), alpha=alpha, allow_subset=allow_subset)
    return (1 if outcome["regressions"] else 0), markdown(outcome, baseline_path, new_path)


def outcome_summary(outcome: dict[str, Any]) -> list[tuple[str, str]]:
    """(cell, metric) of every regression, for tests and logs."""
    return [(r["cell"], r["metric"]) for r in outcome["rows"] if r["verdict"] == "REGRESSION"]
