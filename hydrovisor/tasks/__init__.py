"""Scheduled tasks: the task contract, its store and API, leadership and execution."""
