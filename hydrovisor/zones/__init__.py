"""Zone domain logic (ARCHITECTURE §3): pure, no threads, no I/O, no wall clock.

Settings (``settings``), the device roles of a zone (``roles``), the live state the zone actor keeps
(``state``), the one pump-safety gate (``safety``) and the one clock everything is driven by (``clock``).
The zone actor (``actors/zone.py``) owns an instance of the state and does the I/O; everything here can be
tested exhaustively and replayed.
"""
