"""Boot ids as signed 64-bit keys, stable across processes (a device keeps its boot id for months).

A device's ``boot`` names its power-on; the engine compares keys, not the ids themselves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_BOOT_LEN = 64
_boot_keys: dict[Any, int] = {}  # boot id -> boot_key: a device keeps its boot id for months
# Cleared when full: the district's ~114k boot ids fit twice, and devices inventing a new
# 64-character id per message hold it at ~47 MB (2**20 entries measured 187 MB).
_BOOT_CACHE_LIMIT = 1 << 18


def boot_key(boot: str | int) -> int:
    """A boot id as a signed 64-bit key: BLAKE2b of its text, so 7 and "7" are one boot and two
    different ids collide with odds of 2⁻⁶⁴ (a 32-bit checksum collides for real ids)."""
    digest = hashlib.blake2b(str(boot).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


class _IntBootKeys:
    """:func:`boot_key` of integer boot ids parsed in bulk (|id| < 10**18), cached in sorted
    arrays and looked up with numpy; cleared when full like the dict of the other ids."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, dtype=np.int64)
        self.keys = np.zeros(0, dtype=np.int64)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        at = self._positions(values)
        keys = self.keys[at] if len(self.ids) else np.zeros(len(values), dtype=np.int64)
        miss = np.flatnonzero(self.ids[at] != values) if len(self.ids) else np.arange(len(values))
        if len(miss):
            new = np.unique(values[miss])
            new_keys = np.array([boot_key(v) for v in new.tolist()], dtype=np.int64)
            keys[miss] = new_keys[np.searchsorted(new, values[miss])]
            if len(self.ids) + len(new) > _BOOT_CACHE_LIMIT:
                self.ids, self.keys = new, new_keys
            else:
                ids, merged = np.concatenate([self.ids, new]), np.concatenate([self.keys, new_keys])
                order = np.argsort(ids, kind="stable")
                self.ids, self.keys = ids[order], merged[order]
        return keys

    def _positions(self, values: np.ndarray) -> np.ndarray:
        """Where each value is (or would go) in ``ids``, clipped to its last entry. The values are
        looked up in ascending order: each binary search then starts where the last one ended,
        in memory still cached, which is several times faster than searching them as they come."""
        order = np.argsort(values)
        at = np.empty(len(values), dtype=np.intp)
        at[order] = np.searchsorted(self.ids, values[order])
        return np.minimum(at, max(len(self.ids) - 1, 0))


_int_boot_keys = _IntBootKeys()


def boot_column(values: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boot ids (strings or integers) as :func:`boot_key`, stable across processes unlike ``hash()``."""
    if isinstance(values, np.ndarray):  # integers parsed in bulk, all within int64
        return _int_boot_keys(values), np.ones(len(values), dtype=bool), np.zeros(len(values), dtype=bool)
    n = len(values)
    if len(_boot_keys) > _BOOT_CACHE_LIMIT:
        _boot_keys.clear()
    present = np.ones(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    # bool and float would hash equal to cached ints
    keys: list[int | None] = list(map(_boot_keys.get, values)) if set(map(type, values)) <= {str, int} else [None] * n
    for i in [i for i, key in enumerate(keys) if key is None]:
        v = values[i]
        if v is None:
            present[i], keys[i] = False, 0
        elif (type(v) is str and len(v) <= MAX_BOOT_LEN) or (type(v) is int and abs(v) < 2**63):
            keys[i] = _boot_keys.setdefault(v, boot_key(v))
        else:
            present[i], bad[i], keys[i] = False, True, 0
    return np.array(keys, dtype=np.int64), present, bad
