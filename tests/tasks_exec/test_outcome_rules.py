"""The outcome rules of the task executor, pure: a command's terminal, a workflow's end, a refused start."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from hydrovisor.store.repos.commands import CommandRecord
from hydrovisor.store.repos.workflows import CommandRef, WorkflowRecord
from hydrovisor.tasks.executor import command_outcome, refusal_outcome, workflow_outcome, workflow_tag
from hydrovisor.workflows.runtime import WorkflowRefused


def row(status: str, error_code: str | None = None) -> CommandRecord:
    return CommandRecord(cmd_id="task-1", zone_uid="zn-1", node_uid="nd-1", channel="light", cmd="set_relay",
                         params={"state": 1}, source="task:lighting", trace_id=None, status=status, timeout_s=30.0,
                         deadline_at=0.0, publish_attempts=1, created_at=0.0, sent_at=None, ack_at=None,
                         terminal_at=None, failed_at=None, error_code=error_code, error_message=None, details=None)


def workflow(status: str, reason: str | None, commands: list[tuple[str, str | None]]) -> WorkflowRecord:
    refs = [CommandRef(cmd_id=f"c{i}", stage="s", role="pump_main", node_uid="nd-1", channel="pump_main", cmd=cmd,
                       params={}, status=st) for i, (cmd, st) in enumerate(commands)]
    return WorkflowRecord(id="wf-1", zone_uid="zn-1", type="irrigation", params={}, status=status, stage="s",
                          reason_code=reason, message=None, stages=[], commands=refs, cancel_requested=False,
                          created_by="task:c", created_at=0.0, updated_at=0.0, ended_at=None)


@pytest.mark.parametrize(("status", "expected"), [
    # status, (task status, decision, reason, action_required, submitted, confirmed)
    ("DONE", ("completed", "run", "lighting_done", False, True, True)),
    # no answer to an actuation: it may have happened, a retry (a new command) would do it twice
    ("TIMEOUT", ("failed", "fail", "command_outcome_unknown", True, True, False)),
    ("SEND_FAILED", ("failed", "retry", "command_send_failed", False, False, False)),
    ("BUSY", ("failed", "retry", "command_busy", False, True, False)),
    ("NO_EFFECT", ("failed", "fail", "command_no_effect", False, True, False)),
    ("ERROR", ("failed", "fail", "command_error", True, True, False)),
    ("INVALID", ("failed", "fail", "command_invalid", True, True, False)),
    ("ACK", ("failed", "fail", "task_deadline_exceeded", False, True, False)),  # still running at expires_at
])
def test_a_commands_terminal_decides_the_outcome(status: str, expected: tuple[Any, ...]) -> None:
    outcome = command_outcome(row(status), "lighting")
    assert (outcome.status, outcome.decision, outcome.reason_code, outcome.action_required,
            outcome.command_submitted, outcome.command_effect_confirmed) == expected, outcome


def test_an_unanswered_read_only_command_is_simply_asked_again() -> None:
    probe = msgspec.structs.replace(row("TIMEOUT"), cmd="state", params={})
    outcome = command_outcome(probe, "diagnostics")
    assert (outcome.status, outcome.decision, outcome.reason_code) == ("failed", "retry", "command_timeout"), outcome


@pytest.mark.parametrize(("record", "expected"), [
    (workflow("completed", "irrigation_completed", [("state", "DONE"), ("set_relay", "DONE")]),
     ("completed", "run", "irrigation_completed", False, True, True)),
    # the probe was never answered and nothing moved: safe to try again
    (workflow("failed", "irrigation_check_probe_failed", [("state", "TIMEOUT")]),
     ("failed", "retry", "irrigation_check_probe_failed", False, True, False)),
    # a start went out and the follow-up failed: compensated, but not something to repeat blindly
    (workflow("failed", "irrigation_stop_not_confirmed", [("set_relay", "DONE"), ("set_relay", "TIMEOUT")]),
     ("failed", "fail", "irrigation_stop_not_confirmed", True, True, False)),
    (workflow("failed", "pump_start_refused", [("state", "DONE"), ("set_relay", "REFUSED:pump_safety_blocked")]),
     ("failed", "fail", "pump_start_refused", True, True, False)),
    (workflow("cancelled", "cancelled", [("set_relay", "DONE")]),
     ("failed", "fail", "workflow_cancelled", False, True, False)),
])
def test_a_workflows_end_decides_the_outcome(record: WorkflowRecord, expected: tuple[Any, ...]) -> None:
    outcome = workflow_outcome(record)
    assert (outcome.status, outcome.decision, outcome.reason_code, outcome.action_required,
            outcome.command_submitted, outcome.command_effect_confirmed) == expected, outcome


@pytest.mark.parametrize(("refusal", "expected"), [
    (WorkflowRefused(409, "pump_safety_blocked", "m", reason_code="safety_lock_biz_no_flow"),
     ("fail", "safety_lock_biz_no_flow", True)),
    (WorkflowRefused(409, "pump_safety_blocked", "m", reason_code="node_offline"), ("retry", "node_offline", False)),
    (WorkflowRefused(409, "pump_safety_blocked", "m", reason_code="TANK_LEVEL_STALE"),
     ("retry", "TANK_LEVEL_STALE", False)),
    (WorkflowRefused(409, "zone_not_ready", "m", water_state="solution_low"), ("fail", "zone_not_ready", True)),
    (WorkflowRefused(409, "zone_not_ready", "m"), ("retry", "zone_unavailable", False)),  # the actor is loading
    (WorkflowRefused(409, "workflow_already_running", "m", workflow_id="wf-2"), ("retry", "zone_busy", False)),
    (WorkflowRefused(409, "emergency_stop_active", "m"), ("fail", "emergency_stop_active", True)),
    (WorkflowRefused(409, "topology_mismatch", "m"), ("fail", "topology_mismatch", True)),
    (WorkflowRefused(422, "invalid_params", "m"), ("fail", "invalid_payload", True)),
    (WorkflowRefused(404, "zone_not_found", "m"), ("fail", "zone_not_found", True)),
])
def test_a_refused_start_decides_the_outcome(refusal: WorkflowRefused, expected: tuple[Any, ...]) -> None:
    outcome = refusal_outcome(refusal)
    assert outcome.status == "failed" and not outcome.command_submitted
    assert (outcome.decision, outcome.reason_code, outcome.action_required) == expected, outcome


def test_a_retry_shares_its_roots_workflow_tag() -> None:
    assert workflow_tag("sched-zn-1-0600") == workflow_tag("sched-zn-1-0600:retry2") == "task:sched-zn-1-0600"
    assert workflow_tag("a:retryX") == "task:a:retryX"
