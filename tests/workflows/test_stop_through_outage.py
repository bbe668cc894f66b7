"""A stop that cannot go out (the database or the broker down) is sent again until it does: stopping outlasts
an outage instead of ending the workflow with the plant still running."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from hydrovisor.commands.submit import CommandSubmitter, SubmitRequest
from hydrovisor.store.errors import DatabaseUnavailable
from tests.helpers import http, wait_until
from tests.zone_plant import PlantZone

OUTAGE_STOPS = 4  # the first stops of the cancel fail as if PostgreSQL were down


def test_a_cancel_during_a_database_outage_stops_the_valve_once_it_is_back(
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
    record = zone.wait_end(wf_id, timeout=60)
    assert len(failed) == OUTAGE_STOPS
    assert record["status"] == "cancelled", json.dumps(record, indent=1)
    stops = [c for c in record["commands"] if c["role"] == "valve_clean_fill" and c["params"]["state"] == 0]
    assert [c["status"] for c in stops][-1] == "DONE" and len(stops) == OUTAGE_STOPS + 1
    assert zone.all_stopped()
