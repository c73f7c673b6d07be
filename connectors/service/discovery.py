"""Local discovery: ``$PULSE_HOME/service.json`` says where this home's service listens.

``{"url": ..., "pid": ..., "key": ..., "operator_key": ...}``; the two keys only when the
service made them (no ``service.api_keys`` configured): `key`, the local key (tenant
``default``), and `operator_key` (any tenant, every scope). The file holds keys, so it
is created with mode 0600 (``os.open`` with the mode, then an atomic rename: never a
moment readable by others, never half-written). A reader trusts it only while its pid is
alive, and the service removes it at stop if it is still its own: a crashed service's
file is ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "service.json"


def service_file(home: Path) -> Path:
    return home / FILE_NAME


@dataclass(frozen=True)
class Discovered:
    """A live service of this home, as its file says."""

    url: str
    pid: int
    key: str | None = None
    operator_key: str | None = None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def read(home: Path) -> Discovered | None:
    """The home's service, if its file is there, well-formed, and its process alive."""
    try:
        info = json.loads(service_file(home).read_text())
        found = Discovered(
            str(info["url"]),
            int(info["pid"]),
            info.get("key") or None,
            info.get("operator_key") or None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if alive(found.pid) else None


def write(home: Path, url: str, key: str | None, operator_key: str | None = None) -> Path:
    """Record this process's service (mode 0600 from creation, replaced atomically)."""
    home.mkdir(parents=True, exist_ok=True)
    path = service_file(home)
    info: dict[str, object] = {"url": url, "pid": os.getpid()}
    if key is not None:
        info["key"] = key
    if operator_key is not None:
        info["operator_key"] = operator_key
    temporary = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older leftover kept its mode through O_TRUNC
        os.write(fd, (json.dumps(info) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return path


def remove(home: Path) -> None:
    """Remove the file if it still names this process (another may have replaced it)."""
    path = service_file(home)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass
