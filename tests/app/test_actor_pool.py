"""The worker pool as operators see it in a running instance: each actor's execution model in
``/api/v1/actors``, the ``hydrovisor_pool_*`` metrics, and a stuck turn as a ``pool_turn_stuck``
incident with the stuck worker's stack attributed to its actor.

The stuck actor is a pooled test actor started under ``/commands`` of the real tree; everything
else (pool, watchdog, incident store, HTTP) is the instance's own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from hydrovisor.config.settings import ActorSettings, SystemSettings
from hydrovisor.runtime.blocking import BlockingCallInPool
from hydrovisor.supervisors import ChildSpec, Execution, Restart, StartChild, SupervisedActor
from tests.app.conftest import Running
from tests.helpers import http, wait_until

PROBE = "/commands/pool-probe"


class Probe(SupervisedActor):
    """``("sleep", s)`` blocks its worker where no future sees it; ``("ask", path)`` makes a blocking ask."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, tuple) and message[0] == "sleep":
            sleep_in_handler(message[1])
        if isinstance(message, tuple) and message[0] == "ask":
            return self.ctx.system.ask(message[1], "ping")
        return message


def sleep_in_handler(seconds: float) -> None:
    """A frame with a name of its own, to find in the incident's stacks."""
    time.sleep(seconds)


def _metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


@pytest.fixture
def pooled(start_app: Callable[..., Running]) -> Running:
    """An instance with a short stuck threshold and cycle, and a pooled probe actor in its tree."""
    running = start_app(actors=ActorSettings(stuck_after_s=0.3), system=SystemSettings(cycle_interval=0.5))
    assert running.app.services is not None
    system = running.app.services.system
    spec = ChildSpec("pool-probe", Probe.start, execution=Execution.POOL, restart=Restart.TEMPORARY, hang_timeout=10.0)
    assert system.ask("/commands", StartChild(spec), timeout=10) == PROBE
    return running


def test_actors_api_shows_each_actors_execution_model(pooled: Running) -> None:
    tree = http("GET", pooled.base_url + "/api/v1/actors").json()["data"]
    assert tree["execution"] == "thread"

    def walk(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node, *(n for child in node["children"] for n in walk(child))]

    nodes = walk(tree)
    assert all(node["execution"] in ("thread", "pool") for node in nodes)
    assert all(node["execution"] == "thread" for node in nodes if node["kind"] == "supervisor")
    probe = http("GET", pooled.base_url + "/api/v1/actors" + PROBE).json()["data"]
    assert (probe["path"], probe["execution"], probe["state"]) == (PROBE, "pool", "running")


def test_metrics_show_the_pool_and_actors_by_execution_model(pooled: Running) -> None:
    assert pooled.app.services is not None
    for n in range(50):
        pooled.app.services.system.tell(PROBE, n)
    assert pooled.app.services.system.ask(PROBE, "last") == "last"  # behind the 50 tells

    def scraped() -> str | None:  # a turn's messages are counted when the turn ends, just after the reply
        text = http("GET", pooled.base_url + "/metrics").raw.decode()
        return text if _metric(text, "hydrovisor_pool_messages_total") >= 51 else None

    text = wait_until(scraped, what="the probe's turns to be counted")
    assert _metric(text, "hydrovisor_pool_workers", '{kind="core"}') == 4  # [actors] workers
    assert _metric(text, "hydrovisor_pool_workers", '{kind="spare"}') == 0
    assert _metric(text, "hydrovisor_pool_turns_total") >= 2  # at most 32 messages a turn
    assert _metric(text, "hydrovisor_pool_turn_seconds_bucket", '{le="+Inf"}') == _metric(
        text, "hydrovisor_pool_turns_total")
    for name in ("hydrovisor_pool_run_queue_depth", "hydrovisor_pool_busy_workers",
                 "hydrovisor_pool_blocking_compensated_total", "hydrovisor_pool_spare_cap_reached_total",
                 "hydrovisor_pool_stuck_turns_total"):
        _metric(text, name)
    assert _metric(text, "hydrovisor_actors", '{execution="pool",kind="worker",state="running"}') >= 1
    assert _metric(text, "hydrovisor_actors", '{execution="thread",kind="supervisor",state="running"}') >= 7


def test_a_stuck_turn_opens_an_incident_with_the_actors_stack_and_closes_when_it_ends(pooled: Running) -> None:
    base = pooled.base_url
    assert pooled.app.services is not None
    pooled.app.services.system.tell(PROBE, ("sleep", 2.0))

    def stuck_incidents() -> list[dict[str, Any]]:
        return list(http("GET", base + "/api/v1/system/incidents?kind=pool_turn_stuck").json()["data"])

    [summary] = wait_until(stuck_incidents, timeout=5, what="a pool_turn_stuck incident")
    assert summary["incident_id"].startswith("stuck-")
    assert summary["closed_at"] is None
    assert summary["owner"] == "pool_watchdog"
    assert summary["related"] == []  # no chaos fault running
    attributes = summary["attributes"]
    assert attributes["path"] == PROBE
    assert attributes["worker"].startswith("actors-")
    assert "sleep_in_handler" in attributes["stack"]
    assert PROBE in summary["reason"] and attributes["worker"] in summary["reason"]
    open_ids = [i["incident_id"] for i in http("GET", base + "/api/v1/system").json()["data"]["open_incidents"]]
    assert summary["incident_id"] in open_ids

    incident = http("GET", base + f"/api/v1/system/incidents/{summary['incident_id']}").json()["data"]
    assert incident["kind"] == "pool_turn_stuck"
    assert incident["dump"]["context"] == "POOL_TURN_STUCK"
    [worker] = [t for t in incident["dump"]["threads"] if t["actor"] == PROBE]
    assert worker["name"] == attributes["worker"]
    assert worker["turn_s"] >= 0.3
    assert "sleep_in_handler" in [frame["function"] for frame in worker["stack"]]

    metrics = http("GET", base + "/metrics").raw.decode()
    assert _metric(metrics, "hydrovisor_pool_stuck_turns_total") == 1

    # the turn ends: the next cycle closes the incident; a contained stuck turn is no error for the machine
    wait_until(lambda: stuck_incidents()[0]["closed_at"] is not None, timeout=10, what="the incident to close")
    system = http("GET", base + "/api/v1/system").json()["data"]
    assert system["state"] == "RUNNING"
    assert system["counters"]["errors_total"] == 0
    assert http("GET", base + "/api/v1/actors" + PROBE).json()["data"]["state"] == "running"


def test_a_blocking_call_in_a_pooled_handler_raises_in_tests(pooled: Running) -> None:
    """Tests run strict (development default, and HYDROVISOR_STRICT_BLOCKING=1 from tests/conftest.py)."""
    assert pooled.app.services is not None
    system = pooled.app.services.system
    assert system.pool.strict
    with pytest.raises(BlockingCallInPool):
        system.ask(PROBE, ("ask", "/system/state"), timeout=5)
