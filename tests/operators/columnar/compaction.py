"""A fixture for the parity suites of the structures over `HashFifo`: each suite also runs
with the log and index compacted at every add, so its small inputs reach that path."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from operators.columnar.hash_fifo import HashFifo


@pytest.fixture(scope="module", autouse=True, params=["as shipped", "compacted at once"])
def compaction_levels(request: pytest.FixtureRequest) -> Iterator[None]:
    saved = HashFifo.MIN_GONE
    if request.param == "compacted at once":
        HashFifo.MIN_GONE = 1
    yield
    HashFifo.MIN_GONE = saved
