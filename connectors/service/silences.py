"""Silences over HTTP: what `pulse silence` does from another process while this one holds
the store (:class:`connectors.silence_store.ServiceSilences` is the client).

``GET /v1/silences`` (scope `read`; ``?all=true``: expired ones too), ``POST /v1/silences``
and ``DELETE /v1/silences/{id}`` (scope `admin`). A key bound to a tenant sees and changes
only silences whose `tenant` matcher is its tenant; a silence it adds gets that matcher
(naming another tenant is refused, 403). Validation is the settings' own
(:class:`config.rules.SilenceSettings`), so a bad matcher reads as it does in the YAML.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config.rules import SilenceSettings
from config.settings import parse_duration_ms
from connectors.service.app import STORE_RETRY_AFTER_S
from connectors.service.auth import Principal, require
from connectors.service.context import ServiceContext
from connectors.service.responses import Problem, Responses, keyed
from connectors.silence_store import SilenceStore, StoredSilence
from operators.errors import PulseError

router = APIRouter(prefix="/v1/silences", tags=["silences"])

TENANT = "tenant"
UNPROCESSABLE = 422  # (starlette renamed its constant; the code stays)
MAX_UNTIL_MS = 10_413_791_999_999  # 2299-12-31T23:59:59.999Z, DateTime64's last instant
STORE_DOWN: Responses = {
    503: {"model": Problem, "description": "The store did not answer; `detail` says why."}
}


@contextmanager
def _store_answers() -> Iterator[None]:
    """A store that fails (a server down, a table missing) is a 503 naming why, not a 500."""
    try:
        yield
    except PulseError as exc:  # QueryError, ClickHouseError (no connection), SilenceStoreError
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"the silences cannot be used now: {exc}",
            headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
        ) from None


class SilenceRecord(BaseModel):
    """A silence as stored (what `pulse silence list --format json` prints)."""

    id: str
    matchers: dict[str, str | list[str]] = Field(description="dims (and `rule`); a list: any")
    created_at: str = Field(description="RFC 3339, UTC")
    created_at_ms: int
    until: str = Field(description="the expiry, RFC 3339 of event time")
    until_ms: int
    active: bool = Field(description="the expiry is after now")
    comment: str


class NewSilence(BaseModel):
    """A silence to add: its matchers and either `until_ms` or `for` (a duration from now)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    matchers: dict[str, str | list[str]] = Field(
        min_length=1, description="dims (and `rule`) an alert must have; a list: any of them"
    )
    until_ms: int | None = Field(
        None, ge=0, le=MAX_UNTIL_MS, description="expiry, epoch ms of event time"
    )
    for_: str | None = Field(None, alias="for", description="or a duration from now: 30m, 2h")
    comment: str = ""


def _store(request: Request) -> SilenceStore:
    context: ServiceContext = request.app.state.context
    return SilenceStore(context.target, query=context.store.query)


def _visible(silence: StoredSilence, principal: Principal) -> bool:
    return principal.all_tenants or silence.matchers.get(TENANT) == principal.tenant


@router.get(
    "",
    summary="The silences (active ones; `all=true`: expired ones too)",
    **keyed("read", 422, own=STORE_DOWN),
)
def list_silences(
    request: Request,
    principal: Annotated[Principal, Depends(require("read"))],
    all: bool = False,
) -> list[SilenceRecord]:
    now_ms = int(time.time() * 1000)
    with _store_answers():
        listed = _store(request).listed(now_ms, include_expired=all)
    return [SilenceRecord(**s.record(now_ms)) for s in listed if _visible(s, principal)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Add a silence",
    **keyed(
        "admin",
        413,
        422,
        own=STORE_DOWN,
        description="A tenant-bound key's silence gets its `tenant` matcher.",
    ),
)
def add_silence(
    request: Request,
    body: NewSilence,
    principal: Annotated[Principal, Depends(require("admin"))],
) -> SilenceRecord:
    now_ms = int(time.time() * 1000)
    matchers = dict(body.matchers)
    if not principal.all_tenants:
        claimed = matchers.setdefault(TENANT, principal.tenant)
        if claimed != principal.tenant:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"API key {principal.name!r} acts for tenant {principal.tenant!r} only",
            )
    until = _until(body, now_ms)
    try:
        valid = SilenceSettings(matchers=matchers, until=until, comment=body.comment)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise HTTPException(UNPROCESSABLE, detail=problems) from None
    with _store_answers():
        added = _store(request).add(valid.matchers, valid.until, valid.comment, now_ms=now_ms)
    return SilenceRecord(**added.record(now_ms))


@router.delete(
    "/{silence_id}", summary="End a silence now", **keyed("admin", 404, 422, own=STORE_DOWN)
)
def expire_silence(
    request: Request,
    silence_id: str,
    principal: Annotated[Principal, Depends(require("admin"))],
) -> SilenceRecord:
    now_ms = int(time.time() * 1000)
    store = _store(request)
    with _store_answers():
        known = {s.id: s for s in store.listed(now_ms, include_expired=True)}
    if silence_id not in known or not _visible(known[silence_id], principal):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"no silence with id {silence_id!r} (`pulse silence list --all` shows them)",
        )
    with _store_answers():
        ended = store.expire(silence_id, now_ms=now_ms)
    return SilenceRecord(**ended.record(now_ms))


def _until(body: NewSilence, now_ms: int) -> int:
    if (body.until_ms is None) == (body.for_ is None):
        raise HTTPException(UNPROCESSABLE, detail="give either `until_ms` or `for`")
    if body.until_ms is not None:
        return body.until_ms
    try:
        length = parse_duration_ms(body.for_)
    except ValueError as exc:
        raise HTTPException(UNPROCESSABLE, detail=f"for: {exc}") from None
    if not 0 < length <= MAX_UNTIL_MS - now_ms:
        raise HTTPException(UNPROCESSABLE, detail="for: must be positive, ending before 2300")
    return now_ms + length
