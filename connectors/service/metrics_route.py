"""`GET /metrics`: Prometheus text of the process's telemetry (docs/telemetry.md).

Without configured API keys (the service then listens on loopback only: settings refuse
anything else) it needs no key, as Prometheus scrapes expect; once `service.api_keys` are
configured it needs a key with the `read` scope (Prometheus: `authorization: {credentials:
<key>}` in the scrape config). 404 when Prometheus is off (`telemetry.prometheus: false`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials

from connectors.service.auth import _bearer, require  # one scheme, one description
from connectors.service.context import ServiceContext
from connectors.service.responses import keyed

router = APIRouter(tags=["metrics"])
_read = require("read")


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    **keyed(
        "read",
        404,
        own={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
        description=(
            "The key is needed only once `service.api_keys` are configured; without them the "
            "service listens on loopback and `/metrics` is open to scrapers. 404: Prometheus "
            "export is off (`telemetry.prometheus: false`)."
        ),
    ),
)
def metrics(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Response:
    context: ServiceContext = request.app.state.context
    if context.settings.service.api_keys:
        _read(request, credentials)
    if context.telemetry is None or not context.settings.telemetry.prometheus:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Prometheus export is off")
    body, content_type = context.telemetry.prometheus_text()
    return Response(body, media_type=content_type)
