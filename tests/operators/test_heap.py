"""Freed C heap memory goes back to the system when asked (glibc's malloc_trim)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from operators.heap import give_back_free_pages


def _rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert found
    return int(found[1]) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and glibc")
def test_free_heap_pages_go_back_to_the_system() -> None:
    # 120k blocks of 1 KiB (above pymalloc's small-object limit: glibc's heap), then one
    # more that stays: the heap's top is in use, so free() alone returns nothing.
    blocks = [bytes(1024) + bytes([i % 256]) for i in range(120_000)]
    pin = bytes(1024) + b"pin"
    before = _rss_mib()
    del blocks
    freed = _rss_mib()
    assert give_back_free_pages()
    after = _rss_mib()
    assert pin
    assert before - freed < 40, "free() kept the pages (the case this is for)"
    assert freed - after > 80, f"RSS {freed:.0f} -> {after:.0f} MiB"
