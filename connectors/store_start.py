"""A run's store opened and migrated on a thread of its own, while the run imports its modules.

A run's start holds the store (:func:`connectors.query_server.owned`), starts the embedded
engine and keeps it up (:func:`connectors.clickhouse.engine_kept`), applies the
migrations and the views (:func:`connectors.clickhouse.prepare`), and builds the flow.
chDB starts its engine and runs the DDL mostly without the GIL, so `pulse run` begins a
:class:`StoreStart` as soon as it has its settings and imports the flow's modules
(Bytewax, the stages, the service) meanwhile; the run waits for it only when it builds
the flow, which then leaves the store as it is. From the process's start to the flow's:
1.15 → 1.04 s (docs/performance.md). The two sides now take about as long, ~0.5 s each
(the thread slowed by the imports' hold on the GIL). The lock is taken on the caller's
thread, before chDB opens the directory, so a store another process holds is refused at
once, as before; an error of the thread (a bad DSN, a refused migration) is raised where
the run waits for it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import ExitStack
from types import TracebackType

from connectors.clickhouse import Target, engine_kept, prepare
from connectors.query_server import owned


class StoreStart:
    """Enter to wait for the store (the thread's error, if any, is raised there); exit, or
    :meth:`close`, to close the engine and then release the store."""

    def __init__(self, target: Target, grouping_sets: Sequence[tuple[str, ...]]) -> None:
        self.target = target
        self.grouping_sets = grouping_sets
        self._held = ExitStack()
        self._held.enter_context(owned(target))  # before chDB opens the directory
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, name="pulse-store-start", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            self._held.enter_context(engine_kept(self.target))
            prepare(self.target, self.grouping_sets)
        except BaseException as exc:  # raised again where the run waits (__enter__)
            self._error = exc

    def __enter__(self) -> StoreStart:
        self._thread.join()
        if self._error is not None:
            self.close()
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the engine, then release the store (once; later calls do nothing)."""
        self._thread.join()
        self._held.close()
