"""Liveness and readiness, without authentication (probes carry no keys).

``GET /healthz``: the process answers. ``GET /readyz``: 200 only when every check passes,
else 503 with each failed check named and why:

- ``event_log``: the ingestion log is configured and reachable (Kafka's broker answers,
  or the local log's directory is writable);
- ``clickhouse``: ``SELECT 1`` answers;
- ``flow_lag`` (only when a flow runs in this process): the flow's watermark trails the
  wall clock by at most ``service.ready_max_lag``. Before the first watermark it is ready:
  a flow that has seen no event has nothing to lag behind, and a pod reported not ready
  gets no requests, so a flow fed through this service would never see its first event.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from config.settings import format_duration
from connectors.service.context import ServiceContext

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    """Each check's outcome; `failed` says why, for each one that failed."""

    status: Literal["ready", "not ready"]
    checks: dict[str, Literal["ok", "failed"]]
    failed: dict[str, str] = {}


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Ready: event log and ClickHouse reachable, the flow's lag within bound",
    response_model=Readiness,
    responses={
        503: {"model": Readiness, "description": "Not ready: `failed` names each failed check"}
    },
)
def readyz(request: Request) -> JSONResponse:
    context: ServiceContext = request.app.state.context
    checks = {
        "event_log": _event_log(context),
        "clickhouse": None if context.store.reachable() else "ClickHouse does not answer",
    }
    if context.hosted_by_flow:
        checks["flow_lag"] = _flow_lag(context, int(time.time() * 1000))
    failed = {name: why for name, why in checks.items() if why is not None}
    body: dict[str, Any] = {
        "status": "not ready" if failed else "ready",
        "checks": {name: "ok" if why is None else "failed" for name, why in checks.items()},
    }
    if failed:
        body["failed"] = failed
    return JSONResponse(body, status_code=503 if failed else 200)


def _event_log(context: ServiceContext) -> str | None:
    if context.log is None:
        return "no event log is configured for ingestion"
    try:
        return None if context.log.reachable() else "the event log is not reachable"
    except Exception as exc:  # a probe never fails with a 500
        return f"the event log is not reachable: {exc}"


def _flow_lag(context: ServiceContext, now_ms: int) -> str | None:
    bound = context.settings.service.ready_max_lag
    watermark = context.stats.watermark_ms
    if watermark == 0:
        return None  # no event yet: nothing to lag behind
    lag = now_ms - watermark
    if lag <= bound:
        return None
    return (
        f"the flow's watermark trails the wall clock by {format_duration(lag)} "
        f"(service.ready_max_lag {format_duration(bound)})"
    )
