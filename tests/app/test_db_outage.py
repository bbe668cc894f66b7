"""PostgreSQL stopped for 10 s during ingest: no 2xx while nothing can be stored, every acknowledged
sample is stored after recovery, exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from hydrovisor.config.settings import DatabaseSettings
from hydrovisor.store.repos import telemetry
from tests.app.conftest import Running
from tests.app.test_fleet_and_ingest import make_node, make_zone
from tests.helpers import http, wait_until

OUTAGE_S = 10.0


@pytest.mark.slow
def test_ingest_during_a_database_outage_is_acknowledged_only_once_stored(start_app: Callable[..., Running]) -> None:
    instance = start_app(database=DatabaseSettings(url=None, health_interval=0.3))  # its own embedded server
    embedded = instance.app._embedded
    assert embedded is not None
    make_zone(instance)
    make_node(instance)
    accepted = 0
    acknowledged_at: list[float] = []
    stop = threading.Event()

    def ingest() -> None:
        nonlocal accepted
        n = 0
        while not stop.is_set():
            batch = [{"node_uid": "nd-ph-1", "channel": "ph_sensor", "metric_type": "PH", "value": 6.0 + (n + i) / 1e6,
                      "ts": time.time() - 1 + i / 1e3} for i in range(50)]
            n += 50
            while True:  # a 503 says "not confirmed stored": the same samples again (stored once)
                reply = http("POST", instance.base_url + "/api/v1/ingest/telemetry", body={"samples": batch},
                             timeout=60)
                if reply.status == 202:
                    break
                assert reply.status == 503, reply.status
                time.sleep(0.5)
            accepted += reply.json()["data"]["count"]
            acknowledged_at.append(time.monotonic())
            time.sleep(0.06)  # ~16 requests/s: under the per-client rate limit

    worker = threading.Thread(target=ingest)
    worker.start()
    try:
        time.sleep(1.0)
        embedded.stop()  # a real outage: the server process is gone
        stopped_at = time.monotonic()
        wait_until(lambda: http("GET", instance.base_url + "/health/ready").status == 503, timeout=10)
        # a node actor restarted during the outage comes up on the registry view, no escalation
        began = time.monotonic()
        assert http("POST", instance.base_url + "/api/v1/actors/nodes/nd-ph-1/restart").status == 202
        actor = http("GET", instance.base_url + "/api/v1/actors/nodes/nd-ph-1").json()["data"]
        assert actor["state"] == "running"
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - began)))
        restarted_at = time.monotonic()
        embedded.start()
        wait_until(lambda: http("GET", instance.base_url + "/health/ready").status == 200, timeout=30)
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join()
    # a write already committing when the server went away may still be answered just after
    during = [t for t in acknowledged_at if stopped_at + 1.0 < t < restarted_at]
    assert not during, f"{len(during)} requests acknowledged while nothing could be stored"
    assert accepted > 500

    def stored() -> int:
        assert instance.app.services is not None
        db = instance.app.services.db
        count: int = instance.loop.run(_count(db))
        return count

    async def _count(db: Any) -> int:
        return await telemetry.count_samples(db.pool)

    wait_until(lambda: stored() >= accepted, timeout=60, interval=0.2)
    time.sleep(0.5)
    assert stored() == accepted
    metrics = http("GET", instance.base_url + "/metrics").raw.decode()
    assert "hydrovisor_telemetry_write_failures_total" in metrics
    failures = [line for line in metrics.splitlines() if line.startswith("hydrovisor_telemetry_write_failures_total ")]
    assert float(failures[0].split()[1]) >= 1
    alerts = http("GET", instance.base_url + "/api/v1/alerts?status=RESOLVED").json()["data"]
    assert "infra_db_unreachable" in {a["code"] for a in alerts}
