"""POST /v1/inferences and /v1/feedback: events into the durable log (scope `ingest`).

A request goes: size (413, from Content-Length and again while reading: body_limit.py) -> items
(:func:`operators.ingest.split_body`; more than `service.max_batch_events` -> 413) ->
the key's rate limit in events (429 + Retry-After) -> each item validated as the flow
decodes it (:class:`operators.ingest.IngestValidator`) -> the accepted ones appended to
the log, placed by :func:`connectors.event_writer.route` -> 202 once the log confirmed
(503 + Retry-After when it cannot). Nothing accepted -> 422, or 403 when every item
claimed another tenant than the key's; a tenant key's tenant is written into events
without one, feedback too: the service cannot know a `request_id`'s tenant, the flow
checks it at the join (docs/ingestion.md, Tenants). The handler returns a ready-made JSON response
(msgspec: a 5000-item result list is encoded in well under a millisecond); the pydantic
models below only describe it in the OpenAPI document.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, TypeAdapter

from connectors.event_writer import route
from connectors.service.auth import Principal, require
from connectors.service.context import EventLogUnavailable, Routed, ServiceContext
from connectors.service.rate_limit import RateLimit
from connectors.service.responses import Problem, Responses, keyed
from operators import contract
from operators.decode import BatchDecoder
from operators.ingest import EventType, IngestBatch, IngestValidator, split_body

router = APIRouter(tags=["ingestion"])
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/ndjson")
NO_LOG_RETRY_S = 30  # no event log configured in this process: an operator must act
INLINE_BYTES = 64 * 1024  # bodies up to this size are split on the event loop itself


class ItemError(BaseModel):
    code: str  # invalid | malformed_json | not_object | oversize | ts_out_of_range | ...
    path: str  # e.g. "feedback.value"; "" for the item as a whole
    reason: str


class ItemResult(BaseModel):
    index: int
    event_id: str | None
    status: Literal["accepted", "rejected"]
    errors: list[ItemError]


class IngestResponse(BaseModel):
    """Per item: accepted (durable in the event log) or rejected, with why."""

    accepted: int
    rejected: int
    results: list[ItemResult]
    detail: str | None = None  # why nothing was looked at (an empty body)


class _Ingestion:
    """A service's validator and rate limit, built from its settings on first use."""

    def __init__(self, context: ServiceContext) -> None:
        s = context.settings
        decoder = BatchDecoder(
            s.validation.max_event_bytes,
            s.validation.min_ts,
            s.validation.max_ts,
            tuple(s.aggregation.extra_dims),
        )  # exactly the flow's (dataflows.feedback)
        self.validator = IngestValidator(decoder)
        self.rate_limit = RateLimit(s.service.rate_limit)


_lock = threading.Lock()


def _ingestion(context: ServiceContext) -> _Ingestion:
    with _lock:
        found = context.extras.get("ingestion")
        if not isinstance(found, _Ingestion):
            found = context.extras["ingestion"] = _Ingestion(context)
        return found


def _json(status_code: int, body: dict[str, Any], retry_after: int | None = None) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return Response(msgspec.json.encode(body), status_code, headers, media_type="application/json")


def _problem(status_code: int, detail: str, retry_after: int | None = None) -> Response:
    return _json(status_code, {"detail": detail}, retry_after)


def _results(batch: IngestBatch) -> dict[str, Any]:
    return {
        "accepted": batch.accepted,
        "rejected": batch.rejected,
        "results": [
            {
                "index": r.index,
                "event_id": r.event_id,
                "status": "accepted" if r.accepted else "rejected",
                "errors": [{"code": e.code, "path": e.path, "reason": e.reason} for e in r.errors],
            }
            for r in batch.results
        ],
    }


def _prepare(
    validator: IngestValidator, items: list[Any], expected: EventType, tenant: str | None
) -> tuple[IngestBatch, list[Routed]]:
    """The items judged as the flow judges them, and the accepted lines placed as a
    producer places them (stream, key = request_id)."""
    batch = validator.validate(items, expected, tenant)
    return batch, [route(line) for line in batch.lines]


async def _ingest(request: Request, principal: Principal, expected: EventType) -> Response:
    context: ServiceContext = request.app.state.context
    service = context.settings.service
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        return _problem(415, f"Content-Encoding {encoding!r} is not supported: send plain JSON")
    body = await request.body()  # bounded by service.max_body_bytes (body_limit.py)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    ndjson = media_type in NDJSON_TYPES
    # Small bodies (most are one event) are split, validated and placed on the event loop
    # itself: a thread-pool hop costs more than the work; megabytes would stall the loop.
    inline = len(body) <= INLINE_BYTES
    if inline:
        items = split_body(body, ndjson)
    else:
        items = await run_in_threadpool(split_body, body, ndjson)
    if not items:
        return _json(
            422, {"accepted": 0, "rejected": 0, "results": [], "detail": "the body holds no events"}
        )
    if len(items) > service.max_batch_events:
        return _problem(
            413,
            f"{len(items)} events exceed service.max_batch_events={service.max_batch_events}; "
            "split the batch",
        )
    if context.log is None:
        return _problem(503, "no event log is configured in this process", NO_LOG_RETRY_S)
    ingestion = _ingestion(context)
    verdict = ingestion.rate_limit.hit(principal.name, len(items))
    if verdict.too_big:
        return _problem(
            413,
            f"{len(items)} events exceed the rate limit of {ingestion.rate_limit.per_window} "
            "per window (service.rate_limit); send smaller batches",
        )
    if not verdict.allowed:
        return _problem(
            429,
            f"API key {principal.name!r} is over its rate limit ({service.rate_limit} events)",
            verdict.retry_after_s,
        )
    tenant = None if principal.all_tenants else principal.tenant
    prepared = (ingestion.validator, items, expected, tenant)
    batch, routed = _prepare(*prepared) if inline else await run_in_threadpool(_prepare, *prepared)
    if not batch.accepted:
        code = status.HTTP_403_FORBIDDEN if batch.only_tenant_rejections else 422
        return _json(code, _results(batch))
    try:  # awaited on the loop: the log's own thread resolves it once durable
        await context.log.append_async(routed, service.ingest_timeout / 1000)
    except EventLogUnavailable as exc:
        return _problem(503, f"nothing was accepted: {exc}; retry", exc.retry_after_s)
    return _json(202, _results(batch))


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema with its `$defs` inlined (an OpenAPI operation cannot hold them) and
    discriminator mappings dropped (they name those `$defs`; the `oneOf` stays)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items() if k != "discriminator"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined


_EVENT_MODELS: dict[EventType, Any] = {
    "inference": contract.Inference,
    "feedback": contract.Feedback,
}
_TENANT_NOTES: dict[EventType, str] = {
    "inference": " A key bound to a tenant writes its tenant into events without one.",
    "feedback": " A key bound to a tenant writes its tenant into events without one; "
    "feedback on another tenant's request_id is accepted here (the service cannot know "
    "a request's tenant) and refused by the flow at the join (a dead letter, not counted).",
}


def _openapi(expected: EventType) -> dict[str, Any]:
    event = _inlined(TypeAdapter(_EVENT_MODELS[expected]).json_schema())
    return {
        "requestBody": {
            "required": True,
            "description": (
                f"One {expected} event, a JSON array of them, or NDJSON (one event per line, "
                "`Content-Type: application/x-ndjson`). Contract: config/event-schema.json."
                + _TENANT_NOTES[expected]
            ),
            "content": {
                "application/json": {
                    "schema": {"anyOf": [event, {"type": "array", "items": event}]}
                },
            },
        }
    }


_RESPONSES: Responses = {
    202: {"description": "Some or all events accepted, and durable in the event log."},
    403: {
        "model": IngestResponse | Problem,
        "description": "The key lacks the `ingest` scope (`detail`), or every event claimed "
        "another tenant than the key's (per-item results).",
    },
    415: {"model": Problem, "description": "A compressed body: send it uncompressed."},
    422: {"model": IngestResponse, "description": "No event accepted; each item says why."},
}
_ROUTE = keyed(
    "ingest",
    413,
    429,
    503,
    own=_RESPONSES,
    description="One event, a JSON array or NDJSON; per item accepted or rejected "
    "(docs/ingestion.md).",
)
_Ingest = Annotated[Principal, Depends(require("ingest"))]


@router.post(
    "/v1/inferences",
    status_code=202,
    response_model=IngestResponse,
    **_ROUTE,
    openapi_extra=_openapi("inference"),
    summary="Send inferences",
)
async def post_inferences(request: Request, principal: _Ingest) -> Response:
    return await _ingest(request, principal, "inference")


@router.post(
    "/v1/feedback",
    status_code=202,
    response_model=IngestResponse,
    **_ROUTE,
    openapi_extra=_openapi("feedback"),
    summary="Send feedback",
)
async def post_feedback(request: Request, principal: _Ingest) -> Response:
    return await _ingest(request, principal, "feedback")
