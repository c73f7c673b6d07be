"""Give the C heap's free pages back to the system once a large state was let go.

glibc keeps memory that Python and numpy free in its heap (only the top of the heap is
returned, and arrays of a few MB come from the heap once the allocator has raised its
mmap threshold), ready for the next malloc. chDB allocates with its own allocator, so
those pages are not reused by its inserts: at the end of a bounded run the partitions
let go of their join and dedup state (~180 MiB at the bench's 1M events) and the merge
stage's last windows go to chDB in a process whose RSS still counts them.
``malloc_trim(0)`` returns every whole free page of the heap (madvise), the pages stay
mapped and are faulted back in on reuse. Elsewhere than glibc it is a no-op.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # not glibc
        return None


_TRIM = _malloc_trim()


def give_back_free_pages() -> bool:
    """Return the heap's free pages to the system; whether this libc can."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
