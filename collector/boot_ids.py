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


_EMPTY = np.iinfo(np.int64).min  # an empty slot: no id parsed in bulk (|id| < 10**18) is this
_FIBONACCI = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio: multiplicative hashing spreads ids over slots
_FIRST_SLOTS = 1 << 12


class _IntBootKeys:
    """:func:`boot_key` of integer boot ids parsed in bulk (|id| < 10**18), cached in a hash table
    looked up with numpy a batch at a time; cleared when full like the dict of the other ids.

    Open addressing with linear probing, at most a quarter full (8 MB for the district's ~114k ids,
    16 MB at the limit): an id is found at its home slot or a few after it, a couple of random
    reads where a binary search of a sorted cache took seventeen. Half full, the longest probe of
    a batch took three times the steps."""

    def __init__(self) -> None:
        self._allocate(_FIRST_SLOTS)

    def _allocate(self, slots: int) -> None:
        self.ids = np.full(slots, _EMPTY, dtype=np.int64)
        self.keys = np.zeros(slots, dtype=np.int64)
        self.size = 0  # ids held

    def __call__(self, values: np.ndarray) -> np.ndarray:
        slot = self._home(values)
        found = self._probe(values, slot)
        keys: np.ndarray = self.keys[slot]
        miss = np.flatnonzero(~found)
        if len(miss):
            new = np.unique(values[miss])
            new_keys = np.array([boot_key(v) for v in new.tolist()], dtype=np.int64)
            keys[miss] = new_keys[np.searchsorted(new, values[miss])]
            self._add(new, new_keys)
        return keys

    def _home(self, values: np.ndarray) -> np.ndarray:
        bits = np.uint64(64 - (len(self.ids).bit_length() - 1))
        return ((values.astype(np.int64, copy=False).view(np.uint64) * _FIBONACCI) >> bits).astype(np.intp)

    def _probe(self, values: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """Move each value's ``slot`` (in place) along its probe to the slot holding it, or to the
        first empty one; True where the value was found."""
        last = len(self.ids) - 1
        held = self.ids[slot]
        found: np.ndarray = held == values
        pending = np.flatnonzero(~found & (held != _EMPTY))  # the few whose home slot holds another id
        while len(pending):
            slot[pending] = (slot[pending] + 1) & last
            held, wanted = self.ids[slot[pending]], values[pending]
            found[pending] = held == wanted
            pending = pending[(held != wanted) & (held != _EMPTY)]
        return found

    def _add(self, ids: np.ndarray, keys: np.ndarray) -> None:
        """Hold new (distinct, absent) ids: cleared past the limit, doubled past a quarter full."""
        if self.size + len(ids) > _BOOT_CACHE_LIMIT:
            self._allocate(_FIRST_SLOTS)
        slots = len(self.ids)
        while 4 * (self.size + len(ids)) > slots:
            slots *= 2
        if slots > len(self.ids):
            held = self.ids != _EMPTY
            old_ids, old_keys = self.ids[held], self.keys[held]
            self._allocate(slots)
            self._insert(old_ids, old_keys)
        self._insert(ids, keys)

    def _insert(self, ids: np.ndarray, keys: np.ndarray) -> None:
        self.size += len(ids)
        slot = self._home(ids)
        while len(ids):
            self._probe(ids, slot)  # each id's first empty slot along its probe
            _, first = np.unique(slot, return_index=True)  # ids meeting at one empty slot: the first takes it
            self.ids[slot[first]], self.keys[slot[first]] = ids[first], keys[first]
            rest = np.ones(len(ids), dtype=bool)
            rest[first] = False
            ids, keys, slot = ids[rest], keys[rest], slot[rest]


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
