"""Canonical JSON, signatures and the command encoder against PROTOCOL.md §5."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydrovisor.protocol import (
    CommandInvalid,
    canonical_json,
    encode_command,
    sign,
    sign_command,
    verify,
)

SECRET = "hydro-default-secret-key-2025"

VECTORS = [
    (
        {"cmd": "run_pump", "cmd_id": "cmd-591", "params": {"duration_ms": 2500}, "ts": 1737355112},
        "93a9884c42e9a56663638a9052e368fd1847fa10e539893c0fe37790b7486ec5",
    ),
    (
        {"cmd": "dose", "cmd_id": "ae3-t12-z1-s3", "params": {"ml": 0.5}, "ts": 1737355113},
        "aa22717ccadcbe208ae86e81eebe929c632db3bac989af06201db4fdc24683ee",
    ),
    (
        {"cmd": "activate_sensor_mode", "cmd_id": "3f1c2b9e-0d7a-4c55-9a39-2b8e4b0c1d11", "params": {},
         "ts": 1737355114},
        "0294af33cab1a2dd582befe9ccfc4c5b33ad3ca435938a3f9b96097327da21b4",
    ),
]


@pytest.mark.parametrize(("payload", "expected"), VECTORS)
def test_protocol_vectors_sign(payload: dict[str, Any], expected: str) -> None:
    assert sign(SECRET, payload) == expected
    assert verify(SECRET, {**payload, "sig": expected})


@pytest.mark.parametrize(("payload", "expected"), VECTORS)
def test_protocol_vectors_encode_command(payload: dict[str, Any], expected: str) -> None:
    wire = encode_command(payload["cmd"], payload["cmd_id"], payload["params"], payload["ts"], SECRET)
    decoded = json.loads(wire)
    assert set(decoded) == {"cmd", "cmd_id", "params", "ts", "sig"}
    assert decoded == {**payload, "sig": expected}
    assert b" " not in wire
    assert b"\n" not in wire


def test_integral_float_param_signs_like_integer() -> None:
    payload, expected = VECTORS[0]
    assert sign(SECRET, {**payload, "params": {"duration_ms": 2500.0}}) == expected
    wire = encode_command("run_pump", "cmd-591", {"duration_ms": 2500.0}, 1737355112, SECRET)
    assert b'"duration_ms":2500}' in wire


def test_sign_ignores_existing_sig() -> None:
    payload, expected = VECTORS[1]
    assert sign(SECRET, {**payload, "sig": "whatever"}) == expected


@pytest.mark.parametrize(
    ("obj", "text"),
    [
        ({"b": 1, "a": 2, "A": 3}, '{"A":3,"a":2,"b":1}'),
        ({"é": 1, "z": 2, "\U0001f600": 3, "\uffff": 4}, '{"z":2,"é":1,"\uffff":4,"\U0001f600":3}'),
        ({"k": [1, True, False, None, "x"]}, '{"k":[1,true,false,null,"x"]}'),
        ("é\"\\\n\t\x01/", '"é\\"\\\\\\n\\t\\u0001/"'),
        ("\x1f\x7f", '"\\u001f\x7f"'),
        (0.5, "0.5"),
        (0.1, "0.1"),
        (2500.0, "2500"),
        (-0.0, "0"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-07"),
        (1 / 3, "0.33333333333333331"),
        (123456789.123, "123456789.123"),
        (-2.5, "-2.5"),
        (12345678901234567890, "12345678901234567890"),
        ({"n": {"b": {}, "a": []}}, '{"n":{"a":[],"b":{}}}'),
        ((1, 2), "[1,2]"),
    ],
)
def test_canonical_json_rules(obj: object, text: str) -> None:
    assert canonical_json(obj) == text.encode("utf-8")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {1: 2}, {"a": object()}, b"x", "\ud800"])
def test_canonical_json_rejects_unrepresentable(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        canonical_json(bad)


def test_canonical_json_rejects_deep_nesting() -> None:
    deep: list[Any] = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ValueError, match="deep"):
        canonical_json(deep)


json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_canonical_json_is_valid_json_with_same_value(value: object) -> None:
    text = canonical_json(value)
    parsed = json.loads(text)
    assert parsed == value or (isinstance(value, float) and math.isclose(parsed, value))
    # Idempotent: rendering what a node parsed yields the same bytes, so wire and signature agree.
    assert canonical_json(parsed) == text


params_values = st.dictionaries(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10).filter(
        lambda k: k not in ("ml", "duration_ms", "position_pct")
    ),
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats(-1e9, 1e9) | st.text(max_size=10),
    max_size=5,
)


@settings(max_examples=150, deadline=None)
@given(params=params_values, ts=st.integers(1, 2**40))
def test_encoded_command_verifies_as_the_node_would(params: dict[str, Any], ts: int) -> None:
    wire = encode_command("set_relay", "c-1", params, ts, "node-secret")
    received = json.loads(wire)
    assert verify("node-secret", received)
    assert not verify("other-secret", received)
    tampered = {**received, "ts": ts + 1}
    assert not verify("node-secret", tampered)


def test_verify_is_strict_and_never_raises() -> None:
    payload, expected = VECTORS[0]
    assert not verify(SECRET, {**payload, "sig": expected.upper()})
    assert not verify(SECRET, payload)
    assert not verify(SECRET, {**payload, "sig": 42})
    assert not verify(SECRET, {**payload, "sig": "é" * 64})
    assert not verify("", {**payload, "sig": sign("", payload)})
    assert not verify(SECRET, {**payload, "params": {"x": float("nan")}, "sig": expected})
    assert not verify(SECRET, {**payload, "params": {"x": object()}, "sig": expected})


def test_sign_command_returns_struct() -> None:
    command = sign_command("dose", "ae3-t12-z1-s3", {"ml": 0.5}, 1737355113, SECRET)
    assert command.sig == VECTORS[1][1]
    assert command.params == {"ml": 0.5}


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"cmd": ""}, "invalid_cmd"),
        ({"cmd": "x" * 32}, "invalid_cmd"),
        ({"cmd": "run pump"}, "invalid_cmd"),
        ({"cmd_id": ""}, "invalid_cmd_id"),
        ({"cmd_id": "a" * 64}, "invalid_cmd_id"),
        ({"cmd_id": "a.b"}, "invalid_cmd_id"),
        ({"cmd_id": "é"}, "invalid_cmd_id"),
        ({"params": [1]}, "invalid_params"),
        ({"params": {"ml": "5"}}, "invalid_params"),
        ({"params": {"ml": True}}, "invalid_params"),
        ({"params": {"ml": 0}}, "param_out_of_range"),
        ({"params": {"ml": 500.01}}, "param_out_of_range"),
        ({"params": {"ml": -1}}, "param_out_of_range"),
        ({"params": {"duration_ms": 0}}, "param_out_of_range"),
        ({"params": {"duration_ms": 300_001}}, "param_out_of_range"),
        ({"params": {"position_pct": -0.1}}, "param_out_of_range"),
        ({"params": {"position_pct": 100.5}}, "param_out_of_range"),
        ({"params": {"big": 1e15}}, "param_out_of_range"),
        ({"params": {"nested": {"big": -(10**16)}}}, "param_out_of_range"),
        ({"params": {"x": float("nan")}}, "invalid_params"),
        ({"params": {"x": float("inf")}}, "invalid_params"),
        ({"params": {"x": {1: 2}}}, "invalid_params"),
        ({"params": {"x": b"raw"}}, "invalid_params"),
        ({"params": {"x": "\ud800"}}, "invalid_params"),
        ({"ts": 0}, "invalid_ts"),
        ({"ts": 1.5}, "invalid_ts"),
        ({"ts": True}, "invalid_ts"),
        ({"secret": ""}, "missing_node_secret"),
        ({"params": {"blob": "x" * 5000}}, "payload_too_large"),
    ],
)
def test_encode_command_refuses(kwargs: dict[str, Any], code: str) -> None:
    args: dict[str, Any] = {"cmd": "dose", "cmd_id": "c-1", "params": {}, "ts": 1737355113, "secret": SECRET}
    args.update(kwargs)
    with pytest.raises(CommandInvalid) as info:
        encode_command(**args)
    assert info.value.code == code


@pytest.mark.parametrize(
    "params",
    [{"ml": 500}, {"ml": 0.001}, {"duration_ms": 300_000}, {"position_pct": 0}, {"position_pct": 100},
     {"big": 1e15 - 1}, {"frac": 1e15 + 0.25}, {"state": True, "stage": "high"}],
)
def test_encode_command_accepts_boundaries(params: dict[str, Any]) -> None:
    json.loads(encode_command("x", "c", params, 1, SECRET))
