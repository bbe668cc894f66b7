"""The benchmark scripts still run (``--quick``); their numbers are read by people, not asserted.

The scripts run two at a time (each is a subprocess that mostly waits on its own servers and
clients): the whole module costs about half of its sum in CI time. Each test waits for its own run.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BENCHMARKS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
NO_MOSQUITTO = ("ingest", "--no-mosquitto")

Runs = dict[tuple[str, ...], "concurrent.futures.Future[subprocess.CompletedProcess[str]]"]


def _run(script: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), "--quick", *extra], capture_output=True, text=True,
                          timeout=180, check=False)


@pytest.fixture(scope="module")
def runs() -> Iterator[Runs]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as lanes:
        started: Runs = {(script.stem,): lanes.submit(_run, script) for script in BENCHMARKS}
        started[NO_MOSQUITTO] = lanes.submit(_run, ROOT / "benchmarks" / "ingest.py", "--no-mosquitto")
        yield started


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_runs_in_quick_mode(script: Path, runs: Runs) -> None:
    result = runs[(script.stem,)].result(timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.strip(), "a benchmark must print its numbers"


@pytest.mark.slow
def test_ingest_runs_without_mosquitto(runs: Runs) -> None:
    """Without ``mosquitto``/``mosquitto_pub`` the ingest benchmark still runs, on its python publisher alone."""
    result = runs[NO_MOSQUITTO].result(timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "only the python pipelining publisher ran" in result.stdout
    assert "python -> hydrovisor: acked / stored / lost" in result.stdout
    assert "mosquitto_pub ->" not in result.stdout


@pytest.mark.slow
def test_scheduler_benchmark_dispatches_and_executes_nothing_twice(runs: Runs) -> None:
    """The scheduler benchmark's quick run (5 zones, 6 s) plans, dispatches and stores its lighting tasks, each
    executed once (its zones have no light node: ``no_device_for_task``)."""
    result = runs[("scheduler",)].result(timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "failed/fail/no_device_for_task" in result.stdout
    twice = next(line for line in result.stdout.splitlines() if line.startswith("tasks executed twice"))
    assert twice.split()[-3:] == ["0", "0", "ok"], twice
