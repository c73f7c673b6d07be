"""One run of the flow, whoever drives Bytewax.

`pulse run` and `pulse up` call Bytewax's `cli_main` themselves; ``python -m bytewax.run
dataflows.feedback:flow`` has Bytewax's runner call it on what `flow()` returns. The rest is
:class:`FlowRun`, for both: the embedded store's lock (before chDB opens it) and its engine,
kept up until the end (:func:`connectors.clickhouse.engine_kept`; both and the migrations
on a thread of their own, :mod:`connectors.store_start`), the recovery store's
lock and check, the HTTP service (``service.enabled``; other processes read the
embedded store through it), the collector's tuning, and at the end the summary and, after
a bounded run that completed, clearing the recovery store.

The one difference is who makes the recovery partitions: `pulse run` creates its store
under ``run.recovery_dir``; Bytewax's runner takes ``-r DIR`` made by
``python -m bytewax.recovery`` (the store keeps its partition count when cleared).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import TracebackType

from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig

from config.settings import Settings, format_duration
from connectors.console import print_summary
from connectors.recovery import RecoveryStore, fingerprint, snapshot_write_failure
from connectors.run_control import STOP, numpy_without_huge_pages, tune_garbage_collection
from connectors.service.hosting import HostedService, host_service
from connectors.store_start import StoreStart
from connectors.telemetry.logs import log_startup
from dataflows.feedback import build, clickhouse_target
from operators.errors import PulseError, pulse_error_in
from operators.snapshots import SNAPSHOT_FAILED
from operators.stats import STATS

log = logging.getLogger("pulse")


def final_delay(settings: Settings) -> str:
    """Why a window turns final only a while after it ends (live runs)."""
    t = settings.time
    return (
        f"time.max_out_of_orderness {format_duration(t.max_out_of_orderness)} + join.wait "
        f"{format_duration(settings.join.wait)} + time.allowed_lateness "
        f"{format_duration(t.allowed_lateness)}"
    )


def first_final_within(settings: Settings) -> str:
    """How long after start a live run's first window is final at the latest: the shortest
    window, then the delay of :func:`final_delay`."""
    t = settings.time
    shortest = min(w.length for w in settings.windows if w.length)
    delay = t.max_out_of_orderness + settings.join.wait + t.allowed_lateness
    return format_duration(shortest + delay)


class FlowRun:
    """Start with :meth:`start`, end with :meth:`finish` (or :meth:`finish_at_exit`)."""

    def __init__(
        self,
        settings: Settings,
        recovery_dir: Path | None,
        create_store: bool,
        shared_store: bool = False,
    ) -> None:
        """`create_store`: `pulse run` makes its recovery store, Bytewax's runner is given
        one. `shared_store`: other processes of a cluster use it too (never cleared here)."""
        self.settings = settings
        self.store = RecoveryStore(recovery_dir) if recovery_dir is not None else None
        self.create_store = create_store
        self.shared_store = shared_store
        self.recovery_config: RecoveryConfig | None = None
        self.service: HostedService | None = None
        self._held = contextlib.ExitStack()
        self._started = time.monotonic()
        self._failed = False

    def start(self, store: StoreStart | None = None) -> Dataflow:
        """Hold the stores, build the flow, check (or create) the recovery store. `store`:
        the ClickHouse store's start, begun earlier (`pulse run` begins it before importing
        this module); otherwise it begins here."""
        try:
            if store is None:
                grouping_sets = self.settings.aggregation.grouping_set_tuples()
                store = StoreStart(clickhouse_target(self.settings), grouping_sets)
            self._held.enter_context(store)
            built = build(self.settings, STATS, recovery=self.store is not None, prepared=True)
            if self.store is not None:
                self._held.enter_context(self.store.exclusive())
                expected = fingerprint(built.flow, built.shape)
                if self.create_store:
                    backup = timedelta(milliseconds=self.settings.run.backup_interval)
                    self.recovery_config = self.store.open(expected, backup)
                else:
                    self.store.guard(expected)
                log.info("recovery store: %s", self.store.directory)
            self._host_service()
            log_startup(self.settings)
            tune_garbage_collection()
            numpy_without_huge_pages()
        except BaseException:
            self._held.close()
            raise
        self._started = time.monotonic()
        return built.flow

    def _host_service(self) -> None:
        """Serve the service from this process, stopped when the run finishes. One process
        of a cluster does not host it (each would claim the home): run `pulse serve`."""
        if not self.settings.service.enabled:
            return
        if self.shared_store:
            log.info("service: not hosted by a clustered run (`pulse serve` runs it alone)")
            return
        self.service = host_service(self.settings, hosted_by_flow=True)
        self._held.callback(self.service.stop)

    def user_error(self, exc: BaseException) -> PulseError | None:
        """What the user can fix behind an error that ended the flow, if anything: a
        PulseError raised inside it, or a snapshot the recovery store refused (logged as
        a `snapshot_failed` record)."""
        error = pulse_error_in(exc)
        if error is None and self.store is not None:
            failure = snapshot_write_failure(exc, self.store.directory)
            if failure is not None:
                log.error(
                    "snapshot failed: %s", failure,
                    extra={"event": SNAPSHOT_FAILED, "recovery_dir": str(self.store.directory),
                           "reason": str(failure)},
                )  # fmt: skip
                error = failure
        return error

    def finish(self, completed: bool) -> None:
        """The summary; a bounded run that `completed` clears its store; release."""
        with self._held:
            print_summary(STATS, time.monotonic() - self._started)
            if STATS.snapshots:
                log.info(
                    "state snapshots: %d, %.1f KiB and %.2f ms each on average",
                    STATS.snapshots, STATS.snapshot_bytes / STATS.snapshots / 1024,
                    STATS.snapshot_us / STATS.snapshots / 1000,
                )  # fmt: skip
            if self.settings.run.bounded and completed and not STOP.is_set():
                if self.store is not None and self.shared_store:
                    log.warning(
                        "bounded run complete; the cluster shares %s: make its partitions "
                        "again (python -m bytewax.recovery) before the next bounded run",
                        self.store.directory,
                    )
                elif self.store is not None:
                    # Every window closed and everything written. Resuming an ended run
                    # would ignore what was appended since: the next run starts over.
                    self.store.reset(keep_partitions=not self.create_store)
                    log.info("bounded run complete; recovery store cleared")
                else:
                    log.info("bounded run complete")

    def finish_at_exit(self) -> None:
        """For Bytewax's runner, which runs the flow after `flow()` returns: finish when
        the process exits, as failed if an exception ended it (exit 2 and one line, not a
        traceback, for an error the user can fix)."""
        previous = sys.excepthook

        def failed(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
            self._failed = True
            error = self.user_error(exc)
            if error is None:
                previous(kind, exc, tb)
                return
            # What the user can fix, as `pulse` prints it, with its exit code.
            print(f"feedback-pulse: error: {error}", file=sys.stderr)
            self.finish(completed=False)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(error.exit_code)

        sys.excepthook = failed
        atexit.register(lambda: self.finish(completed=not self._failed))
