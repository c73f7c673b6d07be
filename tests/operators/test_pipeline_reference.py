"""The partition and merge stages against the reference implementation, in-process."""

from __future__ import annotations

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
