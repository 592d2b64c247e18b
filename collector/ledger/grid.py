"""The sample instants of a contract over a span of time, by index: what the ledger's readers
(exemptions applied at read time, late heartbeats credited at month close) count samples on,
exactly as the engine samples (instants aligned to Shanghai midnight)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..timebase import UTC_OFFSET_US


class SampleGrid:
    """A contract's sample instants in ``[start, end)`` (aligned to Shanghai midnight), by index."""

    def __init__(self, start: int, end: int, interval: int) -> None:
        self.first = start + (-(start + UTC_OFFSET_US)) % interval
        self.interval = interval
        self.k = max(0, -(-(end - self.first) // interval))
        self.instants = self.first + np.arange(self.k, dtype=np.int64) * interval

    def index(self, t: int) -> int:
        """Index of the first instant at or after ``t``, within [0, k]."""
        return min(self.k, max(0, -(-(t - self.first) // self.interval)))

    def observed(self, spans: Iterable[Sequence[int]]) -> np.ndarray:
        """Instants the monitor sampled: those inside a span of observation, its ends included."""
        out = np.zeros(self.k, dtype=bool)
        for a, b in spans:
            out[self.index(a):self.index(b + 1)] = True
        return out

    def outside(self, gaps: Iterable[Sequence[int]]) -> np.ndarray:
        """Instants outside every gap ``[from, to)``: those the monitor observed, seen from its gaps."""
        out = np.ones(self.k, dtype=bool)
        for a, b in gaps:
            out[self.index(a):self.index(b)] = False
        return out

    def online_ranges(self, changes: Sequence[tuple[int, bool]]) -> list[tuple[int, int]]:
        """Index ranges where a device's status was online, from its changes (at sample instants)."""
        ranges, since = [], None
        for t, online in changes:
            if online and since is None:
                since = self.index(t)
            elif not online and since is not None:
                ranges.append((since, self.index(t)))
                since = None
        if since is not None:
            ranges.append((since, self.k))
        return [(a, b) for a, b in ranges if a < b]
