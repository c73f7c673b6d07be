#!/usr/bin/env python3
"""A real Apache Kafka 4 broker on 127.0.0.1 without Docker: KRaft, single node.

    python scripts/local_kafka.py fetch            # jars from Maven Central into .cache/kafka
    python scripts/local_kafka.py start [--port N] # format storage if new, start, wait until ready
    python scripts/local_kafka.py stop  [--port N] # SIGTERM, then SIGKILL after a grace period
    python scripts/local_kafka.py status [--port N]

The broker listens on --port (default 19092; the KRaft controller on port + 1), keeps its
data under .cache/kafka/run-<port>/ (kept across stop/start; `start --fresh` wipes it) and
logs to .cache/kafka/run-<port>/kafka.log. Needs Java 17+ and Maven.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POM = ROOT / "scripts" / "kafka" / "pom.xml"
CACHE = Path(os.environ.get("PULSE_KAFKA_CACHE", ROOT / ".cache" / "kafka"))
DEFAULT_VERSION = "4.1.1"

LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
"""


def libs_dir(version: str) -> Path:
    return CACHE / f"libs-{version}"


def fetch(version: str) -> Path:
    libs = libs_dir(version)
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        sys.exit("local_kafka: Maven (mvn) is needed to fetch the Kafka jars")
    libs.mkdir(parents=True, exist_ok=True)
    print(f"local_kafka: fetching org.apache.kafka:kafka_2.13:{version} with Maven ...", flush=True)
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-Dkafka.version={version}",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ],
        check=True,
    )
    marker.touch()
    return libs


def run_dir(port: int) -> Path:
    return CACHE / f"run-{port}"


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = Path(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java:
        sys.exit("local_kafka: Java 17+ is needed")
    return str(java)


def _pid(port: int) -> int | None:
    pid_file = run_dir(port) / "kafka.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pid_file.unlink()
        return None
    return pid


def _ready(port: int) -> bool:
    """The port accepts connections and (with confluent-kafka) the broker answers metadata."""
    with socket.socket() as s:
        s.settimeout(1)
        if s.connect_ex(("127.0.0.1", port)) != 0:
            return False
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError:
        return True
    try:
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0})
        return bool(admin.list_topics(timeout=2).brokers)
    except Exception:
        return False


def start(port: int, version: str, fresh: bool, timeout: float) -> None:
    if _pid(port) is not None:
        print(f"local_kafka: already running on 127.0.0.1:{port}")
        return
    libs = fetch(version)
    run = run_dir(port)
    if fresh and run.exists():
        shutil.rmtree(run)
    data = run / "data"
    run.mkdir(parents=True, exist_ok=True)
    (run / "log4j2.yaml").write_text(LOG4J2)
    properties = run / "server.properties"
    properties.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{port + 1}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={data}",
                "num.partitions=1",
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "message.max.bytes=16777216",
                "replica.fetch.max.bytes=16777216",
                "",
            ]
        )
    )
    classpath = f"{libs}/*"
    java = _java()
    if not (data / "meta.properties").exists():
        cluster_id = (
            subprocess.run(
                [java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            or uuid.uuid4().hex
        )
        subprocess.run(
            [
                java,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(properties),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    log_file = (run / "kafka.log").open("ab")
    process = subprocess.Popen(
        [
            java,
            "-Xms256m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={run / 'log4j2.yaml'}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(properties),
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    (run / "kafka.pid").write_text(str(process.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(
                f"local_kafka: the broker exited ({process.returncode}); see {run / 'kafka.log'}"
            )
        if _ready(port):
            print(f"local_kafka: ready on 127.0.0.1:{port} (pid {process.pid})", flush=True)
            return
        time.sleep(0.5)
    stop(port, grace=5)
    sys.exit(f"local_kafka: not ready after {timeout:.0f} s; see {run / 'kafka.log'}")


def stop(port: int, grace: float = 30.0) -> None:
    pid = _pid(port)
    if pid is None:
        print(f"local_kafka: not running on port {port}")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(pid, signal.SIGKILL)
    (run_dir(port) / "kafka.pid").unlink(missing_ok=True)
    print(f"local_kafka: stopped (pid {pid})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["fetch", "start", "stop", "status"])
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PULSE_KAFKA_PORT", "19092"))
    )
    parser.add_argument("--version", default=os.environ.get("PULSE_KAFKA_VERSION", DEFAULT_VERSION))
    parser.add_argument("--fresh", action="store_true", help="wipe the broker's data first")
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args()
    if args.command == "fetch":
        print(fetch(args.version))
    elif args.command == "start":
        start(args.port, args.version, args.fresh, args.timeout)
    elif args.command == "stop":
        stop(args.port)
    else:
        pid = _pid(args.port)
        print(f"running (pid {pid})" if pid and _ready(args.port) else "not running")
        sys.exit(0 if pid else 1)


if __name__ == "__main__":
    main()
