"""What `pulse alerts` reads from the `alerts` table: the alerts active now and the recent
transitions.

An alert is active when its latest transition (inconclusive spells aside: they change no
state) is `pending` or `firing`. "Recent" is measured back from the latest transition's
event time, not the clock: a replay of an old log shows its own alerts.
"""

from __future__ import annotations

from typing import Any

DIMS = "tenant, model_id, deployment, model_version, segment, endpoint, extra_dims"
# At one event time a later state of an episode sorts after the earlier one.
_STATE_ORDER = "indexOf(['inconclusive', 'pending', 'firing', 'resolved'], state)"


def active_sql(database: str) -> str:
    return (
        f"SELECT rule, fingerprint, state, severity, episode, event_time AS since, {DIMS}, "
        "value, threshold, samples, reason FROM ("
        f"SELECT * FROM {database}.alerts FINAL WHERE state != 'inconclusive' "
        f"ORDER BY event_time DESC, episode DESC, sequence DESC, {_STATE_ORDER} DESC "
        "LIMIT 1 BY rule, fingerprint) "
        "WHERE state IN ('pending', 'firing') "
        "ORDER BY indexOf(['critical', 'error', 'warning', 'info'], severity), rule, fingerprint"
    )


def transitions_sql(database: str, since_ms: int | None, limit: int) -> tuple[str, dict[str, Any]]:
    where = ""
    params: dict[str, Any] = {"limit": limit}
    if since_ms is not None:
        where = (
            "WHERE event_time >= (SELECT max(event_time) FROM "
            f"{database}.alerts) - toIntervalMillisecond({{since:Int64}}) "
        )
        params["since"] = since_ms
    sql = (
        f"SELECT event_time, rule, fingerprint, episode, previous, state, severity, {DIMS}, "
        "value, threshold, samples, baseline_samples, reason, targets, notified, muted, action "
        f"FROM {database}.alerts FINAL {where}"
        f"ORDER BY event_time DESC, episode DESC, sequence DESC, {_STATE_ORDER} DESC "
        "LIMIT {limit:UInt64}"
    )
    return sql, params
