"""Metric families: one object each (:class:`~operators.families.base.Family`).

Every family is summed per (window, cell, extra key) by the same machinery (slice deltas,
panes, rollups); its object defines, once, what differs: width and key, bulk update
(on-time and late rows alike), and derived metrics at emission.

* ``main`` — the catalogue's counters and sums (:mod:`operators.metrics`); no extra key.
* ``latency`` — DDSketch bucket counts (:mod:`operators.sketch`); key = bucket.
* ``classes`` — confusion counts (tp, fp, fn) of categorical labels; key = class.
* ``preferences`` — pairwise outcomes (wins_a, wins_b, ties); key = (policy_a, policy_b).
* ``reports`` — fraud/abuse reports (count, amount sum); key = category.

The keyed families' keys are dictionary-encoded like cells (:class:`operators.cells.LocalIds`).
Adding a family: one module with its object, and one entry in :func:`registry`.
"""

from __future__ import annotations

from operators.families.base import Family, Update
from operators.families.classes import (
    CLASSES,
    FN,
    FP,
    TP,
    ClassesFamily,
    class_metrics,
    macro_f1,
)
from operators.families.latency import LATENCY, LatencyFamily
from operators.families.main import MAIN, MainFamily
from operators.families.preferences import (
    PREFERENCES,
    TIES,
    WINNER_CODES,
    WINS_A,
    WINS_B,
    PreferencesFamily,
    preference_metrics,
)
from operators.families.reports import (
    REPORT_AMOUNT,
    REPORT_COUNT,
    REPORTS,
    ReportsFamily,
    report_metrics,
)
from operators.metrics import MainLayout

__all__ = [
    "CLASSES",
    "FN",
    "FP",
    "KEYED",
    "LATENCY",
    "MAIN",
    "NARROW",
    "PREFERENCES",
    "REPORTS",
    "REPORT_AMOUNT",
    "REPORT_COUNT",
    "TIES",
    "TP",
    "WINNER_CODES",
    "WINS_A",
    "WINS_B",
    "Family",
    "Update",
    "class_metrics",
    "macro_f1",
    "preference_metrics",
    "registry",
    "report_metrics",
    "widths",
]  # fmt: skip

KEYED = (CLASSES, PREFERENCES, REPORTS)  # families whose keys are dictionary-encoded


# The families after main, whose shape does not depend on the configuration.
NARROW: tuple[Family, ...] = (
    LatencyFamily(), ClassesFamily(), PreferencesFamily(), ReportsFamily()
)  # fmt: skip


def registry(layout: MainLayout) -> tuple[Family, ...]:
    """Every family, in the order callers iterate them (main first: its rows are the
    cells of a window)."""
    return (MainFamily(layout), *NARROW)


def widths(main_width: int) -> dict[str, int]:
    return {MAIN: main_width, **{family.name: family.width for family in NARROW}}
