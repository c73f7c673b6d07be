"""One user's sessions: how an event merges the sessions its window overlaps."""

from __future__ import annotations

from operators.sessions import UserSessions

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
