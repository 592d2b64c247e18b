"""The ledger's observed spans: how they are combined, and whether the hours agree with them.

A span ``[start, end]`` (µs, both ends included) is time the monitor observed. An hour row's
``samples`` are the contract's sample instants in that hour the engine took, and the engine
takes a sample only at an instant it observed: so in a ledger written by one collector, every
hour's samples are exactly the contract's grid instants of the hour inside the spans. Readers
rely on that (exemptions are applied at the observed instants only; a merged ledger reads the
district's observed time from its spans), and :func:`sampled_outside_spans` checks it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..rules import Rules
from ..timebase import US_PER_S, UTC_OFFSET_US, format_instant
from .grid import SampleGrid
from .records import HourRow

HOUR_US = 3600 * US_PER_S

Span = tuple[int, int]


def union(spans: Iterable[Sequence[int]]) -> list[Span]:
    """The spans sorted, overlapping or adjoining ones (no instant between them) joined."""
    out: list[Span] = []
    for a, b in sorted((int(a), int(b)) for a, b in spans):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def splice(outside: Iterable[Sequence[int]], inside: Iterable[Sequence[int]], start: int, end: int) -> list[Span]:
    """``outside``'s observed time before ``start`` and from ``end`` on, with ``inside``'s in
    ``[start, end)``: a month's spans replaced without touching the months around it."""
    pieces = [(a, min(b, start - 1)) for a, b in outside if a < start]
    pieces += [(a, b) for a, b in ((max(a, start), min(b, end - 1)) for a, b in inside) if a <= b]
    pieces += [(max(a, end), b) for a, b in outside if b >= end]
    return union(pieces)


def sampled_outside_spans(hours: Sequence[HourRow], spans: Sequence[Sequence[int]], rules: Rules,
                          start: int, end: int) -> list[str]:
    """Each contract's hours of ``[start, end)`` that sampled more instants than the contract has
    inside ``spans`` in that hour, in words (empty when there are none): samples taken at time the
    spans do not hold as observed, which exemptions and a merge would then not see."""
    tick = int(np.gcd.reduce([c.sample_interval * US_PER_S for c in rules.contracts]))
    bucket = HOUR_US if HOUR_US % tick == 0 else tick
    sampled: dict[tuple[str, int], int] = {}
    for row in hours:
        sampled[row.contract, row.hour] = max(sampled.get((row.contract, row.hour), 0), row.samples)
    out = []
    for ci, contract in enumerate(rules.contracts):
        grid = SampleGrid(start, end, contract.sample_interval * US_PER_S)
        seen = grid.instants[grid.observed(spans)]
        buckets, counts = np.unique(seen - (seen + UTC_OFFSET_US) % bucket, return_counts=True)
        observed = dict(zip(buckets.tolist(), counts.tolist()))
        out += [(hour, ci, f"hour {format_instant(hour)} {code}: {n} samples, only {observed.get(hour, 0)} sample "
                           "instants inside the observed spans")
                for (code, hour), n in sampled.items() if code == contract.code and n > observed.get(hour, 0)]
    return [line for _, _, line in sorted(out)]
