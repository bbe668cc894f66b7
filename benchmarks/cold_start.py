"""Cold start to ready of the real binary (embedded PostgreSQL + embedded broker + tree + HTTP).

Runs ``python -m hydrovisor run`` as a subprocess with a clean ``HYDROVISOR_*`` environment:
``HYDROVISOR_DATA_DIR`` (a fresh temporary directory), ``HYDROVISOR_DEV_MODE=1``, HTTP and MQTT on
127.0.0.1 with free ports. It polls ``GET /health/ready`` every 20 ms; the sample is the time
from spawn to the first 200. Then SIGTERM; shutdown is the time until the process exits, and the
exit code must be 0.

- first init: a fresh data directory (initdb + migrations).
- warm: the same data directory again (PostgreSQL already initialised, schema up to date).
Runs alternate (init, warm, init, warm ...), each init on its own new directory.

Where the time goes, measured in the same run as references:
- ``import hydrovisor.app`` in a fresh interpreter (the process's import cost);
- the embedded PostgreSQL alone (``EmbeddedPostgres(dir).start()``), fresh and warm, in a
  fresh interpreter.
The ``startup_ms`` of the log lines "hydrovisor ready" (time inside ``Hydrovisor.start``) and
"embedded postgres ready" are shown when found.

Target (issue): ready within 5 s.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from _stats import Row, header, parse_args, print_table, summarize, upper_bound

TARGET_READY = 5.0  # seconds
READY_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 60.0
POLL_INTERVAL = 0.02
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now (there is a small race; good enough here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(data_dir: Path, http_port: int, mqtt_port: int) -> dict[str, str]:
    """The parent's environment minus every ``HYDROVISOR_*`` variable, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDROVISOR_")}
    env.update(
        {
            "HYDROVISOR_DATA_DIR": str(data_dir),
            "HYDROVISOR_DEV_MODE": "1",
            "HYDROVISOR_HTTP_HOST": "127.0.0.1",
            "HYDROVISOR_HTTP_PORT": str(http_port),
            "HYDROVISOR_MQTT_HOST": "127.0.0.1",
            "HYDROVISOR_MQTT_PORT": str(mqtt_port),
        }
    )
    return env


@dataclass
class StartResult:
    """One start/stop cycle of the binary."""

    ready_s: float | None = None
    shutdown_s: float | None = None
    exit_code: int | None = None
    startup_ms: float | None = None
    pg_ms: float | None = None
    error: str | None = None


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _startup_ms(log: Path, event: str) -> float | None:
    """``startup_ms`` of the first log line containing ``event`` (text or JSON log format)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if event in line:
            match = re.search(r"startup_ms[\"']?\s*[:=]\s*([0-9.]+)", line)
            if match:
                return float(match.group(1))
    return None


def start_once(data_dir: Path, log_dir: Path, label: str) -> StartResult:
    """Spawn the binary, wait for ready, SIGTERM it, wait for the exit."""
    http_port, mqtt_port = free_port(), free_port()
    env = clean_env(data_dir, http_port, mqtt_port)
    url = f"http://127.0.0.1:{http_port}/health/ready"
    log = log_dir / f"{label}.log"
    result = StartResult()
    with log.open("wb") as out:
        began = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "hydrovisor", "run"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            while True:
                if proc.poll() is not None:
                    result.exit_code = proc.returncode
                    result.error = f"exited with {proc.returncode} before ready: {_tail(log)}"
                    return result
                if _ready(url):
                    result.ready_s = time.perf_counter() - began
                    break
                if time.perf_counter() - began > READY_TIMEOUT:
                    result.error = f"not ready within {READY_TIMEOUT:.0f}s: {_tail(log)}"
                    break
                time.sleep(POLL_INTERVAL)
            stop_began = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            try:
                result.exit_code = proc.wait(SHUTDOWN_TIMEOUT)
                result.shutdown_s = time.perf_counter() - stop_began
            except subprocess.TimeoutExpired:
                result.error = (result.error or "") + f" no exit within {SHUTDOWN_TIMEOUT:.0f}s of SIGTERM"
            if result.exit_code not in (0, None) and result.error is None:
                result.error = f"exit code {result.exit_code} after SIGTERM: {_tail(log)}"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    result.startup_ms = _startup_ms(log, "hydrovisor ready")
    result.pg_ms = _startup_ms(log, "embedded postgres ready")
    return result


def reference_import() -> float | None:
    """Seconds for a fresh interpreter to ``import hydrovisor.app`` and exit."""
    began = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", "import hydrovisor.app"], cwd=ROOT, capture_output=True, check=False
    )
    return time.perf_counter() - began if proc.returncode == 0 else None


_PG_SNIPPET = """
import sys, time
from pathlib import Path
t0 = time.perf_counter()
from hydrovisor.store.embedded_pg import EmbeddedPostgres
pg = EmbeddedPostgres(Path(sys.argv[1]))
t1 = time.perf_counter()
pg.start()
t2 = time.perf_counter()
pg.stop()
t3 = time.perf_counter()
print(f"{t1 - t0} {t2 - t1} {t3 - t2}")
"""


def reference_pg(data_dir: Path) -> tuple[float, float] | str:
    """(start, stop) seconds of the embedded PostgreSQL alone, or the error text."""
    proc = subprocess.run(
        [sys.executable, "-c", _PG_SNIPPET, str(data_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        return " | ".join(proc.stderr.strip().splitlines()[-3:])
    _, start, stop = (float(x) for x in proc.stdout.split()[-3:])
    return start, stop


def run(quick: bool, keep: bool) -> None:
    runs = 1 if quick else 3
    header(f"cold start to ready: {runs} first-init + {runs} warm runs of `hydrovisor run`", quick)
    base = Path(tempfile.mkdtemp(prefix="hv-coldstart-"))
    logs = base / "logs"
    logs.mkdir()
    print(f"   data and logs under {base}{'' if keep else ' (removed at the end)'}")
    results: dict[str, list[StartResult]] = {"first init": [], "warm": []}
    imports: list[float] = []
    pg: dict[str, list[tuple[float, float] | str]] = {"fresh": [], "warm": []}
    try:
        for i in range(runs):
            data = base / f"data-{i}"
            results["first init"].append(start_once(data, logs, f"init-{i}"))
            results["warm"].append(start_once(data, logs, f"warm-{i}"))
            t = reference_import()
            if t is not None:
                imports.append(t)
            pg_dir = base / f"pg-only-{i}"
            pg["fresh"].append(reference_pg(pg_dir))
            pg["warm"].append(reference_pg(pg_dir))
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)

    rows: list[Row] = []
    for kind, items in results.items():
        ok = [r for r in items if r.error is None and r.ready_s is not None]
        for n, r in enumerate(items):
            if r.error is not None:
                rows.append(Row(f"{kind} run {n + 1}: FAILED", r.error[:220]))
        if not ok:
            continue
        ready = summarize([r.ready_s for r in ok if r.ready_s is not None])
        worst, met = upper_bound(ready.max, TARGET_READY)
        rows.append(
            Row(
                f"{kind}: spawn -> /health/ready 200 (max of {len(ok)})",
                f"{ready.max:.2f} s",
                f"<= {TARGET_READY:.0f} s",
                worst,
                met,
            )
        )
        rows.append(Row(f"{kind}: ready, each run", " ".join(f"{r.ready_s:.2f}" for r in ok) + " s"))
        inside = [r.startup_ms for r in ok if r.startup_ms is not None]
        if inside:
            rows.append(
                Row(
                    f"{kind}: inside Hydrovisor.start (log startup_ms)",
                    " ".join(f"{x / 1000:.2f}" for x in inside) + " s",
                )
            )
        pg_inside = [r.pg_ms for r in ok if r.pg_ms is not None]
        if pg_inside:
            rows.append(
                Row(
                    f"{kind}:   of which embedded PostgreSQL (log startup_ms)",
                    " ".join(f"{x / 1000:.2f}" for x in pg_inside) + " s",
                )
            )
        shut = [r.shutdown_s for r in ok if r.shutdown_s is not None]
        if shut:
            rows.append(Row(f"{kind}: SIGTERM -> exit 0", " ".join(f"{x:.2f}" for x in shut) + " s"))
    if imports:
        rows.append(
            Row(
                "reference: fresh interpreter + import hydrovisor.app",
                " ".join(f"{x:.2f}" for x in imports) + " s",
            )
        )
    for kind, items in pg.items():
        good = [x for x in items if isinstance(x, tuple)]
        bad = [x for x in items if isinstance(x, str)]
        if good:
            rows.append(
                Row(
                    f"reference: embedded PostgreSQL alone, {kind}: start / stop",
                    " ".join(f"{a:.2f}/{b:.2f}" for a, b in good) + " s",
                )
            )
        for err in bad:
            rows.append(Row(f"reference: embedded PostgreSQL alone, {kind}: FAILED", err[:220]))
    print_table("cold start of `python -m hydrovisor run` (embedded PostgreSQL, dev mode)", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the data directories and logs")
    args = parse_args(__doc__ or "", parser)
    run(args.quick, args.keep)
    sys.exit(0)


if __name__ == "__main__":
    main()
