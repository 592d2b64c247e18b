"""Heartbeat payloads parsed in bulk: flat JSON objects of integers, column by column with numpy.

A device's firmware sends the same keys in the same order every time, with integer values:
``{"ts":1762012800,"seq":5,"boot":77,"reads":1234,"read_ok":1200}``. Such payloads are parsed
here without a Python object per payload or per value: the batch's payloads are joined into
one buffer, every maximal run of digits and ``-`` is a candidate value, and what is left of a
payload once its runs are cut out (its *shape*: ``{"ts":␁,"seq":␁,...}``) is compared, byte
for byte, with the shapes already seen. A shape is checked once against the grammar

    ws { ws ( "key" ws : ws INT ws ( , ws "key" ws : ws INT ws )* )? } ws

(keys without escapes or control characters, valid UTF-8, none twice; INT a JSON integer of at
most 18 digits, so it fits int64 exactly), and its keys are read from it. Each value is read
from its digits eight at a time (SWAR on 64-bit words).

Anything else — a float, a string, ``null``, a nested object, whitespace inside a number, an
escape, a control character, invalid UTF-8 — leaves that payload to ``orjson`` as before
(:attr:`Parsed.slow`), so the values taken here are exactly what ``orjson.loads`` gives.

Where the install compiled kernels.c (kernels.py), it cuts the runs and builds the shapes in
one pass per payload; the shapes' grammar is still checked here, and the numpy code below
(:func:`parse_spans_numpy`) stays its reference and the fallback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from . import kernels
from .ids import MASKS, PAD, padded, words

MARK = 0x01  # a value's place in a shape: a control character, never valid in a JSON text
MAX_DIGITS = 18
MAX_SHAPES = 32  # distinct shapes per batch parsed here; more (hostile traffic) go to orjson
assert MAX_SHAPES == kernels.MAX_SHAPES
_SHAPE_CACHE_LIMIT = 4096


_WS = rb"[ \t\n\r]*"
_KEY = rb'"[^"\\\x00-\x1f]*"'
_PAIR = _KEY + _WS + rb":" + _WS + rb"\x01" + _WS
_SHAPE = re.compile(rb"\A" + _WS + rb"\{" + _WS + rb"(?:" + _PAIR + rb"(?:," + _WS + _PAIR + rb")*)?\}" + _WS + rb"\Z")
_KEYS = re.compile(rb'"([^"\\\x00-\x1f]*)"')
_shapes: dict[bytes, tuple[str, ...] | None] = {}

_LOW4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_PAIRS = np.uint64(0x00FF00FF00FF00FF)
_QUADS = np.uint64(0x0000FFFF0000FFFF)
_HALF = np.uint64(0xFFFFFFFF)
_POW10 = np.array([10**k for k in range(19)], dtype=np.int64)


@dataclass(eq=False)
class Shape:
    """Payloads of one shape: ``values[i, k]`` is key ``keys[k]`` of payload ``rows[i]``."""

    rows: np.ndarray
    keys: tuple[str, ...]
    values: np.ndarray  # int64 [len(rows), len(keys)]

    def column(self, name: str) -> np.ndarray | None:
        return self.values[:, self.keys.index(name)] if name in self.keys else None


@dataclass(eq=False)
class Parsed:
    shapes: list[Shape]
    slow: np.ndarray  # rows left to orjson
    size: np.ndarray  # each payload's size in bytes (unescaped)


def parse_payloads(payloads: list[str] | list[bytes]) -> Parsed | None:
    """Parse a batch of payloads (all ``str`` or all ``bytes``); None when it cannot be split
    into one buffer (a payload holding NUL, mixed types): then orjson parses them all."""
    n = len(payloads)
    try:
        raw = "\0".join(payloads).encode("utf-8", "surrogatepass") if isinstance(payloads[0], str) else b"\0".join(payloads)
    except TypeError:
        return None
    buffer = padded(raw)
    array = np.frombuffer(buffer, dtype=np.uint8, count=len(raw))
    ends = np.flatnonzero(array == 0)
    if len(ends) != n - 1:
        return None
    starts = np.concatenate([[0], ends + 1])
    return parse_spans(buffer, array, starts, np.append(ends, len(raw)))


def parse_spans(buffer: bytes | np.ndarray, array: np.ndarray, starts: np.ndarray, ends: np.ndarray, *,
                escaped: bool = False, size: np.ndarray | None = None) -> Parsed:
    """Parse the payloads at ``array[starts[i]:ends[i]]`` (``array`` views ``buffer``, which ends
    with PAD zero bytes). ``escaped``: the payloads are the bodies of JSON strings whose only
    escape is ``\\"`` (an archive line's, checked by its reader). ``size``: each payload's size
    unescaped, when the caller has counted it already."""
    n = len(starts)
    if size is None:
        size = ends - starts
        if escaped:
            backslashes = np.flatnonzero(array == ord("\\"))
            size = size - np.bincount(np.searchsorted(starts, backslashes, side="right") - 1, minlength=n)
    if kernels.available():
        return _parse_compiled(array, starts, ends, escaped, size)
    return parse_spans_numpy(buffer, array, starts, ends, escaped, size)


def _parse_compiled(array: np.ndarray, starts: np.ndarray, ends: np.ndarray, escaped: bool, size: np.ndarray) -> Parsed:
    """:func:`parse_spans` by kernels.c, the shapes' grammar checked here as in the numpy code."""
    shape_of, values, table = kernels.parse(array, starts, ends, escaped)
    slow = shape_of < 0
    shapes = []
    for k, shape in enumerate(table):
        rows = np.flatnonzero(shape_of == k)
        keys = _shape_keys(shape, escaped)
        if keys is None:
            slow[rows] = True
        else:
            shapes.append(Shape(rows, keys, values[rows, : len(keys)]))
    return Parsed(shapes, np.flatnonzero(slow), size)


def parse_spans_numpy(buffer: bytes | np.ndarray, array: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                      escaped: bool, size: np.ndarray) -> Parsed:
    """:func:`parse_spans` in numpy passes over the payloads (the compiled parser's reference)."""
    n = len(starts)
    slow = np.zeros(n, dtype=bool)
    _mark_weird(array, starts, ends, slow, escaped)
    number = ((array >= ord("0")) & (array <= ord("9"))) | (array == ord("-"))
    edges = np.diff(number.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    run_start, run_end = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    owner = np.searchsorted(starts, run_start, side="right") - 1
    runs = np.bincount(owner, minlength=n)
    first_run = np.cumsum(runs) - runs
    values, bad_run = _values(buffer, array, run_start, run_end)
    slow[owner[bad_run]] = True
    run_bytes = np.bincount(owner, weights=run_end - run_start, minlength=n).astype(np.int64)
    before = np.cumsum(run_bytes) - run_bytes
    skeleton = array.copy()
    skeleton[run_start] = MARK
    keep = ~number
    keep[run_start] = True
    skeleton = skeleton[keep]
    shape_start = starts - before + first_run
    shape_length = (ends - starts) - run_bytes + runs
    shapes = []
    for rows, shape in _group(skeleton, shape_start, shape_length, np.flatnonzero(~slow), slow):
        keys = _shape_keys(shape, escaped)
        if keys is None:
            slow[rows] = True
            continue
        at = first_run[rows][:, None] + np.arange(len(keys))
        shapes.append(Shape(rows, keys, values[at] if len(keys) else np.zeros((len(rows), 0), np.int64)))
    return Parsed(shapes, np.flatnonzero(slow), size)


def _mark_weird(array: np.ndarray, starts: np.ndarray, ends: np.ndarray, slow: np.ndarray, escaped: bool) -> None:
    """Payloads holding a byte outside the grammar: a control character (tab, LF and CR aside),
    DEL, or a backslash (unless ``escaped``: then only ``\\"``, checked by the reader). The
    separators between payloads (at ``ends``) aside."""
    mask = ((array < 0x20) & (array != 0x09) & (array != 0x0A) & (array != 0x0D)) | (array == 0x7F)
    if not escaped:
        mask |= array == ord("\\")
    separators = ends[ends < len(array)]
    if (np.count_nonzero(mask) == len(separators) and mask[separators].all() and (ends >= starts).all()
            and (starts[1:] > ends[:-1]).all()):
        return  # only the separators, each after its span and before the next: no owners to search
    weird = np.flatnonzero(mask)
    if len(weird):
        owner = np.searchsorted(starts, weird, side="right") - 1
        inside = weird < ends[owner]
        slow[owner[inside]] = True


def _values(buffer: bytes | np.ndarray, array: np.ndarray, run_start: np.ndarray,
            run_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 value of each run of digits and '-', runs that are no JSON integer of ≤ 18 digits)."""
    negative = array[run_start] == ord("-")
    first = run_start + negative
    digits = run_end - first
    bad = (digits < 1) | (digits > MAX_DIGITS)
    minus = np.flatnonzero(array == ord("-"))
    if len(minus):  # a '-' only as a run's first byte
        k = np.minimum(np.searchsorted(run_start, minus), len(run_start) - 1)
        stray = minus[run_start[k] != minus]
        bad[np.searchsorted(run_start, stray, side="right") - 1] = True
    bad |= (digits > 1) & (array[np.minimum(first, len(array) - 1)] == ord("0"))  # no leading zeros
    digits = np.clip(digits, 1, MAX_DIGITS)
    w = words(buffer)
    value = _eight(w[first] << (np.uint64(8) * (8 - np.minimum(digits, 8)).astype(np.uint64)))
    more = np.flatnonzero(digits > 8)
    if len(more):
        d = digits[more]
        middle = _eight(w[first[more] + 8] << (np.uint64(8) * (16 - np.minimum(d, 16)).astype(np.uint64)))
        tail = np.flatnonzero(d > 16)
        value[more] = value[more] * _POW10[np.minimum(d, 16) - 8] + middle
        if len(tail):
            rows = more[tail]
            last = _eight(w[first[rows] + 16] << (np.uint64(8) * (24 - digits[rows]).astype(np.uint64)))
            value[rows] = value[rows] * _POW10[digits[rows] - 16] + last
    return np.where(negative, -value, value), bad


def _eight(word: np.ndarray) -> np.ndarray:
    """Eight ASCII digits in a little-endian word (first digit lowest; zero bytes read as 0) → int64."""
    v = word & _LOW4
    v = (v * np.uint64(10) + (v >> np.uint64(8))) & _PAIRS
    v = (v * np.uint64(100) + (v >> np.uint64(16))) & _QUADS
    v = (v * np.uint64(10000) + (v >> np.uint64(32))) & _HALF
    return v.astype(np.int64)


def _group(skeleton: np.ndarray, start: np.ndarray, length: np.ndarray, candidates: np.ndarray,
           slow: np.ndarray) -> list[tuple[np.ndarray, bytes]]:
    """(rows, shape bytes) per distinct shape among the candidate rows, compared byte for byte
    (eight at a time: a shape's words, the last masked to its bytes)."""
    found: list[tuple[np.ndarray, bytes]] = []
    w = words(np.concatenate([skeleton, np.zeros(PAD, np.uint8)]))
    for size in _distinct(length[candidates]):
        rows = candidates[length[candidates] == size]
        n_words = (size + 7) // 8
        matrix = w[start[rows][:, None] + 8 * np.arange(n_words)]
        if n_words:
            matrix[:, -1] &= MASKS[size - 8 * (n_words - 1)]
        while len(rows):
            if len(found) == MAX_SHAPES:
                slow[rows] = True
                break
            same = (matrix == matrix[0]).all(axis=1)
            first = int(start[rows[0]])
            found.append((rows[same], skeleton[first : first + size].tobytes()))
            rows, matrix = rows[~same], matrix[~same]
    return found


def _distinct(lengths: np.ndarray) -> list[int]:
    """The distinct values of ``lengths``, ascending: counted in one pass when they lie close together
    (a batch's shapes differ by a few bytes), else sorted."""
    if not len(lengths):
        return []
    low, high = int(lengths.min()), int(lengths.max())
    if high - low > 1 << 16:
        return np.unique(lengths).tolist()
    return (np.flatnonzero(np.bincount(lengths - low)) + low).tolist()


def _shape_keys(shape: bytes, escaped: bool) -> tuple[str, ...] | None:
    """The keys of a valid shape, in order; None when it is not one (checked once per shape)."""
    cache_key = shape + (b"\\" if escaped else b"")
    if cache_key in _shapes:
        return _shapes[cache_key]
    text = shape.replace(b'\\"', b'"') if escaped else shape
    keys: tuple[str, ...] | None = None
    if (not escaped or b"\\" not in text) and _SHAPE.match(text):
        try:
            keys = tuple(k.decode("utf-8") for k in _KEYS.findall(text))
        except UnicodeDecodeError:
            keys = None
        if keys is not None and len(set(keys)) != len(keys):
            keys = None  # a key twice: orjson keeps the last; left to it
    if len(_shapes) >= _SHAPE_CACHE_LIMIT:
        _shapes.clear()
    _shapes[cache_key] = keys
    return keys


assert PAD >= 8
