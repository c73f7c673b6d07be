"""The rules' per-cell state in arrays: slots, rings of past windows, and expiry.

* :class:`WindowRing` gives what a per-cell list of past windows gives ("the last K that
  end at or before a start"), for random appends and reads;
* :class:`CellIds` hands freed slots out again;
* drift and spike rules forget the cells that stopped appearing (their state does not
  grow with dims churn) and keep the ones still appearing: an evaluator that forgets
  gives the same verdicts as one that never does, on cells that keep coming.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from config.rules import DriftRule, SpikeRule
from operators.rules.cell_ids import MISSING, CellIds
from operators.rules.evaluation import CellWindow
from operators.rules.evaluators.drift import DriftEvaluator
from operators.rules.evaluators.spike import SpikeEvaluator
from operators.rules.lifecycle import Evaluation
from operators.rules.window_ring import WindowRing
from tests.operators.rules.cell_windows import BASE_DIMS, BINS, T0, M, cell, cell_id

HOUR = 60 * M
DRIFT = DriftRule.model_validate(
    {"name": "drift", "type": "drift", "window": "1m", "metric": "accuracy",
     "where": {"segment": "*"}, "reference": {"kind": "trailing", "windows": 2},
     "psi": 0.02, "min_samples": 40, "require": "either"}
)  # fmt: skip
SPIKE = SpikeRule.model_validate(
    {"name": "spike", "type": "spike", "window": "1m", "metric": "accuracy",
     "where": {"segment": "*"}, "baseline_windows": 2, "change": 0.15, "min_samples": 30}
)  # fmt: skip


def test_a_ring_reads_what_a_list_of_past_windows_reads() -> None:
    rng = random.Random(3)
    keep, k = 4, 3
    ring = WindowRing(keep, 2)
    ring.ensure(5)
    lists: list[list[tuple[int, int, tuple[float, float]]]] = [[] for _ in range(5)]
    start = 0
    for _ in range(300):
        start += rng.choice((1, 2, 5))
        slots = sorted(rng.sample(range(5), rng.randint(1, 5)))
        length = 3  # one window length per rule: a sliding one overlaps its neighbours
        values = np.array([[rng.random(), rng.randint(1, 9)] for _ in slots])
        # a read before the append, as the evaluators do
        before = start - rng.choice((0, 1, 4))
        got = ring.trailing(np.array([*slots, MISSING], dtype=np.int64), before, k)
        for row, slot in enumerate(slots):
            chosen = [e for e in lists[slot] if e[1] <= before][-k:]
            assert got.count[row] == len(chosen)
            expected = [0.0, 0.0]
            for entry in chosen:  # one entry at a time, as a Python sum adds them
                expected = [expected[0] + entry[2][0], expected[1] + entry[2][1]]
            assert got.sums[row].tolist() == expected
            if chosen:
                assert (got.first_start[row], got.last_end[row]) == (chosen[0][0], chosen[-1][1])
        assert got.count[-1] == 0 and not got.sums[-1].any()  # MISSING reads nothing
        ring.append(np.array(slots, dtype=np.int64), start, start + length, values)
        for slot, row in zip(slots, values.tolist(), strict=True):
            lists[slot].append((start, start + length, (row[0], row[1])))
            del lists[slot][: max(0, len(lists[slot]) - keep)]
        for slot in range(5):
            assert ring.entries(slot) == lists[slot]


def test_cell_ids_reuse_released_slots() -> None:
    ids = CellIds()
    keys = [(("segment", f"s{i}"),) for i in range(4)]
    assert ids.assign(keys).tolist() == [0, 1, 2, 3]
    assert ids.find([keys[2], (("segment", "other"),)]).tolist() == [2, MISSING]
    ids.release([1, 2])
    assert len(ids) == 2 and ids.find(keys).tolist() == [0, MISSING, MISSING, 3]
    fresh = [(("segment", "x"),), (("segment", "y"),), (("segment", "z"),)]
    assert sorted(ids.assign(fresh).tolist()) == [1, 2, 4]  # freed slots first
    assert ids.capacity == 5


def _window(i: int, segments: list[str], rng: random.Random) -> list[CellWindow]:
    out = []
    for segment in segments:
        labeled = rng.randint(60, 120)
        correct = rng.randint(int(labeled * 0.6), labeled)
        out.append(cell(T0 + i * M, {"labeled_count": labeled, "correct_count": correct},
                        segment=segment, histogram=(1,) * BINS))  # fmt: skip
    return out


def _records(evaluations: list[Evaluation]) -> list[tuple[object, ...]]:
    return [(e.dims, e.outcome, e.value, e.samples, e.baseline_samples, e.reason)
            for e in evaluations]  # fmt: skip


@pytest.mark.parametrize("make", [
    lambda retention: DriftEvaluator(DRIFT, BINS, retention_ms=retention),
    lambda retention: SpikeEvaluator(SPIKE, retention_ms=retention),
], ids=["drift", "spike"])  # fmt: skip
def test_churning_cells_are_forgotten_and_steady_ones_kept(make: object) -> None:
    """Three steady segments and three new segments every minute for 6 hours: with a
    retention of 10 minutes the rule holds the steady cells and the last few minutes'
    churn only; the steady cells' verdicts equal those of a rule that never forgets."""
    assert callable(make)
    forgetting, keeping = make(10 * M), make(10**15)
    rng, twin = random.Random(5), random.Random(5)
    steady = ["a", "b", "c"]
    most = 0
    for i in range(360):
        churn = [f"n{i}-{j}" for j in range(3)]
        now = T0 + (i + 1) * M
        got = forgetting.evaluate(_window(i, steady + churn, rng), now)
        want = keeping.evaluate(_window(i, steady + churn, twin), now)
        assert _records(got) == _records(want)
        forgetting.forget_expired(now)
        most = max(most, len(forgetting.state.ids))
    assert len(keeping.state.ids) == 3 + 3 * 360  # never forgotten: grows with churn
    # steady 3 + churn of the last (retention + span) minutes: about 3 + 3 * 14
    assert most <= 3 + 3 * 16
    assert forgetting.state.ids.capacity <= 3 + 3 * 16
    steady_keys = [cell_id({**BASE_DIMS, "segment": s}) for s in steady]
    assert MISSING not in forgetting.state.ids.find(steady_keys).tolist()


def test_a_side_keeps_each_cells_latest_row_and_never_lets_an_early_row_replace_a_final() -> None:
    from operators.rules.evaluators.canary import SideCells
    from operators.rules.sequential import Totals

    a, b = (("segment", "a"),), (("segment", "b"),)
    side = SideCells()
    assert side.file([a, b], [(10, 1.0, 1.0), (0, 0.0, 0.0)], final=False) is None
    assert side.file([a], [(20, 2.0, 2.0)], final=False) is None  # replaces, not adds
    assert side.added_to(Totals(0)) == Totals(20, 2.0, 2.0) and side.has_data()
    assert side.file([a], [(25, 3.0, 3.0)], final=True) is None
    taken = side.file([a, b], [(99, 9.0, 9.0), (5, 1.0, 1.0)], final=False)
    assert taken is not None and taken.tolist() == [False, True]
    assert side.added_to(Totals(1, 1.0, 1.0)) == Totals(31, 5.0, 5.0)
    assert list(side.cells) == [a, b]  # in order of arrival: the sums' order
