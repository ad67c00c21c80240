"""Logging set-up shared by both entry points: one JSON object per line on stdout.

A small :class:`logging.Formatter` on orjson rather than python-json-logger: orjson is already a
dependency, the whole formatter is a screenful, and it does exactly what a log shipper wants
(UTC timestamps, ``extra`` fields at the top level, never a multi-line record).

Every record carries ``time``, ``level``, ``logger``, ``message`` and ``pid``; ``request_id``
comes from :data:`request_id_var` (set for the life of a request by the access-log middleware,
and for the life of a job in the worker), so any line logged while serving a request names it.
Fields passed with ``extra={...}`` appear as top-level keys.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

#: The request being served by this task (API) or the request whose job runs (worker).
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged.
# uvicorn adds ``color_message`` (the message with terminal colours): noise in a JSON log.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process or os.getpid(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def setup_logging(level: str) -> None:
    """Send every logger (uvicorn's and arq's included) to stdout as JSON lines at ``level``."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn installs no handlers with log_config=None; make sure its loggers reach the root.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # arq logs each job's arguments at INFO: they hold the prompt, which is never logged.
    logging.getLogger("arq").setLevel(logging.WARNING)
