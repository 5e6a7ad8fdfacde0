"""Logging setup, done once by the CLI: JSON lines for journald and pipes, readable text on a terminal.

Modules log with `logging.getLogger(__name__)` and put context in `extra={...}`; both
formatters show those fields (the JSON one as keys, the text one as key=value).
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
from datetime import UTC, datetime
from typing import IO, Any

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_KEYS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller passed with `extra=`."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_KEYS and k[0] != "_"}


_LEVELS = {name: name.lower() for name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the extra fields, the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": _LEVELS.get(record.levelname) or record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_KEYS and key[0] != "_" and key not in out:  # extra_fields, inlined
                out[key] = value
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`12:00:01 INFO  computenode.node: node ready node_id=n-1 listen=http://127.0.0.1:1234`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        fields = " ".join(f"{k}={_short(v)}" for k, v in extra_fields(record).items())
        return f"{line} {fields}" if fields else line


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (" " in text or not text) else text


def wants_json(fmt: str, stream: IO[str]) -> bool:
    """`auto`: JSON under systemd (JOURNAL_STREAM set) or when stderr is not a terminal."""
    if fmt != "auto":
        return fmt == "json"
    return bool(os.environ.get("JOURNAL_STREAM")) or not _isatty(stream)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def setup_logging(level: str = "info", fmt: str = "auto", stream: IO[str] | None = None) -> None:
    """Configure the root logger once (dictConfig), replacing any handler already there."""
    stream = stream or sys.stderr
    # Neither formatter shows the caller's file and line, thread or process: logging need not
    # look them up for each record (the logging HOWTO's "Optimization" settings).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    formatter = JsonFormatter if wants_json(fmt, stream) else TextFormatter
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"main": {"()": formatter}},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "main", "stream": stream}},
            "root": {"level": level.upper(), "handlers": ["stderr"]},
            # aiohttp logs every request at INFO; keep access lines out unless debugging.
            "loggers": {"aiohttp.access": {"level": "WARNING" if level != "debug" else "DEBUG"}},
        }
    )
