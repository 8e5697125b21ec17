"""LabelColumn: growth past its capacity, lookups of row arrays, rename, truncate."""

from __future__ import annotations

import numpy as np

from fewshot_metric.store.label_column import LabelColumn


def test_grows_looks_up_renames_and_truncates():
    column = LabelColumn(["a", "b"])
    column.extend([f"x{i}" for i in range(40)])  # past the initial 16 rows of capacity
    assert len(column) == 42 and column[0] == "a" and column[41] == "x39"
    assert column.at(np.array([[41, 0], [1, 2]])).tolist() == [["x39", "a"], ["b", "x0"]]
    column[1] = "renamed"
    assert column.tolist()[:3] == ["a", "renamed", "x0"]
    column.truncate(3)
    assert column.tolist() == ["a", "renamed", "x0"]
    column.extend(["y"])
    assert column.tolist() == ["a", "renamed", "x0", "y"]


def test_rows_past_the_end_are_not_labels():
    column = LabelColumn(["a"])
    try:
        column.at(np.array([1]))
    except IndexError:
        pass
    else:
        raise AssertionError("row 1 of a 1-row column was looked up")
