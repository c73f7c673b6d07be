"""The spine: a service answers on a real socket of its own."""

from __future__ import annotations

from tests.service.conftest import ServiceFactory


def test_openapi_is_served_on_the_bound_port(service: ServiceFactory) -> None:
    running = service()
    assert running.thread.port > 0
    with running.client() as client:
        assert client.get("/openapi.json").json()["info"]["title"] == "Feedback Pulse"
