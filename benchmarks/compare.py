"""`distbench compare BASELINE NEW`: per cell and metric, the change and its significance;
a significant regression in return, calibration or throughput fails the CI job (exit 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from benchmarks import results as results_io
from benchmarks import stats


class Rule(NamedTuple):
    """How one metric is judged: direction and the effect size a change must exceed."""

    label: str
    higher_is_better: bool
    min_effect: float  # relative to the baseline's IQM
    min_abs_effect: float  # in the metric's units, for baselines near zero


RULES = {
    "return": Rule("return", True, 0.10, 1.0),
    "wasserstein1": Rule("W1", False, 0.20, 0.01),
    "cramer": Rule("Cramer", False, 0.20, 0.001),
    "crps": Rule("CRPS", False, 0.20, 0.01),
    "ks": Rule("KS", False, 0.20, 0.02),
    "quantile_coverage_error": Rule("quantile coverage", False, 0.20, 0.02),
    # Shared machines are noisy: throughput must fall by a quarter to count.
    "env_steps_per_second": Rule("env steps/s", True, 0.25, 0.0),
}


def _load(path: str | Path) -> dict:
    path = Path(path)
    return results_io.read_json(path / "results.json" if path.is_dir() else path)


def _samples(cell: dict, metric: str) -> np.ndarray | None:
    if metric == "env_steps_per_second":
        values = cell["throughput"].get("chunk_env_steps_per_second")
    else:
        values = cell["per_seed"].get(metric)
    if values is None:
        return None
    values = np.asarray(values, dtype=float)
    return values if np.all(np.isfinite(values)) else None


def compare(baseline: dict, new: dict, *, alpha: float = 0.01) -> dict:
    """Rows per shared cell and metric with the regression test's verdict, plus unmatched cells."""
    if baseline.get("suite") != new.get("suite"):
        raise results_io.ResultsError(
            f"cannot compare results of different suites: {baseline.get('suite')!r} vs "
            f"{new.get('suite')!r}"
        )

    def key(cell):
        return f"{cell['spec']['agent']}/{cell['spec']['env']}"

    base_cells = {key(c): c for c in baseline["cells"]}
    new_cells = {key(c): c for c in new["cells"]}
    pairs = []
    for name in [k for k in base_cells if k in new_cells]:
        for metric, rule in RULES.items():
            before = _samples(base_cells[name], metric)
            after = _samples(new_cells[name], metric)
            if before is not None and after is not None:
                pairs.append((name, rule, before, after))
    # Many cells x metrics are tested at once: Bonferroni keeps the chance that seed noise
    # fails a build anywhere at most alpha.
    per_test_alpha = alpha / max(len(pairs), 1)
    rows = []
    for name, rule, before, after in pairs:
        test = stats.regression_test(
            before,
            after,
            higher_is_better=rule.higher_is_better,
            min_effect=rule.min_effect,
            min_abs_effect=rule.min_abs_effect,
            alpha=per_test_alpha,
        )
        verdict = (
            "REGRESSION"
            if test["significant_regression"]
            else "improvement"
            if test["significant_improvement"]
            else "no change"
        )
        rows.append({"cell": name, "metric": rule.label, **test, "verdict": verdict})
    return {
        "rows": rows,
        "missing_in_new": sorted(set(base_cells) - set(new_cells)),
        "new_only": sorted(set(new_cells) - set(base_cells)),
        "regressions": sum(r["verdict"] == "REGRESSION" for r in rows),
        "per_test_alpha": per_test_alpha,
    }


def markdown(outcome: dict, baseline_path: str, new_path: str) -> str:
    """A table usable as a CI comment."""
    lines = [
        f"### distbench compare: `{baseline_path}` -> `{new_path}`",
        "",
        (
            "IQM over seeds (throughput: over compiled chunks). A change counts when it exceeds the "
            "metric's effect threshold and the one-sided Mann-Whitney p < alpha / number of tests "
            f"(Bonferroni, {outcome['per_test_alpha']:.2g} here)."
        ),
        "",
        "| cell | metric | baseline | new | change | p | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in outcome["rows"]:
        rel = row["relative_change"]
        change = f"{100 * rel:+.1f}%" if np.isfinite(rel) else f"{row['change']:+.3g}"
        verdict = f"**{row['verdict']}**" if row["verdict"] == "REGRESSION" else row["verdict"]
        lines.append(
            f"| {row['cell']} | {row['metric']} | {row['baseline']:.4g} | {row['new']:.4g} | "
            f"{change} | {row['p_value']:.2g} | {verdict} |"
        )
    for name in outcome["missing_in_new"]:
        lines.append(f"| {name} | - | - | - | - | - | missing in new |")
    for name in outcome["new_only"]:
        lines.append(f"| {name} | - | - | - | - | - | new cell |")
    lines += ["", f"**{outcome['regressions']} significant regression(s).**"]
    return "\n".join(lines)


def run(baseline_path: str, new_path: str, *, alpha: float = 0.01) -> tuple[int, str]:
    """(exit code, Markdown): 1 on any significant regression, else 0."""
    outcome = compare(_load(baseline_path), _load(new_path), alpha=alpha)
    return (1 if outcome["regressions"] else 0), markdown(outcome, baseline_path, new_path)
