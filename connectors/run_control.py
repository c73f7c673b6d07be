"""Graceful stop for this process's sources (first Ctrl-C, or `--duration`).

Sources poll :data:`STOP`; once set, they end their input, the flow drains (partition and
merge stages emit what they hold, the sink flushes) and Bytewax returns normally.
Windows are not closed by a stop: only a bounded run's end of input closes them.
"""

from __future__ import annotations

import threading

STOP = threading.Event()
