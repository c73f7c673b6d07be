"""One process at a time: an exclusive, non-blocking lock on a file that names its holder.

`flock` is released by the kernel when the holder exits, however it exits, so a crashed
run never leaves a stale lock behind; the pid written into the file only names the holder
in the message of the process that was refused.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from operators.errors import PulseError


@contextmanager
def held_exclusively(lock_file: Path, busy: Callable[[str], PulseError]) -> Iterator[None]:
    """Hold `lock_file` for the block; if another process holds it, raise `busy(its pid)`."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise busy(lock.read().strip() or "unknown") from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        yield
