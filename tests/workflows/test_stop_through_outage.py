"""A stop that cannot be stored (the database down) goes out at once without its row, and is sent again through
the durable path until it is confirmed: stopping outlasts an outage instead of waiting for it to end."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from hydrovisor.commands.submit import CommandSubmitter, SubmitRequest
from hydrovisor.config.settings import DatabaseSettings
from hydrovisor.store.errors import DatabaseUnavailable
from tests.app.conftest import Running
from tests.helpers import http, wait_until
from tests.workflows.conftest import SCALE
from tests.zone_plant import SMALL_PLANT, PlantZone

OUTAGE_STOPS = 4  # the first stops of the cancel fail as if PostgreSQL were down


def test_a_cancel_during_a_database_outage_closes_the_valve_at_once_and_confirms_it_once_the_database_is_back(
        plant_zone: Callable[..., PlantZone], monkeypatch: pytest.MonkeyPatch) -> None:
    zone = plant_zone()
    reply = zone.start_workflow("two_tank_startup")
    assert reply.status == 202, reply.raw
    wf_id = reply.json()["data"]["id"]
    zone.wait_stage(wf_id, "clean_fill")
    wait_until(lambda: "valve_clean_fill" in zone.physics.valves, what="the clean fill running")

    real_submit = CommandSubmitter.submit
    failed: list[str] = []

    async def submit(self: CommandSubmitter, body: SubmitRequest) -> Any:
        if body.cmd == "set_relay" and body.params.get("state") == 0 and len(failed) < OUTAGE_STOPS:
            failed.append(body.cmd_id or "")
            raise DatabaseUnavailable("injected: the database is down")
        return await real_submit(self, body)

    monkeypatch.setattr(CommandSubmitter, "submit", submit)
    cancel = http("POST", f"{zone.base_url}/api/v1/zones/zn-1/workflows/{wf_id}/cancel")
    assert cancel.status == 202, cancel.raw
    # published without its row on the first failure: closed while the "outage" still lasts
    wait_until(lambda: "valve_clean_fill" not in zone.physics.valves, what="the valve closed during the outage")
    assert len(failed) < OUTAGE_STOPS
    record = zone.wait_end(wf_id, timeout=60)
    assert len(failed) == OUTAGE_STOPS
    assert record["status"] == "cancelled", json.dumps(record, indent=1)
    stops = [c for c in record["commands"] if c["role"] == "valve_clean_fill" and c["params"]["state"] == 0]
    # the durable stop that finally went out found the valve closed: NO_EFFECT, confirmed by the probe after it
    assert [c["status"] for c in stops][-1] in ("DONE", "NO_EFFECT") and len(stops) == OUTAGE_STOPS + 1
    assert zone.all_stopped()


def test_a_pump_whose_tank_runs_dry_during_a_real_database_outage_is_stopped_before_the_outage_ends(
        start_app: Callable[..., Running]) -> None:
    # its own embedded PostgreSQL, stopped for real; a solution tank far larger than the clean tank's water,
    # so the clean tank runs dry under the pump a few seconds into the solution fill
    instance = start_app(time_scale=SCALE, chaos_enabled=True,
                         database=DatabaseSettings(url=None, health_interval=0.3))
    embedded = instance.app._embedded
    assert embedded is not None
    zone = PlantZone(instance, plant=msgspec.structs.replace(SMALL_PLANT, solution_capacity_l=200.0,
                                                             pump_flow_lpm=30.0))
    zone.start()
    try:
        reply = zone.start_workflow("two_tank_startup")
        assert reply.status == 202, reply.raw
        wf_id = reply.json()["data"]["id"]
        zone.wait_stage(wf_id, "solution_fill", timeout=60)
        wait_until(lambda: zone.physics.pumps, timeout=20, what="the pump running in the solution fill")
        embedded.stop()
        try:
            # the stop cannot be stored, so it goes out without its row: the pump stops while PostgreSQL is
            # still down (before: it ran dry until the database came back). Which stop comes first depends on
            # the outage: the tank running dry, or the node falling silent for the server (its messages wait
            # for storage, so its socket is not read: the server cannot see the tank and fails closed)
            wait_until(lambda: not zone.physics.pumps, timeout=30, what="the pump stopped during the outage")
            assert not embedded_running(instance)
        finally:
            embedded.start()
        record = zone.wait_end(wf_id, timeout=150)
        assert record["status"] == "failed" and record["reason_code"] in (
            "solution_fill_source_empty", "pump_node_silent", "solution_fill_stop_not_confirmed"), \
            json.dumps(record, indent=1)
        assert {"solution_fill_source_empty", "pump_node_silent"} & {
            e["reason_code"] for e in zone.events() if e["type"] in ("WORKFLOW_DECISION", "WORKFLOW_ENDED")}
        assert zone.all_stopped()
        metrics = http("GET", instance.base_url + "/metrics").raw.decode()
        assert 'hydrovisor_outage_stops_total{outcome="published"}' in metrics
    finally:
        zone.stop()


def embedded_running(instance: Running) -> bool:
    """Whether the instance's embedded PostgreSQL answers (the outage really lasted)."""
    reply = http("GET", instance.base_url + "/health/ready")
    return reply.status == 200
