"""The app factory: one router per concern, all sharing one :class:`ServiceContext`.

The OpenAPI document (``/openapi.json``, committed as ``docs/openapi.json``) is generated
from the routes; ``tests/service/test_openapi.py`` fails when the committed copy is stale.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from connectors.clickhouse import ClickHouseError
from connectors.service.body_limit import BodyLimit
from connectors.service.context import ServiceContext

TITLE = "Feedback Pulse"
STORE_RETRY_AFTER_S = 5
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
    if context.telemetry is not None:
        app.middleware("http")(_request_metrics)
    for module in (health, ingest, reads, sql, silences, metrics_route):
        app.include_router(module.router)
    app.add_exception_handler(ClickHouseError, _store_unavailable)
    app.add_middleware(BodyLimit, max_bytes=context.settings.service.max_body_bytes)
    return app


def _store_unavailable(_request: Request, exc: Exception) -> Response:
    """The store cannot be reached (a server DSN down): 503, retry later; never a 500."""
    return JSONResponse(
        {"detail": str(exc)}, status_code=503, headers={"Retry-After": str(STORE_RETRY_AFTER_S)}
    )


async def _request_metrics(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Every request's route template, method, status and latency to the telemetry (an
    unhandled error counts as a 500)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        route = getattr(request.scope.get("route"), "path", None) or "unmatched"
        telemetry = request.app.state.context.telemetry
        if telemetry is not None:
            telemetry.observe_request(route, request.method, status, time.perf_counter() - started)
