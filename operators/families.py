"""Families of additive fields, and the narrow metrics derived from them.

Every family is summed per (window, cell, extra key) by the same machinery (slice deltas,
panes, rollups); they differ in width and in what the extra key means:

* ``main`` — the catalogue's counters and sums (:mod:`operators.metrics`); no extra key.
* ``latency`` — DDSketch bucket counts (:mod:`operators.sketch`); key = bucket.
* ``classes`` — confusion counts (tp, fp, fn) of categorical labels; key = class.
* ``preferences`` — pairwise outcomes (wins_a, wins_b, ties); key = (policy_a, policy_b).
* ``reports`` — fraud/abuse reports (count, amount sum); key = category.

The keyed families' keys are dictionary-encoded like cells (:class:`operators.cells.LocalIds`).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

MAIN = "main"
LATENCY = "latency"
CLASSES = "classes"
PREFERENCES = "preferences"
REPORTS = "reports"
KEYED = (CLASSES, PREFERENCES, REPORTS)
NARROW_WIDTHS = {LATENCY: 1, CLASSES: 3, PREFERENCES: 3, REPORTS: 2}

TP, FP, FN = 0, 1, 2
WINS_A, WINS_B, TIES = 0, 1, 2
WINNER_CODES = {"a": WINS_A, "b": WINS_B, "tie": TIES}
REPORT_COUNT, REPORT_AMOUNT = 0, 1

Z_95 = NormalDist().inv_cdf(0.975)  # 1.959964...


def widths(main_width: int) -> dict[str, int]:
    return {MAIN: main_width, **NARROW_WIDTHS}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def class_metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per class: precision tp/(tp+fp), recall tp/(tp+fn), F1 2tp/(2tp+fp+fn)."""
    tp, fp, fn = counts[:, TP], counts[:, FP], counts[:, FN]
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "support": tp + fn,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def macro_f1(cell_of_row: np.ndarray, counts: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes seen (tp + fp + fn > 0) of each cell; NaN for none.

    `cell_of_row[i]` is the cell of class row i; `cells` are the cells to report (sorted).
    """
    f1 = _ratio(2 * counts[:, TP], 2 * counts[:, TP] + counts[:, FP] + counts[:, FN])
    seen = ~np.isnan(f1)
    f1, position = f1[seen], np.searchsorted(cells, cell_of_row[seen])
    inside = position < len(cells)
    inside[inside] = cells[position[inside]] == cell_of_row[seen][inside]
    f1, position = f1[inside], position[inside]
    # Class rows follow arrival order, which a restart may change; summing each cell's F1s
    # in ascending order makes the float total independent of it.
    order = np.lexsort((f1, position))
    total = np.bincount(position[order], weights=f1[order], minlength=len(cells))
    number = np.bincount(position, minlength=len(cells))
    return _ratio(total, number.astype(np.float64))


def preference_metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Win rate of policy a, ties counting half, with a Wilson score 95 % interval."""
    wins_a, wins_b, ties = counts[:, WINS_A], counts[:, WINS_B], counts[:, TIES]
    n = wins_a + wins_b + ties
    rate = _ratio(wins_a + 0.5 * ties, n)
    z2 = Z_95 * Z_95
    with np.errstate(divide="ignore", invalid="ignore"):
        centre = (rate + z2 / (2 * n)) / (1 + z2 / n)
        half = Z_95 * np.sqrt(rate * (1 - rate) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return {
        "wins_a": wins_a,
        "wins_b": wins_b,
        "ties": ties,
        "comparisons": n,
        "win_rate_a": rate,
        "win_rate_a_low": np.where(n > 0, centre - half, np.nan),
        "win_rate_a_high": np.where(n > 0, centre + half, np.nan),
    }


def report_metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
    return {"report_count": counts[:, REPORT_COUNT], "report_amount_sum": counts[:, REPORT_AMOUNT]}
