"""RowTable: blocks that grow without copying, dead rows, lookups across blocks."""

from __future__ import annotations

import numpy as np
import pytest

from fewshot_metric.store import row_table
from fewshot_metric.store.row_table import RowTable

SPEC = {"id": (np.int64, ()), "vec": (np.float32, (2,))}


@pytest.fixture
def table(monkeypatch):
    """Rows 0-2 in block 0 (capacity 4), 3-7 in block 1 (capacity 5), 8-9 in block 2: ids
    10, 20, ..., 100; vec of row r = [r, -r]."""
    monkeypatch.setattr(row_table, "MIN_BLOCK_ROWS", 4)
    table = RowTable(SPEC)
    for start, stop in ((0, 3), (3, 8), (8, 10)):
        rows = np.arange(start, stop)
        assert table.append(id=(rows + 1) * 10, vec=np.stack([rows, -rows], 1)).tolist() == \
            rows.tolist()
    return table


def test_appends_fill_new_blocks_without_moving_old_rows(table):
    assert len(table._blocks) == 3 and table.n_rows == len(table) == 10
    first_block = table._blocks[0]["vec"]
    table.append(id=np.array([110]), vec=np.array([[10.0, -10.0]]))  # fits block 2's spare room
    assert len(table._blocks) == 3 and table._blocks[0]["vec"] is first_block
    rows = np.array([9, 0, 4, 10, 3])
    np.testing.assert_array_equal(table.get("id", rows), (rows + 1) * 10)
    np.testing.assert_array_equal(table.get("vec", rows), np.stack([rows, -rows], 1))


def test_set_writes_across_blocks(table):
    table.set("vec", np.array([2, 3, 9]), np.array([[7, 7], [8, 8], [9, 9]]))
    assert table.get("vec", np.arange(10))[:, 0].tolist() == [0, 1, 7, 8, 4, 5, 6, 7, 8, 9]


def test_dead_rows_are_skipped_by_live_rows_chunks_and_find(table):
    table.set_live(np.array([1, 3, 9]), False)
    assert len(table) == 7 and table.n_rows == 10
    live = [0, 2, 4, 5, 6, 7, 8]
    assert table.live_rows().tolist() == live
    chunks = list(table.chunks("id", rows_per_chunk=2))
    assert max(map(len, chunks)) <= 2
    assert np.concatenate(chunks).tolist() == [(r + 1) * 10 for r in live]
    assert table.find("id", np.array([30, 20, 100, 40, 15, 0, 999, 90])).tolist() == \
        [2, -1, -1, -1, -1, -1, -1, 8]
    table.set_live(np.array([3]), True)
    assert len(table) == 8 and table.find("id", np.array([40])).tolist() == [3]


def test_truncate_undoes_appends(table):
    table.set_live(np.array([5, 9]), False)
    table.truncate(4)
    assert table.n_rows == 4 and len(table) == 4 and len(table._blocks) == 2
    assert table.live_rows().tolist() == [0, 1, 2, 3]
    rows = table.append(id=np.array([500, 600]), vec=np.zeros((2, 2)))
    assert rows.tolist() == [4, 5] and table.find("id", np.array([500, 50])).tolist() == [4, -1]


def test_a_table_over_read_only_arrays_reads_but_refuses_writes():
    ids = np.array([1, 5, 9])
    ids.flags.writeable = False
    table = RowTable.from_arrays({"id": (np.int64, ())}, {"id": ids})
    assert table.find("id", np.array([5, 9, 2])).tolist() == [1, 2, -1]
    with pytest.raises(ValueError, match="read-only"):
        table.set("id", np.array([0]), np.array([2]))


@pytest.mark.parametrize("ids", [[5, 6, 7, 8, 9], [5, 6, 8, 9, 12]], ids=["consecutive", "gaps"])
def test_find_in_one_block_with_and_without_consecutive_values(ids):
    # consecutive values are found by subtraction, others by binary search: the same rows
    table = RowTable.from_arrays(SPEC, {"id": np.array(ids), "vec": np.zeros((5, 2))})
    table.set_live(np.array([1]), False)  # the row holding 6
    wanted = np.array([9, 6, 5, 4, 10, 8, -1, 12, 7, 0])
    expected = [ids.index(v) if v in ids and v != 6 else -1 for v in wanted.tolist()]
    assert table.find("id", wanted).tolist() == expected
    assert table.find("id", np.zeros(0, np.int64)).tolist() == []
