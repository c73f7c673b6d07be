"""API keys as values: their format, their hash, and the tenants and scopes they carry.

Apart from :mod:`connectors.service.auth` (the requests' side, on FastAPI) so that what
only makes or names keys — the command line's `pulse keys`, its banners, a run's local
key — does not import the web framework (~0.1 s of every command's start).

Keys are random 256-bit tokens (``pk_`` + url-safe base64), so they are stored as a plain
SHA-256: nothing to brute-force, and one hash per request costs ~1 µs (a password hash
such as argon2 would cost ~50 ms per request for no gain).
"""

from __future__ import annotations

import hashlib
import secrets

from config.settings import ApiScope

ALL_TENANTS = "*"
ALL_SCOPES: tuple[ApiScope, ...] = ("ingest", "read", "query", "admin")
# The local key a run makes when no keys are configured, as issue 12 specifies it.
LOCAL_TENANT = "default"
LOCAL_SCOPES: tuple[ApiScope, ...] = ("ingest", "read", "query")
KEY_PREFIX = "pk_"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
