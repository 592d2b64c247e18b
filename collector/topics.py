"""The decoder's topic lookup: heartbeat topic → registry row, for a batch at a time.

A registry device's heartbeat topic is ``putuo/{contract}/{street}/{device_id}/hb``. Keeping
every such topic as a ``str`` key of a ``dict`` costs ~150 bytes a device (293 MB at two million
devices); here a batch's topics are joined into one buffer, split at ``/`` with numpy, the id
part looked up in the registry's own id index (:class:`~ptmon.ids.IdIndex`, verified on the id's
bytes) and the rest compared with the device's own ``putuo/{contract}/{street}/`` prefix and the
``/hb`` suffix. A row is returned only when the whole topic equals the device's topic byte for
byte, so an unknown topic is never taken for a device, whatever its hash.
"""

from __future__ import annotations

import numpy as np

from .ids import padded, spans_equal, words
from .registry import Registry

SLASH, NUL = 0x2F, 0


class TopicMap:
    """``rows(topics)``: each topic's registry row, -1 when it is no registry device's heartbeat topic."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        contracts = [c.code for c in registry.rules.contracts]
        streets = registry.rules.street_codes()
        prefixes = [f"putuo/{c}/{s}/".encode() for c in contracts for s in streets]
        self._prefix_blob = padded(b"".join(prefixes))
        self._prefix_words = words(self._prefix_blob)
        self._prefix_length = np.array([len(p) for p in prefixes], dtype=np.int64)
        self._prefix_start = np.cumsum(self._prefix_length) - self._prefix_length
        self._codes = (contracts, streets)

    def nbytes(self) -> int:
        return len(self._prefix_blob)

    def _group(self, rows: np.ndarray) -> np.ndarray:
        """The devices' contract × street groups, from the registry's own arrays (no copy per device)."""
        return self.registry.contract[rows].astype(np.int32) * self.registry.n_streets + self.registry.street[rows]

    def row(self, topic: str) -> int | None:
        """One topic's registry row (None: no registry device's heartbeat topic)."""
        parts = topic.split("/")
        if len(parts) != 5 or parts[0] != "putuo" or parts[4] != "hb":
            return None
        row = self.registry.index.get(parts[3])
        if row is None:
            return None
        contracts, streets = self._codes
        if contracts[self.registry.contract[row]] != parts[1] or streets[self.registry.street[row]] != parts[2]:
            return None
        return int(row)

    def rows(self, topics: list[str]) -> np.ndarray:
        """Every topic's registry row, -1 where none."""
        raw = "\0".join(topics).encode("utf-8", "surrogatepass")
        buffer = padded(raw)
        array = np.frombuffer(buffer, dtype=np.uint8, count=len(raw))
        ends = np.flatnonzero(array == NUL)
        if len(ends) != len(topics) - 1:  # a topic holding NUL (MQTT forbids it): one by one
            return np.array([-1 if (r := self.row(t)) is None else r for t in topics], dtype=np.int64)
        starts = np.concatenate([[0], ends + 1])
        ends = np.append(ends, len(raw))
        return self.rows_in(buffer, array, starts, ends)

    def rows_in(self, buffer: bytes, array: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Rows of the topics at ``array[starts[i]:ends[i]]`` (``array`` views ``buffer``, padded)."""
        rows = np.full(len(starts), -1, dtype=np.int64)
        if not len(starts):
            return rows
        lo = int(starts.min())  # only the topics' part of the buffer (an archive block holds more)
        slashes = np.flatnonzero(array[lo : int(ends.max())] == SLASH) + lo
        first = np.searchsorted(slashes, starts)
        shaped = np.flatnonzero((np.searchsorted(slashes, ends) - first == 4) & (ends - starts >= 3))
        if not len(shaped):
            return rows
        w = words(buffer)
        begin, end, first = starts[shaped], ends[shaped], first[shaped]
        id_start, id_end = slashes[first + 2] + 1, slashes[first + 3]
        # "/hb" ends the topic: the fourth slash is 3 bytes before its end, then h, b
        suffix = (id_end == end - 3) & (array[end - 2] == ord("h")) & (array[end - 1] == ord("b"))
        device = self.registry.index.lookup(w, id_start, id_end - id_start)
        found = np.flatnonzero(suffix & (device >= 0))
        group = self._group(device[found])
        at_prefix = id_start[found] - begin[found] == self._prefix_length[group]
        prefixed, group = found[at_prefix], group[at_prefix]
        same = spans_equal(w, begin[prefixed], self._prefix_words, self._prefix_start[group], self._prefix_length[group])
        rows[shaped[prefixed[same]]] = device[prefixed[same]]
        return rows
