"""Whole rows of per-device 2-D state (counters, baselines) gathered, scattered and tested fast.

numpy's fancy indexing of a 2-D array by a row index goes element by element; ``np.take``
along axis 0, an assignment through a view of each row as one opaque item, and a loop over
the few columns do the same work 4–8 times faster for the engine's [devices, 6] arrays.
The results are exactly those of ``a[rows]``, ``a[rows] = values`` and ``x.any(axis=1)``.
"""

from __future__ import annotations

import numpy as np


def take_rows(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``a[rows]`` for a 2-D ``a`` and an index array."""
    return np.take(a, rows, axis=0)


def put_rows(a: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """``a[rows] = values`` for a 2-D ``a``, an index array of distinct rows and values [len(rows), columns]."""
    if not a.flags.c_contiguous or a.ndim != 2:
        a[rows] = values
        return
    item = np.dtype((np.void, a.shape[1] * a.itemsize))
    whole = np.ascontiguousarray(np.broadcast_to(values, (len(rows), a.shape[1])), dtype=a.dtype)
    a.view(item).reshape(-1)[rows] = whole.view(item).reshape(-1)


def any_per_row(x: np.ndarray) -> np.ndarray:
    """``x.any(axis=1)`` for a 2-D array with few columns (a fresh bool array)."""
    out = x[:, 0] != 0
    for j in range(1, x.shape[1]):
        out |= x[:, j] != 0
    return out
