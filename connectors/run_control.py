"""Process-wide controls of a flow process: graceful stop, exit on a failed output, how
often Python collects garbage, and numpy's arrays kept off transparent huge pages.

Sources poll :data:`STOP` (first Ctrl-C, or `--duration`); once set, they end their input,
the flow drains (partition and merge stages emit what they hold, the sink flushes) and
Bytewax returns normally. Windows are not closed by a stop: only a bounded run's end of
input closes them.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading

from operators.errors import WriteFailedError

STOP = threading.Event()


def exit_write_failed(message: str, *args: object) -> None:
    """End the process at once after an output failed for good (exit code 3, the
    :class:`WriteFailedError` code).

    Raising inside a Bytewax sink makes Bytewax panic while unwinding, and the abort that
    follows hangs in chDB's fatal-signal handler. Nothing is lost: the snapshot that would
    have covered the failed output is never committed, so a restart rewrites it.
    """
    code = WriteFailedError.exit_code
    logging.getLogger("pulse").critical(message + f" (exit {code})", *args)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(code)


# Python's defaults (700, 10, 10) suit small heaps; a flow's heap holds millions of
# objects (cell dictionaries, the recent-inference cache, the dedup ids), and its older
# generations were traversed again and again.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_garbage_collection() -> None:
    """Collect young objects less often, and never walk what start-up built.

    Call once the flow is built. `gc.freeze()` moves everything alive then (modules,
    pyarrow, chDB, the flow) to the permanent generation: it lives as long as the process
    anyway. Cycles are still collected, only in larger steps. On the bench log (1M events,
    10k dims) the collector's own time fell from 2.6-2.7 s to 1.5 s a run (gen0 ~1.3 s
    either way: every long-lived object is walked once while young; the older
    generations' 1.3-1.5 s fell to 0.25 s). Best of 4 alternating bounded runs with
    recovery: 34.3 s against 36.7 s (each pair was faster).
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def numpy_without_huge_pages() -> None:
    """Stop numpy from asking the kernel for transparent huge pages for its large arrays.

    numpy `madvise`s every allocation of 4 MiB or more for huge pages. Here that made
    the merge stage's large one-off arrays slow at random: a rollup cache's main run
    merged with its side run (~1M rows) took 40-228 ms in the flow's heap against
    13 ms alone, and in the early-row replay at 24,000 events/s the slowest ticks' p99
    was 219-246 ms with huge pages and 97-118 ms without (three runs each); the bounded
    bench's rates did not move (docs/performance.md). The same switch as the
    `NUMPY_MADVISE_HUGEPAGE=0` environment variable, which numpy reads only at import
    (before any flow code runs); numpy keeps it in a private function, so a numpy
    without it leaves the default. A process started with that variable set keeps what
    it says (`NUMPY_MADVISE_HUGEPAGE=1` measures with huge pages).
    """
    if os.environ.get("NUMPY_MADVISE_HUGEPAGE"):
        return
    from numpy._core import multiarray

    switch = getattr(multiarray, "_set_madvise_hugepage", None)
    if switch is None:
        logging.getLogger("pulse").debug("numpy has no huge-page switch; left as it is")
        return
    switch(False)
