"""Rows of the `alerts` table (migration 0004): one per transition.

Keyed by (rule, fingerprint, episode, state, sequence): a transition's identity, the same
in a replay (event time, not the clock), so ReplacingMergeTree keeps one row however often
it is written. A dim the alert does not carry (a canary alert is per `match` dims) is
empty; extra dims are formatted as in `metrics` (`name=value;...`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from operators.batches import TableRows
from operators.cells import BASE_DIMS
from operators.rules.alerts import Transition

ALERTS_TABLE = "alerts"


def alert_rows(
    transitions: Sequence[Transition],
    muted: set[str],
    extra_dims: Sequence[str],
    keys: Sequence[str] | None = None,
) -> TableRows:
    """The rows of `transitions`; `muted`: idempotency keys of those a silence or an
    inhibition held back (`notified` says which went to their targets); `keys`: the
    transitions' idempotency keys when the caller has them already."""
    dims = [dict(t.dims) for t in transitions]
    columns: dict[str, list[Any]] = {
        "rule": [t.rule for t in transitions],
        "fingerprint": [t.fingerprint for t in transitions],
        "episode": [t.episode for t in transitions],
        "sequence": [t.sequence for t in transitions],
        "state": [t.state.value for t in transitions],
        "previous": [t.previous.value for t in transitions],
        "severity": [t.severity.value for t in transitions],
        "window": [t.window for t in transitions],
        "window_start": [t.window_start for t in transitions],
        "window_end": [t.window_end for t in transitions],
        "event_time": [t.event_time for t in transitions],
    }
    for name in BASE_DIMS:
        columns[name] = [d.get(name, "") for d in dims]
    columns["extra_dims"] = [";".join(f"{n}={d[n]}" for n in extra_dims if n in d) for d in dims]
    if keys is None:
        keys = [t.idempotency_key for t in transitions]
    columns.update(
        value=[t.value for t in transitions],
        threshold=[t.threshold for t in transitions],
        samples=[t.samples for t in transitions],
        baseline_samples=[t.baseline_samples for t in transitions],
        reason=[t.reason for t in transitions],
        targets=[",".join(t.targets) for t in transitions],
        action=[t.action for t in transitions],
        muted=[1 if k in muted else 0 for k in keys],
        notified=[
            1 if t.targets and k not in muted else 0 for t, k in zip(transitions, keys, strict=True)
        ],
        idempotency_key=list(keys),
    )
    return TableRows(ALERTS_TABLE, columns)
