"""rowops: the engine's fast row gathers, scatters and any-per-row equal numpy's plain forms."""

from __future__ import annotations

import numpy as np

from ptmon.rowops import any_per_row, put_rows, take_rows


def test_rows_taken_and_put_as_fancy_indexing_does() -> None:
    rng = np.random.default_rng(5)
    for dtype in (np.int64, np.bool_):
        state = rng.integers(0, 2 if dtype is np.bool_ else 10**12, (1000, 6)).astype(dtype)
        rows = rng.choice(1000, 300, replace=False)
        assert np.array_equal(take_rows(state, rows), state[rows])
        values = rng.integers(0, 2 if dtype is np.bool_ else 10**12, (300, 6)).astype(dtype)
        expected = state.copy()
        expected[rows] = values
        put_rows(state, rows, values)
        assert np.array_equal(state, expected)


def test_rows_put_into_a_strided_array_and_from_strided_values() -> None:
    rng = np.random.default_rng(6)
    wide = np.zeros((500, 12), dtype=np.int64)
    state = wide[:, ::2]  # not contiguous: assigned the plain way
    rows = rng.choice(500, 50, replace=False)
    values = rng.integers(0, 99, (6, 50)).T  # not contiguous either
    put_rows(state, rows, values)
    assert np.array_equal(state[rows], values) and not wide[:, 1::2].any()
    contiguous = np.zeros((500, 6), dtype=np.int64)
    put_rows(contiguous, rows, values)
    assert np.array_equal(contiguous, state)


def test_any_per_row() -> None:
    x = np.array([[0, 0, 0], [0, 5, 0], [0, 0, -1], [1, 1, 1]])
    assert any_per_row(x).tolist() == [False, True, True, True]
    assert any_per_row(x != 0).tolist() == x.any(axis=1).tolist()
    assert any_per_row(np.zeros((0, 6), dtype=bool)).shape == (0,)
