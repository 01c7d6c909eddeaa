"""results/ is the published record: each suite's derived files come from its results.json
alone, byte for byte, and nothing else is kept there."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITES = ["quick", "ci", "baseline", "sweeps"]


@pytest.mark.parametrize("suite", SUITES)
def test_report_regenerates_the_published_tables_byte_for_byte(suite, tmp_path):
    published = ROOT / "results" / suite
    shutil.copy(published / "results.json", tmp_path / "results.json")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "report", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for name in ("results.md", "results.csv"):
        assert (tmp_path / name).read_bytes() == (published / name).read_bytes(), name
    # Plots: the same names, and the same bytes each time they are drawn (their pixels depend
    # on the installed matplotlib and fonts, so they are not compared with the published ones).
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == sorted(p.name for p in (published / "plots").iterdir())
    first = {name: (tmp_path / "plots" / name).read_bytes() for name in plots}
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "report", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    assert first == {name: (tmp_path / "plots" / name).read_bytes() for name in plots}


def test_no_resume_caches_or_scratch_in_the_record():
    tracked = subprocess.run(
        ["git", "ls-files", "results"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.split()
    # Resume caches: finished cells and sweeps, and checkpoints.
    for cache in ("/cells/", "/checkpoints/"):
        assert not [path for path in tracked if cache in path], cache
    assert not [path for path in tracked if path.startswith("results/sweeps/sweeps/")]
    assert not [path for path in tracked if "/work/" in (ROOT / path).read_text(errors="ignore")]
