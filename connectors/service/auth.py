"""API keys: `Authorization: Bearer <key>` -> the key's tenant and scopes.

The keys themselves (format, hash, the local key's tenant and scopes) are
:mod:`connectors.service.keys`. Lookup is by the key's SHA-256; `hmac.compare_digest`
keeps the comparison constant-time anyway.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from config.settings import ApiKeySettings, ApiScope
from connectors.service.keys import ALL_SCOPES, ALL_TENANTS, LOCAL_SCOPES, LOCAL_TENANT, key_hash


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's name, the tenant it acts for ("*": any) and its scopes."""

    name: str
    tenant: str
    scopes: frozenset[str]

    @property
    def all_tenants(self) -> bool:
        return self.tenant == ALL_TENANTS

    def may_act_for(self, tenant: str) -> bool:
        return self.all_tenants or tenant == self.tenant


class KeyRing:
    """The configured keys, and the two a run makes when none are, by hash: the local key
    (tenant ``default``: ingest, read, query) and the operator key (any tenant, every
    scope: silences, other tenants' rows)."""

    def __init__(
        self,
        keys: Iterable[ApiKeySettings],
        local_key: str | None = None,
        operator_key: str | None = None,
    ) -> None:
        self._by_hash: dict[str, Principal] = {
            k.sha256: Principal(k.name, k.tenant, frozenset(k.scopes)) for k in keys
        }
        if local_key is not None:
            self._by_hash[key_hash(local_key)] = Principal(
                "local", LOCAL_TENANT, frozenset(LOCAL_SCOPES)
            )
        if operator_key is not None:
            self._by_hash[key_hash(operator_key)] = Principal(
                "operator", ALL_TENANTS, frozenset(ALL_SCOPES)
            )

    def __len__(self) -> int:
        return len(self._by_hash)

    def principal(self, key: str) -> Principal | None:
        digest = key_hash(key)
        for known, principal in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None


_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer pk_...`")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def require(scope: ApiScope) -> Callable[..., Principal]:
    """A dependency: the caller's principal, which must hold `scope` (401 / 403)."""

    def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise _unauthorized("missing API key: send `Authorization: Bearer <key>`")
        keys: KeyRing = request.app.state.context.keys
        principal = keys.principal(credentials.credentials)
        if principal is None:
            raise _unauthorized("unknown API key")
        if scope not in principal.scopes:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"API key {principal.name!r} lacks the {scope!r} scope",
            )
        request.state.principal = principal
        return principal

    return dependency
