"""The flow never stops on input: extreme numbers and strings in every field of contract
v1 are either counted correctly or dead-lettered with a reason.

Two runs: a property test over generated events through the real partition, merge and
session stages (in-process, :func:`tests.harness.run_stages`), every output table
converted and inserted as the ClickHouse sink does it into the real engine (chDB); and
one `pulse run --bounded` process over a fixed file of the named extremes.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.clickhouse import describe, migrate, to_arrow
from operators.metrics import QUANTUM
from tests import reference as ref
from tests.conftest import Store, pulse_env, run_pulse
from tests.harness import DIMS, final_metric_rows, run_stages, semantics

TS = 1_767_225_600_000
# The contract's bounds, restated here from the README (not imported: this is the oracle).
MAGNITUDE = 1e9
INT64 = (-(2**63), 2**63 - 1)
RESERVED = ("*", "unknown")
EXTREMES: list[Any] = [
    1e308, -1e308, 5e-324, -5e-324, -0.0, 0, 1, 2**63, 2**63 - 1, -(2**63), -(2**63) - 1,
    2**64, 10**400, -(10**30), 1e9, -1e9, 1e9 + 1, 1_000_000_001, 999_999_999.5, 0.5, 4.0,
]  # fmt: skip
numbers = st.one_of(
    st.sampled_from(EXTREMES),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**70), 2**70),
)
# Dims: any unicode, up to and past the maximum length, and the reserved values.
names = st.one_of(
    st.text(min_size=1, max_size=12),
    st.text(min_size=255, max_size=257),
    st.sampled_from([*RESERVED, " * ", "Unknown", "é", "\x00"]),
)


def _number_in(value: Any, low: float, high: float) -> bool:
    if type(value) is int:
        return low <= value <= high
    return type(value) is float and math.isfinite(value) and low <= value <= high


def _scalar(value: Any) -> bool:  # labels and predictions: any string, int64, finite float
    if type(value) is int:
        return INT64[0] <= value <= INT64[1]
    return type(value) is str or (type(value) is float and math.isfinite(value))


def _dim(value: Any) -> bool:
    return type(value) is str and 1 <= len(value) <= 256 and value not in RESERVED


def valid(event: dict[str, Any]) -> bool:
    """Whether contract v1, as the README states it, accepts the event."""
    if event["type"] == "inference":
        return (
            all(_dim(event[d]) for d in DIMS if d in event)
            and ("prediction" not in event or event["prediction"] is None
                 or _scalar(event["prediction"]))
            and (event.get("confidence") is None or _number_in(event["confidence"], 0, 1))
            and (event.get("latency_ms") is None or _number_in(event["latency_ms"], 0, MAGNITUDE))
        )  # fmt: skip
    kind, value = event["kind"], event["value"]
    if kind == "label":
        return _scalar(value)
    if kind == "rating":
        return _number_in(value, 1, 5)
    if kind == "reward":
        return _number_in(value, -MAGNITUDE, MAGNITUDE)
    if kind == "dwell":
        return _number_in(value, 0, MAGNITUDE)
    if kind == "report":
        amount = value.get("amount")
        return amount is None or _number_in(amount, -MAGNITUDE, MAGNITUDE)
    return True


@st.composite
def inference(draw: st.DrawFn, request_id: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "inference", "request_id": request_id, "ts": TS + draw(st.integers(0, 5_000)),
        "model_id": draw(names), "model_version": draw(names), "endpoint": draw(names),
    }  # fmt: skip
    for dim in ("segment", "tenant", "deployment"):
        if draw(st.booleans()):
            event[dim] = draw(names)
    event["prediction"] = draw(st.one_of(st.none(), numbers, names))
    event["confidence"] = draw(st.one_of(st.none(), numbers, st.floats(0, 1)))
    event["latency_ms"] = draw(st.one_of(st.none(), numbers, st.floats(0, 1e4)))
    return event


KIND_VALUES = {
    "label": st.one_of(numbers, names),
    "thumbs": st.booleans(),
    "click": st.booleans(),
    "conversion": st.booleans(),
    "rating": st.one_of(numbers, st.floats(1, 5)),
    "reward": numbers,
    "dwell": numbers,
    "preference": st.fixed_dictionaries(
        {"winner": st.sampled_from(["a", "b", "tie"]), "policy_a": names, "policy_b": names}
    ).filter(lambda v: all(1 <= len(v[p]) <= 256 for p in ("policy_a", "policy_b"))),
    "report": st.fixed_dictionaries(
        {"category": st.text(min_size=1, max_size=256)},
        optional={"amount": st.one_of(st.none(), numbers)},
    ),
}


@st.composite
def feedback(draw: st.DrawFn, event_id: str, request_id: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(KIND_VALUES)))
    return {
        "type": "feedback", "event_id": event_id, "request_id": request_id,
        "ts": TS + draw(st.integers(0, 5_000)), "user_id": draw(st.text(min_size=1, max_size=128)),
        "kind": kind, "value": draw(KIND_VALUES[kind]),
    }  # fmt: skip


@st.composite
def traffic(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Inferences with unique request ids (unicode, up to 128 characters) and feedback on
    them or on no inference, with unique event ids."""
    suffixes = st.text(max_size=120)
    n = draw(st.integers(1, 12))
    request_ids = [f"r{i}-{draw(suffixes)}" for i in range(n)]
    events = [draw(inference(r)) for r in request_ids]
    for i in range(draw(st.integers(0, 24))):
        request_id = draw(st.one_of(st.sampled_from(request_ids), st.just("orphan")))
        events.append(draw(feedback(f"e{i}-{draw(suffixes)}", request_id)))
    return events


class Sink:
    """Every output table as the ClickHouse sink writes it: converted to Arrow with the
    real table's column types (per run), then inserted into the real engine (once, as one
    block per table: small inserts into chDB cost ~20 ms each)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.schemas: dict[str, list[tuple[str, str]]] = {}
        self.blocks: dict[str, list[pa.Table]] = defaultdict(list)

    def convert(self, tables: dict[str, list[Any]]) -> None:
        for table, chunks in tables.items():
            schema = self.schemas.get(table)
            if schema is None:
                schema = self.schemas[table] = describe(self.client, "pulse", table)
            self.blocks[table].extend(to_arrow(chunk.columns, schema) for chunk in chunks)

    def insert(self) -> dict[str, int]:
        """Insert everything converted; the rows the engine wrote, per table."""
        written = {}
        for table, blocks in self.blocks.items():
            block = pa.concat_tables(blocks).unify_dictionaries().combine_chunks()
            written[table] = self.client.insert_arrow(f"pulse.{table}", block).written_rows
        return written


@pytest.fixture
def sink(home: Path) -> Iterator[Sink]:
    store = Store(home)
    client = store.open()
    migrate(client, "pulse")
    yield Sink(client)
    store.close()


def _lines(events: list[dict[str, Any]]) -> list[tuple[str, str, bytes]]:
    return [
        ("inferences" if e["type"] == "inference" else "feedback", e["request_id"],
         json.dumps(e).encode())
        for e in events
    ]  # fmt: skip


def _rounding(cell: ref.Cell, name: str) -> float:
    """What float64 addition may lose in a sum past 2^33, where the README says a window's
    sums stop being exact: (n - 1) ulp-sized errors of the sum of magnitudes."""
    terms = {"reward_sum": cell.rewards, "reward_mean": cell.rewards, "dwell_mean": cell.dwells}
    if name in terms:
        values = terms[name]
        scale = math.fsum(abs(v) for v in values) / (len(values) if "mean" in name else 1)
        return 2 * len(values) * 2.0**-52 * scale
    if name == "report_amount_sum":
        return 2 * cell.report_count * 2.0**-52 * cell.report_count * MAGNITUDE
    return 0.0


SEM = semantics(partitions=2)
SKIPPED = {"reward_stddev"}  # cancels for mixed magnitudes (documented); checked finite


def test_every_event_is_counted_or_dead_lettered_and_counted_right(sink: Sink) -> None:
    written: dict[str, int] = defaultdict(int)

    @settings(max_examples=30, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(traffic())
    def check(events: list[dict[str, Any]]) -> None:
        lines = _lines(events)
        out = run_stages(lines, SEM, seed=len(events), max_batch=7, tick_every=3)
        sink.convert(out.tables)
        for table, chunks in out.tables.items():
            written[table] += sum(len(next(iter(c.columns.values()))) for c in chunks)

        dead = out.column_rows("dead_letters")
        dead_lines = {row["raw"] for row in dead}
        counted = {row["request_id"] for row in out.column_rows("inferences")} | {
            row["event_id"] for row in out.column_rows("events")
        }
        for event, (_, _, line) in zip(events, lines, strict=True):
            key = event["request_id"] if event["type"] == "inference" else event["event_id"]
            assert (key in counted) != (line in dead_lines), (
                f"counted and dead, or neither: {line[:200]!r}"
            )
            assert (key in counted) == valid(event), f"valid={valid(event)}: {line[:300]!r}"
        assert all(row["error"] == "invalid" and row["reason"] for row in dead)

        good = [line for line, event in zip(lines, events, strict=True) if valid(event)]
        result = ref.compute(good, SEM)
        expected = ref.expected_rows(result, SEM)
        got = final_metric_rows(out.column_rows("metrics", final_only=True))
        assert set(got) == set(expected)
        for key, want in expected.items():
            row = got[key]
            for name, value in want.items():
                if name in SKIPPED:
                    assert (value is None) == (row[name] is None or math.isnan(row[name]))
                    assert row[name] is None or not math.isinf(row[name])
                elif not ref.close(value, row[name]):
                    error = abs(value - row[name]) if value is not None else math.inf
                    assert error <= _rounding(result.cells[key], name), (
                        f"{key} {name}: {value!r} != {row[name]!r}"
                    )

    check()
    assert sink.insert() == written  # the real engine took every row of every run


# ---- one real bounded run over the named extremes -----------------------------------


def _extreme_file() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(valid events, invalid events): every numeric field at every named extreme."""
    events: list[dict[str, Any]] = []
    ids = itertools.count()
    for x in EXTREMES:
        rid = f"r{next(ids)}"
        events.append({"type": "inference", "request_id": rid, "ts": TS, "model_id": "m",
                       "model_version": "v", "endpoint": "e", "prediction": "1"})  # fmt: skip
        for field in ("prediction", "confidence", "latency_ms"):
            events.append({"type": "inference", "request_id": f"r{next(ids)}", "ts": TS,
                           "model_id": "m", "model_version": "v", "endpoint": "e", field: x})  # fmt: skip
        for kind in ("label", "rating", "reward", "dwell", "report"):
            value = {"category": "c", "amount": x} if kind == "report" else x
            events.append({"type": "feedback", "event_id": f"e{next(ids)}", "request_id": rid,
                           "ts": TS + 1, "user_id": "u", "kind": kind, "value": value})  # fmt: skip
    for ts in (2**63, 2**64, 10**400, -(2**63), 5e-324, 1e308):
        events.append({"type": "inference", "request_id": f"r{next(ids)}", "ts": ts,
                       "model_id": "m", "model_version": "v", "endpoint": "e"})  # fmt: skip
    for dim in DIMS:
        for value in RESERVED:
            events.append({"type": "inference", "request_id": f"r{next(ids)}", "ts": TS,
                           "model_id": "m", "model_version": "v", "endpoint": "e", dim: value})  # fmt: skip
    ts_ok = [e for e in events if type(e["ts"]) is int and 0 <= e["ts"] < 2**62]
    return (
        [e for e in ts_ok if valid(e)],
        [e for e in events if not (valid(e) and e in ts_ok)],
    )


def test_a_bounded_run_over_every_extreme_exits_0_and_counts_right(
    tmp_path: Path, home: Path, store: Store
) -> None:
    good, bad = _extreme_file()
    path = tmp_path / "extreme.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in good + bad))
    env = pulse_env(home)
    run_pulse(["load", str(path)], env)
    run_pulse(["run", "--bounded", "--quiet"], env)  # raises unless it exits 0

    good_inferences = [e for e in good if e["type"] == "inference"]
    good_feedback = [e for e in good if e["type"] == "feedback"]
    assert store.scalar("SELECT count() FROM {db}.inferences FINAL") == len(good_inferences)
    assert store.scalar("SELECT count() FROM {db}.events FINAL") == len(good_feedback)
    reasons = store.rows("SELECT reason FROM {db}.dead_letters FINAL ORDER BY offset")
    assert len(reasons) == len(bad)
    assert not [r for (r,) in reasons if "Input should" in r or "constrained" in r], reasons

    rollup = store.dicts(
        "SELECT * FROM {db}.metrics FINAL WHERE window = '1h' AND model_version = '*' "
        "AND segment = '*' AND endpoint = '*'"
    )
    (row,) = rollup
    by_kind: dict[str, list[Any]] = {}
    for e in good_feedback:
        by_kind.setdefault(e["kind"], []).append(e["value"])
    by_kind["report"] = [v.get("amount") or 0.0 for v in by_kind["report"]]
    for kind in ("reward", "dwell", "report"):  # summed on the 2^-20 grid
        by_kind[kind] = [round(v / QUANTUM) * QUANTUM for v in by_kind[kind]]
    assert row["feedback_count"] == len(good_feedback)
    assert row["inference_count"] == len(good_inferences)
    assert row["reward_count"] == len(by_kind["reward"])
    assert math.isclose(row["reward_sum"], math.fsum(by_kind["reward"]), rel_tol=1e-12)
    assert math.isclose(row["report_amount_sum"], math.fsum(by_kind["report"]), rel_tol=1e-12)
    assert math.isclose(row["dwell_mean"], math.fsum(by_kind["dwell"]) / len(by_kind["dwell"]))
    assert row["labeled_count"] == len(by_kind["label"])
    assert all(math.isfinite(row[m]) for m in ("latency_p50", "latency_p99", "reward_stddev"))
