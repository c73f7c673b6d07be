"""Feedback whose inference is not in memory joins through ClickHouse `inferences`."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import numpy as np

from connectors.clickhouse import describe, migrate, to_arrow
from connectors.join_store import CHUNK, ClickHouseJoinStore
from operators.batches import RawBatch
from operators.cells import CellDims
from operators.columnar.join_buffer import InferenceColumns
from operators.events import Inference
from operators.join import FoundInference
from operators.metrics import as_label
from operators.partition_stage import PartitionStage
from operators.rows import InferenceRows
from operators.stats import FlowStats
from tests.conftest import Store
from tests.harness import _plain, configs, semantics

T0 = 1_767_225_600_000


def _store_inferences(store: Store) -> None:
    client = store.open()
    migrate(client, "pulse")
    rows = InferenceRows()
    first = Inference(request_id="r1", ts=T0, model_id="m", model_version="v1", endpoint="/p",
                      segment="web", prediction="cat", attributes={"country": "fr"})  # fmt: skip
    later = Inference(request_id="r1", ts=T0 + 5, model_id="m", model_version="v2", endpoint="/p")
    other = Inference(request_id="r2", ts=T0 + 9, model_id="m", model_version="v1", endpoint="/q")
    events = [first, later, other]
    cells = [(e.tenant, e.model_id, e.deployment, e.model_version, e.segment, e.endpoint)
             for e in events]  # fmt: skip
    labels = [as_label(e.prediction) for e in events]
    ts = np.array([e.ts for e in events])
    columns = InferenceColumns.of(events, ts, [0, 1, 2], labels)
    rows.extend(
        events, columns, [e.request_id for e in events], [10, 99, 11], np.zeros(3, np.bool_)
    )
    taken = rows.take(0, partial(CellDims().columns, cells))
    client.insert_arrow(
        "pulse.inferences", to_arrow(taken.columns, describe(client, "pulse", "inferences"))
    )


def test_lookup_finds_the_first_inference_of_each_request(store: Store) -> None:
    _store_inferences(store)
    found = ClickHouseJoinStore(store.target).lookup(["r1", "r2", "r3"])
    assert set(found) == {"r1", "r2"}
    assert found["r1"][:2] == (0, 10) and found["r2"][:2] == (0, 11)  # where the log had them
    assert found["r1"].inference == (
        T0,
        "default",
        "m",
        "primary",
        "v1",
        "web",
        "/p",
        "cat",
        None,
        None,
        {"country": "fr"},
    )


def test_feedback_beyond_the_join_ttl_joins_through_the_store(store: Store) -> None:
    _store_inferences(store)
    config, _ = configs(semantics(partitions=1))
    stats = FlowStats()
    stage = PartitionStage(
        config, stats, clock=lambda: 0.0, store=ClickHouseJoinStore(store.target)
    )
    feedback = [{"type": "feedback", "event_id": f"e{i}", "request_id": rid, "ts": T0 + 3_600_000 + i,
                 "kind": "label", "value": "cat", "user_id": "u"} for i, rid in enumerate(["r1", "r3", "r1"])]  # fmt: skip
    lines = [json.dumps(f).encode() for f in feedback]
    stage.on_item(RawBatch(0, "inferences", "inferences", caught_up=True, end_of_input=True))
    out, _ = stage.on_item(
        RawBatch(0, "feedback", "feedback", lines, [0, 1, 2], caught_up=True, end_of_input=True)
    )
    rows = next(rows for rows in out if getattr(rows, "table", "") == "events")
    events = {name: _plain(column) for name, column in rows.columns.items()}
    joined = dict(
        zip(
            events["event_id"],
            zip(
                events["joined"],
                events["model_version"],
                events["correct"],
                events["inference_ts"],
                strict=True,
            ),
            strict=True,
        )
    )
    assert joined == {
        "e0": (1, "v1", 1, T0),
        "e1": (0, "unknown", None, None),
        "e2": (1, "v1", 1, T0),
    }
    assert (stats.looked_up, stats.found_in_store, stats.unjoined) == (2, 1, 1)


class _Watched(ClickHouseJoinStore):
    """The real store, with the queries it runs written down (kinds, not text)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ran: list[str] = []

    def _rows(self, sql: str, parameters: dict[str, Any]) -> list[Any]:
        self.ran.append("read" if "argMax" in sql else "probe")
        return super()._rows(sql, parameters)


R1 = FoundInference(
    0, 10, (T0, "default", "m", "primary", "v1", "web", "/p", "cat", None, None, {"country": "fr"})
)
R2 = FoundInference(
    0, 11, (T0 + 9, "default", "m", "primary", "v1", "default", "/q", None, None, None, {})
)


def test_a_lookup_that_finds_nothing_runs_only_the_probe(store: Store) -> None:
    _store_inferences(store)
    lookups = _Watched(store.target)
    assert lookups.lookup(["r3", "r4"]) == {}
    assert lookups.ran == ["probe"]
    lookups.ran.clear()
    assert lookups.lookup(["r3", "r1", "r4"]) == {"r1": R1}  # the read asks for r1 alone
    assert lookups.ran == ["probe", "read"]


def test_lookups_that_keep_finding_read_at_once_with_the_same_answers(store: Store) -> None:
    _store_inferences(store)
    lookups = _Watched(store.target)
    answers = []
    for _ in range(12):
        answers.append(lookups.lookup(["r2", "r3", "r1"]))
    assert lookups.ran[:2] == ["probe", "read"]  # until finding is the rule
    assert lookups.ran[-1:] == ["read"] and "probe" not in lookups.ran[-3:]
    assert all(answer == {"r1": R1, "r2": R2} for answer in answers)
    for _ in range(12):  # finding nothing for a while: back to probing first
        assert lookups.lookup(["r3"]) == {}
    assert lookups.ran[-1] == "probe"


def test_a_lookup_past_one_chunk_probes_and_reads_every_chunk(store: Store) -> None:
    _store_inferences(store)
    lookups = _Watched(store.target)
    ids = [f"x{i}" for i in range(CHUNK)] + ["r2"]  # r2 in the second chunk
    assert lookups.lookup(ids) == {"r2": R2}
    assert lookups.ran == ["probe", "probe", "read"]
