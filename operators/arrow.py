"""Arrow columns for the sink, built where their rows are built; pyarrow without pandas.

The raw tables' strings (ids, users, labels, encoded values, attribute maps) become Arrow
arrays when a row builder hands its rows over (:mod:`operators.rows`), on the worker,
while the strings it has just read are in its cache. Converted later by the sink's
writer thread, the same conversions held the GIL in long C calls while the worker waited
for it: there they cost ~1.5x their CPU in the worker's wall time (a 1-minute bounded
run: 7.35 s without any sink, 8.55 s with the writer converting but not inserting, 8.9
s with both), and moving them here took 9.43 / 9.49 / 9.41 s to 8.62 / 8.32 / 8.83 s
(docs/performance.md).

pyarrow imports pandas at its first conversion of a Python sequence, only to ask whether
it is a pandas object: 0.3 s of imports under the GIL in the middle of a run. Importing
this module asks once with pandas withheld, so pyarrow remembers none is there; a
conversion *to* pandas (``to_pandas``) still imports it. Every module that converts to
Arrow imports it (or its helpers) first.
"""

from __future__ import annotations

import sys
from typing import Any

import pyarrow as pa

STRING_MAP = pa.map_(pa.string(), pa.string())  # ClickHouse's Map(String, String)


def strings(values: Any) -> pa.Array:
    """A string column from a list or object array of str (None: null)."""
    return pa.array(values, pa.string())


def binaries(values: Any) -> pa.Array:
    """A column of bytes (ClickHouse reads it into a String column as it is)."""
    return pa.array(values, pa.binary())


def string_maps(values: Any) -> pa.Array:
    """A Map(String, String) column from dicts of str."""
    return pa.array(values, STRING_MAP)


class _PandasWithheld:
    """A finder that refuses pandas (see :func:`_without_pandas`)."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("withheld while pyarrow looks for it", name=name)


def _without_pandas() -> None:
    """Let pyarrow find no pandas once, at import, before the flow starts its threads;
    nothing when pandas is already loaded."""
    if "pandas" in sys.modules:
        return
    sys.meta_path.insert(0, _PandasWithheld)
    try:
        pa.array([], pa.int64())
    finally:
        sys.meta_path.remove(_PandasWithheld)


_without_pandas()
