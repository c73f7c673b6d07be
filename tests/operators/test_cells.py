"""The id tables survive a snapshot: they pickle without their lookup dicts and rebuild
them on resume, and a resumed table goes on numbering exactly like one never stopped."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from operators.cells import BASE_DIMS, CellDims, CellIndex, GlobalIds, LocalIds
from operators.snapshots import ChunkedList
from tests.harness import CUBE


def _cells(rng: random.Random, n: int) -> list[tuple[str, ...]]:
    return [
        ("t", "m", "primary", f"v{rng.randint(0, 5)}", f"s{rng.randint(0, 7)}", f"/e{rng.randint(0, 3)}")
        for _ in range(n)
    ]  # fmt: skip


def _resumed(value: object) -> object:
    return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))


def test_a_resumed_cell_index_numbers_and_rolls_up_like_an_uninterrupted_one() -> None:
    rng = random.Random(3)
    first, second = _cells(rng, 300), _cells(rng, 300)
    kept, resumed = CellIndex(CUBE, ()), CellIndex(CUBE, ())
    kept.finest_ids(first)
    resumed.finest_ids(first)
    resumed = _resumed(resumed)  # type: ignore[assignment]
    rows_kept, rows_resumed = kept.finest_ids(second), resumed.finest_ids(second)
    assert rows_kept.tolist() == rows_resumed.tolist()
    assert np.array_equal(kept.rollups(rows_kept), resumed.rollups(rows_resumed))
    ids = np.arange(len(kept))
    assert len(kept) == len(resumed)
    for name, column in kept.dim_columns(ids).items():
        other = resumed.dim_columns(ids)[name]
        assert [column.categories[c] for c in column.codes] == [
            other.categories[c] for c in other.codes
        ]


def test_resumed_local_and_global_ids_keep_numbering() -> None:
    local: LocalIds[str] = LocalIds()
    for value in ("a", "b", "c"):
        local.id_of(value)
    local = _resumed(local)  # type: ignore[assignment]
    assert [local.id_of(v) for v in ("b", "d", "a", "e")] == [1, 3, 0, 4]

    global_ids: GlobalIds[str] = GlobalIds()
    global_ids.announce(0, ["x", "y"])
    global_ids = _resumed(global_ids)  # type: ignore[assignment]
    global_ids.announce(1, ["y", "z"])
    assert global_ids.to_global(1, np.array([0, 1])).tolist() == [1, 2]
    assert global_ids.to_global(0, np.array([1, 0])).tolist() == [1, 0]


def test_a_change_after_a_snapshot_is_in_the_next_one() -> None:
    """The pickled-state cache must be dropped by every mutation: a stale cache would
    resume a flow from an older state than the one it snapshotted."""
    local: LocalIds[str] = LocalIds()
    local.id_of("a")
    _resumed(local)
    local.id_of("b")
    assert _resumed(local).values == ["a", "b"]  # type: ignore[attr-defined]
    local.take_new()
    assert _resumed(local).take_new() == []  # type: ignore[attr-defined]

    global_ids: GlobalIds[str] = GlobalIds()
    global_ids.announce(0, ["x"])
    _resumed(global_ids)
    global_ids.announce(1, ["y"])
    assert _resumed(global_ids).to_global(1, np.array([0])).tolist() == [1]  # type: ignore[attr-defined]

    index = CellIndex(CUBE, ())
    rng = random.Random(5)
    index.finest_ids(_cells(rng, 5))
    _resumed(index)
    more = _cells(rng, 50)
    rows = index.finest_ids(more)
    resumed = _resumed(index)
    assert len(resumed) == len(index)  # type: ignore[arg-type]
    assert resumed.finest_ids(more).tolist() == rows.tolist()  # type: ignore[attr-defined]


def test_id_tables_resume_exactly_across_chunk_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cell lists are snapshotted by chunks, full ones from a cache that a resumed
    table takes over: snapshot, resume, grow, snapshot again must never lose, repeat or
    reorder a value, wherever the chunk boundaries fall."""
    monkeypatch.setattr(ChunkedList, "CHUNK", 4)
    rng = random.Random(11)
    kept, resumed = CellIndex(CUBE, ()), CellIndex(CUBE, ())
    local_kept: LocalIds[tuple[str, ...]] = LocalIds()
    local_resumed: LocalIds[tuple[str, ...]] = LocalIds()
    for _ in range(8):
        batch = _cells(rng, rng.randint(0, 9))
        kept.finest_ids(batch)
        resumed.finest_ids(batch)
        for cell in batch:
            local_kept.id_of(cell)
            local_resumed.id_of(cell)
        resumed = _resumed(resumed)  # type: ignore[assignment]
        local_resumed = _resumed(local_resumed)  # type: ignore[assignment]
        assert resumed._cells == kept._cells
        assert list(resumed._finest.items()) == list(kept._finest.items())
        assert local_resumed.values == local_kept.values
        assert local_resumed.ids == local_kept.ids
    assert len(kept) > 4 * ChunkedList.CHUNK  # many chunks were crossed


def test_a_new_value_repacks_only_the_last_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ChunkedList, "CHUNK", 4)
    chunks: ChunkedList[int] = ChunkedList()
    values = list(range(10))
    first = chunks.pack(values)
    values.append(10)
    second = chunks.pack(values)
    assert len(first) == len(second) == 3
    assert second[0] is first[0] and second[1] is first[1] and second[2] != first[2]
    restored, cache = ChunkedList.unpack(second)
    assert restored == values
    values.extend([11, 12])  # fills the third chunk
    third = cache.pack(values)
    assert third[0] == first[0] and ChunkedList.unpack(third)[0] == values


def test_cell_dims_decode_to_the_cells_and_never_change_a_handed_list() -> None:
    """The raw tables' dims are codes into categories handed to the sink's thread: they
    decode to each cell's values, cells learned later (in several steps) included, and a
    categories list once handed out stays as it was (the same list while nothing is new)."""
    rng = random.Random(3)
    values = [("t", "u"), ("m",), ("primary", "canary"), ("v1", "v2", "v3"), ("s",), ("/a", "/b")]
    ids = LocalIds()
    dims = CellDims()
    handed: list[tuple[list[str], list[str]]] = []
    for _ in range(6):
        for _ in range(rng.randrange(1, 8)):
            ids.id_of(tuple(rng.choice(v) for v in values))
        wanted = np.array([rng.randrange(len(ids.values)) for _ in range(20)], dtype=np.int64)
        columns = dims.columns(ids.values, wanted)
        for j, name in enumerate(BASE_DIMS):
            column = columns[name]
            got = [column.categories[c] for c in column.codes.tolist()]
            assert got == [ids.values[i][j] for i in wanted.tolist()]
            handed.append((column.categories, list(column.categories)))
        again = dims.columns(ids.values, wanted)
        assert all(again[name].categories is columns[name].categories for name in BASE_DIMS)
    assert all(categories == copy for categories, copy in handed)
