"""The ledger's observed spans and how they are combined.

A span ``[start, end]`` (µs, both ends included) is time the monitor observed. An hour row's
``samples`` are the contract's sample instants in that hour the engine took, and the engine
takes a sample only at an instant it observed: so in a ledger written by one collector, every
hour's samples are exactly the contract's grid instants of the hour inside the spans. Readers
rely on that (exemptions are applied at the observed instants only; a merged ledger reads the
district's observed time from its spans).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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
