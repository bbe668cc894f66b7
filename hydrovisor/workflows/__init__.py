"""Zone workflows (issue 12, DOMAIN §4): each running workflow is an actor under its zone.

- ``effects``: what a workflow script asks its driver to do (a stage, a command, a wait, a decision).
- ``context``: what a script sees of the zone (the latest ``ZoneObserved``, the readings' history).
- ``steps``: the building blocks every script shares (probe, start, confirmed stop, sensor mode).
- ``two_tank``, ``irrigation``, ``correction``: the scripts, pure generators of effects.
- ``catalog``: workflow types, their parameters, topology and resumable stages.
- ``actor``: ``WorkflowActor``, the driver: runs a script's effects, persists every stage, compensates.
- ``plane`` / ``runtime`` / ``spawn``: the loop side: commands, storage, start, cancel, emergency stop.
"""
