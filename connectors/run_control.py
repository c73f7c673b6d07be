"""Graceful stop for this process's sources (first Ctrl-C, or `--duration`).

Sources poll :data:`STOP`; once set, they end their input, the flow drains (partition and
merge stages emit what they hold, the sink flushes) and Bytewax returns normally.
Windows are not closed by a stop: only a bounded run's end of input closes them.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

STOP = threading.Event()

EXIT_WRITE_FAILED = 3


def exit_write_failed(message: str, *args: object) -> None:
    """End the process at once after an output failed for good (exit code 3).

    Raising inside a Bytewax sink makes Bytewax panic while unwinding, and the abort that
    follows hangs in chDB's fatal-signal handler. Nothing is lost: the snapshot that would
    have covered the failed output is never committed, so a restart rewrites it.
    """
    logging.getLogger("pulse").critical(message + f" (exit {EXIT_WRITE_FAILED})", *args)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_WRITE_FAILED)
