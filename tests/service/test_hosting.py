"""Hosting: service.json (mode 0600, removed at stop), `pulse serve`, keys from the file or
PULSE_API_KEY, and the CLI reading through a `pulse run` that holds the embedded store."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from config.settings import load_settings
from connectors.service import discovery
from connectors.service.auth import KeyRing, Principal
from connectors.service.hosting import ServiceBusyError, host_service
from connectors.service.keys import key_hash
from tests.conftest import PULSE, ROOT, pulse_env, run_pulse
from tests.service.conftest import api_keys, keyed_settings

FAST = {"PULSE_TIME_EMIT_INTERVAL": "250ms", "PULSE_SOURCE_POLL_INTERVAL": "20ms"}


def test_service_json_is_private_names_the_url_and_goes_at_stop(home: Path) -> None:
    settings = load_settings(environ={"PULSE_HOME": str(home)})
    hosted = host_service(settings, hosted_by_flow=False)
    try:
        path = home / "service.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        info = json.loads(path.read_text())
        assert info == {
            "url": hosted.url,
            "pid": os.getpid(),
            "key": hosted.local_key,
            "operator_key": hosted.operator_key,
        }
        assert httpx.get(f"{info['url']}/healthz").status_code == 200
        # Both keys authenticate (what each may do: test_local_keys.py).
        for key in (info["key"], info["operator_key"]):
            listed = httpx.get(
                f"{info['url']}/v1/silences", headers={"Authorization": f"Bearer {key}"}
            )
            assert listed.status_code not in (401, 403)  # 503: no store migrated here
        with pytest.raises(ServiceBusyError, match=hosted.url):
            host_service(settings, hosted_by_flow=False)
    finally:
        hosted.stop()
    assert not (home / "service.json").exists()


def test_configured_keys_mean_no_local_key(home: Path) -> None:
    settings, _ = keyed_settings(home, ("ops", "*", ["read"]))
    hosted = host_service(settings, hosted_by_flow=False)
    try:
        assert hosted.local_key is None and hosted.operator_key is None
        assert json.loads((home / "service.json").read_text()).keys() == {"url", "pid"}
        assert len(hosted.context.keys) == 1
    finally:
        hosted.stop()


def test_a_dead_process_file_is_ignored_and_a_live_one_kept(home: Path) -> None:
    child = subprocess.Popen(["sleep", "0"])
    child.wait()
    (home / "service.json").write_text(json.dumps({"url": "http://127.0.0.1:1", "pid": child.pid}))
    assert discovery.read(home) is None
    (home / "service.json").write_text(
        json.dumps({"url": "http://127.0.0.1:1", "pid": os.getpid()})
    )
    assert discovery.read(home) == discovery.Discovered("http://127.0.0.1:1", os.getpid())


def test_a_non_loopback_host_without_keys_fails_at_start(home: Path) -> None:
    env = pulse_env(home, PULSE_SERVICE_HOST="0.0.0.0")
    for command in (["serve"], ["run", "--bounded", "--quiet"]):
        result = run_pulse(command, env, check=False, timeout=120)
        assert result.returncode == 2, (command, result.stderr)
        assert "service.host '0.0.0.0' is not loopback" in result.stderr
        assert "Traceback" not in result.stderr


def _wait_for_service(home: Path, process: subprocess.Popen[str]) -> discovery.Discovered:
    deadline = time.monotonic() + 120
    while (found := discovery.read(home)) is None:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the service never started"
        time.sleep(0.2)
    return found


def _stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    try:
        return process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


@pytest.fixture
def serving(home: Path) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """`pulse serve` with configured keys: (env without a key, keys by name)."""
    entries, keys = api_keys(("ops", "*", ["read", "query"]))
    env = pulse_env(home, PULSE_SERVICE_API_KEYS=entries)
    process = subprocess.Popen([*PULSE, "serve"], env=env, cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        _wait_for_service(home, process)
        yield env, keys
    finally:
        out, err = _stop(process)
        assert process.returncode == 0, err
        assert "keys: service.api_keys" in out
        assert not (home / "service.json").exists()


def test_pulse_serve_with_keys_wants_pulse_api_key(
    home: Path, serving: tuple[dict[str, str], dict[str, str]]
) -> None:
    env, keys = serving
    nokey = run_pulse(["silence", "list"], env, check=False)
    assert nokey.returncode == 2 and "missing API key" in nokey.stderr
    assert "set PULSE_API_KEY" in nokey.stderr
    keyed = {**env, "PULSE_API_KEY": keys["ops"]}
    assert run_pulse(["silence", "list", "--format", "json"], keyed).stdout.strip() == "[]"
    # The key lacks `admin`: a write is refused, naming the scope.
    add = run_pulse(["silence", "add", "--match", "model_id=m1", "--for", "1h"], keyed, check=False)
    assert add.returncode == 2 and "lacks the 'admin' scope" in add.stderr
    # And a second `pulse serve` on the home is told where the first one serves.
    found = discovery.read(home)
    assert found is not None
    second = run_pulse(["serve"], env, check=False, timeout=60)
    assert second.returncode == 2 and found.url in second.stderr, second.stderr


def test_the_cli_reads_through_a_run_that_holds_the_store(home: Path) -> None:
    env = pulse_env(home, **FAST)
    run_pulse(["generate", "--seed", "4", "--duration", "20", "--rate", "20"], env)
    flow = subprocess.Popen([*PULSE, "run", "--quiet", "--no-recovery"], env=env, cwd=ROOT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        found = _wait_for_service(home, flow)
        assert found.pid == flow.pid and found.key
        # `pulse serve` cannot have the store: it names the run's URL.
        serve = run_pulse(["serve"], env, check=False, timeout=60)
        assert serve.returncode == 2 and found.url in serve.stderr, serve.stderr
        deadline = time.monotonic() + 120
        count = 0
        while count < 400 and time.monotonic() < deadline:
            result = run_pulse(["query", "--sql", "SELECT count() AS n FROM pulse.inferences",
                                "--format", "json", "--all-tenants"], env, timeout=60)  # fmt: skip
            count = json.loads(result.stdout)[0]["n"]
        assert count == 400  # 20 s at 20/s: every inference, read through the run's service
        # The local key reads tenant `default` only; the generated traffic is acme's, globex's.
        local = run_pulse(["query", "--sql", "SELECT count() AS n FROM pulse.inferences",
                           "--format", "json"], env, timeout=60)  # fmt: skip
        assert json.loads(local.stdout) == [{"n": 0}]
        alerts = json.loads(run_pulse(["alerts", "--format", "json"], env, timeout=60).stdout)
        assert alerts == {"active": [], "transitions": []}
        # Read-only through the service: the run's store refuses a write.
        drop = run_pulse(["query", "--sql", "DROP TABLE pulse.inferences"], env, check=False)
        assert drop.returncode == 2
        assert flow.poll() is None
    finally:
        _, err = _stop(flow)
    assert flow.returncode == 0, err[-3000:]
    assert not (home / "service.json").exists()
    # Stopped: the same command opens the store itself, which the DROP did not touch.
    after = run_pulse(["query", "--sql", "SELECT count() AS n FROM pulse.inferences FINAL",
                       "--format", "json"], env)  # fmt: skip
    assert json.loads(after.stdout) == [{"n": 400}]


def test_a_run_with_the_service_disabled_serves_nothing(home: Path) -> None:
    env = pulse_env(home, PULSE_SERVICE_ENABLED="false", **FAST)
    run_pulse(["generate", "--seed", "5", "--duration", "5", "--rate", "10"], env)
    flow = subprocess.Popen([*PULSE, "run", "--quiet", "--no-recovery"], env=env, cwd=ROOT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:  # the run holds the store once its lock names it
            lock = home / "olap.lock"
            if lock.exists() and lock.read_text().strip() == str(flow.pid):
                break
            assert flow.poll() is None, flow.communicate()
            assert time.monotonic() < deadline, "the run never held the store"
            time.sleep(0.2)
        query = run_pulse(["query", "--sql", "SELECT 1"], env, check=False, timeout=60)
        assert query.returncode == 2
        assert f"held by pid {flow.pid}, which does not serve queries" in query.stderr
        assert "service.enabled is false" in query.stderr
        assert not (home / "service.json").exists()
    finally:
        _stop(flow)


def test_keys_create_prints_the_key_once_and_an_entry_that_authenticates_it(home: Path) -> None:
    env = pulse_env(home)
    created = run_pulse(
        ["keys", "create", "ci", "--tenant", "acme", "--scopes", "ingest,read"], env
    )
    key, _, entry = created.stdout.partition("\n")
    (loaded,) = yaml.safe_load(entry)
    assert key not in entry and loaded["sha256"] == key_hash(key)
    settings = load_settings(
        environ={"PULSE_HOME": str(home), "PULSE_SERVICE_API_KEYS": json.dumps([loaded])}
    )
    principal = KeyRing(settings.service.api_keys).principal(key)
    assert principal == Principal("ci", "acme", frozenset({"ingest", "read"}))
    bad = run_pulse(
        ["keys", "create", "ci", "--tenant", "acme", "--scopes", "reed"], env, check=False
    )
    assert bad.returncode == 2 and "--scopes: Input should be 'ingest'" in bad.stderr
