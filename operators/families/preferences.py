"""The ``preferences`` family: pairwise outcomes (wins_a, wins_b, ties); key = (policy_a,
policy_b). Its table holds policy a's win rate (ties count half) with a Wilson score 95 %
interval."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from operators.batches import Categorical
from operators.columnar.joined import JoinedColumns
from operators.families.base import Update
from operators.metrics import ratio

PREFERENCES = "preferences"
WINS_A, WINS_B, TIES = 0, 1, 2
WINNER_CODES = {"a": WINS_A, "b": WINS_B, "tie": TIES}
Z_95 = NormalDist().inv_cdf(0.975)  # 1.959964...


@dataclass(frozen=True)
class PreferencesFamily:
    name: str = PREFERENCES
    key: str = "(policy_a, policy_b)"
    width: int = 3
    table: str | None = "metrics_preferences"

    def updates(self, batch: JoinedColumns) -> Iterator[Update]:
        feedback = batch.feedback
        rows = np.flatnonzero(feedback.pairs >= 0)
        if not len(rows):
            return
        values = np.zeros((len(rows), 3))
        values[np.arange(len(rows)), feedback.winners[rows]] = 1.0
        yield Update(
            feedback.slices[rows], feedback.cutoffs[rows], feedback.cells[rows],
            feedback.pairs[rows], values,
        )  # fmt: skip

    def cell_metrics(
        self, keys: np.ndarray, values: np.ndarray, cells: np.ndarray
    ) -> dict[str, np.ndarray]:
        return {}

    def key_columns(self, ids: np.ndarray, values: list[Any]) -> dict[str, Any]:
        return {
            "policy_a": Categorical(ids, [pair[0] for pair in values]),
            "policy_b": Categorical(ids, [pair[1] for pair in values]),
        }

    def metrics(self, values: np.ndarray, seconds: np.ndarray) -> dict[str, np.ndarray]:
        return preference_metrics(values)


def preference_metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Win rate of policy a, ties counting half, with a Wilson score 95 % interval."""
    wins_a, wins_b, ties = counts[:, WINS_A], counts[:, WINS_B], counts[:, TIES]
    n = wins_a + wins_b + ties
    rate = ratio(wins_a + 0.5 * ties, n)
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
