"""keeptimed's log output: JSON lines for machines, key=value text for people.

Structured fields travel with a record as ``extra={"fields": {...}}``; both
formats print them, JSON as top-level keys, text as ``key=value`` pairs after
the message. Every record is one line (a traceback is folded into the JSON
``exc`` field, or indented under a text line), and bounded: a field's value,
the message and a traceback are cut short past their limits, so a caller's
8 MB record id makes a short line, not an 8 MB one.
"""
import datetime
import json
import logging
import sys

from keeptime.printable import printable

# Attribute names that cannot be overridden by fields (they describe the record itself).
RESERVED = ("ts", "level", "logger", "msg", "exc")
MAX_FIELD_CHARS = 1024
MAX_MESSAGE_CHARS = 4096
MAX_TRACEBACK_CHARS = 16384


def clip(text: str, limit: int) -> str:
    """text, or its first limit characters and how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more characters]"


def _bounded(value):
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return clip(value if isinstance(value, str) else str(value), MAX_FIELD_CHARS)


def fields_of(record: logging.LogRecord) -> dict:
    """The record's structured fields, each value bounded."""
    return {key: _bounded(value) for key, value in (getattr(record, "fields", None) or {}).items()}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, RFC 3339), level, logger, msg, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": clip(record.getMessage(), MAX_MESSAGE_CHARS),
        }
        for key, value in fields_of(record).items():
            out[key if key not in RESERVED else f"field_{key}"] = value
        if record.exc_info:
            out["exc"] = clip(self.formatException(record.exc_info), MAX_TRACEBACK_CHARS)
        return json.dumps(out, ensure_ascii=False, default=str)


def _text_value(value) -> str:
    text = printable(str(value))   # text lines are for a terminal
    if not text or any(c in text for c in ' "='):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """``2026-01-02 03:04:05,678 INFO keeptimed.rpc: message key=value ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = printable(clip(super().formatMessage(record), MAX_MESSAGE_CHARS))
        pairs = " ".join(f"{key}={_text_value(value)}" for key, value in fields_of(record).items())
        return f"{line} {pairs}" if pairs else line

    def formatException(self, exc_info) -> str:
        return clip(super().formatException(exc_info), MAX_TRACEBACK_CHARS)


def choose_format(log_format: str, stream=None) -> str:
    """"json" or "text": auto means text on a terminal, JSON everywhere else."""
    if log_format != "auto":
        return log_format
    stream = sys.stderr if stream is None else stream
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def setup(level: str, log_format: str) -> None:
    """Send every log record to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if choose_format(log_format) == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
