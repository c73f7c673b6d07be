#!/usr/bin/env python3
"""Pager latency: how long after a regression's feedback is appended its webhook arrives.

    python scripts/bench.py --alerts [--alert-rate 2000] [--alarms 30]

The product's promise is how fast a regression reaches the pager, so this measures the
whole chain of a live run, wall clock to wall clock: the log, the partition stage's tick,
the merge stage's early rows (`time.emit_interval`), the rules stage, grouping, the outbox
and the HTTP delivery to a receiver on 127.0.0.1.

1. `pulse run` (live, recovery on, the default windows and cube) reads a fresh local log
   while a thread appends the bench's synthetic traffic at ``rate`` events/s in event
   time ≈ now (`scripts/bench_freshness.py`'s load; 0 for an idle flow).
2. After a warm-up, in every second an *alarm* is appended with the load, at a random
   moment within the second: one inference and its thumbs-down in a cell of its own
   (model_id ``alarm``, model_version ``a<i>``). One
   rule, ``thumbs_down_rate >= 0.5`` per version with ``min_samples: 1`` and no ``for``,
   fires on each alarm's first early row; its target is the receiver, with
   ``group_wait: 0s`` so that grouping (in event time) adds nothing: with the default 30 s
   a notification also waits for the watermark to pass 30 s more.
3. The receiver verifies each Standard Webhooks signature and notes when each alarm's
   firing transition arrived. Latency = arrival − the wall time just before the append.

Prints p50/p99/max and how many alarms arrived; the figures go into docs/performance.md.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connectors.event_writer import LogWriter, Routed  # noqa: E402
from connectors.local_log import LocalLog  # noqa: E402
from scripts.bench_freshness import BATCH_S, PARTITIONS, _service, _traffic, cell_events  # noqa: E402

SECRET = "whsec_" + "YmVuY2gtYWxlcnRzLXNlY3JldC0xMjM0NTY3OA=="  # base64 of a fixed test key
WARM_UP_S = 8.0
ALARM_EVERY_S = 1.0
TAIL_S = 3.0  # load after the last alarm
WAIT_S = 30.0  # for the last alarms' webhooks after the load


def alarm_events(i: int, now_ms: int) -> list[Routed]:
    """Alarm `i`: an inference and its thumbs-down in a cell no other event touches."""
    return cell_events(i, "alarm", "a", False, now_ms)


def rules_config(url: str) -> dict[str, object]:
    return {
        "notify": {
            "pager": {"url": url, "format": "standard", "secret_env": "BENCH_ALERTS_SECRET",
                      "group_wait": "0s"},
        },
        "rules": [{
            "name": "alarm-thumbs-down", "type": "threshold", "window": "1m",
            "metric": "thumbs_down_rate", "op": ">=", "value": 0.5, "min_samples": 1,
            "where": {"model_id": "alarm", "model_version": "*", "segment": "*",
                      "endpoint": "*"},
            "notify": ["pager"],
        }],
    }  # fmt: skip


@dataclass
class Receiver:
    """Webhook arrivals by alarm version, signatures verified (a bad one is counted)."""

    arrived: dict[str, float] = field(default_factory=dict)
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self) -> ThreadingHTTPServer:
        receiver, webhook = self, Webhook(SECRET)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    payload = webhook.verify(body, dict(self.headers.items()))
                except WebhookVerificationError:
                    with receiver.lock:
                        receiver.bad_signatures += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver.lock:
                    for version in _firing_versions(payload):
                        receiver.arrived.setdefault(version, at)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def _firing_versions(payload: object) -> list[str]:
    """The alarm versions of the firing transitions in one notification."""
    transitions = payload.get("transitions", []) if isinstance(payload, dict) else []
    return [
        str(t.get("dims", {}).get("model_version"))
        for t in transitions
        if isinstance(t, dict) and t.get("state") == "firing"
    ]


@dataclass
class Result:
    rate: float
    latencies: list[float]  # seconds, one per alarm that arrived
    alarms: int
    bad_signatures: int


def run_once(rate: float, alarms: int, seed: int) -> Result:
    """One live run at `rate` events/s of load with `alarms` alarms, on a fresh home."""
    home = Path(tempfile.mkdtemp(prefix="pulse-alerts-"))
    receiver = Receiver()
    server = receiver.serve()
    config = home / "rules.yaml"
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/pulse"
    config.write_text(yaml.safe_dump(rules_config(url), sort_keys=False))
    log = LocalLog(home / "log", PARTITIONS)
    load_s = WARM_UP_S + alarms * ALARM_EVERY_S + TAIL_S
    start_ms = int((time.time() + 20.0 + load_s * rate / 20_000) * 1000)  # + generation
    traffic = _traffic(rate, load_s, start_ms, seed) if rate > 0 else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update({"PULSE_HOME": str(home), "PULSE_LOG_PARTITIONS": str(PARTITIONS),
                "PULSE_CONFIG": str(config), "BENCH_ALERTS_SECRET": SECRET})  # fmt: skip
    flow = subprocess.Popen(
        [sys.executable, "-m", "dataflows.cli", "run", "--quiet"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _service(home)
        placed = _drive(log, traffic, alarms, start_ms / 1000 + WARM_UP_S, seed)
        deadline = time.time() + WAIT_S
        while time.time() < deadline and len(receiver.arrived) < len(placed):
            time.sleep(0.1)
    finally:
        flow.send_signal(signal.SIGINT)
        try:
            _, errors = flow.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            flow.kill()
            _, errors = flow.communicate()
        server.shutdown()
        if flow.returncode not in (0, 130, -signal.SIGINT):
            print(f"  the flow exited {flow.returncode}: {errors.decode()[-2000:]}")
        shutil.rmtree(home, ignore_errors=True)
    with receiver.lock:
        latencies = sorted(
            receiver.arrived[f"a{i}"] - start for i, start in enumerate(placed)
            if f"a{i}" in receiver.arrived
        )  # fmt: skip
        return Result(rate, latencies, len(placed), receiver.bad_signatures)


def _drive(
    log: LocalLog, traffic: list[tuple[int, Routed]], alarms: int, first_alarm: float, seed: int
) -> list[float]:
    """Append the load on schedule and an alarm in each ALARM_EVERY_S from `first_alarm`,
    at a random moment within it (the flow ticks on a fixed grid: alarms at a fixed phase
    would all wait the same); the wall time just before each alarm's append."""
    rng = random.Random(seed)
    due_at = [first_alarm + (i + rng.random()) * ALARM_EVERY_S for i in range(alarms)]
    writer = LogWriter(log)
    placed: list[float] = []
    i = 0
    while i < len(traffic) or len(placed) < alarms:
        now = time.time()
        batch: list[Routed] = []
        while i < len(traffic) and traffic[i][0] <= now * 1000:
            batch.append(traffic[i][1])
            i += 1
        due = len(placed) < alarms and now >= due_at[len(placed)]
        if due:
            batch.extend(alarm_events(len(placed), int(now * 1000)))
        started = time.time()
        if batch:
            writer.write(batch)
        if due:
            placed.append(started)
        time.sleep(max(0.0, BATCH_S - (time.time() - now)))
    writer.close()
    return placed


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "—"
    return f"{values[min(len(values) - 1, int(q * len(values)))] * 1000:,.0f} ms"


def report(result: Result) -> None:
    lat = result.latencies
    print(
        f"load {result.rate:,.0f} events/s: {len(lat)} of {result.alarms} alarms paged; "
        f"p50 {_ms(lat, 0.5)}, p99 {_ms(lat, 0.99)}, max {_ms(lat, 1.0)}"
        + (f"; {result.bad_signatures} bad signatures" if result.bad_signatures else "")
    )


def main(rates: list[float], alarms: int, seed: int) -> None:
    print(f"pager latency (alarm appended -> its signed webhook received), {alarms} alarms "
          "per run, group_wait 0s:")  # fmt: skip
    for rate in rates:
        report(run_once(rate, alarms, seed))


if __name__ == "__main__":
    main([0.0, 2000.0], 30, 1)
