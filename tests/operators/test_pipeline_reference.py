"""The partition and merge stages against the reference implementation, in-process."""

from __future__ import annotations

import json
import random

from operators.synthetic import TrafficGenerator, TrafficProfile
from tests import reference as ref
from tests.harness import (
    assert_keyed_match,
    assert_metrics_match,
    assert_sessions_match,
    final_metric_rows,
    late_keys,
    run_stages,
    semantics,
)


def _valid(events):  # (stream, key, line) of the events the reference sees
    return [(e.stream, e.key, e.line) for e in events if e.invalid is None]


def test_generated_traffic_matches_the_reference_for_any_batching() -> None:
    events = list(
        TrafficGenerator(TrafficProfile(seed=21, duration_s=150, rate=25, late_rate=0.02)).events()
    )
    sem = semantics(partitions=3)
    expected = ref.compute(_valid(events), sem)
    for seed, max_batch in ((1, 5), (2, 200), (3, 1)):
        out = run_stages(
            [(e.stream, e.key, e.line) for e in events], sem, seed=seed, max_batch=max_batch
        )
        assert_metrics_match(
            final_metric_rows(out.column_rows("metrics", final_only=True)),
            ref.expected_rows(expected, sem),
        )
        assert_keyed_match(out.column_rows, expected)
        assert_sessions_match(out.column_rows("sessions"), expected, sem)
        assert late_keys(out.column_rows("metrics_late")) == expected.late
        assert expected.late, "the traffic should contain late events"
        events_rows = {r["event_id"]: r for r in out.column_rows("events")}
        assert set(events_rows) == set(expected.events)
        for event_id, want in expected.events.items():
            row = events_rows[event_id]
            assert (bool(row["joined"]), bool(row["late"]), row["model_version"]) == (
                want["joined"],
                want["late"],
                want["model_version"],
            )
        dead = out.column_rows("dead_letters")
        assert sorted(r["raw"] for r in dead) == sorted(e.line for e in events if e.invalid)


def test_feedback_naming_tenants_matches_the_reference() -> None:
    """Generated traffic (inferences of tenants acme and globex) whose feedback names a
    tenant at random: what names its inference's counts, the rest is refused at the join."""
    rng = random.Random(7)
    events = list(TrafficGenerator(TrafficProfile(seed=8, duration_s=90, rate=25)).events())
    stream = []
    for e in _valid(events):
        line = e[2]
        if e[0] == "feedback" and rng.random() < 0.7:
            line = json.dumps({**json.loads(line), "tenant": rng.choice(["acme", "globex"])})
        stream.append((e[0], e[1], line.encode() if isinstance(line, str) else line))
    sem = semantics(partitions=3)
    expected = ref.compute(stream, sem)
    assert len(expected.dead) > 10 and len(expected.events) > len(expected.dead)
    out = run_stages(stream, sem, seed=4, max_batch=40)
    assert_metrics_match(
        final_metric_rows(out.column_rows("metrics", final_only=True)),
        ref.expected_rows(expected, sem),
    )
    assert_keyed_match(out.column_rows, expected)
    assert {r["event_id"] for r in out.column_rows("events")} == set(expected.events)
    dead = out.column_rows("dead_letters")
    assert {json.loads(r["raw"])["event_id"]: r["reason"] for r in dead} == expected.dead
