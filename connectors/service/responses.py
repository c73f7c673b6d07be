"""The error responses a route declares in the OpenAPI document, written once.

A client generated from ``docs/openapi.json`` (and schemathesis, which checks every
answer against it) only knows the status codes a route declares. The auth dependency
(:func:`connectors.service.auth.require`) answers 401 and 403 on every keyed route, so
those are declared here together with the scope the route needs, in one call per route::

    @router.get("/v1/x", **keyed("read", 404, 422), summary="...")

Every error body the service writes is ``{"detail": ...}`` (FastAPI's HTTPException, or
the ingestion's ready-made JSON), so :class:`Problem` describes them all, except 422:
a route's own check answers ``{"detail": "why"}`` while FastAPI's parameter validation
answers ``{"detail": [field errors]}`` for the same route, so :class:`Invalid` allows both
(schemathesis found routes declaring only one of the two). A route that answers a code
with a richer body (ingestion's per-item results) passes its own entry in ``own`` and it
wins.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from config.settings import ApiScope

Responses = dict[int | str, dict[str, Any]]


class Problem(BaseModel):
    """Why a request was refused."""

    detail: str


class FieldError(BaseModel):
    """One of FastAPI's parameter or body validation errors."""

    loc: list[str | int]
    msg: str
    type: str


class Invalid(BaseModel):
    """422: the route's reason (a string), or FastAPI's field errors (a list)."""

    detail: str | list[FieldError]


# Why each code happens, as a route can answer it (the route's own text may replace it).
WHY: dict[int, str] = {
    400: "The request was refused or failed; `detail` says why.",
    401: "No API key, or an unknown one: send `Authorization: Bearer <key>`.",
    403: "The API key lacks the scope this route needs, or acts for another tenant.",
    404: "Not found; `detail` says what is missing.",
    413: "The body or batch is too large (service.max_body_bytes, service.max_batch_events).",
    422: "The request is invalid; `detail` names the field.",
    429: "The API key is over its rate limit (service.rate_limit): retry after Retry-After.",
    503: "The event log did not confirm: nothing was accepted; retry after Retry-After.",
}
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
}


def problem(*codes: int) -> Responses:
    """Each code as a `{"detail"}` response with its usual reason (and Retry-After on
    429/503)."""
    declared: Responses = {}
    for code in codes:
        model = Invalid if code == 422 else Problem
        entry: dict[str, Any] = {"model": model, "description": WHY[code]}
        if code in (429, 503):
            entry["headers"] = RETRY_AFTER
        declared[code] = entry
    return declared


def needs(scope: ApiScope) -> str:
    """The line a keyed route's description starts with."""
    return f"Scope: `{scope}` (an API key holding it: `Authorization: Bearer <key>`)."


def keyed(
    scope: ApiScope, *codes: int, own: Responses | None = None, description: str = ""
) -> dict[str, Any]:
    """The decorator arguments of a route that needs `scope`: its description (scope first)
    and its responses (401, 403 and `codes`; an entry of the route's `own` is laid over
    the same code's, so a route may change only a description or only the model)."""
    text = needs(scope) + (f"\n\n{description}" if description else "")
    declared = problem(401, 403, *codes)
    for code, entry in (own or {}).items():
        declared[code] = {**declared.get(code, {}), **entry}
    return {"description": text, "responses": declared}
