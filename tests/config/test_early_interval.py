"""A window's own `early_interval` and `early_windows`: validated, handed to the merge
stage per spec."""

from __future__ import annotations

import json

import pytest

from config.settings import SettingsError, load_settings
from dataflows.feedback import early_intervals, early_latest


def _windows(*windows: dict[str, str]) -> dict[str, str]:
    return {"PULSE_WINDOWS": json.dumps(list(windows))}


def test_the_defaults_give_the_hour_and_the_sliding_window_ten_seconds() -> None:
    assert early_intervals(load_settings(environ={})) == (1_000, 10_000, 10_000)


def test_default_is_the_emit_interval_and_never_below_it() -> None:
    env = _windows(
        {"name": "1m", "kind": "tumbling", "length": "1m"},
        {"name": "s", "kind": "sliding", "length": "5m", "slide": "1m", "early_interval": "100ms"},
    )
    env["PULSE_TIME_EMIT_INTERVAL"] = "500ms"
    assert early_intervals(load_settings(environ=env)) == (500, 500)


def test_a_session_window_has_no_early_interval() -> None:
    env = _windows({"name": "s", "kind": "session", "gap": "30m", "early_interval": "5s"})
    with pytest.raises(SettingsError, match="sessions emit no early rows"):
        load_settings(environ=env)


def test_a_sliding_window_emits_only_its_latest_window_unless_told_all() -> None:
    assert early_latest(load_settings(environ={})) == (False, False, True)
    env = _windows(
        {"name": "1m", "kind": "tumbling", "length": "1m"},
        {"name": "a", "kind": "sliding", "length": "5m", "slide": "1m", "early_windows": "all"},
        {"name": "s", "kind": "session", "gap": "30m"},
        {"name": "l", "kind": "sliding", "length": "5m", "slide": "1m", "early_windows": "latest"},
    )
    assert early_latest(load_settings(environ=env)) == (False, False, True)


@pytest.mark.parametrize(
    "kind", [{"kind": "tumbling", "length": "1m"}, {"kind": "session", "gap": "1m"}]
)
def test_early_windows_is_refused_but_for_a_sliding_window(kind: dict[str, str]) -> None:
    env = _windows({"name": "w", **kind, "early_windows": "all"})
    with pytest.raises(SettingsError, match="early_windows is for sliding windows only"):
        load_settings(environ=env)


def test_an_unknown_early_windows_value_names_the_field() -> None:
    env = _windows(
        {"name": "s", "kind": "sliding", "length": "5m", "slide": "1m", "early_windows": "oldest"}
    )
    with pytest.raises(SettingsError, match="early_windows"):
        load_settings(environ=env)
