"""What the rules stage's speed rests on, checked where it comes from:

* the merge stage's window emissions carry each row's cell id (`WindowMetrics.cell_ids`),
  one per distinct dims for the whole run, early and final rows alike: drift, spike and
  canary find a cell's state by that integer, so two cells sharing an id would share
  state, and one cell with two ids would lose it;
* rules that read the same selectors share one mask (`CellSelector`), and each
  distinct selector's mask is still the selector rule's exact decision.
"""

from __future__ import annotations

import random

import numpy as np

from operators.rules.cell_windows import CellSelector
from operators.rules.columns import WindowColumns
from operators.synthetic import TrafficGenerator, TrafficProfile
from operators.window_metrics import WindowMetrics
from tests.harness import run_stages, semantics
from tests.operators.rules.cell_windows import T0
from tests.operators.rules.test_stage import emission


def test_emissions_carry_one_cell_id_per_distinct_dims_for_the_whole_run() -> None:
    events = TrafficGenerator(TrafficProfile(seed=5, duration_s=200, rate=30)).events()
    out = run_stages([(e.stream, e.key, e.line) for e in events], semantics(partitions=3), seed=2)
    emissions = [t for t in out.tables["metrics"] if isinstance(t, WindowMetrics)]
    assert any(e.final for e in emissions) and any(not e.final for e in emissions)
    id_of: dict[tuple[str, ...], int] = {}
    dims_of: dict[int, tuple[str, ...]] = {}
    for batch in emissions:
        ids = np.asarray(batch.cell_ids).tolist()
        assert len(ids) == len(batch)
        for group in batch.groups():
            block = WindowColumns(batch, group.window, group.start, group.end, group.rows)
            assert block.ids.tolist() == [ids[r] for r in group.rows.tolist()]
            for key, cell in zip(block.keys, block.ids.tolist(), strict=True):
                dims = tuple(v for _, v in key)
                assert id_of.setdefault(dims, cell) == cell, f"{dims} has two ids"
                assert dims_of.setdefault(cell, dims) == dims, f"id {cell} names two cells"
    assert len(id_of) > 50  # rollups and finest cells of several windows


def test_rules_reading_the_same_selectors_share_one_exact_mask() -> None:
    rng = random.Random(3)
    segments, versions = ["eu", "us", "*"], ["v1", "v2", "*"]
    reads = [
        ("1m", ({"segment": "*"},)),
        ("1m", ({"segment": "*"},)),  # the same selector, another rule
        ("1m", ({"segment": ["eu", "us"]},)),
        ("1m", ({"segment": ("eu", "us")},)),  # the same list, as a tuple
        ("1m", ({"segment": "*"}, {"model_version": "*"})),
        ("1m", ({"model_version": "*"}, {"segment": "*"})),  # a union in another order
        ("5m", ({"segment": "*"},)),
    ]
    selector = CellSelector(reads)
    alone = [CellSelector([read]) for read in reads]  # each rule with nothing to share
    cells = [
        ({"tenant": "t", "model_id": "m1", "deployment": "primary", "model_version": v,
          "segment": s, "endpoint": "*"}, {"labeled_count": 1})
        for s in segments for v in versions if rng.random() < 0.9
    ]  # fmt: skip
    batch = emission([(T0, cells)])
    rows = np.arange(len(cells))
    masks = selector.masks(batch, "1m", rows)
    assert masks[0] is masks[1] and masks[2] is masks[3]
    assert masks[0] is not masks[2]
    assert masks[6] is None and selector.selected[6] == []
    for mask, one in zip(masks, alone, strict=True):
        (want,) = one.masks(batch, "1m", rows)
        assert (mask is None) == (want is None)
        if mask is not None and want is not None:
            assert mask.tolist() == want.tolist()
    for hits, one in zip(selector.selected, alone, strict=True):
        one.masks(batch, "1m", rows)
        assert [h.tolist() for h in hits] == [h.tolist() for h in one.selected[0]]
