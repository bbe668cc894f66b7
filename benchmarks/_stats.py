"""Shared helpers of the benchmark scripts: arguments, percentiles, the result table, logging.

Benchmarks print numbers and assert nothing. Every script measures the hydrovisor variant and
its baseline in the same run (interleaved where possible) because the machine is shared and
noisy: the *ratio* is the number to trust, absolute values move with the neighbours' load.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import psutil


def parse_args(description: str, extra: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Common command line: ``--quick`` for a fast smoke run (used by tests)."""
    parser = extra or argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few seconds")
    return parser.parse_args()


def header(title: str, quick: bool) -> None:
    """Print what ran where: the numbers are meaningless without the machine and its load."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    print(f"== {title} ({'quick' if quick else 'full'} mode)")
    print(
        f"   python {platform.python_version()} | {os.cpu_count()} cpus | "
        f"load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} | {time.strftime('%Y-%m-%d %H:%M:%S')}"
    )


# statistics ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (``p`` in 0..100) of unsorted ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    """Distribution of one latency sample set (same unit as the input)."""

    n: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float


def summarize(values: Sequence[float]) -> Summary:
    """p50/p90/p99/max/mean of ``values``."""
    return Summary(
        n=len(values),
        p50=percentile(values, 50),
        p90=percentile(values, 90),
        p99=percentile(values, 99),
        max=max(values) if values else math.nan,
        mean=statistics.fmean(values) if values else math.nan,
    )


def ratio(value: float, reference: float) -> float:
    """``value / reference``; NaN when the reference is zero or missing."""
    if not reference or math.isnan(reference) or math.isnan(value):
        return math.nan
    return value / reference


# the result table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the result table.

    ``ratio`` is value/target for absolute targets, or hydrovisor/baseline for relative ones;
    ``ok`` is ``None`` when the row has no target (informational).
    """

    metric: str
    value: str
    target: str = ""
    ratio: float | None = None
    ok: bool | None = None


def fmt_ms(seconds: float) -> str:
    """Seconds as milliseconds with 3 decimals."""
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.3f} ms"


def fmt_us(seconds: float) -> str:
    """Seconds as microseconds with 1 decimal."""
    return "n/a" if math.isnan(seconds) else f"{seconds * 1e6:.1f} us"


def fmt_rate(per_second: float, unit: str = "msg/s") -> str:
    """A rate with thousands separators."""
    return "n/a" if math.isnan(per_second) else f"{per_second:,.0f} {unit}"


def fmt_bytes(n: float) -> str:
    """Bytes in KiB/MiB."""
    if math.isnan(n):
        return "n/a"
    if abs(n) >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MiB"
    return f"{n / 1024:.1f} KiB"


def upper_bound(value: float, limit: float) -> tuple[float, bool]:
    """Ratio to a "lower is better" target and whether it is met."""
    r = ratio(value, limit)
    return r, (not math.isnan(r)) and r <= 1.0


def print_table(title: str, rows: Sequence[Row]) -> None:
    """Print ``rows`` as an aligned table: metric, value, target, ratio, verdict."""
    head = ("metric", "value", "target", "ratio", "")
    cells = [
        (
            r.metric,
            r.value,
            r.target,
            "" if r.ratio is None or math.isnan(r.ratio) else f"{r.ratio:.2f}",
            "" if r.ok is None else ("ok" if r.ok else "MISS"),
        )
        for r in rows
    ]
    widths = [max(len(str(c[i])) for c in [head, *cells]) for i in range(len(head))]
    line = "  ".join("-" * w for w in widths).rstrip()
    print(f"\n{title}")
    print(line)
    print("  ".join(str(h).ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    print(line)
    for c in cells:
        print("  ".join(str(v).ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
    print(line)
    sys.stdout.flush()


# environment ---------------------------------------------------------------------------------


def route_logs_to_devnull(level: int = logging.INFO) -> None:
    """Format every log record like production does (hydrovisor's text formatter, INFO) but
    write it to ``/dev/null``: the cost of logging stays in the measurement, the noise does not.
    """
    from hydrovisor.logs import TextFormatter  # noqa: PLC0415 - only when hydrovisor is measured

    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


@contextlib.contextmanager
def logging_disabled(disabled: bool) -> Iterator[None]:
    """Switch every log call off (``logging.disable``) inside the block when ``disabled``."""
    if not disabled:
        yield
        return
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def rss_bytes() -> int:
    """Resident set size of this process."""
    return int(psutil.Process().memory_info().rss)


def vms_bytes() -> int:
    """Virtual memory size of this process (thread stacks are reserved here, not in RSS)."""
    return int(psutil.Process().memory_info().vms)


def thread_count() -> int:
    """OS threads of this process."""
    return int(psutil.Process().num_threads())
