"""Controlled failure of the process as a whole: the system state machine, loop guard, incidents,
task dumps, component checks, SAFE_MODE rules and systemd notify.

Not the actor system (that is :class:`hydrovisor.supervisors.ActorSystem`); the state actor lives
in the tree at ``/system/state`` and the HTTP side at ``/api/v1/system/...``, names kept as they are
part of the API.
"""
