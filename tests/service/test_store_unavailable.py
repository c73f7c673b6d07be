"""A ClickHouse server that does not answer makes the read routes answer 503 with
Retry-After, never a 500 (and a refused statement stays a 400)."""

from __future__ import annotations

from pathlib import Path

from config.settings import load_settings
from tests.service.conftest import ServiceFactory


def test_reads_answer_503_while_the_store_is_unreachable(
    service: ServiceFactory, home: Path
) -> None:
    # Nothing listens on port 1.
    settings = load_settings(
        environ={"PULSE_HOME": str(home), "PULSE_CLICKHOUSE_DSN": "http://pulse:pw@127.0.0.1:1/"}
    )
    running = service(settings)
    with running.client() as client:
        for response in (
            client.get("/v1/metrics", params={"metric": "accuracy"}),
            client.get("/v1/alerts"),
            client.post("/v1/query", json={"sql": "SELECT 1"}),
            client.get("/v1/silences"),
        ):
            assert response.status_code == 503, (response.request.url, response.text)
            assert int(response.headers["Retry-After"]) > 0
            assert "pw" not in response.text
