"""Process-wide controls: numpy's large arrays kept off transparent huge pages."""

from __future__ import annotations

from numpy._core import multiarray

from connectors.run_control import numpy_without_huge_pages


def test_numpy_no_longer_asks_for_huge_pages() -> None:
    """The switch returns its previous state: on before, off after the call."""
    before = multiarray._set_madvise_hugepage(True)
    try:
        numpy_without_huge_pages()
        assert multiarray._set_madvise_hugepage(False) is False
    finally:
        multiarray._set_madvise_hugepage(before)
