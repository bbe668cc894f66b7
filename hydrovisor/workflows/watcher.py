"""``ZoneWatcher``: the base of the actors that are told every :class:`ZoneObserved` of their zone (a
workflow, the water cycle)."""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec

from hydrovisor.actors.zone import UnwatchZone, WatchZone
from hydrovisor.supervisors import SupervisedActor, SupervisionError
from hydrovisor.zoneplane.spawn import zone_actor_path

RENEW_WATCH_S = 15.0  # real seconds: a restarted zone actor learns its watchers again within this


class _RenewWatch(msgspec.Struct, frozen=True):
    pass


class ZoneWatcher(SupervisedActor):
    """Watches the zone ``zone_uid`` from :meth:`watch_zone` on (renewed every ``RENEW_WATCH_S``) until it
    stops. Subclasses pass the messages they do not handle to ``super().on_receive``."""

    zone_uid: str

    def watch_zone(self) -> None:
        """Start watching (once)."""
        self._tell_zone(WatchZone(self.path, self.actor_ref))
        self.tell_self_every(RENEW_WATCH_S, _RenewWatch())

    def on_stop(self) -> None:
        self._tell_zone(UnwatchZone(self.path))

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _RenewWatch):
            self._tell_zone(WatchZone(self.path, self.actor_ref))
            return None
        return super().on_receive(message)

    def _tell_zone(self, message: Any) -> None:
        with contextlib.suppress(SupervisionError):  # the zone is being stopped (and its watchers with it)
            self.ctx.system.tell(zone_actor_path(self.zone_uid), message)
