"""Process-wide controls: numpy's large arrays kept off transparent huge pages."""

from __future__ import annotations

import pytest
from numpy._core import multiarray

from connectors.run_control import numpy_without_huge_pages


def test_numpy_no_longer_asks_for_huge_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """The switch returns its previous state: on before, off after the call; left on
    when the environment asks for it."""
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    before = multiarray._set_madvise_hugepage(True)
    try:
        numpy_without_huge_pages()
        assert multiarray._set_madvise_hugepage(True) is False
        monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
        numpy_without_huge_pages()
        assert multiarray._set_madvise_hugepage(True) is True
    finally:
        multiarray._set_madvise_hugepage(before)
