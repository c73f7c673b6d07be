"""Shared fixtures: an isolated environment per test, a real Kafka broker per session,
the `pulse` command, and a ClickHouse (chDB) client that is always closed again."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.clickhouse import Target, connect
from tests.connectors.delivery.receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
PULSE = [sys.executable, "-m", "dataflows.cli"]


# What the suite itself reads (not flow settings): a broker to use, the jar cache, the
# crash test's seed.
_TEST_SETTINGS = ("PULSE_TEST_KAFKA", "PULSE_KAFKA_CACHE", "PULSE_CRASH_SEED")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PULSE_* setting of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("PULSE_") and name not in _TEST_SETTINGS:
            monkeypatch.delenv(name)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def pulse_env(home: Path, **settings: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PULSE_") or k == "PULSE_KAFKA_CACHE"
    }
    env["PULSE_HOME"] = str(home)
    env.update(settings)
    return env


def run_pulse(
    args: list[str], env: dict[str, str], timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*PULSE, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"pulse {' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


class Store:
    """Query helper over a home's embedded ClickHouse directory."""

    def __init__(self, home: Path, database: str = "pulse") -> None:
        self.target = Target(f"chdb://{home / 'olap'}", database)
        self.client: Any = None

    def open(self) -> Any:
        if self.client is None:
            self.client = connect(self.target)
        return self.client

    def _query(self, sql: str) -> Any:
        return self.open().query(sql.replace("{db}", self.target.database))

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._query(sql).result_rows]

    def dicts(self, sql: str) -> list[dict[str, Any]]:
        return list(self._query(sql).named_results())

    def scalar(self, sql: str) -> Any:
        return self.rows(sql)[0][0]

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    s = Store(home)
    yield s
    s.close()


def _start_kafka(port: int) -> None:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "local_kafka.py"),
            "start",
            "--port",
            str(port),
            "--fresh",
        ],
        check=True,
        timeout=600,
    )


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A running broker: the one `make test` started, else one started here."""
    given = os.environ.get("PULSE_TEST_KAFKA")
    if given:
        yield given
        return
    port = 19392
    _start_kafka(port)
    yield f"127.0.0.1:{port}"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "local_kafka.py"), "stop", "--port", str(port)],
        check=False,
        timeout=120,
    )


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A signature-checking webhook receiver on a free port of 127.0.0.1."""
    r = Receiver().start()
    yield r
    r.stop()
