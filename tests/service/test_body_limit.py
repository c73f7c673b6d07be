"""Every route's request body is bounded by service.max_body_bytes: 413 before it is read
(a declared length) or once it passes the bound (a chunked body)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import load_settings
from tests.service.conftest import ServiceFactory

LIMIT = 4096


def chunks(total: int) -> Iterator[bytes]:
    yield b'{"sql": "SELECT 1", "comment": "'
    for _ in range(total // 1024):
        yield b"x" * 1024
    yield b'"}'


@pytest.mark.parametrize("path", ["/v1/query", "/v1/silences", "/v1/feedback"])
def test_a_body_over_the_bound_is_413_on_every_route(
    service: ServiceFactory, home: Path, path: str
) -> None:
    settings = load_settings(
        environ={"PULSE_HOME": str(home), "PULSE_SERVICE_MAX_BODY_BYTES": str(LIMIT)}
    )
    running = service(settings)
    big = b'{"sql": "SELECT 1", "comment": "' + b"x" * (2 * LIMIT) + b'"}'
    with running.client() as client:
        declared = client.post(path, content=big, headers={"Content-Type": "application/json"})
        streamed = client.post(
            path, content=chunks(2 * LIMIT), headers={"Content-Type": "application/json"}
        )
        small = client.post(
            "/v1/query",
            content=b'{"sql": "SELECT 1"}',
            headers={"Content-Type": "application/json"},
        )
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert f"service.max_body_bytes={LIMIT}" in response.json()["detail"]
    assert small.status_code == 200  # the bound is not on everything
