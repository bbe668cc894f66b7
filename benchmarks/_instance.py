"""Shared helpers of the benchmarks that run a real hydrovisor instance in their own process.

``hydrovisor_instance`` starts ``Hydrovisor(settings)`` on a ``LoopThread`` (dev mode, embedded
PostgreSQL in the given data dir, HTTP and MQTT on 127.0.0.1 with ephemeral ports) and yields an
``Instance``; a script subclasses ``Instance`` for what only it needs. Around it: one HTTP exchange,
``/metrics`` scraped into a dict, and the CPU time of the processes involved (this one, the
embedded PostgreSQL).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil

# HTTP and /metrics ---------------------------------------------------------------------------


def http_json(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> tuple[int, Any]:
    """One HTTP exchange; returns (status, decoded body) — the error body as text on an HTTP error."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")


def post_created(url: str, body: dict[str, Any]) -> None:
    """``POST`` ``body`` to ``url``; raise unless the answer is ``201 Created``."""
    status, reply = http_json("POST", url, body)
    if status != 201:
        raise RuntimeError(f"POST {url} -> {status} {reply}")


def register(base_url: str, gh: str, zone: str, nodes: Iterable[dict[str, Any]]) -> float:
    """Create greenhouse ``gh`` and its zone ``zone``, then every node of ``nodes`` (bodies of
    ``POST /api/v1/nodes``, four requests at a time) over HTTP; returns the seconds it took."""
    began = time.monotonic()
    post_created(base_url + "/api/v1/greenhouses", {"uid": gh, "name": "bench"})
    post_created(base_url + "/api/v1/zones", {"greenhouse_uid": gh, "uid": zone, "name": "bench"})
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda body: post_created(base_url + "/api/v1/nodes", body), nodes))
    return time.monotonic() - began


def scrape(base_url: str) -> dict[str, float]:
    """``/metrics`` as ``{"name{label=value,...}": value}`` (labels sorted), the way it is served."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    with urllib.request.urlopen(base_url + "/metrics", timeout=30) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = float(sample.value)
    return values


def metric_sum(values: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` (in ``scrape``'s result) whose labels include ``labels``."""
    total = 0.0
    for key, value in values.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if labels:
            have = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if part)
            if any(have.get(k) != v for k, v in labels.items()):
                continue
        total += value
    return total


# processes -----------------------------------------------------------------------------------


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """user + system CPU seconds of ``procs`` (those that are gone count 0)."""
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def postgres_procs(data_dir: Path | None) -> list[psutil.Process]:
    """The embedded PostgreSQL postmaster (found by its data dir on the command line) and its children;
    none when ``data_dir`` is ``None`` or no such postmaster runs."""
    if data_dir is None:
        return []
    needle = str(data_dir)
    for p in psutil.process_iter(["name", "cmdline"]):
        cmdline = p.info.get("cmdline") or []
        if "postgres" in (p.info.get("name") or "") and any(needle in part for part in cmdline):
            with contextlib.suppress(psutil.Error):
                return [p, *p.children(recursive=True)]
    return []


# the instance under test ---------------------------------------------------------------------


@dataclass
class Instance:
    """The hydrovisor instance under test, running on ``loop`` (a ``LoopThread``) in this process.

    ``data_dir`` holds its embedded PostgreSQL (see ``postgres_procs``); ``mqtt_port`` is its
    embedded broker's. Subclass it for a script's own queries and probes.
    """

    app: Any
    loop: Any
    base_url: str
    mqtt_port: int
    data_dir: Path

    def sql(self, query: str, *args: Any) -> Any:
        """One value, queried through the instance's pool on its loop."""
        return self.loop.run(self._query(query, args, one=True), timeout=120)

    async def _query(self, query: str, args: tuple[Any, ...], *, one: bool) -> Any:
        """``fetchval`` (``one``) or ``fetch`` on the instance's pool; run it on ``loop``."""
        assert self.app.services is not None
        pool = self.app.services.db.pool
        return await (pool.fetchval(query, *args) if one else pool.fetch(query, *args))


InstanceT = TypeVar("InstanceT", bound=Instance)


@contextlib.contextmanager
def hydrovisor_instance(data_dir: Path, kind: type[InstanceT], *, max_zones: int | None = None,
                        max_nodes: int | None = None) -> Iterator[InstanceT]:
    """Start a real instance in this process (like ``tests/app/conftest.py``), wait until
    ``/health/ready`` answers 200 and yield it as a ``kind``; stop it after. ``max_zones`` /
    ``max_nodes`` raise the supervision caps (``[supervision]``) for fleets beyond the defaults."""
    from hydrovisor.app import Hydrovisor  # noqa: PLC0415 - measured code, imported after logging setup
    from hydrovisor.config import Settings  # noqa: PLC0415
    from hydrovisor.config.settings import (  # noqa: PLC0415
        DatabaseSettings,
        HttpSettings,
        MqttSettings,
        SupervisionSettings,
    )
    from hydrovisor.runtime import gc_tuning  # noqa: PLC0415
    from hydrovisor.runtime.loop_thread import LoopThread  # noqa: PLC0415

    gc_tuning.install()  # as ``hydrovisor run`` (Hydrovisor.serve) does: slow full collections freeze the heap
    settings = Settings(
        data_dir=str(data_dir), dev_mode=True, http=HttpSettings(host="127.0.0.1", port=0),
        mqtt=MqttSettings(host="127.0.0.1", port=0), database=DatabaseSettings(url=None), shutdown_timeout=30.0,
        supervision=SupervisionSettings(max_zones=max(max_zones or 0, SupervisionSettings().max_zones),
                                        max_nodes=max(max_nodes or 0, SupervisionSettings().max_nodes)),
    )
    loop = LoopThread()
    loop.__enter__()
    app = Hydrovisor(settings)
    try:
        loop.run(app.start(), timeout=120)
        gc_tuning.freeze()  # as after boot in ``hydrovisor run``
        assert app.services is not None
        instance = kind(app, loop, f"http://127.0.0.1:{app.http_port}", loop.run(broker_port(app.services.broker)),
                        data_dir)
        deadline = time.monotonic() + 30
        while http_json("GET", instance.base_url + "/health/ready")[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("hydrovisor did not become ready")
            time.sleep(0.05)
        yield instance
    finally:
        loop.run(app.stop(), timeout=120)
        loop.close()


async def broker_port(broker: Any) -> int:
    """The port an (embedded) broker listens on; run it on the broker's loop."""
    return int(broker.port)


# child processes ---------------------------------------------------------------------------


class JsonWorker:
    """A child process (``script`` with ``args``) driven over stdin/stdout as JSON lines; its stderr goes
    to ``log_path``. ``progress`` lines (``connected``, ``elapsed``) are printed while waiting."""

    def __init__(self, script: str, args: list[str], log_path: Path) -> None:
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([sys.executable, script, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        self.ps = psutil.Process(self.proc.pid)

    def read(self, event: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker ended (rc={self.proc.poll()}); see {self._log.name}")
            data: dict[str, Any] = json.loads(line)
            if data.get("event") == event:
                return data
            if data.get("event") == "progress":
                print(f"   ... {data['connected']} nodes connected after {data['elapsed']:.0f} s")
                sys.stdout.flush()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self, timeout: float = 60.0) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
