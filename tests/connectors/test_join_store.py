"""Feedback whose inference is not in memory joins through ClickHouse `inferences`."""

from __future__ import annotations

import json
from functools import partial

from connectors.clickhouse import describe, migrate, to_arrow
from connectors.join_store import ClickHouseJoinStore
from operators.batches import RawBatch
from operators.cells import CellDims
from operators.events import Inference
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
    rows.extend(events, labels, [0, 1, 2], [10, 99, 11], [False] * 3)
    taken = rows.take(0, partial(CellDims().columns, cells))
    client.insert_arrow(
        "pulse.inferences", to_arrow(taken.columns, describe(client, "pulse", "inferences"))
    )


def test_lookup_finds_the_first_inference_of_each_request(store: Store) -> None:
    _store_inferences(store)
    found = ClickHouseJoinStore(store.target).lookup(["r1", "r2", "r3"])
    assert set(found) == {"r1", "r2"}
    assert found["r1"] == (
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
            zip(events["joined"], events["model_version"], events["correct"], strict=True),
            strict=True,
        )
    )
    assert joined == {"e0": (1, "v1", 1), "e1": (0, "unknown", None), "e2": (1, "v1", 1)}
    assert (stats.looked_up, stats.found_in_store, stats.unjoined) == (2, 1, 1)
