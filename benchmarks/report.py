"""Derived outputs of a suite's canonical results.json: Markdown and CSV tables, and the PNG
plots of benchmarks/plots.py.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import plots, sweep_report, tables
from benchmarks import results as results_io

# Re-exported: dopamine and throughput draw with them.
from benchmarks.plots import figure, png_bytes  # noqa: F401


def markdown(payload: dict) -> str:
    meta = payload["metadata"]
    lines = [
        f"# distbench results: suite `{payload.get('suite', payload.get('kind'))}`",
        "",
        tables.machine_line(meta),
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


def write_report(out_dir: str | Path, payload: dict) -> list[Path]:
    """Write results.md, results.csv and plots/ next to results.json (each atomically)."""
    out_dir = Path(out_dir)
    if payload.get("kind") == "sweep":
        text, table, drawn = (
            sweep_report.markdown(payload),
            sweep_report.csv_text(payload),
            sweep_report.draw_all(payload),
        )
    else:
        text, table = markdown(payload), tables.cells_csv(payload["cells"])
        drawn = plots.draw_all(payload["cells"])
    md, csv_path = out_dir / "results.md", out_dir / "results.csv"
    results_io.atomic_write_text(md, text)
    results_io.atomic_write_text(csv_path, table)
    written = [md, csv_path]
    for name, data in drawn.items():
        path = out_dir / "plots" / name
        results_io.atomic_write_bytes(path, data)
        written.append(path)
    return written


def report_dir(json_path: Path) -> Path:
    """Where the report of a results file goes: beside results.json; for any other file
    (`train --out runs/a.json`), a folder of its own name (runs/a/), so that reports of two
    files in one folder do not overwrite each other."""
    return json_path.parent if json_path.name == "results.json" else json_path.with_suffix("")


def regenerate(path: str | Path) -> list[Path]:
    """`distbench report DIR` (or FILE.json): rebuild tables and plots from the results file
    alone, into `report_dir`."""
    path = Path(path)
    json_path = path / "results.json" if path.is_dir() else path
    payload = results_io.read_json(json_path)
    if payload.get("kind") not in ("suite", "train", "sweep"):
        raise results_io.ResultsError(
            f"{str(json_path)!r} holds a {payload.get('kind')!r} result; report needs a suite, "
            "train or sweep result"
        )
    return write_report(report_dir(json_path), payload)
