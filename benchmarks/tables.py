"""Markdown and CSV tables derived from cell records (the canonical JSON)."""

from __future__ import annotations

import csv
import io

COLUMNS = (
    ("agent", lambda c: c["spec"]["agent"]),
    ("env", lambda c: c["spec"]["env"]),
    ("seeds", lambda c: c["throughput"]["num_seeds"]),
    ("IQM return", lambda c: _ci(c["aggregates"]["return"]["iqm"])),
    ("mean return", lambda c: f"{c['aggregates']['return']['mean']['value']:.1f}"),
    (
        "min/max",
        lambda c: f"{min(c['per_seed']['return']):.1f} / {max(c['per_seed']['return']):.1f}",
    ),
    ("W1", lambda c: _calibration(c, "wasserstein1")),
    ("CRPS", lambda c: _calibration(c, "crps")),
    ("KS", lambda c: _calibration(c, "ks")),
    ("PIT KS", lambda c: f"{c['calibration']['pit_ks_pooled']:.3g}"),
    ("ref", lambda c: "exact" if c["calibration"]["reference"] == "exact" else "MC"),
    ("env steps/s", lambda c: f"{c['throughput']['env_steps_per_second']:,.0f}"),
    ("compile s", lambda c: f"{c['throughput']['compile_seconds']:.1f}"),
)


def _ci(stat: dict) -> str:
    return f"{stat['value']:.1f} [{stat['ci_low']:.1f}, {stat['ci_high']:.1f}]"


def _calibration(cell: dict, name: str) -> str:
    stat = cell["calibration"]["aggregates"].get(name)
    return "n/a" if stat is None else f"{stat['iqm']['value']:.3g}"


def rows(cells: list[dict]) -> list[list[str]]:
    return [[str(fn(cell)) for _, fn in COLUMNS] for cell in cells]


def cells_markdown(cells: list[dict]) -> str:
    """A Markdown table: one row per cell; IQM with its 95% stratified-bootstrap CI."""
    header = [name for name, _ in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows(cells)]
    return "\n".join(lines)


def cells_csv(cells: list[dict]) -> str:
    """One row per cell, full precision, for spreadsheets."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        [
            "agent",
            "env",
            "seeds",
            "return_iqm",
            "return_iqm_ci_low",
            "return_iqm_ci_high",
            "return_mean",
            "return_median",
            *[f"{m}_iqm" for m in _metric_names(cells)],
            "env_steps_per_second",
            "compile_seconds",
            "peak_memory_bytes",
        ]
    )
    for cell in cells:
        ret = cell["aggregates"]["return"]
        calib = cell["calibration"]["aggregates"]
        writer.writerow(
            [
                cell["spec"]["agent"],
                cell["spec"]["env"],
                cell["throughput"]["num_seeds"],
                ret["iqm"]["value"],
                ret["iqm"]["ci_low"],
                ret["iqm"]["ci_high"],
                ret["mean"]["value"],
                ret["median"]["value"],
                *[calib[m]["iqm"]["value"] if m in calib else "" for m in _metric_names(cells)],
                cell["throughput"]["env_steps_per_second"],
                cell["throughput"]["compile_seconds"],
                cell["throughput"]["peak_memory_bytes"],
            ]
        )
    return buffer.getvalue()


def _metric_names(cells: list[dict]) -> list[str]:
    from benchmarks.cell import CALIBRATION_METRICS

    return list(CALIBRATION_METRICS)
