"""Credentials out of what is printed: every place that shows a DSN goes through
:func:`mask_dsn` (the client configs are kept out of reprs instead: see ``KafkaTarget``)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def mask_dsn(dsn: str) -> str:
    """`dsn` with its password, if any, replaced by ``***``."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))
