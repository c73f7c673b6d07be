"""``POST /v1/query``: read-only SQL (scope ``query``), enforced by ClickHouse through
:mod:`connectors.service.sql_guard`.

The body and answer are those of the relay it replaces, so ``pulse query --sql`` and
``pulse alerts`` read through it unchanged: ``{"sql", "parameters"}`` ->
``{"columns": [...], "rows": [[...]]}``, values rendered as
:func:`connectors.query_server._json_default` renders them (``?format=csv``: CSV with a
header row). A refused or failing query is 400 with ClickHouse's first line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import threading
from datetime import date, datetime
from typing import Annotated, Any, Literal

from clickhouse_connect.driver.exceptions import Error as DriverError
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field

from connectors.query_server import QueryError, QueryResult, _json_default
from connectors.service.auth import Principal, require
from connectors.service.context import ServiceContext
from connectors.service.responses import Responses, keyed
from connectors.service.sql_guard import ReadOnlyGuard
from connectors.service.store import Store

router = APIRouter(tags=["reads"])

Format = Literal["json", "csv"]


class SqlQuery(BaseModel):
    sql: str = Field(min_length=1, max_length=1_000_000, description="one SELECT query")
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="values for `{name:Type}` (server-side) or `%(name)s` placeholders",
    )


class SqlResult(BaseModel):
    columns: list[str]
    rows: list[list[Any]]


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def render(result: QueryResult, fmt: Format, **extra: Any) -> Response:
    """`result` as JSON (``{"columns", "rows", **extra}``) or CSV (header row first)."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(result.columns)
        writer.writerows([[_csv_cell(v) for v in row] for row in result.rows])
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8")
    rows = [[_finite(v) for v in row] for row in result.rows]
    body = {"columns": result.columns, "rows": rows, **extra}
    return Response(
        json.dumps(body, default=_json_default, allow_nan=False), media_type="application/json"
    )


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity (a ratio over nothing, a float column's inf): null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


_made = threading.Lock()


def guard(context: ServiceContext) -> ReadOnlyGuard:
    """The service's guard, made once, on a ClickHouse client of its own (so a long query
    holds up no other route); ``context.close()`` closes it with the rest."""
    with _made:
        made = context.extras.get("sql_guard")
        if not isinstance(made, ReadOnlyGuard):
            service = context.settings.service
            made = ReadOnlyGuard(
                Store(context.target),
                context.target.database,
                service.query_max_rows,
                service.query_timeout,
            )
            context.extras["sql_guard"] = made
    return made


CSV: Responses = {
    200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with ?format=csv"}
}


@router.post(
    "/v1/query",
    response_model=SqlResult,
    summary="Run one read-only SELECT",
    **keyed(
        "query",
        400,
        413,
        422,
        own=CSV,
        description="One SELECT (WITH, UNION included) run with `readonly=1`, "
        "service.query_max_rows and service.query_timeout; a tenant-bound key sees only "
        "its tenant's rows. 400: refused or failed, `detail` is ClickHouse's first line "
        "or why it was refused (docs/reads.md).",
    ),
)
def query(
    body: SqlQuery,
    request: Request,
    principal: Annotated[Principal, Depends(require("query"))],
    format: Annotated[Format, Query(description="json (default) or csv")] = "json",
) -> Response:
    context: ServiceContext = request.app.state.context
    try:
        result = guard(context).run(body.sql, body.parameters, principal)
    except (QueryError, DriverError, KeyError, ValueError, TypeError, IndexError) as exc:
        # QueryError: ClickHouse's first line; the rest: parameters that do not bind.
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=detail) from None
    return render(result, format)
