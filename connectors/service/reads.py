"""``GET /v1/metrics`` and ``GET /v1/alerts`` (scope ``read``).

The same reads as ``pulse query`` and ``pulse alerts --format json``, shared through
:mod:`connectors.drilldown` and :mod:`connectors.alert_report` rather than copied. A key
bound to a tenant reads only that tenant's rows (both modules take a ``tenant``). Our
own SQL runs with the guard's settings too (``readonly=1``, the time limit).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field

from connectors import alert_report
from connectors.drilldown import DrilldownError, from_options, since_seconds
from connectors.query_server import QueryError, QueryResult, _json_default
from connectors.service.auth import Principal, require
from connectors.service.context import ServiceContext
from connectors.service.responses import keyed
from connectors.service.sql import CSV, Format, guard, render

router = APIRouter(tags=["reads"])


def _missing(exc: QueryError, what: str) -> HTTPException | None:
    """404 when the store has no such table yet, naming what would create it."""
    text = str(exc)
    if "does not exist" not in text or (f".{what}" not in text and "Database" not in text):
        return None
    reason = {
        "alerts": "no alerts table yet: run `pulse migrate`, or a flow with rules",
        "metrics": "no data yet: the store holds no Feedback Pulse tables (run a flow first)",
    }[what]
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=reason)


def _run(context: ServiceContext) -> alert_report.Run:
    """Our own SQL, on the guard's client and with its settings (readonly, time limit)."""
    reads = guard(context)
    settings = reads.settings(None)

    def run(sql: str, params: dict[str, Any]) -> QueryResult:
        return reads.store.query(sql, params, settings)

    return run


def _tenant(principal: Principal, where: list[str]) -> str | None:
    if principal.all_tenants:
        return None
    for item in where:
        name, _, value = item.partition("=")
        if name.strip() == "tenant" and value != principal.tenant:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"API key {principal.name!r} reads tenant {principal.tenant!r} only",
            )
    return principal.tenant


class MetricsResult(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    note: str | None = Field(None, description="why nothing matched (only when no rows)")


class AlertsResult(BaseModel):
    active: list[dict[str, Any]]
    transitions: list[dict[str, Any]]


@router.get(
    "/v1/metrics",
    response_model=MetricsResult,
    summary="Window metrics by dims over a time range (as `pulse query`)",
    **keyed(
        "read",
        400,
        404,
        422,
        own=CSV,
        description="The drill-down of `pulse query` (same options, same checks: 422 names "
        "the option). A tenant-bound key reads only its tenant's rows. 404: no data yet.",
    ),
)
def metrics(
    request: Request,
    principal: Annotated[Principal, Depends(require("read"))],
    metric: Annotated[str, Query(description="comma-separated metric names")],
    window: Annotated[str, Query(description="a configured window")] = "1m",
    by: Annotated[str | None, Query(description="comma-separated dims to group by")] = None,
    where: Annotated[list[str], Query(description="dim=value (repeatable)")] = [],  # noqa: B006
    since: Annotated[str | None, Query(description="duration (10m, 1h) or 'all'")] = "1h",
    start: Annotated[str | None, Query(description="RFC 3339 / epoch ms / now")] = None,
    end: Annotated[str | None, Query(description="RFC 3339 / epoch ms / now")] = None,
    final_only: bool = False,
    limit: Annotated[int, Query(ge=1)] = 10_000,
    format: Format = "json",
) -> Response:
    context: ServiceContext = request.app.state.context
    settings = context.settings
    if limit > settings.service.query_max_rows:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"limit must be at most {settings.service.query_max_rows} "
            "(service.query_max_rows)",
        )
    try:
        drill = from_options(
            metric=metric,
            by=by,
            window=window,
            since=since,
            start=start,
            end=end,
            where=where,
            final_only=final_only,
            limit=limit,
            windows=tuple(w.name for w in settings.windows if w.kind != "session"),
            tenant=_tenant(principal, where),
        )
    except DrilldownError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    run = _run(context)
    database = context.target.database
    try:
        result = run(*drill.sql(database))
        extra: dict[str, Any] = {}
        if not result.rows:
            count, first, last = run(*drill.coverage_sql(database)).rows[0]
            asked = "start/end" if start or end else f"since {since}"
            extra["note"] = drill.coverage_note(int(count), str(first), str(last), asked)
    except QueryError as exc:
        raise _missing(exc, "metrics") or HTTPException(
            status.HTTP_400_BAD_REQUEST, detail=str(exc)
        ) from None
    return render(result, format, **extra)


@router.get(
    "/v1/alerts",
    response_model=AlertsResult,
    summary="Active alerts and recent transitions (as `pulse alerts --format json`)",
    **keyed(
        "read",
        400,
        404,
        422,
        description="A tenant-bound key sees only its tenant's alerts. 404: no alerts "
        "table yet (no `pulse migrate`, no flow with rules).",
    ),
)
def alerts(
    request: Request,
    principal: Annotated[Principal, Depends(require("read"))],
    since: Annotated[
        str | None, Query(description="transitions this long before the latest ('all')")
    ] = None,
    limit: Annotated[int, Query(ge=1, description="at most this many transitions")] = 100,
) -> Response:
    context: ServiceContext = request.app.state.context
    try:
        seconds = since_seconds(since, "since")
    except DrilldownError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    limit = min(limit, context.settings.service.query_max_rows)
    tenant = None if principal.all_tenants else principal.tenant
    try:
        body = alert_report.report(
            _run(context),
            context.target.database,
            None if seconds is None else seconds * 1000,
            limit,
            tenant,
        )
    except QueryError as exc:
        raise _missing(exc, "alerts") or HTTPException(
            status.HTTP_400_BAD_REQUEST, detail=str(exc)
        ) from None
    return Response(json.dumps(body, default=_json_default), media_type="application/json")
