"""Scheduler leadership and task execution against real PostgreSQL, broker and simulated nodes."""
