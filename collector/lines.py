"""Archive lines taken a decompressed block at a time: columns, not a Python tuple per line.

The collector writes each record as ``orjson.dumps`` does::

    {"t":1762012800.123456,"topic":"putuo/.../hb","payload":"{\\"seq\\":5,...}"}

A line of exactly that form is taken here when it is *plain*: printable ASCII only, the
number a JSON decimal of at most 17 characters (digits with at most one point, no sign, no
exponent) whose digits read as an integer are at most 2**53, no escape but ``\\"`` and that
only inside the payload, and a topic not starting with ``$`` (control and retained records
stay on the reader's per-line path). Its receive time is that integer divided by a power of
ten up to 10**16: both are exact doubles, so the one IEEE division is the correctly rounded
value of the decimal, which is what ``orjson.loads`` gives (tests/test_lines.py checks it
against orjson); it must lie before the end of the months ptmon serves (a later one is a bad
line on the per-line path). Its topic and payload stay spans of the block.

Every other line (control records, any other escape, non-ASCII text, another number form,
whitespace, bad lines) is left to the reader's exact per-line path, in its place, so the
records read are the per-line reader's, in the same order.

Where the install compiled kernels.c (kernels.py), a block is split and its plain lines taken in
one pass per line, and their payloads parsed where they lie; :func:`scan_numpy` is its
reference and the fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import kernels
from .ids import MASKS, PAD, padded, words
from .payloads import Parsed, Shape, parse_spans
from .timebase import END_SERVED_S
from .topics import TopicMap

Record = tuple[float, str, str]

NEWLINE, QUOTE, BACKSLASH, DOLLAR = 0x0A, 0x22, 0x5C, 0x24
QUOTES_PER_LINE = 10  # "t" "topic" "<topic>" "payload" "<payload>"
MAX_NUMBER = 17
_HEAD = b'{"t":'
_TOPIC_KEY = b',"topic":"'  # from the byte before the key's quote
_PAYLOAD_KEY = b'","payload":"'  # from the topic's closing quote
_POW10_FLOAT = np.array([float(10**k) for k in range(MAX_NUMBER + 1)])  # all exact doubles (≤ 10**22)
_EXACT_LIMIT = 2**53


@dataclass(eq=False)
class ArchiveLines:
    """Plain archive lines in arrival order: receive times and spans of ``array`` (which views
    ``buffer``, padded with zero bytes)."""

    buffer: bytes
    array: np.ndarray
    t: np.ndarray  # float64 unix seconds, as orjson reads the line's number
    topic_start: np.ndarray
    topic_end: np.ndarray
    payload_start: np.ndarray  # the payload as it lies in the line: its quotes escaped (\")
    payload_end: np.ndarray
    payload_chars: np.ndarray  # the payload's length unescaped (characters = bytes: ASCII)
    device: np.ndarray | None = None  # the topics' registry rows, when looked up ahead (:meth:`prepare`)
    parsed: Parsed | None = None  # the payloads parsed in bulk, when done ahead

    def __len__(self) -> int:
        return len(self.t)

    def __getstate__(self) -> dict[str, object]:  # sent between processes without the array (a view of buffer)
        return {**self.__dict__, "array": len(self.array)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["array"] = np.frombuffer(state["buffer"], dtype=np.uint8, count=state["array"])
        self.__dict__.update(state)

    def prepare(self, topics: TopicMap) -> None:
        """Look the topics up and parse the payloads now (stateless: the scanning processes do it
        ahead of the decoder, which then only slices the results)."""
        self.device = self.topic_rows(topics)
        self.parsed = self.parse_payloads()

    def rows(self, a: int, b: int) -> ArchiveLines:
        """Lines ``a`` to ``b`` (views of this block)."""
        return ArchiveLines(self.buffer, self.array, self.t[a:b], self.topic_start[a:b], self.topic_end[a:b],
                            self.payload_start[a:b], self.payload_end[a:b], self.payload_chars[a:b],
                            None if self.device is None else self.device[a:b],
                            None if self.parsed is None else _parsed_rows(self.parsed, a, b))

    @classmethod
    def join(cls, parts: list[ArchiveLines]) -> ArchiveLines:
        """One set of lines from several (of one block or of several: then copied into one buffer)."""
        if len(parts) == 1:
            return parts[0]
        if all(p.buffer is parts[0].buffer for p in parts):
            base, shift = parts[0], [0] * len(parts)
            buffer, array = base.buffer, base.array
        else:
            pieces, shift, at = [], [], 0
            for p in parts:
                lo, hi = int(p.topic_start[0]), int(p.payload_end[-1]) + 1  # with the closing quote
                pieces.append(p.buffer[lo:hi])
                shift.append(at - lo)
                at += hi - lo
            raw = b"".join(pieces)
            buffer = padded(raw)
            array = np.frombuffer(buffer, dtype=np.uint8, count=len(raw))

        def cat(name: str, moved: bool = True) -> np.ndarray:
            return np.concatenate([getattr(p, name) + (s if moved else 0) for p, s in zip(parts, shift)])

        parsed = [p.parsed for p in parts if p.parsed is not None]
        return cls(buffer, array, cat("t", False), cat("topic_start"), cat("topic_end"), cat("payload_start"),
                   cat("payload_end"), cat("payload_chars", False),
                   cat("device", False) if all(p.device is not None for p in parts) else None,
                   _parsed_join(parsed) if len(parsed) == len(parts) else None)

    def topic(self, i: int) -> str:
        return self.buffer[self.topic_start[i] : self.topic_end[i]].decode("ascii")

    def payload(self, i: int) -> bytes:
        """Payload ``i`` unescaped: the bytes the record's payload string holds."""
        return self.buffer[self.payload_start[i] : self.payload_end[i]].replace(b'\\"', b'"')

    def records(self) -> list[Record]:
        """The lines as the per-line reader yields them."""
        return [(t, self.topic(i), self.payload(i).decode("ascii")) for i, t in enumerate(self.t.tolist())]

    def topic_rows(self, topics: TopicMap) -> np.ndarray:
        """Each line's registry row by its topic (-1: none), as ``topics.rows`` gives it."""
        if self.device is not None:
            return self.device
        return topics.rows_in(self.buffer, self.array, self.topic_start, self.topic_end)

    def parse_payloads(self) -> Parsed:
        """The payloads parsed in bulk (payloads.py), gathered into one buffer of bodies each
        followed by a NUL (the byte of its closing quote), still escaped."""
        if self.parsed is not None:
            return self.parsed
        if kernels.available():  # read where they lie: one pass per payload, no gather
            return parse_spans(self.buffer, self.array, self.payload_start, self.payload_end, escaped=True,
                               size=self.payload_chars)
        length = self.payload_end - self.payload_start + 1  # each body with its closing quote
        ends = np.cumsum(length) - 1
        total = int(ends[-1]) + 1 if len(ends) else 0
        buffer = np.zeros(total + PAD, dtype=np.uint8)
        buffer[:total] = self.array[_runs_mask(len(self.array), self.payload_start, length)]  # one gather
        buffer[ends] = 0  # each closing quote a NUL
        return parse_spans(buffer, buffer[:total], ends - length + 1, ends, escaped=True, size=self.payload_chars)


def _runs_mask(size: int, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """A mask of ``size`` bytes, true on each run ``[start[i], start[i] + length[i])`` (the runs in
    order, apart): built from the alternating run lengths, with no Python object per run."""
    if not len(start):
        return np.zeros(size, dtype=bool)
    gaps = np.diff(start, prepend=0) - np.concatenate([[0], length[:-1]])
    runs = np.empty(2 * len(start) + 1, dtype=np.int64)
    runs[0:-1:2], runs[1::2] = gaps, length
    runs[-1] = size - start[-1] - length[-1]
    return np.repeat(np.arange(len(runs)) % 2 == 1, runs)


def _parsed_rows(parsed: Parsed, a: int, b: int) -> Parsed:
    """The parse of rows ``a`` to ``b`` (renumbered from 0). Values are the same however the
    payloads are grouped into shapes: the decoder's columns do not depend on the grouping."""
    shapes = []
    for shape in parsed.shapes:
        lo, hi = np.searchsorted(shape.rows, (a, b)).tolist()  # a shape's rows ascend
        if hi > lo:
            shapes.append(Shape(shape.rows[lo:hi] - a, shape.keys, shape.values[lo:hi]))
    lo, hi = np.searchsorted(parsed.slow, (a, b)).tolist()
    return Parsed(shapes, parsed.slow[lo:hi] - a, parsed.size[a:b])


def _parsed_join(parts: list[Parsed]) -> Parsed:
    """One parse of several sets of rows, one after the other."""
    offsets = np.cumsum([0, *(len(p.size) for p in parts)]).tolist()
    shapes = [Shape(s.rows + at, s.keys, s.values) for p, at in zip(parts, offsets) for s in p.shapes]
    return Parsed(shapes, np.concatenate([p.slow + at for p, at in zip(parts, offsets)]),
                  np.concatenate([p.size for p in parts]))


@dataclass(eq=False)
class Block:
    """A block's complete lines: where each lies, which are plain, and the plain ones' columns."""

    buffer: bytes  # the block's bytes, padded (the lines' buffer too)
    starts: np.ndarray
    ends: np.ndarray  # exclusive, the newline not included
    plain: np.ndarray  # bool per line
    lines: ArchiveLines  # the plain lines, in order

    def without_buffer(self) -> Block:
        """This block without its bytes, to send to the process that has them (:meth:`with_buffer`)."""
        empty = np.zeros(0, dtype=np.uint8)
        return replace(self, buffer=b"", lines=replace(self.lines, buffer=b"", array=empty))

    def with_buffer(self, data: bytes) -> Block:
        """This block with its bytes again: ``data``, the very bytes it was scanned from."""
        buffer = padded(data)
        array = np.frombuffer(buffer, dtype=np.uint8, count=len(data))
        return replace(self, buffer=buffer, lines=replace(self.lines, buffer=buffer, array=array))


def scan(data: bytes) -> Block:
    """Split ``data`` (whole lines; the last may lack its newline) and take its plain lines."""
    buffer = padded(data)
    array = np.frombuffer(buffer, dtype=np.uint8, count=len(data))
    if not kernels.available():
        return scan_numpy(buffer, array)
    starts, ends, plain, t, topic_start, topic_end, payload_start, payload_end, chars = kernels.scan(array, END_SERVED_S)
    lines = ArchiveLines(buffer, array, t, topic_start, topic_end, payload_start, payload_end, chars)
    return Block(buffer, starts, ends, plain, lines)


def scan_numpy(buffer: bytes, array: np.ndarray) -> Block:
    """:func:`scan` in numpy passes over the block (the compiled scanner's reference)."""
    newline = np.flatnonzero(array == NEWLINE)
    ends = newline if len(array) and array[-1] == NEWLINE else np.append(newline, len(array))
    starts = np.concatenate([[0], newline + 1])[: len(ends)]
    plain = ends - starts >= len(b'{"t":0,"topic":"","payload":""}')
    # printable ASCII only: below 0x20 or from 0x7F, a byte minus 0x20 wraps to 0x5F or more (one pass)
    outside = (array - np.uint8(0x20)) >= np.uint8(0x7F - 0x20)
    if np.count_nonzero(outside) > len(newline):  # more than the newlines
        unprintable = outside
        unprintable[newline] = False
        _owners_off(plain, starts, np.flatnonzero(unprintable))
    backslash = np.flatnonzero(array == BACKSLASH)
    after = np.frombuffer(buffer, dtype=np.uint8)[backslash + 1]  # the pad follows a block cut after a backslash
    _owners_off(plain, starts, backslash[after != QUOTE])  # only \"
    unescaped = array == QUOTE
    unescaped[1:] &= array[:-1] != BACKSLASH  # (a \\ never got this far)
    quotes = np.flatnonzero(unescaped)
    first = np.searchsorted(quotes, starts)
    plain &= np.searchsorted(quotes, ends) - first == QUOTES_PER_LINE
    rows = np.flatnonzero(plain)
    q = quotes[first[rows][:, None] + np.arange(QUOTES_PER_LINE)]
    s, e = starts[rows], ends[rows]
    w = words(buffer)
    ok = (q[:, 0] == s + 1) & (q[:, 1] == s + 3) & _literal(w, s, _HEAD)
    ok &= (q[:, 3] == q[:, 2] + 6) & (q[:, 4] == q[:, 2] + 8) & _literal(w, q[:, 2] - 1, _TOPIC_KEY)
    ok &= (q[:, 6] == q[:, 5] + 2) & (q[:, 7] == q[:, 5] + 10) & (q[:, 8] == q[:, 5] + 12)
    ok &= _literal(w, q[:, 5], _PAYLOAD_KEY) & (q[:, 9] == e - 2) & (array[e - 1] == ord("}"))
    ok &= array[q[:, 4] + 1] != DOLLAR  # $ptmon/ records: the reader's per-line path
    topic_start, topic_end, payload_start, payload_end = q[:, 4] + 1, q[:, 5], q[:, 8] + 1, q[:, 9]
    # every escape lies in the payload (none in the topic)
    in_line = np.searchsorted(backslash, e) - np.searchsorted(backslash, s)
    in_payload = np.searchsorted(backslash, payload_end) - np.searchsorted(backslash, payload_start)
    ok &= in_line == in_payload
    t, exact = _numbers(array, s + len(_HEAD), q[:, 2] - 1)
    ok &= exact & (t < END_SERVED_S)  # (never negative: no sign)
    plain[rows[~ok]] = False
    lines = ArchiveLines(buffer, array, t[ok], topic_start[ok], topic_end[ok], payload_start[ok], payload_end[ok],
                         (payload_end - payload_start - in_payload)[ok])
    return Block(buffer, starts, ends, plain, lines)


def _owners_off(plain: np.ndarray, starts: np.ndarray, at: np.ndarray) -> None:
    """The lines holding the bytes at ``at`` are not plain."""
    if len(at):
        plain[np.searchsorted(starts, at, side="right") - 1] = False


def _literal(w: np.ndarray, at: np.ndarray, literal: bytes) -> np.ndarray:
    """Whether ``literal`` lies at each of ``at``, compared a word (:func:`~ptmon.ids.words`) at a
    time. None of a literal's bytes is zero, so one running past the data into the pad does not
    match (nor does a word read past the pad: the pad's last word, all zero, is read instead)."""
    same = np.ones(len(at), dtype=bool)
    for k in range(0, len(literal), 8):
        part = literal[k : k + 8]
        word = w[np.minimum(at + k, len(w) - 1)] & MASKS[len(part)]
        same &= word == np.uint64(int.from_bytes(part, "little"))
    return same


def _numbers(array: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float value, exact) of each JSON number at ``array[start:end]``; exact: a plain decimal
    read here exactly as orjson reads it (see the module doc). Column by column: the digits read
    as one integer (Horner), the point's place, the digits after it."""
    n = len(start)
    length = end - start
    fits = (length >= 1) & (length <= MAX_NUMBER)
    if not n:  # (nor is there a window of a block shorter than a number)
        return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=bool)
    chars = sliding_window_view(array, MAX_NUMBER)[np.maximum(start, 0)]  # the line's own bytes (a plain line is longer)
    mantissa = np.zeros(n, dtype=np.int64)
    points = np.zeros(n, dtype=np.int8)
    fraction = np.zeros(n, dtype=np.int64)  # digits after the point
    for column in range(int(np.clip(length, 0, MAX_NUMBER).max(initial=0))):
        inside = column < length
        value = chars[:, column] - np.uint8(ord("0"))  # wraps below "0": not a digit
        digit = inside & (value <= 9)
        point = inside & (chars[:, column] == ord("."))
        fits &= digit | point | ~inside
        if column == 0:
            fits &= ~point  # no point first
        fits &= ~(point & (column == length - 1))  # nor last
        mantissa = np.where(digit, mantissa * 10 + value, mantissa)
        fraction += digit & (points > 0)
        points += point
    fits &= points <= 1
    fits &= ~((chars[:, 0] == ord("0")) & (length > 1) & (chars[:, 1] != ord(".")))  # no leading zeros
    fits &= mantissa <= _EXACT_LIMIT
    return mantissa.astype(np.float64) / _POW10_FLOAT[np.minimum(fraction, MAX_NUMBER)], fits
