"""Log lines as JSON, one object per line, with a stable shape.

``{"ts": ISO-8601 UTC, "level": "INFO", "logger": "pulse.x", "event": "sink_retry",
"message": "...", ...extra fields}``: `event` is the ``extra={"event": ...}`` a call gave
(``"log"`` when none), and every other ``extra`` field follows. Built on
python-json-logger (its record-to-dict and serialization; we fix the order and names).

:class:`Redact` masks secrets in every line, JSON or human: a DSN's password, a bearer
token and API keys (``pk_...``) become ``***`` (defence in depth: the callers mask too).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

SHAPE = ("ts", "level", "logger", "event", "message")
DEFAULT_EVENT = "log"

_SECRETS = (
    (re.compile(r"(://[^:/@\s]*:)[^@\s/]+@"), r"\1***@"),  # scheme://user:password@host
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"\bpk_[A-Za-z0-9_-]{8,}"), "pk_***"),
)


# One search says whether a text could hold any of them (most lines hold none): the
# substitutions run only then.
_MAYBE_SECRET = re.compile(r"://|(?i:bearer)|pk_")
# What logging itself sets on a record (names, paths, thread): never a secret. The
# message and the `extra` fields are what is checked.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def redact(text: str) -> str:
    if _MAYBE_SECRET.search(text) is None:
        return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class Redact(logging.Filter):
    """Masks secrets in the message and in string `extra` fields of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        fields = record.__dict__
        for key, value in list(fields.items()):
            if isinstance(value, str) and key not in _RECORD_ATTRIBUTES:
                fields[key] = redact(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(_PLAIN.formatException(record.exc_info))
        return True


_PLAIN = logging.Formatter()


class JsonFormatter(_LibraryJsonFormatter):
    def __init__(self) -> None:
        super().__init__(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
            timestamp="ts",
        )

    def formatException(self, ei: Any) -> str:
        return redact(_PLAIN.formatException(ei))

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        log_data.setdefault("event", DEFAULT_EVENT)
        ordered = {key: log_data.pop(key, None) for key in SHAPE}
        ts = ordered["ts"]
        ordered["ts"] = ts.isoformat(timespec="milliseconds") if ts is not None else None
        ordered.update(log_data)
        return ordered
