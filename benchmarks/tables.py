"""Markdown and CSV tables derived from cell records (the canonical JSON)."""

from __future__ import annotations

import csv
import io
import math


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _return_stat(cell: dict, stat: str, digits: int = 1) -> str:
    aggregate = cell["aggregates"]["return"]
    if aggregate is None:
        return "diverged"
    value = aggregate[stat]
    if stat == "iqm":
        return f"{value['value']:.{digits}f} [{value['ci_low']:.{digits}f}, {value['ci_high']:.{digits}f}]"
    return f"{value['value']:.{digits}f}"


def _min_max(cell: dict) -> str:
    values = _finite(cell["per_seed"]["return"])
    return f"{min(values):.1f} / {max(values):.1f}" if values else "diverged"


def _diverged(cell: dict) -> str:
    """How many seeds diverged (records from before divergence was counted have none)."""
    divergence = cell.get("divergence") or {"diverged": 0, "seeds": len(cell["seed_ids"])}
    return f"{divergence['diverged']}/{divergence['seeds']}"


def _pit_ks(cell: dict) -> str:
    value = cell["calibration"]["pit_ks_pooled"]
    return "n/a" if value is None else f"{value:.3g}"


def _reference(cell: dict) -> str:
    return {"exact": "exact", "monte_carlo": "MC"}.get(cell["calibration"]["reference"], "n/a")


COLUMNS = (
    ("agent", lambda c: c["spec"]["agent"]),
    ("env", lambda c: c["spec"]["env"]),
    ("seeds", lambda c: c["throughput"]["num_seeds"]),
    ("IQM return", lambda c: _return_stat(c, "iqm")),
    ("mean return", lambda c: _return_stat(c, "mean")),
    ("min/max", _min_max),
    ("diverged", _diverged),
    ("W1", lambda c: _calibration(c, "wasserstein1")),
    ("CRPS", lambda c: _calibration(c, "crps")),
    ("KS", lambda c: _calibration(c, "ks")),
    ("PIT KS", _pit_ks),
    ("ref", _reference),
    ("env steps/s", lambda c: f"{c['throughput']['env_steps_per_second']:,.0f}"),
    ("compile s", lambda c: f"{c['throughput']['compile_seconds']:.1f}"),
)


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
            "diverged",
            *[f"{m}_iqm" for m in _metric_names(cells)],
            "env_steps_per_second",
            "compile_seconds",
            "peak_memory_bytes",
        ]
    )
    for cell in cells:
        ret = cell["aggregates"]["return"]
        calib = cell["calibration"]["aggregates"]
        diverged = (cell.get("divergence") or {"diverged": 0})["diverged"]
        writer.writerow(
            [
                cell["spec"]["agent"],
                cell["spec"]["env"],
                cell["throughput"]["num_seeds"],
                *(
                    ["", "", "", "", ""]
                    if ret is None
                    else [
                        ret["iqm"]["value"],
                        ret["iqm"]["ci_low"],
                        ret["iqm"]["ci_high"],
                        ret["mean"]["value"],
                        ret["median"]["value"],
                    ]
                ),
                diverged,
                *[calib[m]["iqm"]["value"] if calib.get(m) else "" for m in _metric_names(cells)],
                cell["throughput"]["env_steps_per_second"],
                cell["throughput"]["compile_seconds"],
                cell["throughput"]["peak_memory_bytes"],
            ]
        )
    return buffer.getvalue()


def _metric_names(cells: list[dict]) -> list[str]:
    from benchmarks.cell import CALIBRATION_METRICS

    return list(CALIBRATION_METRICS)


def machine_line(meta: dict) -> str:
    """Where and from what a result came: devices, cores, commit, jax, date."""
    return (
        f"{meta['device_count']} x {meta['device_kind']} ({meta['platform']}), "
        f"{meta.get('cpu_count')} CPU cores, commit `{meta['commit'][:12]}`, "
        f"jax {meta['versions'].get('jax')}, created {meta['created']}."
    )
