"""Structured logs: JSON lines carry ids from ``extra`` and never secrets."""

from __future__ import annotations

import json
import logging

from hydrovisor.logs import JsonFormatter, TextFormatter


def _record(**extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "hydrovisor.test", "levelno": logging.WARNING,
                                    "levelname": "WARNING", "msg": "command %s failed", "args": ("c-1",)})
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_line_has_message_level_and_ids() -> None:
    line = JsonFormatter().format(_record(cmd_id="c-1", zone_id="zn-3", event="command_failed"))
    doc = json.loads(line)
    assert doc["msg"] == "command c-1 failed"
    assert doc["level"] == "WARNING"
    assert doc["cmd_id"] == "c-1"
    assert doc["zone_id"] == "zn-3"
    assert doc["event"] == "command_failed"


def test_secret_fields_are_redacted_in_both_formats() -> None:
    record = _record(node_secret="s3cr3t", password="hunter2", api_token="t0k3n")
    for formatter in (JsonFormatter(), TextFormatter()):
        text = formatter.format(record)
        for secret in ("s3cr3t", "hunter2", "t0k3n"):
            assert secret not in text
        assert "<redacted>" in text
