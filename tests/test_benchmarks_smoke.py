"""The benchmark scripts still run (``--quick``); their numbers are read by people, not asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted(p for p in (Path(__file__).parent.parent / "benchmarks").glob("*.py")
                    if not p.name.startswith("_"))


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_runs_in_quick_mode(script: Path) -> None:
    result = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True,
                            timeout=180, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.strip(), "a benchmark must print its numbers"


@pytest.mark.slow
def test_ingest_runs_without_mosquitto() -> None:
    """Without ``mosquitto``/``mosquitto_pub`` the ingest benchmark still runs, on its python publisher alone."""
    script = Path(__file__).parent.parent / "benchmarks" / "ingest.py"
    result = subprocess.run([sys.executable, str(script), "--quick", "--no-mosquitto"], capture_output=True,
                            text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "only the python pipelining publisher ran" in result.stdout
    assert "python -> hydrovisor: acked / stored / lost" in result.stdout
    assert "mosquitto_pub ->" not in result.stdout
