"""Derived outputs of a suite's canonical results.json: Markdown and CSV tables and PNG plots
(learning curves with CI bands, predicted CDF against truth or Monte Carlo, PIT histograms).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from benchmarks import results as results_io
from benchmarks import stats, tables


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def markdown(payload: dict) -> str:
    meta = payload["metadata"]
    lines = [
        f"# distbench results: suite `{payload.get('suite', payload.get('kind'))}`",
        "",
        (
            f"{meta['device_count']} x {meta['device_kind']} ({meta['platform']}), "
            f"{meta.get('cpu_count')} CPU cores, commit `{meta['commit'][:12]}`, "
            f"jax {meta['versions'].get('jax')}, created {meta['created']}."
        ),
        "",
        (
            "IQM greedy return over seeds with its 95% stratified-bootstrap CI; calibration metrics "
            "are IQMs over seeds of each seed's score, in units of the discounted return at the "
            "agent's gamma (ref: the exact law of the action taken, or MC = the evaluation "
            "episodes' own discounted returns); PIT KS is pooled over all seeds' episodes (0 is "
            "perfectly calibrated); diverged: seeds whose loss, predictions or returns are not "
            "finite, left out of the aggregates; env steps/s of the compiled training segments."
        ),
        "",
        tables.cells_markdown(payload["cells"]),
        "",
    ]
    return "\n".join(lines)


def figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def plot_learning_curves(cells: list[dict]) -> dict[str, bytes]:
    """One PNG per env: IQM greedy return vs env steps per agent, with 95% bootstrap bands."""
    plt = figure()
    by_env: dict[str, list[dict]] = {}
    for cell in cells:
        by_env.setdefault(cell["spec"]["env"], []).append(cell)
    out = {}
    for env, env_cells in by_env.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for cell in env_cells:
            steps = np.asarray(cell["curve"]["env_steps"])
            curve = np.asarray(cell["curve"]["eval_return"], dtype=float)  # [S, T]
            points = [_curve_point(curve[:, t]) for t in range(len(steps))]
            mid = [p["value"] for p in points]
            ax.plot(steps, mid, label=cell["spec"]["agent"])
            ax.fill_between(
                steps, [p["ci_low"] for p in points], [p["ci_high"] for p in points], alpha=0.2
            )
        ax.set_xlabel("env steps per seed")
        ax.set_ylabel("IQM greedy return")
        ax.set_title(f"{env} ({len(env_cells[0]['seed_ids'])} seeds, 95% CI)")
        ax.legend()
        out[f"curves_{_safe(env)}.png"] = png_bytes(fig)
        plt.close(fig)
    return out


def _curve_point(values: np.ndarray) -> dict:
    """IQM and CI over the seeds whose value is finite (diverged seeds are left out)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"value": np.nan, "ci_low": np.nan, "ci_high": np.nan}
    return stats.aggregate(finite, num_resamples=500)["iqm"]


def _step_cdf(locs, probs):
    order = np.argsort(locs)
    return np.asarray(locs)[order], np.cumsum(np.asarray(probs)[order])


def plot_calibration(cell: dict) -> bytes:
    """Predicted CDF (first seed) against the exact truth or the Monte Carlo returns; PIT."""
    plt = figure()
    calib = cell["calibration"]
    fig, (ax_cdf, ax_pit) = plt.subplots(1, 2, figsize=(10, 3.8))
    if len(calib["example_prediction"]["locs"]):
        x, f = _step_cdf(calib["example_prediction"]["locs"], calib["example_prediction"]["probs"])
        ax_cdf.step(x, f, where="post", label=f"{cell['spec']['agent']} prediction")
    else:
        ax_cdf.set_title("every seed diverged")
    if calib.get("truth"):
        tx, tf = _step_cdf(calib["truth"]["locs"], calib["truth"]["probs"])
        ax_cdf.step(tx, tf, where="post", label="exact truth", color="black")
    returns = np.sort(np.asarray(calib["example_returns"], dtype=float))
    ax_cdf.step(
        returns,
        np.arange(1, len(returns) + 1) / len(returns),
        where="post",
        label="MC returns",
        color="gray",
        linestyle="--",
    )
    ax_cdf.set_xlabel("discounted return")
    ax_cdf.set_ylabel("CDF")
    ax_cdf.legend(fontsize=8)
    hist = np.asarray(calib["pit_histogram"] or [], dtype=float)
    bins = max(len(hist), 1)
    if len(hist):
        ax_pit.bar((np.arange(bins) + 0.5) / bins, hist * bins, width=1.0 / bins, edgecolor="k")
    ax_pit.axhline(1.0, color="red", linestyle="--", label="calibrated")
    ax_pit.set_xlabel("PIT value")
    ax_pit.set_ylabel("density")
    ax_pit.legend(fontsize=8)
    fig.suptitle(f"{cell['spec']['agent']} on {cell['spec']['env']}")
    data = png_bytes(fig)
    plt.close(fig)
    return data


def write_report(out_dir: str | Path, payload: dict) -> list[Path]:
    """Write results.md, results.csv and plots/ next to results.json (each atomically)."""
    out_dir = Path(out_dir)
    written = []
    md = out_dir / "results.md"
    results_io.atomic_write_text(md, markdown(payload))
    csv_path = out_dir / "results.csv"
    results_io.atomic_write_text(csv_path, tables.cells_csv(payload["cells"]))
    written += [md, csv_path]
    plots = plot_learning_curves(payload["cells"])
    for cell in payload["cells"]:
        name = f"calibration_{_safe(cell['spec']['agent'])}_{_safe(cell['spec']['env'])}.png"
        plots[name] = plot_calibration(cell)
    for name, data in plots.items():
        path = out_dir / "plots" / name
        results_io.atomic_write_bytes(path, data)
        written.append(path)
    return written


def regenerate(path: str | Path) -> list[Path]:
    """`distbench report DIR`: rebuild tables and plots from DIR/results.json alone."""
    path = Path(path)
    json_path = path / "results.json" if path.is_dir() else path
    payload = results_io.read_json(json_path)
    if payload.get("kind") not in ("suite", "train"):
        raise results_io.ResultsError(
            f"{str(json_path)!r} holds a {payload.get('kind')!r} result; report needs a suite or "
            "train result"
        )
    return write_report(json_path.parent, payload)
