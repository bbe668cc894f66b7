"""The observer against a real instance: real broker, real HTTP, a simulated two-tank irrigation node on its
own plant. The tap sees the server's commands and the node's replies; an unsafe manual sequence that the
zone's gate lets through is flagged; a cancelled run with the plant still going is flagged from the plant."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from hydrovisor.observer import (
    LEFT_RUNNING_AFTER_STOP,
    START_WITHOUT_CONFIRMED_STOP,
    MqttTap,
    PlantSampler,
    SafetyObserver,
    ZoneLimits,
)
from tests.app.conftest import Running
from tests.helpers import wait_until
from tests.plant import STATE_PROBE

T = TypeVar("T")


def on_loop(instance: Running, fn: Callable[[], T]) -> T:
    """Run ``fn`` on the instance's loop, where the tap and the sampler mutate the observer."""
    async def call() -> T:
        return fn()
    return instance.loop.run(call())


def submitted(reply: Any) -> str:
    assert reply.status == 202, reply.raw
    cmd_id: str = reply.json()["data"]["cmd_id"]
    return cmd_id


def test_the_tap_sees_real_traffic_and_flags_unsafe_sequences(instance: Running,
                                                              node_factory: Callable[..., Any]) -> None:
    started = time.monotonic()
    node = node_factory(start=False)
    physics = node.sim.physics
    clock = physics.clock.monotonic  # the plant's clock (100x real time): one time line for both feeds
    observer = SafetyObserver({"zn-1": ZoneLimits(grace_s=50.0)})  # 0.5 real seconds
    sampler = PlantSampler(observer, {"zn-1": physics}, clock, interval_s=0.02)
    tap = MqttTap(observer, f"mqtt://127.0.0.1:{instance.mqtt_port}", clock, before_command=sampler.sample_now)
    instance.loop.run(tap.start())
    on_loop(instance, sampler.start)
    try:
        node.start()

        def seen(cmd_id: str, what: Callable[[Any], bool]) -> bool:
            command = on_loop(instance, lambda: observer.command(cmd_id))
            return command is not None and what(command)

        # a state{} probe: the tap sees the command the server publishes and the node's DONE with its snapshot
        probe = submitted(node.command(**STATE_PROBE))
        wait_until(lambda: seen(probe, lambda c: c.terminal == "DONE"), what="the probe and its reply seen")
        command = on_loop(instance, lambda: observer.command(probe))
        assert command is not None and (command.node_uid, command.channel, command.cmd) == (
            node.uid, "storage_state", "state")

        # the snapshot showed the recirculation path open: pumping on it is fine
        run = submitted(node.command(cmd="run_pump", params={"duration_ms": 300_000}))  # 3 s real
        wait_until(lambda: seen(run, lambda c: c.acked), what="the pump running")
        assert on_loop(instance, lambda: list(observer.violations)) == []

        # unsafe, yet the gate allows it (stops are never gated, a valve start passes): the node answers the
        # stop BUSY (the pump is on a timed run), and the operator opens the irrigation valve anyway
        stop = submitted(node.command(cmd="set_relay", params={"state": 0}))
        assert node.get(stop, wait=5)["status"] == "BUSY"
        valve = submitted(node.command(channel="valve_irrigation", cmd="set_relay", params={"state": 1}))
        wait_until(lambda: on_loop(instance, lambda: observer.violations_of(START_WITHOUT_CONFIRMED_STOP)),
                   what="the start without a confirmed stop flagged")
        violations = on_loop(instance, lambda: list(observer.violations))
        assert [(v.rule, v.cmd_id, v.node_uid) for v in violations] == [
            (START_WITHOUT_CONFIRMED_STOP, valve, node.uid)], violations
        assert stop in violations[0].detail and "BUSY" in violations[0].detail

        # the run is cancelled, but the pump and the valves are left as they are: flagged from the plant
        on_loop(instance, lambda: observer.mark("zn-1", "workflow_cancelled", clock()))
        wait_until(lambda: on_loop(instance, lambda: observer.violations_of(LEFT_RUNNING_AFTER_STOP)),
                   what="the plant left running after the cancellation")
        left = on_loop(instance, lambda: observer.violations_of(LEFT_RUNNING_AFTER_STOP))[0]
        assert "valve valve_irrigation" in left.detail
    finally:
        instance.loop.run(sampler.stop())
        instance.loop.run(tap.stop())
    stats = observer.stats()
    assert stats["commands"] >= 4 and stats["responses"] >= 6 and stats["telemetry"] > 0, stats
    assert stats.get("malformed", 0) == 0 and tap.errors == 0 and tap.lost is None, stats
    assert time.monotonic() - started < 15
