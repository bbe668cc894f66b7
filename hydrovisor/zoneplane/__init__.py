"""The zone plane: every zone's runtime (ARCHITECTURE §2 ``zones``).

``/zones/<uid>`` is a supervisor per zone, started when the zone is created, restored at boot and
stopped when it is deleted; its child ``zone`` is the zone actor (``actors/zone.py``), which keeps
the zone's live state from what the zone's devices report and owns the pump-safety gate's verdicts.
:class:`ZoneRuntime` (``runtime.py``) is the loop-side door to it: the router, the node actors and the
command path feed it; the HTTP API asks it.
"""
