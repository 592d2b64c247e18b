"""Compact tables of millions of device ids: one UTF-8 blob, offsets, and a hash-sorted index.

At two million devices a ``list[str]`` of ids costs ~150 MB and a ``dict`` id → row another
~120 MB (Python objects of ~75 bytes each, a hash table of ~60 bytes a key). Here an id costs
its UTF-8 bytes plus 4 bytes of offset (:class:`DeviceIds`) and 12 bytes of index
(:class:`IdIndex`: a 64-bit hash and a 32-bit row, sorted by hash). Every lookup is verified
against the id's own bytes, so a hash collision can cost time but never give a wrong row.

Hashes are computed over little-endian 64-bit words read at any byte offset of a padded buffer
(:func:`words`), vectorised over many spans at once (:func:`span_hashes`, for batches of topics
and for building the index) and in plain Python for one key (:func:`key_hash`); both give the
same value, which tests check.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np

PAD = 8  # zero bytes after a buffer's data, so a word can be read at every data offset
_M64 = (1 << 64) - 1
_SEED = 0x9E3779B97F4A7C15
_MULT = 0xD6E8FEB86659FD93
_F1, _F2 = 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53
# MASKS[v]: the low v bytes of a word (v = 0..8)
MASKS = np.array([(1 << (8 * v)) - 1 for v in range(8)] + [_M64], dtype=np.uint64)
_ITER_CHUNK = 1 << 16
INT32_OFFSETS_BELOW = 2**31 - 1024  # offsets and offsets + 8·words of any span stay in int32


def words(buffer: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """The little-endian uint64 word starting at each byte of ``buffer`` (which ends with ``PAD``
    zero bytes, so a word read at any data offset stays inside it): an overlapping view, no copy."""
    size = len(buffer) - PAD + 1
    if size <= 0:
        return np.zeros(0, dtype="<u8")
    return np.ndarray(shape=(size,), dtype="<u8", buffer=buffer, strides=(1,))


def padded(data: bytes) -> bytes:
    return data + b"\0" * PAD


def _fmix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: every input bit affects every output bit."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(_F1)
    h ^= h >> np.uint64(33)
    h *= np.uint64(_F2)
    h ^= h >> np.uint64(33)
    return h


def _fmix_int(h: int) -> int:
    h ^= h >> 33
    h = (h * _F1) & _M64
    h ^= h >> 33
    h = (h * _F2) & _M64
    return h ^ (h >> 33)


def span_hashes(w: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """64-bit hashes of the byte spans ``[starts, starts + lengths)`` of the buffer viewed by ``w``
    (:func:`words`): equal to :func:`key_hash` of each span's bytes."""
    h = lengths.astype(np.uint64) * np.uint64(_SEED)
    if not len(starts):
        return h
    n_words = (lengths + 7) // 8
    for k in range(int(n_words.max())):
        active = n_words > k
        valid = np.clip(lengths - 8 * k, 0, 8)
        word = w[np.where(active, starts + 8 * k, 0)] & MASKS[valid]
        mixed = _fmix(h * np.uint64(_MULT) + word)
        h = np.where(active, mixed, h)
    return h


def key_hash(key: bytes) -> int:
    """The hash :func:`span_hashes` gives the span holding ``key``'s bytes."""
    h = (len(key) * _SEED) & _M64
    for k in range(0, len(key), 8):
        h = _fmix_int((h * _MULT + int.from_bytes(key[k:k + 8], "little")) & _M64)
    return h


def spans_equal(w_a: np.ndarray, starts_a: np.ndarray, w_b: np.ndarray, starts_b: np.ndarray,
                lengths: np.ndarray) -> np.ndarray:
    """Whether span ``i`` of buffer a equals span ``i`` of buffer b, both ``lengths[i]`` bytes long."""
    equal = np.ones(len(lengths), dtype=bool)
    if not len(lengths):
        return equal
    n_words = (lengths + 7) // 8
    every = int(n_words.min())
    for k in range(every):  # words every span has: no selection of the spans still going
        mask = MASKS[np.minimum(lengths - 8 * k, 8)]
        equal &= (w_a[starts_a + 8 * k] & mask) == (w_b[starts_b + 8 * k] & mask)
    for k in range(every, int(n_words.max())):
        active = np.flatnonzero(n_words > k)
        mask = MASKS[np.minimum(lengths[active] - 8 * k, 8)]
        same = (w_a[starts_a[active] + 8 * k] & mask) == (w_b[starts_b[active] + 8 * k] & mask)
        equal[active[~same]] = False
    return equal


def span_bytes(w: np.ndarray, start: int, length: int) -> bytes:
    """The bytes of one span of the buffer viewed by ``w``."""
    return b"".join(int(w[start + k]).to_bytes(8, "little") for k in range(0, length, 8))[:length]


class DeviceIds(Sequence[str]):
    """Registry ids in registry order: ``ids[i]``, ``len``, iteration, as a list of str would.

    ``blob`` holds every id's UTF-8 bytes followed by ``\\n`` (an id cannot hold a control
    character), then ``PAD`` zero bytes; id ``i`` is ``blob[offsets[i] : offsets[i + 1] - 1]``.
    """

    __slots__ = ("blob", "offsets", "words")

    def __init__(self, blob: bytes, offsets: np.ndarray) -> None:
        self.blob = blob
        # int32 below 2 GiB of ids (80 million of the district's), 8 MB less at two million
        self.offsets = offsets.astype(np.int32 if len(blob) < INT32_OFFSETS_BELOW else np.int64)
        self.words = words(blob)

    @classmethod
    def from_strings(cls, ids: Iterable[str]) -> DeviceIds:
        parts, lengths = [], []
        for chunk in _chunks(ids, _ITER_CHUNK):
            encoded = [x.encode("utf-8", "surrogatepass") for x in chunk]
            parts.append(b"\n".join(encoded) + b"\n")
            lengths.append(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)) + 1)
        return cls.from_parts(parts, lengths)

    @classmethod
    def from_parts(cls, parts: list[bytes], lengths: list[np.ndarray]) -> DeviceIds:
        """From pieces of blob (ids each ending in ``\\n``) and each id's length with its ``\\n``."""
        size = np.concatenate([np.zeros(1, np.int64), *lengths])
        return cls(padded(b"".join(parts)), np.cumsum(size))

    @classmethod
    def from_joined(cls, joined: bytes) -> DeviceIds:
        """From ids joined by ``\\n`` (a checkpoint's ``device_ids``)."""
        if not joined:
            return cls(padded(b""), np.zeros(1, np.int64))
        array = np.frombuffer(joined, dtype=np.uint8)
        ends = np.flatnonzero(array == 10)
        offsets = np.concatenate([[0], ends + 1, [len(joined) + 1]]).astype(np.int64)
        return cls(padded(joined + b"\n"), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = operator.index(i)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("device id index out of range")
        return self.blob[int(self.offsets[i]):int(self.offsets[i + 1]) - 1].decode("utf-8", "surrogatepass")

    def raw(self, i: int) -> bytes:
        return self.blob[int(self.offsets[i]):int(self.offsets[i + 1]) - 1]

    def __iter__(self) -> Iterator[str]:
        n = len(self)
        for a in range(0, n, _ITER_CHUNK):
            b = min(a + _ITER_CHUNK, n)
            yield from self.blob[int(self.offsets[a]):int(self.offsets[b]) - 1].decode("utf-8", "surrogatepass").split("\n")

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and value.encode("utf-8", "surrogatepass") + b"\n" in self.blob

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DeviceIds):
            return self.joined() == other.joined()
        if isinstance(other, (list, tuple)):
            return len(self) == len(other) and all(map(operator.eq, self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # unhashable like the list it compares equal to; typeshed types __hash__ as a method

    def __repr__(self) -> str:
        return f"DeviceIds({len(self)} ids)"

    @property
    def starts(self) -> np.ndarray:
        return self.offsets[:-1]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets) - 1

    def joined(self) -> bytes:
        """The ids joined by ``\\n`` (no final one)."""
        return self.blob[:max(int(self.offsets[-1]) - 1, 0)]

    def nbytes(self) -> int:
        return len(self.blob) + self.offsets.nbytes

    def has_duplicates(self) -> bool:
        """Whether an id occurs twice (hashes sorted, equal neighbours confirmed on the bytes)."""
        hashes = np.concatenate([np.zeros(0, np.uint64)] + [
            span_hashes(self.words, self.starts[a:a + _ITER_CHUNK], self.lengths[a:a + _ITER_CHUNK])
            for a in range(0, len(self), _ITER_CHUNK)])
        order = np.argsort(hashes, kind="stable")
        same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
        rows = np.unique(np.concatenate([order[same], order[same + 1]])).tolist()
        return len({self.raw(row) for row in rows}) < len(rows)

    def take(self, rows: np.ndarray) -> DeviceIds:
        """The ids at ``rows``, in that order (gathered in chunks to bound the index arrays)."""
        source = np.frombuffer(self.blob, dtype=np.uint8)
        parts, lengths = [], []
        for a in range(0, len(rows), 1 << 18):
            chunk = rows[a:a + (1 << 18)]
            size = self.offsets[chunk + 1] - self.offsets[chunk]
            first = np.cumsum(size) - size
            at = np.repeat(self.offsets[chunk] - first, size) + np.arange(int(size.sum()))
            parts.append(source[at].tobytes())
            lengths.append(size)
        return DeviceIds.from_parts(parts, lengths)


class IdIndex(Mapping[str, int]):
    """Id → registry row, as a read-only dict would answer (``get``, ``in``, ``[]``).

    Sorted 64-bit hashes of the ids with their rows; a match is confirmed on the id's bytes.
    """

    __slots__ = ("_hashes", "_rows", "_shared", "ids")

    def __init__(self, ids: DeviceIds) -> None:
        self.ids = ids
        starts, lengths = ids.starts, ids.lengths
        hashes = np.concatenate([np.zeros(0, np.uint64)] + [
            span_hashes(ids.words, starts[a:a + _ITER_CHUNK], lengths[a:a + _ITER_CHUNK])
            for a in range(0, len(ids), _ITER_CHUNK)])
        order = np.argsort(hashes, kind="stable")
        self._hashes = hashes[order]
        self._rows = order.astype(np.int32 if len(ids) < 2**31 else np.int64)
        # ids whose hash another id shares: looked up by a scan of the equal run (never in practice)
        same = self._hashes[1:] == self._hashes[:-1]
        self._shared = frozenset(self._hashes[1:][same].tolist())

    @staticmethod
    def hashes_of(ids: DeviceIds, rows: np.ndarray) -> np.ndarray:
        """The hashes of the ids at ``rows``."""
        return span_hashes(ids.words, ids.offsets[rows], ids.offsets[rows + 1] - ids.offsets[rows] - 1)

    def get(self, key: object, default: Any = None) -> Any:
        if not isinstance(key, str):
            return default
        raw = key.encode("utf-8", "surrogatepass")
        h = np.uint64(key_hash(raw))
        k = int(np.searchsorted(self._hashes, h))
        while k < len(self._hashes) and self._hashes[k] == h:
            row = int(self._rows[k])
            if self.ids.raw(row) == raw:
                return row
            k += 1
        return default

    def __getitem__(self, key: str) -> int:
        row = self.get(key)
        if row is None:
            raise KeyError(key)
        return int(row)

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def nbytes(self) -> int:
        return self._hashes.nbytes + self._rows.nbytes

    def lookup(self, w: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Rows of the ids in spans of another buffer (viewed by ``w``), -1 where none."""
        rows = np.full(len(starts), -1, dtype=np.int64)
        if not len(starts) or not len(self._hashes):
            return rows
        h = span_hashes(w, starts, lengths)
        order = np.argsort(h)  # searched in hash order, the table is walked once (~2x faster than at random)
        k = np.empty(len(h), dtype=np.int64)
        k[order] = np.minimum(np.searchsorted(self._hashes, h[order]), len(self._hashes) - 1)
        candidate = self._rows[k].astype(np.int64)
        hit = np.flatnonzero((self._hashes[k] == h) & (self.ids.lengths[candidate] == lengths))
        same = spans_equal(w, starts[hit], self.ids.words, self.ids.offsets[candidate[hit]], lengths[hit])
        rows[hit[same]] = candidate[hit[same]]
        if self._shared:
            for i in np.flatnonzero((rows < 0) & np.isin(h, list(self._shared))).tolist():
                found = self.get(span_bytes(w, int(starts[i]), int(lengths[i])).decode("utf-8", "surrogatepass"))
                rows[i] = -1 if found is None else found
        return rows


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
