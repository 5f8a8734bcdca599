"""Structured logs (logfmt or JSON), one line per event, and warnings that repeat said once.

A condition that recurs every cycle (an unreadable field, a stuck GPU) is logged the first
time and then only counted; `WarnOnce.counts` says how often each was seen.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import Counter
from typing import Any

# Attributes every record has, plus uvicorn's `color_message` (the message with ANSI colours).
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"color_message"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and k != "message"}


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\\\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        pairs = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            pairs["exc"] = self.formatException(record.exc_info)
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in pairs.items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own loggers propagate to ours, so its lines share the format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # APScheduler says at info level that each job was added, started and finished: a dozen
    # lines per probe run that repeat ours ("probe finished"). Its warnings (a missed run) stay;
    # at debug everything shows.
    logging.getLogger("apscheduler").setLevel(
        logging.WARNING if root.level > logging.DEBUG else logging.NOTSET)


class WarnOnce:
    """Log a warning the first time a key is seen; count every time."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("exporter")
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def __call__(self, key: str, message: str, **fields: Any) -> None:
        with self._lock:
            self.counts[key] += 1
            first = self.counts[key] == 1
        if first:
            self._log.warning(message + " (said once; repeats are counted)", extra=fields)
