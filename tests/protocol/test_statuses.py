"""Command status transitions (PROTOCOL.md §6, DOMAIN.md §1), including property tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydrovisor.protocol import (
    DEVICE_REPORTABLE,
    NODE_STATUSES,
    TERMINAL,
    CommandStatus,
    allowed_predecessors,
    can_transition,
    is_success,
    is_terminal,
    parse_status,
    rank,
)

S = CommandStatus
REPUBLISH = (S.SEND_FAILED, S.SENT)


def test_sets() -> None:
    assert {s.value for s in TERMINAL} == {"DONE", "NO_EFFECT", "ERROR", "INVALID", "BUSY", "TIMEOUT",
                                           "SEND_FAILED"}
    assert {s.value for s in NODE_STATUSES} == {"ACK", "DONE", "NO_EFFECT", "ERROR", "INVALID", "BUSY"}
    assert NODE_STATUSES | {S.TIMEOUT} == DEVICE_REPORTABLE
    assert [rank(s) for s in (S.QUEUED, S.SENT, S.ACK, S.DONE, S.SEND_FAILED)] == [0, 1, 2, 3, 3]
    assert is_success(S.DONE)
    assert not any(is_success(s) for s in CommandStatus if s is not S.DONE)
    assert is_terminal(S.TIMEOUT)
    assert not is_terminal(S.ACK)


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        (S.QUEUED, S.SENT, True),
        (S.SENT, S.ACK, True),
        (S.ACK, S.DONE, True),
        (S.QUEUED, S.ACK, True),  # the node's ACK can beat the broker's PUBACK bookkeeping
        (S.QUEUED, S.DONE, True),
        (S.SENT, S.BUSY, True),
        (S.ACK, S.TIMEOUT, True),
        (S.ACK, S.SEND_FAILED, True),  # unknown-cmd_id stub rows start at ACK and take any terminal
        (S.QUEUED, S.SEND_FAILED, True),
        (S.SEND_FAILED, S.SENT, True),  # re-publish
        (S.SEND_FAILED, S.DONE, False),
        (S.SEND_FAILED, S.ACK, False),
        (S.SEND_FAILED, S.QUEUED, False),
        (S.DONE, S.BUSY, False),  # first terminal is final
        (S.TIMEOUT, S.DONE, False),  # late reply after timeout is an event, not a transition
        (S.ERROR, S.ACK, False),
        (S.ACK, S.SENT, False),
        (S.SENT, S.QUEUED, False),
        (S.ACK, S.ACK, False),  # duplicates are not transitions
        (S.DONE, S.DONE, False),
    ],
)
def test_transition_table(current: CommandStatus, target: CommandStatus, allowed: bool) -> None:
    assert can_transition(current, target) is allowed


def test_allowed_predecessors() -> None:
    assert allowed_predecessors(S.QUEUED) == frozenset()
    assert allowed_predecessors(S.SENT) == {S.QUEUED, S.SEND_FAILED}
    assert allowed_predecessors(S.ACK) == {S.QUEUED, S.SENT}
    for terminal in TERMINAL:
        assert allowed_predecessors(terminal) == {S.QUEUED, S.SENT, S.ACK}


@pytest.mark.parametrize("current", list(CommandStatus))
@pytest.mark.parametrize("target", list(CommandStatus))
def test_predecessors_agree_with_can_transition(current: CommandStatus, target: CommandStatus) -> None:
    assert (current in allowed_predecessors(target)) is can_transition(current, target)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(CommandStatus)), max_size=30))
def test_no_sequence_leaves_a_terminal_or_goes_down(targets: list[CommandStatus]) -> None:
    current = S.QUEUED
    for target in targets:
        if not can_transition(current, target):
            continue
        assert current != target
        if (current, target) != REPUBLISH:
            assert current not in TERMINAL
            assert rank(target) > rank(current)
        current = target


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list(CommandStatus)), max_size=30))
def test_final_terminals_are_absorbing(targets: list[CommandStatus]) -> None:
    # Walk the sequence; once a terminal other than SEND_FAILED is reached nothing moves it again.
    current = S.QUEUED
    final: CommandStatus | None = None
    for target in targets:
        if can_transition(current, target):
            assert final is None
            current = target
            if current in TERMINAL and current is not S.SEND_FAILED:
                final = current


@pytest.mark.parametrize(("raw", "status"), [("done", S.DONE), (" ACK ", S.ACK), ("no_effect", S.NO_EFFECT),
                                             ("nope", None), (None, None), (3, None), ("", None)])
def test_parse_status(raw: object, status: CommandStatus | None) -> None:
    assert parse_status(raw) is status
