"""A bounded run's end of input, held back until the merge stage has emitted every final
window (issue 10: memory at the end of a bounded run).

Bytewax calls a stateful step's ``on_eof`` once its input ends and nothing after it, so
whatever the merge stage still holds then must come out as one list, which lives whole
until the sink has written it (up to ~1.3M rows, +100–200 MiB, on the bench log). The end
of the input is the sources' to give: a bounded source that has delivered everything keeps
its partition open (empty batches, polled every :data:`POLL`) until the merge stage says
it has drained (every partition ended, no final window waiting), so the last windows go
out over `on_notify` calls in bounded slices, each written before the next is built.

One gate per flow, shared by the flow's workers in this process (a source partition and
the merge stage may run on different worker threads). Only a process that holds the merge
stage waits for it: a source in a process without it (one of a cluster's, ``-a``/``-i``)
cannot be told, and ends :data:`GRACE_S` after its own end, as it would without the
gate after that grace. Holding back is only ever about memory: whenever a source ends
early (a stop, the grace), the merge stage's `on_eof` still emits every window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

from connectors.run_control import STOP

POLL = timedelta(milliseconds=20)
# How long an ended source waits for a merge stage to appear in this process (it is built
# on the first partial it gets: within a tick of the partition stages, ~1 s).
GRACE_S = 10.0


class EndGate:
    """Held by the merge stage (:meth:`hold`), released once it has drained
    (:meth:`release`); sources ask :meth:`may_end`."""

    def __init__(
        self, grace_s: float = GRACE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._held = threading.Event()
        self._released = threading.Event()
        self._grace_s = grace_s
        self._clock = clock

    def hold(self) -> None:
        """A merge stage runs in this process: sources wait for its :meth:`release`."""
        self._held.set()

    def release(self) -> None:
        """Every partition ended and every final window emitted: sources may end."""
        self._released.set()

    def may_end(self, ended_at: float) -> bool:
        """Whether a source whose input ended at `ended_at` (:meth:`now`) may end now."""
        if self._released.is_set() or STOP.is_set():
            return True
        return not self._held.is_set() and self._clock() - ended_at >= self._grace_s

    def now(self) -> float:
        return self._clock()


class SourceEnd:
    """One bounded source partition's end: after the batch that ended its input, it stays
    open (nothing to read) until `gate` lets it end; without a gate, at once."""

    def __init__(self, gate: EndGate | None) -> None:
        self.gate = gate
        self._ended_at: float | None = None

    def input_ended(self) -> None:
        if self._ended_at is None:
            self._ended_at = self.gate.now() if self.gate is not None else 0.0

    @property
    def waiting(self) -> bool:
        """Everything delivered, the end held back."""
        return self._ended_at is not None

    def over(self) -> bool:
        """Whether the partition ends now (Bytewax's end of input: StopIteration)."""
        if self._ended_at is None:
            return False
        return self.gate is None or self.gate.may_end(self._ended_at)
