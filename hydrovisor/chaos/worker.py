"""``/system/chaos``: the actor whose thread plays the actor side of injected faults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from hydrovisor.supervisors import SupervisedActor

CHAOS_WORKER_PATH = "/system/chaos"


class RunInActor(msgspec.Struct, frozen=True):
    """Run ``call`` on the worker's thread (e.g. hold a lock and wait for the loop)."""

    call: Callable[[], None]


class ChaosWorker(SupervisedActor):
    """Runs what it is given; blocking in it is the point (bounded by the fault's own timeouts)."""

    def on_receive(self, message: Any) -> None:
        if isinstance(message, RunInActor):
            message.call()
