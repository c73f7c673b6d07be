"""Schema-based fuzz of the ingestion routes (schemathesis, from the served OpenAPI
document): no 5xx, and nothing accepted that the contract rejects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from pydantic import ValidationError

from operators.contract import EVENT_ADAPTER
from tests.service.conftest import ServiceFactory
from tests.service.test_ingest import logged, settings_for, start

ROUTES = ("/v1/inferences", "/v1/feedback")


def _items(body: Any) -> list[Any]:
    return body if isinstance(body, list) else [body]


def _contract_accepts(item: Any) -> bool:
    try:
        EVENT_ADAPTER.validate_python(item)
    except ValidationError:
        return False
    return True


def test_fuzzed_bodies_never_5xx_and_only_valid_events_are_accepted(
    service: ServiceFactory, home: Path
) -> None:
    running = start(service, settings_for(home, PULSE_SERVICE_RATE_LIMIT="1000000/second"))
    with running.client() as client:
        schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    auth = {"Authorization": f"Bearer {running.key}"}
    accepted_total = 0

    for route in ROUTES:
        operation = schema[route]["POST"]

        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,  # the same cases every run
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            nonlocal accepted_total
            response = case.call(base_url=running.url, headers=auth)
            assert response.status_code < 500, response.text
            assert response.status_code in (202, 413, 422), response.text
            if response.status_code != 202:
                return
            results = response.json()["results"]
            items = _items(case.body)
            assert len(results) == len(items)
            for item, result in zip(items, results, strict=True):
                if result["status"] == "accepted":
                    accepted_total += 1
                    assert _contract_accepts(item), (item, result)

        check()

    # What was reported accepted is exactly what the log holds.
    assert accepted_total > 0  # the accepted branch ran
    stored = logged(home)
    assert len(stored["inferences"]) + len(stored["feedback"]) == accepted_total
