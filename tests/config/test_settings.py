from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import SettingsError, env_names, load_settings, parse_duration_ms


def test_defaults_load_and_describe_the_documented_windows() -> None:
    s = load_settings(environ={})
    assert [w.name for w in s.windows] == ["1m", "1h", "5m_30s", "session_30m"]
    assert (s.time.max_out_of_orderness, s.join.wait, s.join.ttl) == (10_000, 30_000, 600_000)
    assert s.clickhouse_dsn == f"chdb://{Path('var').resolve() / 'olap'}"
    assert len(s.aggregation.grouping_set_tuples()) == 8


def test_environment_overrides_by_field_path() -> None:
    s = load_settings(environ={"PULSE_HOME": "/tmp/h", "PULSE_TIME_MAX_OUT_OF_ORDERNESS": "2s",
                               "PULSE_CLICKHOUSE_DSN": "http://u:p@ch:8123", "PULSE_RUN_BOUNDED": "true",
                               "PULSE_AGGREGATION_GROUPING_SETS": '[["model_version"], []]'})  # fmt: skip
    assert s.home == Path("/tmp/h") and s.time.max_out_of_orderness == 2000 and s.run.bounded
    assert s.clickhouse_dsn == "http://u:p@ch:8123"
    assert s.aggregation.grouping_set_tuples() == [("model_version",), ()]


def test_a_config_file_is_merged_over_the_defaults(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("join:\n  wait: 5s\nlog:\n  backend: kafka\n")
    s = load_settings(file, environ={})
    assert s.join.wait == 5000 and s.join.ttl == 600_000 and s.log.backend == "kafka"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"PULSE_TIME_MAX_OUT_OF_ORDERNESS": "soon"},
            "time.max_out_of_orderness (from PULSE_TIME_MAX_OUT_OF_ORDERNESS)",
        ),
        (
            {"PULSE_CLICKHOUSE_DNS": "x"},
            "unknown setting PULSE_CLICKHOUSE_DNS; did you mean PULSE_CLICKHOUSE_DSN",
        ),
        ({"PULSE_LOG_PARTITIONS": "0"}, "log.partitions"),
        ({"PULSE_LOG_BACKEND": "s3"}, "log.backend"),
        ({"PULSE_CLICKHOUSE_DSN": "mysql://x"}, "clickhouse"),
        (
            {"PULSE_WINDOWS": '[{"name": "x", "kind": "sliding", "length": "1m"}]'},
            "sliding takes `length` and `slide`",
        ),
        ({"PULSE_WINDOWS": "[oops"}, "windows (from PULSE_WINDOWS): not valid JSON"),
        ({"PULSE_AGGREGATION_GROUPING_SETS": '[["tenant"]]'}, "names dims not in `dims`"),
    ],
)
def test_bad_settings_fail_naming_the_field(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(environ=env)
    assert message in str(err.value)


def test_every_field_has_an_environment_name() -> None:
    names = env_names()
    assert names["PULSE_HOME"] == ("home",)
    assert names["PULSE_JOIN_MAX_ENTRIES"] == ("join", "max_entries")
    assert "PULSE_WINDOWS" in names


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("250ms", 250),
        ("10s", 10_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("1.5s", 1500),
        ("42", 42),
        (7, 7),
    ],
)
def test_durations(text: str | int, ms: int) -> None:
    assert parse_duration_ms(text) == ms
