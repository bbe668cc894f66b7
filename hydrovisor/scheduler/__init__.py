"""The scheduler's pure engine (issue 13, DOMAIN §5): what a zone's schedules make due, when, and which of
the due occurrences run after downtime. No clock, no database, no actors: those call in with ``now``.

``occurrences`` lists a zone's scheduled occurrences in an interval, with stable keys (the roots of the
tasks' correlation ids); ``catchup`` applies the catch-up policy and the per-cycle limit and moves the
cursor; ``wallclock`` maps the greenhouse's wall-clock times to instants across DST transitions.
"""

from hydrovisor.scheduler.catchup import Cursor, Policy, Selection, Skipped, query_after, select_due
from hydrovisor.scheduler.occurrences import Kind, Occurrence, TaskType, occurrences

__all__ = ["Cursor", "Kind", "Occurrence", "Policy", "Selection", "Skipped", "TaskType", "occurrences",
           "query_after", "select_due"]
