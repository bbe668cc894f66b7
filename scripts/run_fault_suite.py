#!/usr/bin/env python3
"""Run the fault-injection suite several times in a row and report how many runs passed.

A flaky chaos test shows up as one failed run out of five, which a single green run hides.

    .venv/bin/python scripts/run_fault_suite.py                # 5 runs of -q -m fault_injection tests/faults
    .venv/bin/python scripts/run_fault_suite.py -n 20 --stop-on-fail
    .venv/bin/python scripts/run_fault_suite.py -n 3 -- -q tests/process/test_sd_notify.py

Arguments after ``--`` replace the default pytest arguments; pytest runs from the repository root
with the same interpreter as this script. The output of a failed run is printed in full. Exits 0
only when every run passed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PYTEST_ARGS = ["-q", "-m", "fault_injection", "tests/faults"]
# pytest's final line, e.g. "3 passed, 1 failed, 2 errors in 12.34s" (between "=" rules without -q)
_SUMMARY = re.compile(r"^=*\s*(?P<counts>\d+ [a-z]+.*?) in [\d.]+s")
_COUNT = re.compile(r"(\d+) ([a-z]+)")


@dataclass(frozen=True)
class Run:
    """Outcome of one pytest invocation."""

    number: int
    returncode: int
    counts: dict[str, int] | None  # None: pytest printed no summary (crashed, killed, usage error)
    duration: float

    @property
    def passed(self) -> bool:
        return self.returncode == 0

    def count(self, *outcomes: str) -> str:
        return "-" if self.counts is None else str(sum(self.counts.get(o, 0) for o in outcomes))


def parse_summary(output: str) -> dict[str, int] | None:
    """Outcome counts from pytest's last summary line (``errors`` folded into ``error``)."""
    for line in reversed(output.splitlines()):
        match = _SUMMARY.match(line.strip())
        if match:
            counts: dict[str, int] = {}
            for number, outcome in _COUNT.findall(match["counts"]):
                key = {"errors": "error", "warnings": "warning"}.get(outcome, outcome)
                counts[key] = counts.get(key, 0) + int(number)
            return counts
    return None


def run_once(number: int, command: list[str]) -> tuple[Run, str]:
    """One pytest run; returns its outcome and its combined output."""
    started = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    output = proc.stdout + proc.stderr
    return Run(number, proc.returncode, parse_summary(output), time.monotonic() - started), output


def table(runs: list[Run]) -> str:
    """The per-run table: run #, result, passed, failed (+ errors), duration."""
    rows = [("run", "result", "passed", "failed", "duration")]
    rows += [(str(r.number), "pass" if r.passed else "fail", r.count("passed"), r.count("failed", "error"),
              f"{r.duration:.1f}s") for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the suite, print the table; 0 only if every run passed."""
    argv = sys.argv[1:] if argv is None else argv
    # everything after the first "--" belongs to pytest, untouched by argparse
    ours, pytest_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                     usage="%(prog)s [-n RUNS] [--stop-on-fail] [-- PYTEST_ARGS...]")
    parser.add_argument("-n", "--runs", type=int, default=5, help="how many times to run the suite (default 5)")
    parser.add_argument("--stop-on-fail", action="store_true", help="stop after the first failed run")
    args = parser.parse_args(ours)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    command = [sys.executable, "-m", "pytest", *(pytest_args or DEFAULT_PYTEST_ARGS)]
    print("running:", " ".join(command), flush=True)
    runs: list[Run] = []
    for number in range(1, args.runs + 1):
        run, output = run_once(number, command)
        runs.append(run)
        print(f"run {number}/{args.runs}: {'pass' if run.passed else 'fail'} "
              f"(exit {run.returncode}, {run.duration:.1f}s)", flush=True)
        if not run.passed:
            print(f"----- output of run {number} -----\n{output.rstrip()}\n----- end of run {number} -----", flush=True)
            if args.stop_on_fail:
                break

    passed = sum(r.passed for r in runs)
    print()
    print(table(runs))
    stopped = f" (stopped after run {len(runs)})" if len(runs) < args.runs else ""
    print(f"{passed}/{args.runs} runs passed{stopped}")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
