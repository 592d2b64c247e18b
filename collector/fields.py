"""Payload fields to validated numpy columns: every wire-contract key of a batch, column by column.

Payloads of one firmware share a key set, so objects are grouped by their keys and each group's
columns come out of ``zip(*values)`` in C. Types are compared exactly (decode.py): JSON ``true``
is no number and ``1.0`` is no integer. A row with any bad value, or a success counter above
its attempts, is left out of the batch and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from .batch import DECODER_KIND_CODE, CountedEvents, DecodedBatch
from .boot_ids import boot_column
from .rules import COUNTERS

MAX_COUNTER = 2**40  # a trillion attempts since boot; larger is a broken device, and int64 sums stay exact
MAX_SEQ = 2**53
FLOAT_RANGES = {"ts": (0.0, 2.0**33), "bat": (0.0, 100.0), "rssi": (-200.0, 50.0)}
COUNTER_PAIRS = ((0, 1), (2, 3), (4, 5))  # (attempts, successes) columns of COUNTERS
MAX_SHAPES = 32  # distinct key sets per batch decoded shape by shape; more (hostile traffic) go key by key

Column = Callable[[str], "Sequence[Any] | np.ndarray | None"]  # a key's values; None: absent


class BadValueCounter(Protocol):
    """Where the rows refused for a bad value are counted and logged (the :class:`~ptmon.decode.Decoder`)."""

    def count_bad_values(self, bad_by_field: dict[str, int], bad: np.ndarray, mismatched: np.ndarray,
                         device: np.ndarray) -> None: ...


def decode_columns(t: np.ndarray, device: np.ndarray, objects: list[dict[str, Any]],
                   decoder: BadValueCounter | None = None) -> DecodedBatch:
    """Pull every wire-contract key out of decoded payload objects, column by column.

    Payloads of one firmware share a key set, so objects are grouped by their keys and each
    group's columns come out of ``zip(*values)`` in C, with no gaps to fill.
    """
    return decode_groups(t, device, len(objects), object_groups(objects), decoder)


def decode_groups(t: np.ndarray, device: np.ndarray, n: int, groups: Iterable[tuple[Any, Column]],
                  decoder: BadValueCounter | None = None) -> DecodedBatch:
    """:func:`decode_columns` from payloads already split into groups of rows with a column
    getter each (a key's values as a list, or an int64 array from payloads.py; None: absent)."""
    out = _Columns(n)
    for rows, column in groups:
        out.fill(rows, column)
    mismatch = np.zeros(n, dtype=bool)
    for attempts, successes in COUNTER_PAIRS:
        both = out.has_counter[:, attempts] & out.has_counter[:, successes]
        mismatch |= both & (out.counters[:, successes] > out.counters[:, attempts])
    mismatch &= ~out.bad
    if decoder is not None:  # fields in one order, however the rows were grouped
        by_field = {name: out.bad_by_field[name] for name in _FIELD_ORDER if name in out.bad_by_field}
        decoder.count_bad_values(by_field, out.bad, mismatch, device)
    keep = ~(out.bad | mismatch)
    batch = DecodedBatch(
        t=t, device=device, seq=out.seq, has_seq=out.has_seq, boot=out.boot, has_boot=out.has_boot,
        counters=out.counters, has_counter=out.has_counter, ts=out.floats["ts"], bat=out.floats["bat"], rssi=out.floats["rssi"],
    )
    if keep.all():
        return batch
    kept = batch.take(keep)
    bad, mismatched = np.flatnonzero(out.bad), np.flatnonzero(mismatch)
    kept.counted = CountedEvents.join([
        CountedEvents(t[rows], device[rows], np.full(len(rows), DECODER_KIND_CODE[kind], dtype=np.int16))
        for rows, kind in ((bad, "bad_value"), (mismatched, "counter_mismatch"))])
    return kept


class _ShapeIds(dict[tuple[str, ...], int]):
    """Key set -> small int, assigning the next id on first sight (lookups stay in C)."""

    def __missing__(self, shape: tuple[str, ...]) -> int:
        self[shape] = found = len(self)
        return found


def object_groups(objects: list[dict[str, Any]]) -> Iterator[tuple[Any, Column]]:
    """(rows, column getter) per group of objects; a getter gives a key's values or None."""
    n = len(objects)
    shape_ids = _ShapeIds()
    ids = np.fromiter(map(shape_ids.__getitem__, map(tuple, objects)), dtype=np.int64, count=n)
    if len(shape_ids) > MAX_SHAPES:
        keys = set().union(*objects)
        yield slice(None), lambda name: [o.get(name) for o in objects] if name in keys else None
        return
    for shape, k in shape_ids.items():
        rows: Any
        if len(shape_ids) == 1:
            rows, group = slice(None), objects
        else:
            rows = np.flatnonzero(ids == k)
            group = [objects[i] for i in rows.tolist()]
        columns = dict(zip(shape, zip(*map(dict.values, group)))) if shape else {}
        yield rows, columns.get


_FIELD_ORDER = ("seq", *COUNTERS, *FLOAT_RANGES, "boot")  # the order _Columns.fill reads them in


class _Columns:
    """The batch's arrays, filled group by group, with every bad value noted."""

    def __init__(self, n: int) -> None:
        self.seq = np.zeros(n, dtype=np.int64)
        self.has_seq = np.zeros(n, dtype=bool)
        self.boot = np.zeros(n, dtype=np.int64)
        self.has_boot = np.zeros(n, dtype=bool)
        self.counters = np.zeros((n, len(COUNTERS)), dtype=np.int64)
        self.has_counter = np.zeros((n, len(COUNTERS)), dtype=bool)
        self.floats = {name: np.full(n, np.nan) for name in FLOAT_RANGES}
        self.bad = np.zeros(n, dtype=bool)
        self.bad_by_field: dict[str, int] = {}

    def _note(self, name: str, rows: Any, bad: np.ndarray) -> None:
        count = int(bad.sum())
        if count:
            self.bad_by_field[name] = self.bad_by_field.get(name, 0) + count
            self.bad[rows] |= bad

    def fill(self, rows: Any, column: Column) -> None:
        values = column("seq")
        if values is not None:
            self.seq[rows], self.has_seq[rows], bad = _int_column(values, 0, MAX_SEQ)
            self._note("seq", rows, bad)
        for j, name in enumerate(COUNTERS):
            values = column(name)
            if values is not None:
                self.counters[rows, j], self.has_counter[rows, j], bad = _int_column(values, 0, MAX_COUNTER)
                self._note(name, rows, bad)
        for name, (lo, hi) in FLOAT_RANGES.items():
            values = column(name)
            if values is not None:
                self.floats[name][rows], bad = _float_column(values, lo, hi)
                self._note(name, rows, bad)
        values = column("boot")
        if values is not None:
            self.boot[rows], self.has_boot[rows], bad = boot_column(values)
            self._note("boot", rows, bad)


def _int_column(values: Sequence[Any] | np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, present, bad) for a key that must be an integer in [lo, hi]; absent or null is 0."""
    n = len(values)
    if isinstance(values, np.ndarray):  # integers parsed in bulk
        return values, np.ones(n, dtype=bool), (values < lo) | (values > hi)
    kinds = set(map(type, values))
    if kinds <= {int, type(None)}:
        present = np.ones(n, dtype=bool) if type(None) not in kinds else np.array([v is not None for v in values], dtype=bool)
        try:
            array = np.array(values if present.all() else [0 if v is None else v for v in values], dtype=np.int64)
        except OverflowError:
            pass  # an integer beyond int64: find it on the slow path below
        else:
            return array, present, present & ((array < lo) | (array > hi))
    array = np.zeros(n, dtype=np.int64)
    present = np.zeros(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    for i, v in enumerate(values):
        if v is None:
            continue
        if type(v) is int and lo <= v <= hi:
            array[i], present[i] = v, True
        else:
            bad[i] = True
    return array, present, bad


def _float_column(values: Sequence[Any] | np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """(values with NaN for absent or null, bad) for a key that must be a finite number in [lo, hi]."""
    if isinstance(values, np.ndarray):  # integers parsed in bulk: rounded to a double as Python's int → float is
        array = values.astype(np.float64)
        return array, ~((array >= lo) & (array <= hi))
    kinds = set(map(type, values))
    if kinds <= {int, float, type(None)}:
        try:
            filled = values if type(None) not in kinds else [np.nan if v is None else v for v in values]
            array = np.array(filled, dtype=np.float64)
        except OverflowError:
            pass  # an integer too large for a double: reject it on the slow path
        else:
            present = ~np.isnan(array)
            bad = present & ~((array >= lo) & (array <= hi))
            return array, bad
    array = np.full(len(values), np.nan)
    bad = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if v is None:
            continue
        if type(v) in (int, float) and lo <= v <= hi:
            array[i] = v
        else:
            bad[i] = True
    return array, bad
