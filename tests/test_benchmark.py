"""The benchmark's smoke run: every scenario still runs end to end and reports its figures.

It reports, it does not assert timings (those are read from `python -m tests.benchmark`)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.benchmark import SCENARIOS

PROJECT = Path(__file__).resolve().parent.parent


def test_benchmark_smoke_run_reports_every_scenario(tmp_path):
    report = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "tests.benchmark", "--smoke", "--json", str(report)],
                            cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert " exited " not in result.stderr, result.stderr   # a step that failed makes its figures meaningless
    rows = json.loads(report.read_text())
    assert {row["scenario"] for row in rows} == set(SCENARIOS)
    for row in rows:
        assert row["value"] is not None, row
    # Correctness is not a timing: every run copied every file.
    copied = [row for row in rows if row["figure"] == "first run: files copied"]
    assert copied and copied[0]["met"], copied
    for row in rows:
        print(" | ".join(str(row[k]) for k in ("scenario", "figure", "value", "unit", "target", "met")))
