"""Status notifications end to end: a real webhook receiver, retries, the DLQ and its HTTP API."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import msgspec
import pytest
from aiohttp import web

from hydrovisor.config.loader import ConfigError, load_settings, public_view
from hydrovisor.config.settings import DatabaseSettings
from hydrovisor.notifications import DeliveryFailed, DeliveryPolicy, WebhookSender, redact, wiring
from hydrovisor.protocol import CommandStatus
from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.store.repos import commands
from hydrovisor.store.repos.commands import NewCommand
from hydrovisor.store.repos.notifications import Notification
from tests.app.conftest import Running
from tests.app.irrig_node import Node
from tests.helpers import free_port, http, wait_until

OPERATOR = "operator-token-0123456789"
ADMIN = "admin-token-0123456789abc"
FAST = DeliveryPolicy(base=0.02, cap=0.1, max_attempts=3, timeout=1.0, poll_interval=0.05, counts_interval=0.1)


class Receiver:
    """A webhook consumer on 127.0.0.1, run on the instance's loop; records every call."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.status = 204  # what it answers; set 500 to make it fail
        self.calls: list[tuple[dict[str, Any], dict[str, str]]] = []
        self.before_answer: Callable[[], Awaitable[None]] | None = None  # runs before each answer
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=s3cret"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        self.calls.append((await request.json(), dict(request.headers)))
        if self.before_answer is not None:
            await self.before_answer()
        return web.Response(status=self.status)

    def accepted(self) -> list[dict[str, Any]]:
        """Bodies it answered 2xx to (status is read at check time: only use while it is stable)."""
        return [body for body, _ in self.calls] if self.status < 300 else []

    def statuses(self, cmd_id: str) -> list[str]:
        return [body["payload"]["status"] for body, _ in self.calls if body["payload"].get("cmd_id") == cmd_id]


@pytest.fixture(autouse=True)
def fast_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wiring, "DEFAULT_POLICY", FAST)


@pytest.fixture
def hooked(start_app: Callable[..., Running]) -> Iterator[tuple[Running, Receiver]]:
    """An instance whose only webhook is a live receiver."""
    receiver = Receiver()
    instance = start_app(webhook_urls=[receiver.url])
    instance.loop.run(receiver.start())
    yield instance, receiver
    instance.loop.run(receiver.stop())


def change_status(instance: Running, cmd_id: str) -> None:
    """Two applied status changes (SENT, DONE): two notifications queued with them."""
    services = instance.app.services
    assert services is not None

    async def go() -> None:
        pool = services.db.pool
        await commands.insert_queued(pool, NewCommand(
            cmd_id=cmd_id, zone_uid="zn-1", node_uid="nd-1", channel="pump_main", cmd="run_pump", params={},
            source="api", trace_id=None, timeout_s=30))
        await commands.transition(pool, cmd_id, CommandStatus.SENT, source="server")
        await commands.transition(pool, cmd_id, CommandStatus.DONE, source="device")

    instance.loop.run(go())


def dlq(instance: Running, token: str | None = None, query: str = "") -> dict[str, Any]:
    reply = http("GET", instance.base_url + "/api/v1/dlq" + query, token=token)
    assert reply.status == 200, reply.raw
    data: dict[str, Any] = reply.json()["data"]
    return data


def metric(instance: Running, name: str) -> float:
    for line in http("GET", instance.base_url + "/metrics").raw.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} not exported")


def test_command_status_changes_reach_the_webhook_end_to_end(hooked: tuple[Running, Receiver]) -> None:
    instance, receiver = hooked
    node = Node(instance, "nd-irr-000000000001")
    node.start()
    try:
        reply = node.command(cmd_id="hook-1")
        assert reply.status == 202, reply.raw
        assert node.get("hook-1", wait=10)["status"] == "DONE"
        wait_until(lambda: receiver.statuses("hook-1") == ["SENT", "ACK", "DONE"], what="three statuses in order")
    finally:
        node.stop()
    body, headers = next((b, h) for b, h in receiver.calls if b["payload"]["status"] == "DONE")
    assert set(body) == {"kind", "id", "payload"}
    assert body["kind"] == "command_status"
    assert body["payload"] == {"cmd_id": "hook-1", "status": "DONE", "node_uid": "nd-irr-000000000001",
                               "zone_uid": "zn-1", "cmd": "run_pump", "error_code": None, "source": "device"}
    assert headers["X-Hydrovisor-Notification-Id"] == str(body["id"])
    assert headers["X-Hydrovisor-Attempt"] == "1"
    assert headers["Content-Type"] == "application/json"
    wait_until(lambda: dlq(instance)["pending"] == 0, what="pending queue drained")
    wait_until(lambda: metric(instance, "hydrovisor_notifications_delivered_total") >= 3)
    assert metric(instance, "hydrovisor_notifications_failed_total") == 0
    assert dlq(instance)["total"] == 0


def test_failing_webhook_retries_then_dead_letters_and_replay_delivers(hooked: tuple[Running, Receiver]) -> None:
    instance, receiver = hooked
    receiver.status = 500
    change_status(instance, "fail-1")
    listing = wait_until(lambda: (d := dlq(instance))["total"] == 2 and d, what="both notifications dead-lettered")
    assert listing["pending"] == 0
    assert receiver.statuses("fail-1").count("SENT") == 3  # max_attempts, then the DLQ
    assert receiver.statuses("fail-1").count("DONE") == 3
    attempts = sorted(h["X-Hydrovisor-Attempt"] for b, h in receiver.calls if b["payload"]["status"] == "SENT")
    assert attempts == ["1", "2", "3"]
    items = listing["items"]
    assert [i["payload"]["status"] for i in items] in (["DONE", "SENT"], ["SENT", "DONE"])
    for item in items:
        assert item["attempts"] == 3
        assert item["kind"] == "command_status"
        assert "HTTP 500" in item["last_error"]
        assert "127.0.0.1" in item["last_error"]
        assert "s3cret" not in item["last_error"]  # the URL's query (a secret) never leaks
    wait_until(lambda: metric(instance, "hydrovisor_notifications_dlq") == 2)
    assert metric(instance, "hydrovisor_notifications_failed_total") == 6
    assert metric(instance, "hydrovisor_notifications_dead_lettered_total") == 2

    receiver.status = 200
    before = len(receiver.calls)
    for item in items:
        reply = http("POST", instance.base_url + f"/api/v1/dlq/{item['id']}/replay")
        assert reply.status == 200, reply.raw
        assert reply.json()["data"] == {"dlq_id": item["id"], "notification_id": item["pending_id"],
                                        "status": "pending"}
    wait_until(lambda: len(receiver.calls) == before + 2, what="both replayed notifications delivered")
    redelivered = [(b["id"], h["X-Hydrovisor-Attempt"]) for b, h in receiver.calls[before:]]
    assert sorted(redelivered) == sorted((i["pending_id"], "1") for i in items)  # same ids, attempts reset
    wait_until(lambda: (d := dlq(instance))["total"] == 0 and d["pending"] == 0, what="both queues empty")
    wait_until(lambda: metric(instance, "hydrovisor_notifications_dlq") == 0)
    assert metric(instance, "hydrovisor_notifications_delivered_total") == 2
    again = http("POST", instance.base_url + f"/api/v1/dlq/{items[0]['id']}/replay")
    assert (again.status, again.json()["code"]) == (404, "dlq_entry_not_found")


def test_unreachable_webhook_dead_letters_and_delete_purges(start_app: Callable[..., Running]) -> None:
    instance = start_app(webhook_urls=[f"http://127.0.0.1:{free_port()}/nobody-listens"])
    change_status(instance, "gone-1")
    items = wait_until(lambda: (d := dlq(instance))["total"] == 2 and d["items"], what="dead-lettered")
    assert all("cannot connect" in i["last_error"] for i in items)
    first, second = items
    reply = http("DELETE", instance.base_url + f"/api/v1/dlq/{first['id']}")
    assert reply.status == 200, reply.raw
    assert reply.json()["data"] == {"dlq_id": first["id"], "purged": True}
    for method, path in (("DELETE", ""), ("POST", "/replay")):
        missing = http(method, instance.base_url + f"/api/v1/dlq/{first['id']}{path}")
        assert (missing.status, missing.json()["code"]) == (404, "dlq_entry_not_found")
    bad = http("DELETE", instance.base_url + "/api/v1/dlq/not-a-number")
    assert (bad.status, bad.json()["code"]) == (400, "invalid_dlq_id")
    listing = dlq(instance)
    assert [i["id"] for i in listing["items"]] == [second["id"]]
    assert (listing["total"], listing["pending"]) == (1, 0)  # purged: in no queue at all


def test_dlq_listing_pages(start_app: Callable[..., Running]) -> None:
    instance = start_app(webhook_urls=[f"http://127.0.0.1:{free_port()}/nobody-listens"])
    change_status(instance, "page-1")
    change_status(instance, "page-2")
    wait_until(lambda: dlq(instance)["total"] == 4, what="four dead letters")
    first = dlq(instance, query="?limit=3")
    assert len(first["items"]) == 3 and first["next_before"] == first["items"][-1]["id"]
    rest = dlq(instance, query=f"?limit=3&before={first['next_before']}")
    assert len(rest["items"]) == 1 and rest["next_before"] is None
    ids = [i["id"] for i in first["items"] + rest["items"]]
    assert ids == sorted(ids, reverse=True)
    bad = http("GET", instance.base_url + "/api/v1/dlq?limit=0")
    assert (bad.status, bad.json()["code"]) == (400, "invalid_parameter")


def test_roles_operator_lists_admin_replays_and_purges(start_app: Callable[..., Running]) -> None:
    instance = start_app(api_token=OPERATOR, admin_token=ADMIN,
                         webhook_urls=[f"http://127.0.0.1:{free_port()}/nobody-listens"])
    change_status(instance, "role-1")
    items = wait_until(lambda: (d := dlq(instance, token=OPERATOR))["total"] == 2 and d["items"])
    assert http("GET", instance.base_url + "/api/v1/dlq").status == 401
    for method, path in (("POST", f"/api/v1/dlq/{items[0]['id']}/replay"), ("DELETE", f"/api/v1/dlq/{items[0]['id']}")):
        denied = http(method, instance.base_url + path, token=OPERATOR)
        assert (denied.status, denied.json()["code"]) == (403, "forbidden"), path
    assert dlq(instance, token=ADMIN)["total"] == 2  # nothing changed
    assert http("DELETE", instance.base_url + f"/api/v1/dlq/{items[0]['id']}", token=ADMIN).status == 200
    assert http("POST", instance.base_url + f"/api/v1/dlq/{items[1]['id']}/replay", token=ADMIN).status == 200


def test_without_webhooks_notifications_are_acknowledged(instance: Running) -> None:
    change_status(instance, "quiet-1")
    wait_until(lambda: metric(instance, "hydrovisor_notifications_unrouted_total") == 2, what="acknowledged")
    assert dlq(instance) == {"items": [], "total": 0, "pending": 0, "next_before": None}
    assert metric(instance, "hydrovisor_notifications_delivered_total") == 0
    node = http("GET", instance.base_url + "/api/v1/actors/store/notifier").json()["data"]
    assert (node["state"], node["restarts_total"]) == ("running", 0)


def test_notifier_rides_out_a_crash_and_delivers_after_restart(hooked: tuple[Running, Receiver]) -> None:
    instance, receiver = hooked
    assert http("POST", instance.base_url + "/api/v1/actors/store/notifier/restart").status == 202
    change_status(instance, "crash-1")
    wait_until(lambda: receiver.statuses("crash-1") == ["SENT", "DONE"], what="delivered by the new incarnation")


@pytest.mark.slow
def test_database_outage_mid_delivery_loses_nothing(start_app: Callable[..., Running],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL dies between the webhook's 2xx and the delete: the notifier keeps running, and
    once the database is back and the lease ended, the notification is delivered again (at least
    once, same id) and leaves the queue."""
    monkeypatch.setattr(wiring, "DEFAULT_POLICY", msgspec.structs.replace(FAST, batch_size=1, lease_margin=1.0))
    receiver = Receiver()
    instance = start_app(webhook_urls=[receiver.url], database=DatabaseSettings(url=None, health_interval=0.3))
    embedded = instance.app._embedded
    assert embedded is not None
    stopped = threading.Event()

    async def kill_the_database_once() -> None:
        if not stopped.is_set():
            stopped.set()
            await asyncio.to_thread(embedded.stop)  # a real outage, before the notifier hears 2xx

    receiver.before_answer = kill_the_database_once
    instance.loop.run(receiver.start())
    try:
        change_status(instance, "outage-1")
        wait_until(lambda: http("GET", instance.base_url + "/health/ready").status == 503, timeout=15)
        time.sleep(1.0)  # several failed claims
        embedded.start()
        wait_until(lambda: http("GET", instance.base_url + "/health/ready").status == 200, timeout=30)
        wait_until(lambda: (d := dlq(instance))["pending"] == 0 and d["total"] == 0, timeout=20, what="drained")
        # the outage itself is an alert (infra_db_unreachable), announced too: only the command's count here
        ids = [body["id"] for body, _ in receiver.calls if body["kind"] == "command_status"]
        assert receiver.statuses("outage-1").count("DONE") >= 1
        assert receiver.statuses("outage-1").count("SENT") == 2  # the one whose delete was lost: again
        assert len(set(ids)) == 2
        actor = http("GET", instance.base_url + "/api/v1/actors/store/notifier").json()["data"]
        assert (actor["state"], actor["restarts_total"]) == ("running", 0)
    finally:
        instance.loop.run(receiver.stop())


# --- units: policy, sender, configuration --------------------------------------------------------

def test_backoff_is_capped_power_of_two_with_ten_percent_jitter() -> None:
    policy = DeliveryPolicy()
    assert [round(policy.delay(n, lambda: 0.5)) for n in range(1, 11)] == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert policy.delay(3, lambda: 0.0) == pytest.approx(8 * 0.9)
    assert policy.delay(3, lambda: 1.0) == pytest.approx(8 * 1.1)
    assert all(270 <= policy.delay(50, random.random) <= 330 for _ in range(200))
    assert not policy.exhausted(9) and policy.exhausted(10)
    with pytest.raises(ValueError, match="max_attempts"):
        DeliveryPolicy(max_attempts=0)


def test_sender_requires_every_url_and_names_failures_without_secrets() -> None:
    good, bad = Receiver(), Receiver()
    bad.status = 503
    note = Notification(id=7, kind="command_status", payload={"cmd_id": "c"}, attempts=2, last_error=None,
                        created_at=0.0, lease_until=dt.datetime.now(dt.UTC))
    with LoopThread() as loop:
        loop.run(good.start())
        loop.run(bad.start())
        sender = WebhookSender([good.url, bad.url], timeout=1.0)
        try:
            with pytest.raises(DeliveryFailed) as failure:
                loop.run(sender.send(note))
            assert str(failure.value) == f"webhook 2 (http://127.0.0.1:{bad.port}): HTTP 503"
            assert [b for b, _ in good.calls] == [{"kind": "command_status", "id": 7, "payload": {"cmd_id": "c"}}]
            assert good.calls[0][1]["X-Hydrovisor-Attempt"] == "3"
            bad.status = 201
            loop.run(sender.send(note))
            assert (len(good.calls), len(bad.calls)) == (2, 2)
            with pytest.raises(RuntimeError):  # the session belongs to the loop
                asyncio.run(sender.send(note))
        finally:
            loop.run(sender.close())
            loop.run(good.stop())
            loop.run(bad.stop())
    assert redact("https://user:pw@hooks.example.com:8443/T000/secret?x=1") == "https://hooks.example.com:8443"


def test_webhook_urls_setting_from_the_environment() -> None:
    settings = load_settings(environ={"HYDROVISOR_WEBHOOK_URLS": " http://a.example/hook , https://b.example:9/x?t=1,"})
    assert settings.webhook_urls == ["http://a.example/hook", "https://b.example:9/x?t=1"]
    assert public_view(settings)["webhook_urls"] == "<set>"
    assert load_settings(environ={}).webhook_urls == []
    with pytest.raises(ConfigError, match="entry 2 is not an http"):
        load_settings(environ={"HYDROVISOR_WEBHOOK_URLS": "http://a.example,ftp://secret@b.example"})
