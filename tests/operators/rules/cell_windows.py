"""Synthetic :class:`CellWindow` records for evaluator tests: fields in, metrics derived
by the flow's own definitions (operators.metrics), so a test reads what the stage would."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np

from config.settings import Settings, load_settings
from operators.metrics import MainLayout, derive
from operators.rules.evaluation import CellWindow
from tests.conftest import ROOT

M = 60_000
T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z
BINS = 10
LAYOUT = MainLayout(BINS)
BASE_DIMS = {"tenant": "t", "model_id": "m1", "deployment": "primary",
             "model_version": "*", "segment": "*", "endpoint": "*"}  # fmt: skip
SECRET = "whsec_" + base64.b64encode(b"a secret of 24 bytes....").decode()
EXAMPLE = ROOT / "config" / "rules.example.yaml"


def cell(
    start: int,
    fields: Mapping[str, float] | None = None,
    *,
    final: bool = True,
    length: int = M,
    window: str = "1m",
    histogram: tuple[int, ...] | None = None,
    metrics: Mapping[str, float | None] | None = None,
    **dims: str,
) -> CellWindow:
    """One window × cell starting at `start` with these additive fields (0 elsewhere)."""
    vector = np.zeros((1, LAYOUT.width))
    for name, value in (fields or {}).items():
        vector[0, LAYOUT.index(name)] = value
    hist = histogram if histogram is not None else (0,) * BINS
    vector[0, LAYOUT.first_bin :] = hist
    derived: dict[str, float | None] = {}
    for name, values in derive(vector, length / 1000).items():
        value = float(values[0])
        derived[name] = None if np.isnan(value) else value
    derived.update(metrics or {})
    full = {**BASE_DIMS, **dims}
    return CellWindow(
        window=window,
        window_start=start,
        window_end=start + length,
        final=final,
        dims=full,
        fields={
            name: float(vector[0, i]) for i, name in enumerate(LAYOUT.names[: LAYOUT.first_bin])
        },
        metrics=derived,
        histogram=tuple(int(x) for x in hist),
        cell_id=cell_id(full),
    )


_CELL_IDS: dict[tuple[tuple[str, str], ...], int] = {}


def cell_id(dims: Mapping[str, str]) -> int:
    """The cell id of these dims, as the merge stage's CellIndex gives them: one per
    distinct dims, the same for the whole test process."""
    return _CELL_IDS.setdefault(tuple(sorted(dims.items())), len(_CELL_IDS))


def example_settings(**overrides: Any) -> Settings:
    settings = load_settings(EXAMPLE, environ={"OPS_WEBHOOK_SECRET": SECRET})
    return settings.with_overrides(**overrides) if overrides else settings


def rule_named(settings: Settings, name: str) -> Any:
    return next(rule for rule in settings.rules if rule.name == name)
