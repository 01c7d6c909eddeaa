"""What `distbench report` derives from a sweep's results.json: a table per sweep (one row per
configuration), the selection on tuning and fresh seeds, and plots of return and calibration
against each swept hyperparameter.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from benchmarks import plots, tables

_SCORES = (("return", "IQM return"), ("wasserstein1", "W1"), ("crps", "CRPS"))


def _aggregate(cell: dict, metric: str) -> dict | None:
    if metric == "return":
        return cell["aggregates"]["return"]
    return cell["calibration"]["aggregates"].get(metric)


def _with_ci(aggregate: dict | None, digits: int = 3) -> str:
    if aggregate is None:
        return "-"
    iqm = aggregate["iqm"]
    return f"{iqm['value']:.{digits}g} [{iqm['ci_low']:.{digits}g}, {iqm['ci_high']:.{digits}g}]"


def _value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _mark(sweep: dict, index: int) -> str:
    return " **best**" if sweep["selection"]["winner"] == index else ""


def sweep_markdown(sweep: dict) -> str:
    """One sweep: a row per configuration (its swept values, IQM return and calibration with
    95% CIs over the tuning seeds, divergence, PIT KS), then the selection line."""
    swept = sweep["swept"]
    header = [*swept, "IQM return [95% CI]", "W1", "CRPS", "PIT KS (pooled)", "diverged"]
    lines = [
        f"### {sweep['agent']} on {sweep['env']}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for index, configuration in enumerate(sweep["configurations"]):
        cell = configuration["cell"]
        values = [_value(configuration["overrides"][name]) for name in swept]
        divergence = cell["divergence"]
        row = [
            *values[:-1],
            values[-1] + _mark(sweep, index),
            _with_ci(_aggregate(cell, "return")),
            _with_ci(_aggregate(cell, "wasserstein1")),
            _with_ci(_aggregate(cell, "crps")),
            tables._pit_ks(cell),
            f"{divergence['diverged']}/{divergence['seeds']}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", selection_text(sweep), ""]
    return "\n".join(lines)


def selection_text(sweep: dict) -> str:
    """The winner, its score on the tuning seeds and on fresh ones: the gap is the winner's
    curse (selection on noisy scores favours the lucky)."""
    selection = sweep["selection"]
    if selection["winner"] is None:
        return "No configuration had a finite score: nothing was selected."
    point = sweep["configurations"][selection["winner"]]["overrides"]
    described = ", ".join(f"{k} = {_value(v)}" for k, v in point.items())
    tuning = selection["tuning"]
    text = (
        f"Selected by IQM {selection['metric']} on the {tuning['n']} tuning seeds: {described}: "
        f"{_with_ci(tuning)}."
    )
    fresh = selection["fresh"]
    if fresh is not None:
        text += f" Retrained on {fresh['n']} fresh seeds: {_with_ci(fresh)}."
    return text


def markdown(payload: dict) -> str:
    meta = payload["metadata"]
    lines = [
        f"# distbench sweep results{_suite(payload)}",
        "",
        tables.machine_line(meta),
        "",
        (
            "Each configuration trained on the same tuning seeds, all in one compiled program per "
            "static configuration. IQM over seeds with 95% stratified-bootstrap CIs of the final "
            "greedy return and of each seed's calibration (W1, CRPS: discounted-return units; "
            "ref: the exact law where the env has one, else Monte Carlo); diverged: seeds whose "
            "loss, predictions or returns are not finite."
        ),
        "",
    ]
    for sweep in payload["sweeps"]:
        lines.append(sweep_markdown(sweep))
    return "\n".join(lines)


def _suite(payload: dict) -> str:
    return f": suite `{payload['suite']}`" if payload.get("suite") else ""


def csv_text(payload: dict) -> str:
    """One row per configuration of every sweep: swept values as `field=value` and scores."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["agent", "env", "configuration", "selected", "seeds", "diverged"]
        + [f"{m}_{s}" for m, _ in _SCORES for s in ("iqm", "ci_low", "ci_high")]
    )
    for sweep in payload["sweeps"]:
        for index, configuration in enumerate(sweep["configurations"]):
            cell = configuration["cell"]
            point = ";".join(f"{k}={_value(v)}" for k, v in configuration["overrides"].items())
            scores = []
            for metric, _ in _SCORES:
                aggregate = _aggregate(cell, metric)
                iqm = None if aggregate is None else aggregate["iqm"]
                scores += [
                    "" if iqm is None else f"{iqm[k]:.6g}" for k in ("value", "ci_low", "ci_high")
                ]
            writer.writerow(
                [
                    sweep["agent"],
                    sweep["env"],
                    point,
                    int(sweep["selection"]["winner"] == index),
                    cell["divergence"]["seeds"],
                    cell["divergence"]["diverged"],
                    *scores,
                ]
            )
    return out.getvalue()


def plot_sweep(sweep: dict) -> bytes:
    """IQM return and W1 (95% CIs) against each swept field: one column per field, each
    configuration a point, configurations that share the other fields' values joined."""
    swept = sweep["swept"]
    fig, axes = plots._panel_grid(2 * len(swept), (4.2, 3.2))
    axes = np.asarray(axes, dtype=object).reshape(len(swept), 2)
    for row, name in enumerate(swept):
        for column, (metric, label) in enumerate(_SCORES[:2]):
            _draw_against(axes[row, column], sweep, name, metric)
            axes[row, column].set_xlabel(name)
            axes[row, column].set_ylabel(label)
    seeds = len(sweep["seed_ids"])
    fig.suptitle(f"{sweep['agent']} on {sweep['env']}: IQM over {seeds} tuning seeds, 95% CIs")
    return plots._finish(fig)


def _draw_against(ax, sweep: dict, name: str, metric: str) -> None:
    """One line per combination of the other swept fields, over `name`'s values."""
    others = [n for n in sweep["swept"] if n != name]
    lines: dict[tuple, list] = {}
    for configuration in sweep["configurations"]:
        point = configuration["overrides"]
        key = tuple(point[n] for n in others)
        lines.setdefault(key, []).append((point[name], _aggregate(configuration["cell"], metric)))
    numeric = all(isinstance(v, (int, float)) for line in lines.values() for v, _ in line)
    for key, line in lines.items():
        line = sorted(line, key=lambda item: item[0]) if numeric else line
        xs = [x if numeric else str(x) for x, _ in line]
        ys = [np.nan if a is None else a["iqm"]["value"] for _, a in line]
        low = [np.nan if a is None else a["iqm"]["value"] - a["iqm"]["ci_low"] for _, a in line]
        high = [np.nan if a is None else a["iqm"]["ci_high"] - a["iqm"]["value"] for _, a in line]
        label = ", ".join(f"{n}={_value(v)}" for n, v in zip(others, key)) or None
        ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=label)
    if numeric and all(x > 0 for line in lines.values() for x, _ in line):
        values = sorted({x for line in lines.values() for x, _ in line})
        if len(values) > 2 and values[-1] / values[0] >= 100:
            ax.set_xscale("log")
    if others:
        ax.legend(fontsize=7)


def draw_all(payload: dict) -> dict[str, bytes]:
    return {
        f"sweep_{plots.safe_name(sweep['agent'] + '_' + sweep['env'])}.png": plot_sweep(sweep)
        for sweep in payload["sweeps"]
    }
