"""The generator's canary scenario: one model whose canary is alike its primary until a
given event time, then worse by the given thumbs-down rate; deterministic for a seed."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from operators.synthetic import DEFAULT_START_MS, TrafficGenerator, TrafficProfile

DEGRADE_AT = DEFAULT_START_MS + 60_000


def _lines(**canary: object) -> list[bytes]:
    profile = TrafficProfile(seed=4, duration_s=120, rate=100, canary_share=0.3, **canary)  # type: ignore[arg-type]
    return [e.line for e in TrafficGenerator(profile).events() if e.invalid is None]


def _thumbs_down(lines: list[bytes]) -> dict[tuple[str, bool], tuple[int, int]]:
    """(deployment, inference after DEGRADE_AT) -> (thumbs down, thumbs)."""
    inferences: dict[str, tuple[str, bool]] = {}
    counts: dict[tuple[str, bool], tuple[int, int]] = {}
    for raw in lines:
        event = json.loads(raw)
        if event["type"] == "inference":
            ts = event["ts"]
            ms = ts if isinstance(ts, int) else int(datetime.fromisoformat(ts).timestamp() * 1000)
            inferences[event["request_id"]] = (event["deployment"], ms >= DEGRADE_AT)
    for raw in lines:
        event = json.loads(raw)
        if event["type"] == "feedback" and event["request_id"] in inferences:
            assert event["kind"] == "thumbs"
            cell = inferences[event["request_id"]]
            down, total = counts.get(cell, (0, 0))
            counts[cell] = (down + (event["value"] is False), total + 1)
    return counts


def test_the_canary_degrades_from_the_given_time_only() -> None:
    degraded = _lines(canary_degrade_at_ms=DEGRADE_AT, canary_thumbs_down=0.5)
    alike = _lines()
    assert degraded == _lines(canary_degrade_at_ms=DEGRADE_AT, canary_thumbs_down=0.5)
    counts = _thumbs_down(degraded)
    rate = {cell: down / total for cell, (down, total) in counts.items()}
    assert rate[("canary", True)] > 0.4  # 0.5 from DEGRADE_AT
    for cell in [("canary", False), ("primary", False), ("primary", True)]:
        assert 0.06 < rate[cell] < 0.14, (cell, rate)  # the 10 % base rate
    # Without the degradation: the same draws, so the same log but the canary's thumbs.
    assert len(alike) == len(degraded)
    differing = [(a, d) for a, d in zip(alike, degraded, strict=True) if a != d]
    assert differing
    assert all(json.loads(a)["type"] in ("inference", "feedback") for a, _ in differing)
    assert _thumbs_down(alike)[("canary", True)][0] < counts[("canary", True)][0] / 3
    assert {json.loads(line).get("model_id") for line in alike} <= {"assistant", None}


@pytest.mark.parametrize(
    "canary",
    [
        {"canary_share": 1.0},
        {"canary_share": 0.2, "canary_thumbs_down": 0.3},
        {"canary_degrade_at_ms": DEGRADE_AT, "canary_thumbs_down": 0.3},
        {"canary_share": 0.2, "canary_degrade_at_ms": DEGRADE_AT, "canary_thumbs_down": 1.5},
    ],
)
def test_an_incomplete_or_out_of_range_canary_is_refused(canary: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="canary"):
        TrafficProfile(**canary)  # type: ignore[arg-type]
