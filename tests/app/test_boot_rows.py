"""At start the whole fleet's node rows come from one query and each goes to its node actor's first
incarnation; a later incarnation loads its own row again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.app.conftest import Running
from tests.helpers import http, wait_until

NODES = [f"nd-boot-{n:02d}" for n in range(30)]


def _register(instance: Running) -> None:
    for path, body in (("/api/v1/greenhouses", {"uid": "gh-1", "name": "Main"}),
                       ("/api/v1/zones", {"greenhouse_uid": "gh-1", "uid": "zn-1", "name": "Lettuce"})):
        assert http("POST", instance.base_url + path, body=body).status == 201
    for n, uid in enumerate(NODES):
        reply = http("POST", instance.base_url + "/api/v1/nodes", body={
            "uid": uid, "hardware_id": f"esp32-{n:012d}", "type": "ph", "zone_uid": "zn-1", "node_secret": "s" * 32})
        assert reply.status == 201, reply.raw


def test_node_actors_start_on_the_rows_loaded_at_boot(start_app: Callable[..., Running]) -> None:
    first = start_app()
    _register(first)
    first.loop.run(first.app.stop())
    second = start_app()
    services = second.app.services
    assert services is not None
    assert len(services.devices.boot_rows) == 0  # every row went to its actor
    for uid in NODES:
        assert http("GET", second.base_url + f"/api/v1/actors/nodes/{uid}").json()["data"]["state"] == "running"
    # a node actor that starts again loads its row itself, and still knows its zone
    assert http("POST", second.base_url + f"/api/v1/actors/nodes/{NODES[0]}/restart").status == 202
    wait_until(lambda: http("GET", second.base_url + f"/api/v1/actors/nodes/{NODES[0]}").json()["data"][
        "restarts_total"] == 1)
    # the new incarnation answers at once and loads its row meanwhile: until the row is there a bind
    # or unbind is refused 409 node_not_loaded (retryable, by design: a node actor never waits for
    # the database), so ask again until it is loaded
    replies: list[Any] = []

    def unbound() -> bool:
        replies.append(http("POST", second.base_url + f"/api/v1/nodes/{NODES[0]}/unbind"))
        return not (replies[-1].status == 409 and replies[-1].json()["code"] == "node_not_loaded")

    wait_until(unbound, timeout=10, what="the restarted node actor's row")
    unbind = replies[-1]
    assert unbind.status in (200, 202), unbind.raw
