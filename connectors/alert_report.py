"""What `pulse alerts` and the service's ``GET /v1/alerts`` read from the `alerts` table:
the alerts active now and the recent transitions.

An alert is active when its latest transition (inconclusive spells aside: they change no
state) is `pending` or `firing`. "Recent" is measured back from the latest transition's
event time, not the clock: a replay of an old log shows its own alerts. A ``tenant``
restricts both reads to that tenant's alerts (the service sets it from a tenant-bound
key); alerts carry the tenant dim they fired for ('' when their rule spans tenants, so
a tenant-bound key does not see those).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connectors.query_server import QueryError, QueryResult

DIMS = "tenant, model_id, deployment, model_version, segment, endpoint, extra_dims"
# At one event time a later state of an episode sorts after the earlier one.
_STATE_ORDER = "indexOf(['inconclusive', 'pending', 'firing', 'resolved'], state)"

Run = Callable[[str, dict[str, Any]], QueryResult]


def _tenant(tenant: str | None, params: dict[str, Any], joiner: str) -> str:
    if tenant is None:
        return ""
    params["tenant"] = tenant
    return f"{joiner} tenant = {{tenant:String}} "


def active_query(database: str, tenant: str | None = None) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {}
    only = _tenant(tenant, params, "AND")
    sql = (
        f"SELECT rule, fingerprint, state, severity, episode, event_time AS since, {DIMS}, "
        "value, threshold, samples, reason FROM ("
        f"SELECT * FROM {database}.alerts FINAL WHERE state != 'inconclusive' {only}"
        f"ORDER BY event_time DESC, episode DESC, sequence DESC, {_STATE_ORDER} DESC "
        "LIMIT 1 BY rule, fingerprint) "
        "WHERE state IN ('pending', 'firing') "
        "ORDER BY indexOf(['critical', 'error', 'warning', 'info'], severity), rule, fingerprint"
    )
    return sql, params


def active_sql(database: str) -> str:
    return active_query(database)[0]


def transitions_sql(
    database: str, since_ms: int | None, limit: int, tenant: str | None = None
) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {"limit": limit}
    conditions = []
    if tenant is not None:
        params["tenant"] = tenant
        conditions.append("tenant = {tenant:String}")
    if since_ms is not None:
        scope = "WHERE tenant = {tenant:String}" if tenant is not None else ""
        conditions.append(
            f"event_time >= (SELECT max(event_time) FROM {database}.alerts {scope}) "
            "- toIntervalMillisecond({since:Int64})"
        )
        params["since"] = since_ms
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    sql = (
        f"SELECT event_time, rule, fingerprint, episode, previous, state, severity, {DIMS}, "
        "value, threshold, samples, baseline_samples, reason, targets, notified, muted, action "
        f"FROM {database}.alerts FINAL {where}"
        f"ORDER BY event_time DESC, episode DESC, sequence DESC, {_STATE_ORDER} DESC "
        "LIMIT {limit:UInt64}"
    )
    return sql, params


def no_alerts_table(exc: QueryError) -> bool:
    """The store has no alerts table yet (no `pulse migrate`, no flow with rules)."""
    return "alerts" in str(exc) and "does not exist" in str(exc)


def records(result: QueryResult) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def report(
    run: Run, database: str, since_ms: int | None, limit: int, tenant: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """``{"active": [...], "transitions": [...]}`` as ``pulse alerts --format json`` prints;
    `run` executes one statement (the CLI's or the service's store)."""
    active = run(*active_query(database, tenant))
    recent = run(*transitions_sql(database, since_ms, limit, tenant))
    return {"active": records(active), "transitions": records(recent)}
