from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.connectors.delivery.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A signature-checking receiver on a free port of 127.0.0.1."""
    r = Receiver().start()
    yield r
    r.stop()
