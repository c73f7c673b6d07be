"""One user's sessions: how an event merges the sessions its window overlaps."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from operators.cells import Cell
from operators.sessions import UserSessions
from operators.windows import is_final

GAP = 1_000
CELL = ("t", "m", "d", "v1", "s", "e")


def _starts_lasts_late(user: UserSessions) -> list[tuple[int, int, bool]]:
    return [(s.start, s.last, s.late) for s in user.sessions]


def test_an_event_extends_the_one_session_it_overlaps_in_place() -> None:
    user = UserSessions()
    user.add(10_000, CELL, "rating", 4.0, GAP, late=False)
    first = user.sessions[0]
    user.add(9_500, ("t", "m", "d", "v0", "s", "e"), "rating", 2.0, GAP, late=False)
    user.add(10_800, CELL, "thumbs", 1.0, GAP, late=False)
    assert user.sessions == [first]  # the same object, updated
    assert (first.start, first.last, first.events) == (9_500, 10_800, 3)
    assert first.cell[3] == "v0"  # the earliest event's cell
    assert (first.ratings, first.rating_sum, first.thumbs, first.thumbs_up) == (2, 6.0, 1, 1)


def test_a_late_event_that_bridges_two_open_sessions_merges_them_and_is_not_late() -> None:
    user = UserSessions()
    user.add(10_000, CELL, "rating", 4.0, GAP, late=False)
    user.add(11_600, CELL, "rating", 2.0, GAP, late=False)
    assert len(user.sessions) == 2
    # Its own window is already final, but it overlaps both open sessions: they take it.
    user.add(10_800, CELL, "rating", 3.0, GAP, late=True)
    assert _starts_lasts_late(user) == [(10_000, 11_600, False)]
    assert user.sessions[0].events == 3


def test_a_late_event_that_no_open_session_takes_is_a_late_session_of_its_own() -> None:
    user = UserSessions()
    user.add(10_000, CELL, "rating", 4.0, GAP, late=False)
    user.add(5_000, CELL, "rating", 1.0, GAP, late=True)
    user.add(5_200, CELL, "rating", 1.0, GAP, late=True)  # a late session takes nothing
    assert _starts_lasts_late(user) == [(5_000, 5_000, True), (5_200, 5_200, True),
                                        (10_000, 10_000, False)]  # fmt: skip


_events = st.lists(
    st.tuples(
        st.integers(0, 32).map(lambda k: k * GAP // 4),  # ts: gaps below, at and past GAP
        st.sampled_from([CELL, ("t", "m", "d", "v0", "s", "e")]),
        st.sampled_from(["rating", "thumbs", "click"]),
        st.sampled_from([0.0, 1.0, 2.5, 4.0]),
    ),
    max_size=12,
)


@settings(max_examples=500, deadline=None)
@example([(2 * GAP, CELL, "rating", 1.0)], [(GAP, CELL, "rating", 1.0)], 0)  # GAP below: apart
@example([(GAP, CELL, "rating", 1.0)], [(2 * GAP, CELL, "rating", 1.0)], 0)  # GAP above: apart
@given(_events, _events, st.integers(-8, 40).map(lambda k: k * GAP // 4))
def test_a_batch_extends_as_its_events_one_by_one(
    before: list[tuple[int, Cell, str, float]],
    batch: list[tuple[int, Cell, str, float]],
    watermark: int,
) -> None:
    """`extend` (in bulk when the batch joins the one open session) leaves the sessions
    that adding the batch's events one by one, in order, leaves."""
    one_by_one, bulk = UserSessions(), UserSessions()
    for user in (one_by_one, bulk):  # the same open sessions, some late
        for ts, cell, kind, number in before:
            user.add(ts, cell, kind, number, GAP, late=ts + GAP <= watermark - 3_000)
    for ts, cell, kind, number in batch:
        one_by_one.add(ts, cell, kind, number, GAP, is_final(ts + GAP, watermark, 0))
    if batch:
        bulk.extend([("u", *event) for event in batch], GAP, watermark, 0)
    assert bulk.sessions == one_by_one.sessions
