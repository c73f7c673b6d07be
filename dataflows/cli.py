"""`pulse`: the command line of Feedback Pulse (argparse; one subcommand per job).

pulse up        the embedded demo: synthetic traffic + the flow + live status
pulse run       the flow on the configured log (--bounded: process what is there, exit)
pulse generate  synthetic traffic to the log, Kafka or a JSONL file
pulse load      append a JSONL file of events to the log or Kafka
pulse query     drill down into metrics (or --sql)
pulse alerts    active alerts and recent transitions
pulse migrate   create / upgrade the ClickHouse tables
pulse schema    print or write the event JSON Schema
pulse silence   mute alerts until an expiry (add, list, expire)
pulse serve     the HTTP service alone (ingestion, reads, SQL, health, /metrics)
pulse keys      make an API key for service.api_keys
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from config.settings import ApiKeySettings, Settings, load_settings, parse_duration_ms
from connectors.clickhouse import ClickHouseError, Target
from connectors.console import StatusPrinter, configure_logging
from connectors.drilldown import (
    QUERYABLE,
    Drilldown,
    DrilldownError,
    from_options,
    parse_time,
    since_seconds,
)
from connectors.query_server import API_KEY_ENV, QueryError, QueryResult, owned, run_query
from connectors.redact import mask_dsn
from connectors.run_control import STOP, tune_garbage_collection
from connectors.service import discovery
from connectors.service.keys import LOCAL_SCOPES, LOCAL_TENANT, key_hash, new_key
from connectors.store_start import StoreStart
from operators.errors import PulseError
from operators.stats import STATS

if TYPE_CHECKING:  # the commands import what only they use: a run's start imports less
    from connectors.event_writer import EventWriter
    from connectors.service.hosting import HostedService
    from operators.synthetic import TrafficProfile

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "config" / "event-schema.json"
log = logging.getLogger("pulse")


class CliError(PulseError):
    """A command-line option is wrong; the message names it."""


# ---- helpers ---------------------------------------------------------------------------


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    """The settings, and the log format they ask for (telemetry.log_format)."""
    settings = load_settings(args.config)
    configure_logging(args.verbose, settings.telemetry.log_format)
    return settings.with_overrides(**overrides) if overrides else settings


def _writer(settings: Settings, to: str, out: Path | None = None) -> EventWriter:
    from connectors.event_writer import FileWriter, KafkaWriter, LogWriter
    from connectors.kafka import ensure_topics
    from connectors.local_log import LocalLog
    from dataflows.feedback import kafka_target

    if to == "file":
        if out is None:
            raise CliError("--to file needs --out FILE")
        return FileWriter(out)
    if to == "kafka":
        target = kafka_target(settings)
        ensure_topics(target, settings.log.partitions, settings.kafka.replication_factor)
        return KafkaWriter(target)
    log_root = settings.home_dir / "log"
    return LogWriter(LocalLog(log_root, settings.log.partitions, settings.log.segment_bytes))


def _parse_start(value: str | None, seed: int | None) -> int:
    if value is None:
        # Deterministic with a seed; live-looking without one.
        from operators.synthetic import DEFAULT_START_MS

        return DEFAULT_START_MS if seed is not None else int(time.time() * 1000)
    return _parse_time(value, "--start")


def _parse_time(value: str, option: str) -> int:
    """RFC 3339 (UTC when no zone is given), epoch milliseconds or 'now' (the drill-down's
    rule, so `pulse generate --start` reads times as `pulse query --start` does)."""
    try:
        return parse_time(value, option)
    except DrilldownError as exc:
        raise CliError(str(exc)) from None


def _profile(args: argparse.Namespace, start_ms: int) -> TrafficProfile:
    try:
        return _traffic_profile(args, start_ms)
    except ValueError as exc:  # the canary options' checks, naming the field
        raise CliError(f"--canary-* options: {exc}") from None


def _traffic_profile(args: argparse.Namespace, start_ms: int) -> TrafficProfile:
    from operators.synthetic import TrafficProfile

    return TrafficProfile(
        seed=args.seed if args.seed is not None else 0,
        start_ms=start_ms,
        duration_s=args.duration,
        rate=args.rate,
        invalid_rate=args.invalid_rate,
        duplicate_rate=args.duplicate_rate,
        orphan_rate=args.orphan_rate,
        late_rate=args.late_rate,
        jitter_ms=args.jitter_ms,
        dims=args.dims,
        canary_share=args.canary_share,
        canary_degrade_at_ms=(
            _parse_time(args.canary_degrade_at, "--canary-degrade-at")
            if args.canary_degrade_at
            else None
        ),
        canary_thumbs_down=args.canary_thumbs_down,
    )


def _pulse_command() -> str:
    """How to call this command from the user's shell: `pulse` if that is on PATH and is
    this one, else the path it was started by (e.g. `.venv/bin/pulse` after `make run`)."""
    started = Path(sys.argv[0])
    if started.name != "pulse":  # python -m dataflows.cli
        return f"{_shell_path(Path(sys.executable))} -m dataflows.cli"
    on_path = shutil.which("pulse")
    if on_path is not None and Path(on_path).resolve() == started.resolve():
        return "pulse"
    return _shell_path(started)


def _shell_path(path: Path) -> str:
    absolute, here = path.absolute(), Path.cwd()
    if not absolute.is_relative_to(here):
        return str(absolute)
    relative = str(absolute.relative_to(here))
    return relative if "/" in relative else f"./{relative}"


def _install_stop_handlers(duration: float | None) -> None:
    """First Ctrl-C (or the end of --duration) stops the sources; a second one aborts."""

    def handler(signum: int, _frame: Any) -> None:
        if STOP.is_set():
            raise KeyboardInterrupt
        log.warning("stopping: finishing in-flight work (Ctrl-C again to abort)")
        STOP.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if duration is not None:
        timer = threading.Timer(duration, STOP.set)
        timer.daemon = True
        timer.start()


def _run_flow(
    settings: Settings,
    duration: float | None,
    status: bool,
    started: Callable[[HostedService | None], None] | None = None,
) -> None:
    """Run the flow; `started` is told the service it hosts, once it serves."""
    # The store opens and migrates while the flow's modules import (connectors/store_start.py).
    store = StoreStart(Target.of(settings), settings.aggregation.grouping_set_tuples())
    try:
        from bytewax.run import cli_main

        from dataflows.running import FlowRun, first_final_within

        recovery_dir = settings.recovery_dir if settings.run.recovery else None
        run = FlowRun(settings, recovery_dir, create_store=True)
        flow = run.start(store)
    except BaseException:
        store.close()
        raise
    completed = False
    try:
        if started is not None:
            started(run.service)
        _install_stop_handlers(duration)
        printer = None
        if status:
            hint = "" if settings.run.bounded else f"first within {first_final_within(settings)}"
            interval = settings.run.status_interval / 1000.0
            printer = StatusPrinter(STATS, interval, pending_final=hint).start()
        try:
            cli_main(
                flow,
                epoch_interval=timedelta(milliseconds=settings.run.snapshot_interval),
                recovery_config=run.recovery_config,
            )
            completed = True
        except Exception as exc:
            error = run.user_error(exc)
            if error is None or error is exc:
                raise
            raise error from None  # what the user can fix, not Bytewax's wrapping
        finally:
            if printer is not None:
                printer.stop()
    finally:
        run.finish(completed)


# ---- commands --------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from connectors.live_traffic import TrafficThread
    from operators.synthetic import TrafficGenerator, TrafficProfile

    settings = _settings(args, run={"recovery": False}) if args.no_recovery else _settings(args)
    profile = TrafficProfile(
        seed=args.seed if args.seed is not None else int(time.time()),
        start_ms=int(time.time() * 1000),
        duration_s=10 * 365 * 86400.0,
        rate=args.rate,
        tenants=(LOCAL_TENANT,),  # what the local key it prints reads
    )
    traffic = TrafficThread(
        TrafficGenerator(profile).events(),
        _writer(settings, "log" if settings.log.backend == "local" else "kafka"),
    )
    from dataflows.running import final_delay, first_final_within

    # What runs, before anything connects (so a failing store is named as configured) ...
    print(
        f"Feedback Pulse: embedded demo, {args.rate:g} inferences/s of synthetic traffic "
        f"into {settings.log.backend} log, ClickHouse at {mask_dsn(settings.clickhouse_dsn)}.\n"
        f"Windows turn final after they end + {final_delay(settings)}: the first within "
        f"{first_final_within(settings)}; early rows (final = 0) show meanwhile.",
        flush=True,
    )

    def banner(service: HostedService | None) -> None:
        """... and, once the flow serves, where to look."""
        print(
            f"{_service_line(settings, service)}"
            f"Try `{_pulse_command()} query --metric accuracy,feedback_count --by model_version "
            "--since 10m` in another terminal. Ctrl-C stops.",
            flush=True,
        )
        traffic.start()

    try:
        _run_flow(settings, args.duration, status=True, started=banner)
    finally:
        if traffic.ident is not None:  # started once the flow serves
            traffic.stop()
    return 0


def _service_line(settings: Settings, service: HostedService | None) -> str:
    """Where the service listens and with which key, for a banner."""
    if service is None:
        return ""
    where = discovery.service_file(settings.home_dir)
    if service.local_key is None:
        return f"Service: {service.url} (keys: service.api_keys; {where}).\n"
    return (
        f"Service: {service.url}, local key {service.local_key} (tenant {LOCAL_TENANT}: "
        f"{', '.join(LOCAL_SCOPES)}; in {where}, mode 0600, next to an operator key for "
        "silences and other tenants).\n"
    )


def cmd_run(args: argparse.Namespace) -> int:
    run: dict[str, Any] = {}
    if args.bounded:
        run["bounded"] = True
    if args.no_recovery:
        run["recovery"] = False
    overrides: dict[str, Any] = {"run": run} if run else {}
    settings = _settings(args, **overrides)
    _run_flow(settings, args.duration, status=not args.quiet)  # its URL: service.json
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The service alone: it holds an embedded store (as a run does) until Ctrl-C."""
    from connectors.service.hosting import host_service
    from dataflows.feedback import clickhouse_target, prepare_store

    settings = _settings(args)
    target = clickhouse_target(settings)
    _refuse_a_served_home(settings)
    try:
        with owned(target):
            prepare_store(settings)
            service = host_service(settings, hosted_by_flow=False)
            tune_garbage_collection()  # as a flow run does: fewer, shorter pauses
            try:
                print(_service_line(settings, service) + "Ctrl-C stops.", flush=True)
                _install_stop_handlers(args.duration)
                while not STOP.wait(0.5):
                    pass
            finally:
                service.stop()
    except ClickHouseError:
        _refuse_a_served_home(settings)  # the holder started serving meanwhile
        raise
    return 0


def _refuse_a_served_home(settings: Settings) -> None:
    running = discovery.read(settings.home_dir)
    if running is not None and running.pid != os.getpid():
        raise CliError(
            f"pid {running.pid} (a run or `pulse serve`) already serves {settings.home_dir} at "
            f"{running.url}; use that service (`{_pulse_command()} query` does), or stop it first"
        )


def cmd_keys(args: argparse.Namespace) -> int:
    """A new API key: printed once; only its SHA-256 goes into the settings."""
    key = new_key()
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    try:
        entry = ApiKeySettings.model_validate(
            {"name": args.name, "sha256": key_hash(key), "tenant": args.tenant, "scopes": scopes}
        )
    except ValidationError as exc:
        option = {"name": "NAME", "tenant": "--tenant", "scopes": "--scopes"}
        raise CliError(
            "; ".join(
                f"{option.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()
            )
        ) from None
    print(key)
    print(
        "# The key above is shown once: keep it as a secret (clients send "
        "`Authorization: Bearer <key>`).\n# Paste this entry under service.api_keys:"
    )
    print(yaml.safe_dump([entry.model_dump(mode="json")], sort_keys=False), end="")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from connectors.live_traffic import TrafficThread
    from operators.synthetic import TrafficGenerator

    settings = _settings(args)
    start_ms = int(time.time() * 1000) if args.live else _parse_start(args.start, args.seed)
    generator = TrafficGenerator(_profile(args, start_ms))
    writer = _writer(settings, args.to, Path(args.out) if args.out else None)
    if args.live:
        traffic = TrafficThread(generator.events(), writer)
        _install_stop_handlers(None)
        traffic.start()
        while traffic.is_alive() and not STOP.is_set():
            traffic.join(0.2)
        traffic.stop()
        written = traffic.written
    else:
        written = 0
        batch: list[tuple[str, str | bytes, bytes]] = []
        for event in generator.events():
            batch.append((event.stream, event.key, event.line))
            if len(batch) >= 10_000:
                written += writer.write(batch)
                batch = []
        written += writer.write(batch)
        writer.close()
    print(f"generated {written:,} events to {args.to}", file=sys.stderr)
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from connectors.event_writer import read_lines, route

    settings = _settings(args)
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path} is not a file")
    writer = _writer(settings, args.to)
    written = 0
    for lines in read_lines(path):
        written += writer.write(route(line) for line in lines)
    writer.close()
    print(f"loaded {written:,} events from {path} to {args.to}", file=sys.stderr)
    return 0


def _print_result(result: QueryResult, fmt: str) -> None:
    def cell(value: Any) -> Any:
        if isinstance(value, float):
            return round(value, 6)
        return value

    if fmt == "json":
        rows = [dict(zip(result.columns, map(cell, row), strict=True)) for row in result.rows]
        print(json.dumps(rows, default=str, indent=1))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(result.columns)
        writer.writerows([[cell(v) for v in row] for row in result.rows])
    else:
        text = [[("" if v is None else str(cell(v))) for v in row] for row in result.rows]
        widths = [max([len(c), *(len(r[i]) for r in text)]) for i, c in enumerate(result.columns)]
        print("  ".join(c.ljust(w) for c, w in zip(result.columns, widths, strict=True)))
        for row in text:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
        print(f"({len(text)} rows)", file=sys.stderr)


def _no_data(settings: Settings, target: Target) -> CliError:
    where = settings.home_dir if target.embedded else f"database {target.database}"
    pulse = _pulse_command()
    return CliError(
        f"no data yet: {where} holds no Feedback Pulse tables. Run `{pulse} up` (the demo), "
        f"or put events in the log (`{pulse} generate` or `{pulse} load FILE`) and run "
        f"`{pulse} run --bounded`"
    )


def _query(
    settings: Settings,
    target: Target,
    sql: str,
    params: dict[str, Any],
    operator: bool = False,
) -> QueryResult:
    """`sql` through the home's service (its operator key if `operator`), else directly."""
    path = target.chdb_path
    if path is not None and not path.exists():
        raise _no_data(settings, target)  # and opening it would create it
    try:
        return run_query(target, sql, params, home=settings.home_dir, operator=operator)
    except QueryError as exc:
        if f"Database {target.database} does not exist" in str(exc):
            raise _no_data(settings, target) from None
        if "has no tenant column" in str(exc) and _local_key_reads(settings, target, operator):
            raise QueryError(f"{exc}; {_ALL_TENANTS_HINT}") from None
        raise


_ALL_TENANTS_HINT = "--all-tenants reads with the running service's operator key"


def _local_key_reads(settings: Settings, target: Target, operator: bool) -> bool:
    """Whether a read goes through this home's service with its local key, which reads
    tenant `default` only (a hint is due when that hides rows)."""
    if operator or os.environ.get(API_KEY_ENV) or target.chdb_path is None:
        return False
    found = discovery.read(settings.home_dir)
    return found is not None and found.key is not None


def _say_what_the_data_covers(
    settings: Settings,
    target: Target,
    drill: Drilldown,
    args: argparse.Namespace,
    operator: bool,
) -> None:
    """After a drill-down found nothing: which window starts the store does hold."""
    sql, params = drill.coverage_sql(target.database)
    count, first, last = _query(settings, target, sql, params, operator).rows[0]
    asked = "--start/--end" if args.start or args.end else f"--since {args.since}"
    print(f"nothing found: {drill.coverage_note(count, first, last, asked)}", file=sys.stderr)
    if _local_key_reads(settings, target, operator):
        print(
            f"(the local key reads tenant {LOCAL_TENANT!r} only; {_ALL_TENANTS_HINT})",
            file=sys.stderr,
        )


def cmd_query(args: argparse.Namespace) -> int:
    from dataflows.feedback import clickhouse_target

    settings = _settings(args)
    target = clickhouse_target(settings)
    if args.sql:
        _print_result(_query(settings, target, args.sql, {}, args.all_tenants), args.format)
        return 0
    drill = from_options(
        metric=args.metric,
        by=args.by,
        window=args.window,
        since=args.since,
        start=args.start,
        end=args.end,
        where=args.where,
        final_only=args.final_only,
        limit=args.limit,
        windows=tuple(w.name for w in settings.windows if w.kind != "session"),
    )
    # The local key reads tenant `default`: another tenant asked for needs the operator key.
    operator = args.all_tenants or drill.where.get("tenant", LOCAL_TENANT) != LOCAL_TENANT
    sql, params = drill.sql(target.database)
    result = _query(settings, target, sql, params, operator)
    _print_result(result, args.format)
    if not result.rows:
        _say_what_the_data_covers(settings, target, drill, args, operator)
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from connectors.alert_report import no_alerts_table, report
    from dataflows.feedback import clickhouse_target

    settings = _settings(args)
    target = clickhouse_target(settings)
    if args.limit < 1:
        raise CliError(f"--limit must be at least 1, got {args.limit}")
    since = since_seconds(args.since)

    def run(sql: str, params: dict[str, Any]) -> QueryResult:
        return _query(settings, target, sql, params, args.all_tenants)

    try:
        found = report(run, target.database, None if since is None else since * 1000, args.limit)
    except QueryError as exc:
        if no_alerts_table(exc):
            raise CliError(
                f"no alerts table yet: run `{_pulse_command()} migrate`, or a flow with rules"
            ) from None
        raise
    if args.format == "json":
        print(json.dumps(found, default=str, indent=1))
        return 0
    print(f"active alerts ({len(found['active'])})")
    _print_records(found["active"])
    print(f"\nrecent transitions ({len(found['transitions'])}, latest first)")
    _print_records(found["transitions"])
    return 0


def _print_records(records: list[dict[str, Any]]) -> None:
    columns = list(records[0]) if records else []
    _print_result(QueryResult(columns, [list(r.values()) for r in records]), "table")


def cmd_migrate(args: argparse.Namespace) -> int:
    from connectors.clickhouse import connect, migrate
    from dataflows.feedback import clickhouse_target

    target = clickhouse_target(_settings(args))
    with owned(target):
        client = connect(target)
        try:
            applied = migrate(client, target.database)
        finally:
            client.close()
    print(f"applied: {', '.join(applied) or 'nothing (up to date)'}", file=sys.stderr)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from operators.contract import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.write:
        SCHEMA_FILE.write_text(text)
        print(f"wrote {SCHEMA_FILE}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _matchers(given: list[str]) -> dict[str, str | list[str]]:
    """`--match dim=value` options; a dim given twice matches either value."""
    matchers: dict[str, list[str]] = {}
    for item in given:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise CliError(f"--match takes dim=value (or rule=NAME), got {item!r}")
        matchers.setdefault(name.strip(), []).append(value.strip())
    return {k: v[0] if len(v) == 1 else v for k, v in matchers.items()}


def cmd_silence(args: argparse.Namespace) -> int:
    from config.rules import SilenceSettings
    from connectors.silence_store import rfc3339, silences_for
    from dataflows.feedback import clickhouse_target

    settings = _settings(args)
    store = silences_for(clickhouse_target(settings), settings.home_dir)
    now_ms = int(time.time() * 1000)
    if args.silence_command == "add":
        if not args.match:
            raise CliError("give at least one --match dim=value (or rule=NAME)")
        try:
            length = parse_duration_ms(args.duration)
        except ValueError:
            length = 0
        if length <= 0:
            raise CliError(f"--for takes a positive duration (e.g. 30m, 2h), got {args.duration!r}")
        try:
            valid = SilenceSettings(
                matchers=_matchers(args.match), until=now_ms + length, comment=args.comment
            )
        except ValueError as exc:
            raise CliError(f"--match: {exc}") from None
        added = store.add(valid.matchers, valid.until, valid.comment, now_ms=now_ms)
        print(added.id)
        print(f"silence {added.id} active until {rfc3339(added.until)}", file=sys.stderr)
    elif args.silence_command == "expire":
        ended = store.expire(args.id, now_ms=now_ms)
        print(f"silence {ended.id} expired at {rfc3339(ended.until)}", file=sys.stderr)
    else:
        listed = store.listed(now_ms, include_expired=args.all)
        records = [s.record(now_ms) for s in listed]
        if args.format == "json":
            print(json.dumps(records, indent=1))
        else:
            columns = ["id", "until", "active", "matchers", "comment"]
            rows = [[r[c] if c != "matchers" else json.dumps(r[c]) for c in columns]
                    for r in records]  # fmt: skip
            _print_result(QueryResult(columns, rows), "table")
    return 0


# ---- parser ----------------------------------------------------------------------------


def _add_traffic_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, help="random seed (output is deterministic for a seed)")
    p.add_argument("--rate", type=float, default=50.0, help="inferences per second of event time")
    p.add_argument("--duration", type=float, default=300.0, help="seconds of event time")
    p.add_argument(
        "--start",
        help="event time of the first inference (RFC 3339 or 'now'; "
        "default 2026-01-01T00:00:00Z with --seed, else now)",
    )
    p.add_argument("--dims", type=int, help="a synthetic cube of about N dims combinations")
    p.add_argument("--invalid-rate", type=float, default=0.01)
    p.add_argument("--duplicate-rate", type=float, default=0.02)
    p.add_argument("--orphan-rate", type=float, default=0.01, help="feedback with no inference")
    p.add_argument("--late-rate", type=float, default=0.003, help="feedback emitted 3 min late")
    p.add_argument(
        "--jitter-ms", type=int, default=3000, help="out-of-order jitter (< max_out_of_orderness)"
    )
    p.add_argument(
        "--canary-share",
        type=float,
        default=0.0,
        help="one model, `assistant`, whose canary gets this share of traffic, alike its "
        "primary (10%% thumbs-down) until --canary-degrade-at",
    )
    p.add_argument("--canary-degrade-at", help="event time the canary degrades (RFC 3339)")
    p.add_argument(
        "--canary-thumbs-down", type=float, help="the canary's thumbs-down rate once degraded"
    )


def _add_all_tenants(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--all-tenants",
        action="store_true",
        help=f"every tenant's rows: a running service is asked with its operator key (its "
        f"local key reads tenant {LOCAL_TENANT!r} only; --where tenant=T does this too)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pulse", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", help="YAML file merged over config/pulse.yaml (or $PULSE_CONFIG)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="embedded demo: synthetic traffic, the flow, live status")
    p.add_argument("--rate", type=float, default=50.0, help="inferences per second")
    p.add_argument("--seed", type=int)
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--no-recovery", action="store_true", help="no snapshots (start over each time)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("run", help="run the flow on the configured event log")
    p.add_argument(
        "--bounded",
        action="store_true",
        help="process what is in the log now, close every window, write, exit 0",
    )
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--quiet", action="store_true", help="no status line")
    p.add_argument(
        "--no-recovery", action="store_true",
        help="no snapshots: a restart replays the log from the beginning",
    )  # fmt: skip
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("generate", help="synthetic traffic to the log, Kafka or a file")
    p.add_argument("--to", choices=["log", "kafka", "file"], default="log")
    p.add_argument("--out", help="the file, with --to file")
    p.add_argument(
        "--live", action="store_true", help="emit at wall-clock pace from now until Ctrl-C"
    )
    _add_traffic_options(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("load", help="append a JSONL file of events to the log or Kafka")
    p.add_argument("file")
    p.add_argument("--to", choices=["log", "kafka"], default="log")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("query", help="drill down into metrics (or run --sql)")
    p.add_argument("--metric", help=f"comma-separated; one of: {', '.join(QUERYABLE)}")
    p.add_argument(
        "--by",
        help="comma-separated dims: model_version, segment, endpoint "
        "(tenant, model_id, deployment are always shown)",
    )
    p.add_argument("--window", default="1m", help="window name (config `windows`)")
    p.add_argument(
        "--since", default="1h", help="window starts within this long before now ('all': no limit)"
    )
    p.add_argument("--start", help="window starts from this time (RFC 3339)")
    p.add_argument("--end", help="window starts before this time (RFC 3339)")
    p.add_argument("--where", action="append", help="dim=value filter (repeatable)")
    p.add_argument("--final-only", action="store_true", help="only windows that are final")
    p.add_argument("--limit", type=int, default=10_000)
    p.add_argument("--sql", help="run this SQL instead")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    _add_all_tenants(p)
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("alerts", help="active alerts and recent transitions (the alerts table)")
    p.add_argument(
        "--since", default="all",
        help="transitions within this long before the latest one, in event time ('all')",
    )  # fmt: skip
    p.add_argument("--limit", type=int, default=100, help="at most this many transitions")
    p.add_argument("--format", choices=["table", "json"], default="table")
    _add_all_tenants(p)
    p.set_defaults(func=cmd_alerts)

    p = sub.add_parser("migrate", help="create or upgrade the ClickHouse database and tables")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("schema", help="print the event JSON Schema (or --write it to config/)")
    p.add_argument("--write", action="store_true")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("silence", help="mute alerts until an expiry: add, list, expire")
    silence = p.add_subparsers(dest="silence_command", required=True)
    s = silence.add_parser("add", help="mute alerts matching every --match for a while")
    s.add_argument(
        "--match", action="append", default=[], metavar="DIM=VALUE",
        help="a dim (or rule=NAME) the alert must have; repeatable, a dim twice matches either",
    )  # fmt: skip
    s.add_argument("--for", dest="duration", required=True, help="how long, e.g. 30m, 2h")
    s.add_argument("--comment", default="", help="why (shown by list)")
    s = silence.add_parser("list", help="the active silences (--all: expired ones too)")
    s.add_argument("--all", action="store_true")
    s.add_argument("--format", choices=["table", "json"], default="table")
    s = silence.add_parser("expire", help="end a silence now")
    s.add_argument("id")
    p.set_defaults(func=cmd_silence)

    p = sub.add_parser("serve", help="the HTTP service alone, holding the store until Ctrl-C")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("keys", help="API keys for the service")
    keys = p.add_subparsers(dest="keys_command", required=True)
    k = keys.add_parser("create", help="a new key, printed once, and its service.api_keys entry")
    k.add_argument("name", help="the key's name (letters, digits, _ . -)")
    k.add_argument("--tenant", required=True, help='the tenant it acts for ("*": any tenant)')
    k.add_argument(
        "--scopes", default="ingest,read", help="comma-separated: ingest, read, query, admin"
    )
    p.set_defaults(func=cmd_keys)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return int(args.func(args))
    except PulseError as exc:
        print(f"pulse: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pulse: aborted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
