"""Infrastructure alerts: the broker probe raises ``infra_mqtt_down`` while the broker is gone."""

from __future__ import annotations

from typing import Any

from tests.app.conftest import Running
from tests.helpers import http, wait_until


def _alerts(instance: Running, status: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = http("GET", instance.base_url + f"/api/v1/alerts?status={status}&source=infra").json()[
        "data"]
    return [a for a in data if a["code"] == "infra_mqtt_down"]


def test_a_broker_outage_is_an_alert_while_it_lasts(instance: Running) -> None:
    services = instance.app.services
    assert services is not None
    instance.loop.run(services.broker.stop())
    wait_until(lambda: len(_alerts(instance, "ACTIVE")) == 1, timeout=10, what="infra_mqtt_down raised")
    assert _alerts(instance, "ACTIVE")[0]["severity"] == "critical"
    instance.loop.run(services.broker.start())
    wait_until(lambda: _alerts(instance, "ACTIVE") == [], timeout=10, what="infra_mqtt_down resolved")
    assert len(_alerts(instance, "RESOLVED")) == 1
