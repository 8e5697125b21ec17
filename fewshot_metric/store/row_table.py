"""RowTable: rows of named numpy columns that grow without copying and never move.

What a store with tens of millions of classes needs: per-class state in a few flat arrays
instead of a Python object per class, and growth that does not copy what is there. Rows go
into blocks; a new block holds at least as many rows as all earlier ones together, so N rows
take O(log N) blocks, and appending never copies old rows (peak memory stays near the data's
own size). A block's unused tail is `np.empty` memory, which costs no resident memory until
written. Removing rows only marks them dead: row numbers stay valid until the table is
written out (`live_rows`, `chunks`) and read back.

A column is declared as name -> (dtype, shape of one row): ("id", (np.int64, ())) is [N],
("mean", (np.float32, (64,))) is [N, 64]. A table made `from_arrays` can hold read-only
(memory-mapped) arrays: reading works, writing them raises numpy's ValueError.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

ColumnSpec = dict[str, tuple[type | np.dtype, tuple[int, ...]]]
MIN_BLOCK_ROWS = 1 << 14
CHUNK_ROWS = 1 << 15


class RowTable:
    """Rows of the columns in `spec`, plus a live flag per row."""

    def __init__(self, spec: ColumnSpec):
        self._spec = {name: (np.dtype(dtype), tuple(shape)) for name, (dtype, shape)
                      in spec.items()}
        self._blocks: list[dict[str, np.ndarray]] = []  # each with a bool "live" column
        self._used: list[int] = []  # rows used in each block
        self._starts = np.zeros(0, np.int64)  # first row of each block
        self._n_live = 0

    @classmethod
    def from_arrays(cls, spec: ColumnSpec, arrays: dict[str, np.ndarray]) -> RowTable:
        """A table whose rows are `arrays` (one per column, all [N, ...], not copied), all
        live."""
        table = cls(spec)
        n = len(next(iter(arrays.values())))
        table._blocks.append({**arrays, "live": np.ones(n, bool)})
        table._used.append(n)
        table._starts = np.zeros(1, np.int64)
        table._n_live = n
        return table

    def __len__(self) -> int:
        """Live rows."""
        return self._n_live

    @property
    def n_rows(self) -> int:
        """Rows ever appended and not truncated, live or dead."""
        return int(self._starts[-1] + self._used[-1]) if self._blocks else 0

    def append(self, **values: np.ndarray) -> np.ndarray:
        """Appends rows given as one array [M, ...] per column; returns their numbers [M]."""
        m = len(next(iter(values.values())))
        start = self.n_rows
        if not self._blocks or len(self._blocks[-1]["live"]) - self._used[-1] < m:
            capacity = max(m, MIN_BLOCK_ROWS, start)
            self._blocks.append({name: np.empty((capacity, *shape), dtype) for name, (dtype, shape)
                                 in {**self._spec, "live": (np.dtype(bool), ())}.items()})
            self._used.append(0)
            self._starts = np.append(self._starts, start)
        block, used = self._blocks[-1], self._used[-1]
        for name in self._spec:
            block[name][used:used + m] = values[name]
        block["live"][used:used + m] = True
        self._used[-1] += m
        self._n_live += m
        return np.arange(start, start + m, dtype=np.int64)

    def truncate(self, n_rows: int) -> None:
        """Drops the rows from `n_rows` on (undoes appends)."""
        self._n_live -= int(np.count_nonzero(self.get("live", np.arange(n_rows, self.n_rows))))
        while self._blocks and self._starts[-1] >= n_rows and len(self._blocks) > 1:
            self._blocks.pop()
            self._used.pop()
            self._starts = self._starts[:-1]
        if self._blocks:
            self._used[-1] = n_rows - int(self._starts[-1])

    def _locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows [R] -> their block numbers [R] and offsets in the block [R]."""
        block = np.searchsorted(self._starts, rows, side="right") - 1
        return block, rows - self._starts[block]

    def get(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Column `name` at rows [R] -> a new array [R, ...]."""
        rows = np.asarray(rows, np.int64)
        if len(self._blocks) == 1:
            return self._blocks[0][name][rows]
        dtype, shape = self._spec.get(name, (np.dtype(bool), ()))
        out = np.empty((len(rows), *shape), dtype)
        block, offset = self._locate(rows)
        for b in np.unique(block).tolist():
            at = block == b
            out[at] = self._blocks[b][name][offset[at]]
        return out

    def set(self, name: str, rows: np.ndarray, values: np.ndarray) -> None:
        """Writes values [R, ...] into column `name` at rows [R]."""
        rows = np.asarray(rows, np.int64)
        values = np.asarray(values)
        block, offset = self._locate(rows)
        for b in np.unique(block).tolist():
            at = block == b
            self._blocks[b][name][offset[at]] = values[at]

    def set_live(self, rows: np.ndarray, live: bool) -> None:
        """Marks rows [R] (all currently of the other state) live or dead."""
        self.set("live", rows, np.full(len(rows), live))
        self._n_live += len(rows) if live else -len(rows)

    def live_rows(self) -> np.ndarray:
        """The live row numbers in order, int64 [len(self)]."""
        parts = [start + np.flatnonzero(block["live"][:used]) for block, used, start
                 in zip(self._blocks, self._used, self._starts.tolist(), strict=True)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def chunks(self, name: str, rows_per_chunk: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
        """Column `name` of the live rows in order, as arrays of up to `rows_per_chunk` rows."""
        for block, used in zip(self._blocks, self._used, strict=True):
            for start in range(0, used, rows_per_chunk):
                span = slice(start, min(start + rows_per_chunk, used))
                live = block["live"][span]
                values = block[name][span]
                yield values if live.all() else values[live]

    def find(self, name: str, values: np.ndarray) -> np.ndarray:
        """Rows [V] whose column `name` (strictly ascending by row) holds values [V]; -1 where none
        does (or the row is dead)."""
        values = np.asarray(values, np.int64)
        rows = np.full(len(values), -1, np.int64)
        if not self._blocks or not len(values):
            return rows
        if len(self._blocks) == 1:  # most stores: every value is looked up in block 0
            column, used = self._blocks[0][name], self._used[0]
            if used and column[used - 1] - column[0] == used - 1:  # values first, first + 1...
                offset = values - column[0]
                inside = (offset >= 0) & (offset < used)
                inside[inside] &= self._blocks[0]["live"][offset[inside]]
                rows[inside] = offset[inside]
                return rows
            groups = [(0, np.arange(len(values)))]
        else:
            firsts = np.array([block[name][0] if used else np.iinfo(np.int64).max
                               for block, used in zip(self._blocks, self._used, strict=True)])
            block = np.maximum(np.searchsorted(firsts, values, side="right") - 1, 0)
            groups = [(b, np.flatnonzero(block == b)) for b in np.unique(block).tolist()]
        for b, at in groups:
            column = self._blocks[b][name][:self._used[b]]
            if not len(column):
                continue
            offset = np.minimum(np.searchsorted(column, values[at]), len(column) - 1)
            hit = (column[offset] == values[at]) & self._blocks[b]["live"][offset]
            rows[at[hit]] = self._starts[b] + offset[hit]
        return rows
