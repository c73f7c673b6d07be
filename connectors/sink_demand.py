"""A stage that waits for the ClickHouse sink asks it to write now.

The sink writes each table at most once per `flush_interval` unless a block is full
(:mod:`connectors.clickhouse_sink`): right for a steady stream, where fewer, larger
inserts cost chDB less. But when the merge stage holds final windows back until the sink
has written the previous slice (:class:`operators.merge_stage.MergeStage`, the end of a
bounded run or a burst of windows going final), the sink waiting on its interval and the
stage waiting on the sink leave both idle: on the bench log that was ~5 s of a 45 s run,
the worker in Bytewax's loop and the writer in its wait (docs/performance.md).

:class:`SinkDemand` is the line between them, built with the flow, as
:class:`~connectors.end_gate.EndGate` is: the sink attaches its writer's wake-up when it
opens, the merge stage :meth:`~SinkDemand.ask`\\ s whenever it leaves windows waiting.
"""

from __future__ import annotations

from collections.abc import Callable


class SinkDemand:
    """Relays "write what you hold now" from a waiting stage to the sink's writer (one
    per process: every row goes through the sink's one partition)."""

    def __init__(self) -> None:
        self._hurry: Callable[[], None] | None = None

    def attach(self, hurry: Callable[[], None]) -> None:
        """The sink's writer, once it opens: `hurry` makes it write its rows at once."""
        self._hurry = hurry

    @property
    def in_process(self) -> bool:
        """Whether the sink's writer runs in this process (it attached): only then do this
        process's stats count what it writes, and is waiting on them worth anything."""
        return self._hurry is not None

    def ask(self) -> None:
        """A stage waits on the sink: its writer writes what it holds, and rows handed
        over until it holds none, without waiting for its tables' intervals."""
        if self._hurry is not None:
            self._hurry()
