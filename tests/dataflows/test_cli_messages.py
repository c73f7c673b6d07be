"""What a user sees when something is wrong: the real `pulse` command (and Bytewax's own
runner) exits 2 with the reason and what to do, never a traceback; queries that find
nothing say why."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.conftest import PULSE, ROOT, pulse_env, run_pulse

# Small windows so a short bounded run has final rows.
FAST = {"PULSE_RUN_STATUS_INTERVAL": "200ms"}


def _fails_with(result: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """Exit code 2, no traceback, and every phrase in the message."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    for phrase in phrases:
        assert phrase in output, f"{phrase!r} not in:\n{output}"
    return output


@pytest.fixture(scope="module")
def filled_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with the output of `pulse generate --seed 1` (event time 2026-01-01)."""
    home = tmp_path_factory.mktemp("filled") / "home"
    env = pulse_env(home, **FAST)
    run_pulse(["generate", "--seed", "1", "--duration", "120"], env)
    run_pulse(["run", "--bounded", "--quiet"], env)
    return home


# ---- first five minutes ----------------------------------------------------------------


def test_the_demo_banner_prints_a_query_command_that_works_and_when_windows_turn_final(
    home: Path,
) -> None:
    """After `make run`, `pulse` is not on PATH: the banner names `.venv/bin/pulse`."""
    script = Path(sys.executable).parent / "pulse"
    env = pulse_env(home)
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != script.parent
    )
    result = subprocess.run(
        [str(script), "up", "--duration", "2", "--no-recovery"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    command = os.path.relpath(script, ROOT)
    assert f"Try `{command} query --metric" in result.stdout, result.stdout
    # 1m windows + 10s out-of-orderness + 30s join wait (the defaults)
    assert "first within 1m40s" in result.stdout
    assert "join.wait 30s" in result.stdout
    # The service it hosts, with the local key it made (gone with the run).
    assert re.search(r"Service: http://127\.0\.0\.1:\d+, local key pk_\S{43} ", result.stdout)
    assert not (home / "service.json").exists()


# ---- settings --------------------------------------------------------------------------


def test_malformed_yaml_in_config_names_the_file_and_line(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("time:\n  max_out_of_orderness: 5s\n join:\n  wait: [1s\n")
    result = run_pulse(["--config", str(config), "run", "--bounded"], pulse_env(home), check=False)
    _fails_with(result, str(config), "line ")


def test_an_unknown_kafka_client_property_is_named(home: Path) -> None:
    env = pulse_env(
        home,
        PULSE_LOG_BACKEND="kafka",
        PULSE_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        PULSE_KAFKA_CLIENT_CONFIG='{"sasl.pasword": "x"}',
    )
    result = run_pulse(["run", "--bounded"], env, check=False, timeout=120)
    _fails_with(result, "sasl.pasword", "PULSE_KAFKA_CLIENT_CONFIG")


# ---- pulse query -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "phrases"),
    [
        (["--since", "10x"], ["--since", "'10x'"]),
        (["--window", "7m"], ["--window", "'7m'", "1m, 1h, 5m_30s"]),
        (
            ["--start", "2026-01-01T02:00:00Z", "--end", "2026-01-01T01:00:00Z"],
            ["--start", "--end", "after"],
        ),
        (["--limit", "-1"], ["--limit", "-1"]),
    ],
)
def test_query_rejects_options_that_would_silently_return_nothing(
    filled_home: Path, args: list[str], phrases: list[str]
) -> None:
    result = run_pulse(
        ["query", "--metric", "feedback_count", *args], pulse_env(filled_home), check=False
    )
    _fails_with(result, *phrases)


def test_query_on_an_empty_home_says_there_is_no_data_and_what_to_run(home: Path) -> None:
    result = run_pulse(["query", "--metric", "feedback_count"], pulse_env(home), check=False)
    output = _fails_with(result, "no data", "run --bounded", "generate")
    assert "does not exist" not in output


def test_a_query_that_finds_nothing_says_what_time_range_the_data_covers(
    filled_home: Path,
) -> None:
    # The seeded traffic is from 2026-01-01; the default --since 1h finds none of it.
    result = run_pulse(["query", "--metric", "feedback_count"], pulse_env(filled_home))
    assert "(0 rows)" in result.stderr
    assert "2026-01-01 00:00:00" in result.stderr, result.stderr
    assert "--since all" in result.stderr
    found = run_pulse(
        ["query", "--metric", "feedback_count", "--since", "all", "--format", "json"],
        pulse_env(filled_home),
    )
    assert json.loads(found.stdout)


# ---- errors raised inside the running flow -------------------------------------------


def test_a_snapshot_a_step_cannot_resume_stops_the_run_with_exit_2_and_the_reason(
    home: Path,
) -> None:
    """Bytewax wraps an error raised while a step resumes; the user still gets ours."""
    env = pulse_env(home, PULSE_RUN_SNAPSHOT_INTERVAL="200ms")
    run_pulse(["generate", "--seed", "1", "--duration", "30"], env)
    run_pulse(["run", "--quiet", "--duration", "3"], env)  # stopped: the store is kept
    with closing(sqlite3.connect(home / "recovery" / "part-0.sqlite3")) as db, db:
        damaged = db.execute(
            "UPDATE snaps SET ser_change = ? WHERE step_id LIKE '%partition_stage%' "
            "AND ser_change IS NOT NULL",
            (pickle.dumps(b"not a state"),),
        ).rowcount
    assert damaged
    result = run_pulse(["run", "--quiet", "--bounded"], env, check=False)
    assert result.returncode == 2, result.stderr
    assert "pulse: error: the partition_stage snapshot has no state header" in result.stderr
    assert "Traceback" not in result.stderr


# ---- a busy home -----------------------------------------------------------------------


@pytest.fixture
def running_flow(filled_home: Path) -> Iterator[subprocess.Popen[str]]:
    """An unbounded `pulse run` on the filled home, serving queries."""
    env = pulse_env(filled_home, **FAST)
    endpoint = filled_home / "service.json"
    endpoint.unlink(missing_ok=True)
    process = subprocess.Popen(
        [*PULSE, "run", "--quiet", "--no-recovery"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not endpoint.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the flow never served queries"
            time.sleep(0.2)
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_second_run_on_a_busy_home_names_the_pid_and_queries_still_work(
    filled_home: Path, running_flow: subprocess.Popen[str]
) -> None:
    env = pulse_env(filled_home, **FAST)
    second = run_pulse(["run", "--bounded", "--no-recovery"], env, check=False, timeout=120)
    _fails_with(second, f"pid {running_flow.pid}", "in use")
    # Queries go through the running flow, and the HTTP library keeps quiet about it.
    query = run_pulse(
        ["query", "--metric", "feedback_count", "--since", "all", "--all-tenants"], env
    )
    assert query.stdout.count("\n") > 1
    assert "httpx" not in query.stderr and "HTTP Request" not in query.stderr, query.stderr
    # The local key reads tenant `default`, which the generated traffic lacks: it says so.
    local = run_pulse(["query", "--metric", "feedback_count", "--since", "all"], env)
    assert "nothing found" in local.stderr and "--all-tenants" in local.stderr, local.stderr
    assert running_flow.poll() is None


# ---- Bytewax's own runner --------------------------------------------------------------


def _bytewax_run(home: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.feedback:flow", *args],
        env=pulse_env(home, **settings), cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_bytewax_run_on_a_directory_without_partitions_says_how_to_create_them(
    home: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "recovery"
    directory.mkdir()
    result = _bytewax_run(home, "-r", str(directory), "-s", "10", "-b", "0")
    _fails_with(result, str(directory), f"python -m bytewax.recovery {directory} 1")


def test_a_bounded_bytewax_run_prints_the_summary_pulse_run_prints(home: Path) -> None:
    env = pulse_env(home)
    run_pulse(["generate", "--seed", "2", "--duration", "30"], env)
    result = _bytewax_run(home, PULSE_RUN_BOUNDED="true")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for phrase in ("events in", "windows final", "rows written"):
        assert phrase in output, output
    assert "bounded run complete" in output
    assert os.path.exists(home / "olap")


def test_a_bounded_bytewax_run_with_recovery_leaves_partitions_for_the_next(
    home: Path, tmp_path: Path
) -> None:
    """A completed bounded run clears its store, as `pulse run` does, but keeps the
    partition set Bytewax's runner needs: the next bounded run reads the log again."""
    directory = tmp_path / "recovery"
    directory.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(directory), "1"], check=True)
    run_pulse(["generate", "--seed", "2", "--duration", "10"], pulse_env(home))
    for _ in range(2):
        result = _bytewax_run(
            home, "-r", str(directory), "-s", "10", "-b", "0", PULSE_RUN_BOUNDED="true"
        )
        assert result.returncode == 0, result.stderr
        assert "recovery store cleared" in result.stderr
        assert "events in 0 " not in result.stdout and "events in" in result.stdout
    assert (directory / "part-0.sqlite3").exists()
