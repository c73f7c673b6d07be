"""Aggregation semantics: random streams against the reference (hypothesis), and the edge
cases named in the aggregation issue, each with its expected numbers."""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operators.batches import RawBatch
from operators.partitioning import partition_for
from tests import reference as ref
from tests.harness import (
    DIMS,
    assert_keyed_match,
    assert_metrics_match,
    assert_sessions_match,
    final_metric_rows,
    late_keys,
    run_stages,
    semantics,
)

T0 = 1_767_225_600_000  # a multiple of every window length
SEM = semantics(partitions=2)


def inference(
    rid: str, ts: int, version: str = "v1", prediction: str = "cat", **extra: Any
) -> dict[str, Any]:
    return {"type": "inference", "request_id": rid, "ts": ts, "model_id": "m", "model_version": version,
            "endpoint": "/p", "segment": "web", "prediction": prediction, "confidence": 0.75,
            "latency_ms": 20.0, **extra}  # fmt: skip


def feedback(
    eid: str,
    rid: str,
    ts: int,
    kind: str = "label",
    value: Any = "cat",
    user: str = "u1",
    **extra: Any,
) -> dict[str, Any]:
    return {"type": "feedback", "event_id": eid, "request_id": rid, "ts": ts, "kind": kind, "value": value,
            "user_id": user, **extra}  # fmt: skip


def lines(events: list[dict[str, Any]]) -> list[tuple[str, str, bytes]]:
    return [("inferences" if e["type"] == "inference" else "feedback", e["request_id"], json.dumps(e).encode())
            for e in events]  # fmt: skip


def check(
    events: list[dict[str, Any]], sem: ref.Semantics = SEM, seed: int = 0, max_batch: int = 3
) -> tuple[Any, Any]:
    """Run the stages and compare everything with the reference; returns both."""
    stream = lines(events)
    expected = ref.compute(stream, sem)
    out = run_stages(stream, sem, seed=seed, max_batch=max_batch)
    assert_metrics_match(
        final_metric_rows(out.column_rows("metrics", final_only=True)),
        ref.expected_rows(expected, sem),
    )
    assert late_keys(out.column_rows("metrics_late")) == expected.late
    events_rows = {r["event_id"]: r for r in out.column_rows("events")}
    assert {k: (bool(r["joined"]), bool(r["late"])) for k, r in events_rows.items()} == {
        k: (v["joined"], v["late"]) for k, v in expected.events.items()
    }
    if expected.feedback_log:
        assert_sessions_match(out.column_rows("sessions"), expected, sem)
    assert refused(out) == expected.dead
    return out, expected


def refused(out: Any) -> dict[str, str]:
    """The feedback the join refused for its tenant: event_id -> reason (the only dead
    letters of valid events)."""
    dead = out.column_rows("dead_letters")
    assert all(r["error"] == "tenant" for r in dead)
    return {json.loads(r["raw"])["event_id"]: r["reason"] for r in dead}


def total_row(out: Any, window: str, start: int) -> dict[str, Any]:
    rows = final_metric_rows(out.column_rows("metrics", final_only=True))
    return rows[(window, start, ("default", "m", "primary", "*", "*", "*"))]


# ---- random streams -----------------------------------------------------------------------


# The watermark a partition passes on trails its largest event time by this much: an event
# is late for a window ending at E once an event at E + HOLD was seen in its stream, and
# feedback waiting since ts gives up once one at ts + HOLD was.
HOLD = SEM.max_out_of_orderness + SEM.join_wait
GRID = 30_000  # every window starts and ends on a multiple of it


def _request_near(key: str, name: str) -> str:
    """A request id `name.N` in the same partition as `key` (only events of one partition
    move each other's watermark)."""
    n = 0
    while partition_for(f"{name}.{n}", SEM.partitions) != partition_for(key, SEM.partitions):
        n += 1
    return f"{name}.{n}"


def _pacer_ts(draw: st.DrawFn, boundary: int) -> int:
    """The time of an event that puts `boundary` exactly on the cutoff, or 1 ms short."""
    return boundary + HOLD - draw(st.sampled_from([0, 0, 1]))


def _window_end(draw: st.DrawFn, ts: int) -> int:
    """The end of a window containing `ts` (1m, or the first 5m_30s one to end)."""
    length = draw(st.sampled_from([60_000, GRID]))
    return ts - ts % length + length


@st.composite
def streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Events emitted in time order with jitter inside the disorder bound; some duplicated,
    some feedback with no inference, some emitted far too late. Exact boundaries come
    often: times on window edges, and *pacers* — an event of the same stream and
    partition emitted just before another, whose time puts the cutoff exactly on the
    other's window end (lateness) or the watermark exactly on a waiting feedback's
    ts + join.wait (give-up), or 1 ms short of it."""
    timed: list[tuple[int, dict[str, Any]]] = []
    ahead = SEM.max_out_of_orderness + 1  # emitted this much earlier: before, whatever the jitter
    n = draw(st.integers(1, 25))
    for i in range(n):
        offset = draw(
            st.one_of(st.integers(0, 400_000), st.integers(0, 13).map(lambda k: k * GRID))
        )
        ts = T0 + offset
        version = draw(st.sampled_from(["v1", "v2"]))
        rid = f"r{i}" if draw(st.integers(0, 9)) else f"r{i % 3}"  # sometimes a duplicate id
        emit = ts + (250_000 if draw(st.integers(0, 14)) == 0 else 0)  # now and then far too late
        at = len(timed)
        timed.append((emit, inference(rid, ts, version, draw(st.sampled_from(["cat", "dog"])),
                                      segment=draw(st.sampled_from(["web", "ios"])))))  # fmt: skip
        if draw(st.integers(0, 7)) == 0:  # lateness at the edge of one of its windows
            pacer = inference(
                _request_near(rid, f"pace{i}"), _pacer_ts(draw, _window_end(draw, ts))
            )
            timed.append((emit - ahead, pacer))
        give_up_edge = draw(st.integers(0, 7)) == 0  # its first feedback waits until the edge
        for j in range(draw(st.integers(0, 2))):
            fts = ts + draw(st.one_of(st.integers(0, 90_000), st.sampled_from([0, SEM.join_wait])))
            kind = draw(
                st.sampled_from(
                    ["label", "thumbs", "rating", "reward", "click", "preference", "report"]
                )
            )
            value = {
                "label": draw(st.sampled_from(["cat", "dog", "owl"])), "thumbs": draw(st.booleans()),
                "rating": draw(st.integers(1, 5)), "reward": draw(st.floats(-2, 2)), "click": draw(st.booleans()),
                "preference": {"winner": draw(st.sampled_from(["a", "b", "tie"])), "policy_a": "p", "policy_b": "q"},
                "report": {"category": draw(st.sampled_from(["fraud", "spam"])), "amount": draw(st.sampled_from([None, 5.0]))},
            }[kind]  # fmt: skip
            target = rid if draw(st.integers(0, 7)) else f"ghost{i}"
            # Sometimes naming a tenant: its inference's ("default"), or another one's.
            tenant = draw(st.sampled_from([None, None, None, "default", "acme"]))
            fb = feedback(
                f"e{i}-{j}",
                target,
                fts,
                kind,
                value,
                user=draw(st.sampled_from(["u1", "u2", "u3"])),
                **({} if tenant is None else {"tenant": tenant}),
            )
            emit = fts + (
                draw(st.sampled_from([0, 250_000])) if draw(st.integers(0, 9)) == 0 else 0
            )
            timed.append((emit, fb))
            if draw(st.integers(0, 7)) == 0:  # lateness at the edge of one of its windows
                pacer_fb = feedback(f"pace{i}-{j}", target, _pacer_ts(draw, _window_end(draw, fts)),
                                    "thumbs", True)  # fmt: skip
                timed.append((emit - ahead, pacer_fb))
            if give_up_edge and j == 0 and target == rid:
                # An inference at fts + HOLD (or 1 ms short), then rid's own inference.
                pacer = inference(_request_near(rid, f"wait{i}"), _pacer_ts(draw, fts))
                timed.append((emit, pacer))
                timed[at] = (emit + ahead, timed[at][1])
            if draw(st.integers(0, 6)) == 0:
                timed.append(
                    (emit + draw(st.integers(0, 120_000)), fb)
                )  # a duplicate, maybe after its window
    jitter = [draw(st.integers(0, SEM.max_out_of_orderness)) for _ in timed]
    order = sorted(range(len(timed)), key=lambda k: (timed[k][0] + jitter[k], k))
    return [timed[k][1] for k in order]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(streams(), st.integers(0, 10**6), st.integers(1, 6))
def test_random_streams_equal_the_reference_for_any_batching(
    events: list[dict[str, Any]], seed: int, max_batch: int
) -> None:
    check(events, seed=seed, max_batch=max_batch)


# ---- the named edge cases -----------------------------------------------------------------


def test_feedback_before_its_inference_joins() -> None:
    out, expected = check(
        [feedback("e1", "r1", T0 + 5_000, value="cat"), inference("r1", T0 + 1_000)]
    )
    row = total_row(out, "1m", T0)
    assert (
        row["feedback_count"],
        row["unjoined_count"],
        row["labeled_count"],
        row["correct_count"],
    ) == (1, 0, 1, 1)
    assert expected.events["e1"]["joined"]


def test_inference_never_arrives_then_feedback_gives_up_as_unknown() -> None:
    out, expected = check([feedback("e1", "lost", T0 + 5_000), inference("r2", T0 + 100_000)])
    rows = final_metric_rows(out.column_rows("metrics", final_only=True))
    unknown = rows[("1m", T0, ("unknown",) * 6)]
    assert (unknown["feedback_count"], unknown["unjoined_count"], unknown["accuracy"]) == (
        1,
        1,
        0.0,
    )
    assert not expected.events["e1"]["joined"]


def test_a_duplicate_after_its_window_closed_counts_once_and_is_not_late() -> None:
    events = [inference("r1", T0 + 1_000), feedback("e1", "r1", T0 + 2_000),
              inference("r2", T0 + 200_000), feedback("e1", "r1", T0 + 2_000)]  # fmt: skip
    out, expected = check(events)
    assert total_row(out, "1m", T0)["feedback_count"] == 1
    assert expected.late == set() and out.stats.duplicate_feedback == 1


def test_an_event_exactly_on_a_window_boundary_belongs_to_the_next_window() -> None:
    out, _ = check([inference("r1", T0 + 60_000)])
    rows = final_metric_rows(out.column_rows("metrics", final_only=True))
    total = ("default", "m", "primary", "*", "*", "*")
    assert ("1m", T0 + 60_000, total) in rows and ("1m", T0, total) not in rows
    assert len([k for k in rows if k[0] == "5m_30s" and k[2] == total]) == 10


def test_a_late_event_beyond_lateness_is_counted_late_not_in_its_window() -> None:
    # Lateness is within a stream (the two streams are merged by time): feedback at 130 s
    # moves the watermark past 1m + ooo + wait before feedback at 5 s arrives.
    events = [inference("r1", T0 + 1_000), feedback("e0", "r1", T0 + 130_000, "thumbs", False),
              feedback("e1", "r1", T0 + 5_000, "thumbs", True)]  # fmt: skip
    out, expected = check(events)
    assert expected.events["e1"]["late"] and not expected.events["e0"]["late"]
    row = total_row(out, "1m", T0)
    assert row["thumbs_up"] == 0 and row["inference_count"] == 1
    missed = {
        (w, s)
        for w, s, d, stream, _ in late_keys(out.column_rows("metrics_late"))
        if d == ("default", "m", "primary", "*", "*", "*")
    }
    assert ("1m", T0) in missed
    # still open then: the 1h window and the newest sliding windows count it
    assert total_row(out, "1h", T0)["thumbs_up"] == 1


def test_feedback_late_for_every_window_leaves_the_kinds_after_it_counted_as_they_are() -> None:
    # Feedback is counted a sequence at a time: one late for every window (1h included)
    # is not counted, and the rows after it in its sequence keep their own kinds and
    # values (under some of these batchings the three share one sequence).
    r2 = _request_near("r1", "r2")
    later = T0 + 7_200_000
    events = [inference("r1", T0 + 1_000), inference(r2, later),
              feedback("e0", r2, later + 1_000, "thumbs", True),
              feedback("e1", "r1", T0 + 5_000, "rating", 5),
              feedback("e2", r2, later + 2_000, "click", True),
              feedback("e3", r2, later + 3_000, "label", "dog")]  # fmt: skip
    for seed in range(12):
        out, expected = check(events, seed=seed, max_batch=4)
        assert expected.events["e1"]["late"] and not expected.events["e2"]["late"]
        row = total_row(out, "1m", later)
        counts = (row["thumbs_up"], row["clicks"], row["labeled_count"], row["rating_count"])
        assert counts == (1, 1, 1, 0)


def test_a_window_is_final_exactly_when_the_watermark_reaches_its_end() -> None:
    # held-back watermark = max ts - ooo - wait; 1m window [T0, T0 + 60 s) ends at T0 + 60 s.
    edge = T0 + 60_000 + SEM.max_out_of_orderness + SEM.join_wait
    for moved_to, late in ((edge, True), (edge - 1, False)):
        events = [inference("r1", T0 + 1_000), feedback("e0", "r1", moved_to, "click", False),
                  feedback("e1", "r1", T0 + 59_999, "click", True)]  # fmt: skip
        out, expected = check(events)
        assert expected.events["e1"]["late"] is late
        assert total_row(out, "1m", T0)["clicks"] == (0 if late else 1)


def test_sessions_split_by_a_gap_of_exactly_gap() -> None:
    gap = 1_800_000
    events = [
        inference("r1", T0),
        feedback("e1", "r1", T0 + 1_000, "rating", 5),
        inference("r2", T0 + gap),
        feedback("e2", "r2", T0 + 1_000 + gap, "rating", 3),  # exactly gap later
        inference("r3", T0 + 2 * gap),
        feedback("e3", "r3", T0 + 2 * gap, "rating", 4),
    ]  # 1 ms inside
    out, _ = check(events)
    sessions = sorted(
        (int(r["session_start"]), r["session_events"], r["rating_mean"])
        for r in out.column_rows("sessions")
    )
    assert sessions == [(T0 + 1_000, 1, 5.0), (T0 + 1_000 + gap, 2, 3.5)]


def test_keyed_families_per_class_preference_and_report() -> None:
    events = [inference("r1", T0, prediction="cat"), feedback("e1", "r1", T0 + 1, value="cat"),
              inference("r2", T0, prediction="cat"), feedback("e2", "r2", T0 + 2, value="dog"),
              inference("r3", T0, prediction="dog"), feedback("e3", "r3", T0 + 3, value="dog"),
              feedback("e4", "r1", T0 + 4, "preference", {"winner": "a", "policy_a": "p", "policy_b": "q"}),
              feedback("e5", "r2", T0 + 5, "preference", {"winner": "tie", "policy_a": "p", "policy_b": "q"}),
              feedback("e6", "r3", T0 + 6, "report", {"category": "fraud", "amount": 12.5})]  # fmt: skip
    out, expected = check(events)
    assert_keyed_match(out.column_rows, expected)
    # r2 predicted cat, the label says dog: an fp for cat and an fn for dog; F1 = 2/3 each.
    assert total_row(out, "1m", T0)["macro_f1"] == (2 / 3 + 2 / 3) / 2
    classes = {r["class"]: r for r in out.column_rows("metrics_classes")
               if r["final"] and r["window"] == "1m" and tuple(r[d] for d in DIMS)[3:] == ("*", "*", "*")}  # fmt: skip
    assert (classes["cat"]["tp"], classes["cat"]["fp"], classes["cat"]["fn"]) == (1, 1, 0)
    assert (classes["dog"]["tp"], classes["dog"]["fp"], classes["dog"]["fn"]) == (1, 0, 1)
    pair = next(r for r in out.column_rows("metrics_preferences") if r["final"] and r["window"] == "1m"
                and tuple(r[d] for d in DIMS)[3:] == ("*", "*", "*"))  # fmt: skip
    assert (pair["wins_a"], pair["ties"], pair["win_rate_a"]) == (1, 1, 0.75)
    assert 0 < pair["win_rate_a_low"] < 0.75 < pair["win_rate_a_high"] < 1


def test_configured_grouping_sets_are_the_only_rollups() -> None:
    sem = semantics(
        partitions=2, grouping_sets=(("model_version", "segment", "endpoint"), ("model_version",))
    )
    events = [inference("r1", T0, "v1", segment="web"), inference("r2", T0, "v1", segment="ios"),
              feedback("e1", "r1", T0 + 1, value="cat")]  # fmt: skip
    out, _ = check(events, sem=sem)
    cells = {key[2][3:] for key in final_metric_rows(out.column_rows("metrics", final_only=True))}
    assert cells == {("v1", "web", "/p"), ("v1", "ios", "/p"), ("v1", "*", "*")}


def test_extra_dims_come_from_attributes_and_are_never_rolled_up() -> None:
    from dataclasses import replace

    from operators.merge_stage import MergeStage
    from operators.partition_stage import PartitionStage
    from operators.stats import FlowStats
    from tests.harness import configs

    partition_config, merge_config = configs(semantics(partitions=1))
    partition_config = replace(partition_config, extra_dims=("country",))
    merge_config = replace(merge_config, extra_dims=("country",))
    stats = FlowStats()
    stage, merge = PartitionStage(partition_config, stats), MergeStage(merge_config, stats)
    inferences = [json.dumps(inference("r1", T0, attributes={"country": "fr"})).encode(),
                  json.dumps(inference("r2", T0, country="de")).encode(),  # an unknown field: attributes
                  json.dumps(inference("r3", T0)).encode()]  # fmt: skip
    ghost = [
        json.dumps({**feedback("e1", "ghost", T0 + 1), "attributes": {"country": "it"}}).encode()
    ]
    items = stage.on_item(
        RawBatch(0, "inferences", "inferences", inferences, [0, 1, 2], True, True)
    )[0]
    items += stage.on_item(RawBatch(0, "feedback", "feedback", ghost, [0], True, True))[0]
    rows = []
    for item in items:
        if type(item).__name__ == "PartialBatch":
            rows += merge.on_item(item)[0]
    metrics = [r for r in rows if r.table == "metrics"]
    seen = set()
    for chunk in metrics:
        extra = chunk.columns["extra_dims"]
        version = chunk.columns["model_version"]
        for e, v in zip(extra.codes.tolist(), version.codes.tolist(), strict=True):
            seen.add((version.categories[v], extra.categories[e]))
    assert seen == {("v1", "country=fr"), ("v1", "country=de"), ("v1", "country="), ("*", "country=fr"),
                    ("*", "country=de"), ("*", "country="), ("unknown", "country=it"), ("*", "country=it")}  # fmt: skip


def test_the_reward_stddev_of_close_rewards_does_not_cancel_away() -> None:
    # Found by hypothesis: squares rounded to 2^-20 before summing lost 2.5 % of this one.
    rewards = [0.8709957338322103, 0.875, 0.8730001]
    events = [inference("r1", T0)]
    events += [feedback(f"e{i}", "r1", T0 + i, "reward", r) for i, r in enumerate(rewards)]
    out, _ = check(events)
    want = statistics.stdev(ref.q(r) for r in rewards)
    assert math.isclose(total_row(out, "1m", T0)["reward_stddev"], want, rel_tol=1e-9)


def test_rollups_without_dense_ids_give_the_same_rows(monkeypatch: Any) -> None:
    """Rollups sum by dense (cell, extra key) ids when they fit, else by sorting keys."""
    import operators.merge_stage

    monkeypatch.setattr(operators.merge_stage, "DENSE_ROLLUP_LIMIT", 0)
    test_keyed_families_per_class_preference_and_report()
    test_the_reward_stddev_of_close_rewards_does_not_cancel_away()


def test_rollups_sum_alike_by_offsets_ranks_or_sorting(monkeypatch: Any) -> None:
    """`_rollup` takes dense ids from extra-key offsets when the span fits (latency buckets
    are ~2^15 apart from the zero bucket), else from ranks, else sorts: all three, and
    the count-only shortcut for width-1 families, must equal a plain dict of sums."""
    from itertools import combinations
    from types import SimpleNamespace

    import numpy as np

    import operators.merge_stage
    from operators.cells import EXTRA_KEY_BITS, CellIndex
    from operators.merge_stage import MergeStage

    dims = ("model_version", "segment", "endpoint")
    index = CellIndex([c for r in range(4) for c in combinations(dims, r)], ())
    finest = index.finest_ids(
        [("t", "m", "d", f"v{a}", f"s{b}", "e") for a in range(3) for b in range(4)]
    )
    rng = np.random.default_rng(5)
    rows = rng.integers(0, len(finest), 400)
    extras = rng.choice([0, 32768, 32769, 32790, 33000], 400)
    raw = (finest[rows] << EXTRA_KEY_BITS) | extras
    owner = SimpleNamespace(cells=index)
    # Unique sorted keys (a window's compacted sums), and repeated unsorted ones (the
    # fresh deltas early rows roll up straight from several parts and ticks).
    for keys, values in (
        (np.unique(raw), rng.integers(1, 9, (len(np.unique(raw)), 1)).astype(float)),
        (np.unique(raw), rng.integers(0, 3, (len(np.unique(raw)), 3)).astype(float)),
        (raw, rng.integers(1, 9, (len(raw), 1)).astype(float)),
        (raw, rng.integers(0, 3, (len(raw), 3)).astype(float)),
    ):
        want: dict[int, np.ndarray] = {}
        for key, vector in zip(keys.tolist(), values, strict=True):
            for cell in set(index.rollups(np.array([key >> EXTRA_KEY_BITS]))[0].tolist()):
                rolled = (cell << EXTRA_KEY_BITS) | (key & ((1 << EXTRA_KEY_BITS) - 1))
                want[rolled] = want.get(rolled, 0) + vector
        # Default (offsets fit), ranks only (offsets do not fit), neither (sorting).
        for limit in (operators.merge_stage.DENSE_ROLLUP_LIMIT, len(index) * 5, 0):
            monkeypatch.setattr(operators.merge_stage, "DENSE_ROLLUP_LIMIT", limit)
            got_keys, got = MergeStage._rollup(owner, keys, values)  # type: ignore[arg-type]
            assert got_keys.tolist() == sorted(want)
            assert np.array_equal(got, np.array([want[k] for k in sorted(want)]))


def test_a_set_rolled_up_from_a_finer_set_equals_its_rollup_from_the_finest_cells() -> None:
    """Final windows roll a coarser grouping set up from a finer one's rows
    (`rollup_sources`, `_rollup_rolled`): the same rows as from the finest cells, for
    every set and each of its sources, in the cube and in sets a user lists."""
    from itertools import combinations
    from types import SimpleNamespace

    import numpy as np

    from operators.cells import EXTRA_KEY_BITS, CellIndex
    from operators.merge_stage import FinestCells, MergeStage, rollup_sources

    dims = ("model_version", "segment", "endpoint")
    cube = [c for r in range(3, -1, -1) for c in combinations(dims, r)]
    for listed in (cube, [("model_version", "segment"), ("segment",), ()]):
        index = CellIndex(listed, ())
        finest = index.finest_ids(
            [("t", "m", "d", f"v{a}", f"s{b}", f"e{c}") for a in range(3) for b in range(4)
             for c in range(2)]
        )  # fmt: skip
        rng = np.random.default_rng(7)
        raw = (finest[rng.integers(0, len(finest), 300)] << EXTRA_KEY_BITS) | rng.choice(
            [0, 3, 32768, 32790], 300
        )
        keys = np.unique(raw)
        values = rng.integers(0, 4, (len(keys), 2)).astype(float)
        owner = SimpleNamespace(cells=index)
        cells = FinestCells.of(keys, index)
        direct = [
            MergeStage._rollup(owner, keys, values, slice(g, g + 1), cells)  # type: ignore[arg-type]
            for g in range(len(listed))
        ]
        order, sources = rollup_sources(index.grouping_sets)
        assert sorted(order) == list(range(len(listed)))
        assert any(sources), "no set is rolled up from another"
        for g, from_sets in enumerate(sources):
            for source in from_sets:
                assert order.index(source) < order.index(g)
                got_keys, got = MergeStage._rollup_rolled(owner, direct[source], source, g)  # type: ignore[arg-type]
                assert got_keys.tolist() == direct[g][0].tolist()
                assert np.array_equal(got, direct[g][1])


# ---- feedback naming a tenant: joins only its own tenant's inference (issue 12) ----------

GLOBEX = ("globex", "m", "primary", "*", "*", "*")  # globex's total cell


def _refusal(claimed: str, rid: str) -> str:
    return f"feedback.tenant: {claimed!r} is not the tenant of inference {rid!r}"


def test_feedback_naming_another_tenant_is_a_dead_letter_and_not_counted() -> None:
    events = [
        inference("r1", T0 + 1_000, tenant="globex"),
        feedback("e1", "r1", T0 + 2_000, tenant="acme"),  # joined live: refused
        feedback("e2", "r1", T0 + 3_000, tenant="globex"),  # its inference's tenant: counted
        feedback("e3", "r1", T0 + 4_000),  # names none: not checked, counted
        feedback("e4", "r2", T0 + 5_000, tenant="acme"),  # waits; refused when r2 comes
        inference("r2", T0 + 6_000, tenant="globex"),
        feedback("e5", "lost", T0 + 7_000, tenant="acme"),  # never joined: unjoined, as today
    ]
    out, expected = check(events)
    assert expected.dead == {"e1": _refusal("acme", "r1"), "e4": _refusal("acme", "r2")}
    rows = final_metric_rows(out.column_rows("metrics", final_only=True))
    assert rows[("1m", T0, GLOBEX)]["feedback_count"] == 2
    assert rows[("1m", T0, ("unknown",) * 6)]["feedback_count"] == 1
    assert not any(dims[0] == "acme" for _, _, dims in rows)
    assert set(expected.events) == {"e2", "e3", "e5"}
    (dead,) = [r for r in out.column_rows("dead_letters") if r["reason"].endswith("'r1'")]
    assert (dead["topic"], dead["error"]) == ("feedback", "tenant")
    assert out.stats.dead_letter_reasons["tenant"] == 2


def test_feedback_joined_through_the_store_is_checked_too() -> None:
    """Past its wait, feedback joins the inference an earlier run stored: the same rule."""
    from tests.operators.test_boundaries import Flow, MemoryJoinStore

    store = MemoryJoinStore()
    old = inference("r1", T0 + 1_000, tenant="globex")
    first = Flow(store=store)
    first.send("inferences", [old])
    first.end()
    later = [feedback("e1", "r1", T0 + 2_000, tenant="acme"),
             feedback("e2", "r1", T0 + 3_000, tenant="globex"), feedback("e3", "r1", T0 + 4_000),
             feedback("e4", "r1", T0 + 5_000, tenant="acme")]  # fmt: skip
    second = Flow(store=store)
    second.send("inferences", [], ended=True)
    second.send("feedback", later)
    out = second.end()
    sem = semantics(partitions=1)
    expected = ref.compute(lines(later), sem, stored=[old])
    assert_metrics_match(
        final_metric_rows(out.column_rows("metrics", final_only=True)),
        ref.expected_rows(expected, sem),
    )
    assert (
        refused(out)
        == expected.dead
        == {"e1": _refusal("acme", "r1"), "e4": _refusal("acme", "r1")}
    )
    assert second.finals()[(T0, GLOBEX)]["feedback_count"] == 2
    assert out.stats.found_in_store == 1


def test_feedback_joined_to_the_cache_rebuilt_after_a_restart_is_checked_too() -> None:
    from tests.operators.test_boundaries import Flow, MemoryJoinStore

    events = [inference("r1", T0 + 1_000, tenant="globex")]
    after = [feedback("e1", "r1", T0 + 2_000, tenant="acme"),
             feedback("e2", "r1", T0 + 3_000, tenant="globex")]  # fmt: skip
    flow = Flow(bounded=False, store=MemoryJoinStore())
    flow.send("inferences", events)
    flow.send("feedback", [])
    flow.tick(0)
    flow.restart(0)  # r1 is back in the join's memory from the store, not the snapshot
    flow.send("feedback", after)
    out = flow.end()
    sem = semantics(partitions=1)
    expected = ref.compute(lines(events + after), sem)
    assert refused(out) == expected.dead == {"e1": _refusal("acme", "r1")}
    assert flow.finals()[(T0, GLOBEX)]["feedback_count"] == 1
    assert out.stats.looked_up == 0  # joined from memory, not by a lookup
