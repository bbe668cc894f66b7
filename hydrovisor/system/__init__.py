"""Controlled failure: the system state machine, loop guard, incidents, task dumps and systemd notify."""
