"""What a drill-down that found nothing says: never to widen a range that is already all."""

from __future__ import annotations

from connectors.drilldown import Drilldown


def test_a_bounded_range_suggests_widening_it() -> None:
    note = Drilldown(["accuracy"], since_seconds=600).coverage_note(
        3, "2026-01-05 10:00:00", "2026-01-05 11:00:00", "--since 10m"
    )
    assert "none within --since 10m" in note and "--since all" in note


def test_an_unbounded_range_points_at_the_dims_instead() -> None:
    note = Drilldown(["accuracy"], since_seconds=None).coverage_note(
        3, "2026-01-05 10:00:00", "2026-01-05 11:00:00", "--since all"
    )
    assert "--since all" not in note and "rollup rows carry '*'" in note


def test_an_empty_window_says_so() -> None:
    note = Drilldown(["accuracy"], window="1h").coverage_note(0, "", "", "--since 1h")
    assert note == "the store holds no rows of window 1h yet"
