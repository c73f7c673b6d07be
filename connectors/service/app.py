"""The app factory: one router per concern, all sharing one :class:`ServiceContext`.

The OpenAPI document (``/openapi.json``, committed as ``docs/openapi.json``) is generated
from the routes; ``tests/service/test_openapi.py`` fails when the committed copy is stale.
"""

from __future__ import annotations

from fastapi import FastAPI

from connectors.service.context import ServiceContext

TITLE = "Feedback Pulse"
VERSION = "1"


def create_app(context: ServiceContext) -> FastAPI:
    from connectors.service import health, ingest, metrics_route, reads, silences, sql

    app = FastAPI(
        title=TITLE,
        version=VERSION,
        description=(
            "Ingestion of inferences and feedback, window metrics, alerts and read-only SQL "
            "over the ClickHouse store. Authenticate with `Authorization: Bearer <API key>`."
        ),
    )
    app.state.context = context
    for module in (health, ingest, reads, sql, silences, metrics_route):
        app.include_router(module.router)
    return app
