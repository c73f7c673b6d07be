"""State snapshots of the stateful steps: a pickle of named fields, measured.

Bytewax serializes each changed key's whole state at every snapshot, so what a step
snapshots is its cost at every epoch; the counters let the bench report it.

Most of a big state does not change between two snapshots (the cell dictionary once
every cell is known, the older runs of a pane). Such parts keep their pickled bytes until
they change (:class:`PickleCached` for whole objects; :class:`~operators.keyed_sums.KeyedSums`
per sorted run): a snapshot then copies those bytes (~20 GB/s) instead of pickling them
again (~1.5 GB/s for numpy runs, far slower for tuples of strings).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterable
from typing import Any, TypeVar

from operators.stats import FlowStats

# The layout of what the stateful steps pickle. Bump it whenever that changes: the
# recovery guard then refuses a store written by the old layout with a clear message
# instead of failing to unpickle it (or misreading it) on resume.
STATE_FORMAT = 2


def snapshot_fields(owner: Any, names: Iterable[str], stats: FlowStats | None) -> bytes:
    start = time.perf_counter()
    data = pickle.dumps({name: getattr(owner, name) for name in names}, pickle.HIGHEST_PROTOCOL)
    if stats is not None:
        stats.snapshots += 1
        stats.snapshot_bytes += len(data)
        stats.snapshot_us += int((time.perf_counter() - start) * 1e6)
    return data


T = TypeVar("T", bound="PickleCached")


class PickleCached:
    """Mixin: pickles as its cached state bytes. Subclasses give `_state()` and
    `_restore(state)`, set `_pickled = None` in `__init__` and on every mutation (only
    the rare ones: new keys, new rows)."""

    __slots__ = ("_pickled",)
    _pickled: bytes | None

    def _state(self) -> Any:
        raise NotImplementedError

    def _restore(self, state: Any) -> None:
        raise NotImplementedError

    def __reduce__(self) -> tuple[Any, tuple[type, bytes]]:
        data = getattr(self, "_pickled", None)
        if data is None:
            data = self._pickled = pickle.dumps(self._state(), pickle.HIGHEST_PROTOCOL)
        return _from_pickled, (type(self), data)


def _from_pickled(cls: type[T], data: bytes) -> T:
    obj = cls.__new__(cls)
    obj._restore(pickle.loads(data))
    obj._pickled = data  # still what it holds
    return obj
