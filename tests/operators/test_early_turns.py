"""How a sliding spec's windows take turns at early rows (SpecState.early_due and
early_share): turns spread over a round, and at most a tick's share of windows at once."""

from __future__ import annotations

import itertools

from operators.families import registry
from operators.metrics import MainLayout
from operators.panes import PaneLayout, SpecState
from operators.windows import WindowSpec

MINUTE = 60_000
SLIDE = 30_000


def _sliding() -> SpecState:
    widths = {family.name: family.width for family in registry(MainLayout(4))}
    return SpecState(PaneLayout(WindowSpec("5m_30s", 5 * MINUTE, SLIDE)), widths)


def test_turns_are_spread_evenly_over_a_round() -> None:
    """Ten open windows, rows every 10 s, ticks every 250 ms: a round is 40 ticks and
    each window's turn comes once in it, 4 ticks after the previous window's (not ten
    turns on ten consecutive ticks, which bunched them into a quarter of the round)."""
    state = _sliding()
    interval, every = 250, 10_000
    starts = [k * SLIDE for k in range(100, 110)]
    turn_ticks = {}
    for tick in range(40):
        now = 1_000_000 * interval + tick * interval
        for start in starts:
            state.early_at[start] = now  # emitted just now: only its turn makes it due
            if state.early_due(start, now, interval, every):
                assert start not in turn_ticks, "one turn per round"
                turn_ticks[start] = tick
    assert sorted(turn_ticks) == starts
    ticks = sorted(turn_ticks.values())
    assert [b - a for a, b in itertools.pairwise(ticks)] == [4] * 9


def test_a_missed_turn_stays_due_at_every_tick_until_the_window_goes() -> None:
    """Ticks every 1 s, rows every 10 s: the window at start 0 has its turn at ticks
    0, 10, 20...; its last rows went at 0 ms. Mid-round it is not due; once its turn has
    passed (deferred by the budget or the share) it is due at each tick after."""
    state = _sliding()
    state.early_at[0] = 0.0
    assert not state.early_due(0, 5_000, 1_000, 10_000)
    assert state.early_due(0, 10_000, 1_000, 10_000)  # its turn
    assert state.early_due(0, 11_000, 1_000, 10_000)  # missed: still due
    assert state.early_due(0, 13_000, 1_000, 10_000)


def test_deferred_windows_go_a_share_per_tick_the_longest_waiting_first() -> None:
    """Five windows due at once (the budget deferred them): with ticks every 250 ms and
    rows every 10 s, the share is ceil(10 x 250 / 10,000) = 1 window a tick; with 1 s
    ticks and 5 s, two. The one whose rows are oldest goes first; one never emitted
    before all others."""
    state = _sliding()
    due = [k * SLIDE for k in range(5)]
    state.early_at.update({0: 500.0, SLIDE: 100.0, 2 * SLIDE: 300.0, 3 * SLIDE: 200.0})
    assert state.early_share(due, 20_000, 250, 10_000) == [4 * SLIDE]  # never emitted
    assert state.early_share(due[:4], 20_000, 250, 10_000) == [SLIDE]
    assert state.early_share(due[:4], 20_000, 1_000, 5_000) == [SLIDE, 3 * SLIDE]
    # A spec that emits every tick: every due window goes.
    assert state.early_share(due, 20_000, 1_000, 1_000) == due
