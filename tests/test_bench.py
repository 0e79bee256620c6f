"""The benchmarks still run and print their figures (no speed is asserted here: see bench/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_the_decision_bench_prints_its_figures_as_the_last_json_line() -> None:
    result = subprocess.run(
        [sys.executable, "bench/decision.py", "--json", "--addresses", "300", "--rounds", "1"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.splitlines()[-1])
    for key in ("admit_ns", "lookup_ns", "geoip2_country_ns", "admit_recorded_ns"):
        assert figures[key] > 0, key
    assert figures["geoip2_file_agrees"] == 300
