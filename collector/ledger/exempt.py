"""Exemptions applied when the ledger is read, exactly as a replay applies them.

An exemption takes the devices it covers out of the denominator at every sample instant of
its window (``start ≤ t < end``); a revoked exemption covers nothing, as if never granted.
The live collector learns of an exemption when it is recorded, often after its window has
begun, so its samples cannot carry it. The ledger therefore keeps each hour's sums without
exemptions (devices under lease, and those of them online) and each device's online status at
every sample where it changed; reading the ledger subtracts, per hour and street, the
exempted devices' observed samples under lease (Σ expected) and those of them where the
device was online (Σ online). With the exemptions of the moment, the result equals a replay of
the archive that applies the same exemptions from the start (tests/test_one_truth.py).

Observed samples are the contract's grid instants inside the monitor's spans; a device's
status at such a sample is the one its last change at or before it set (offline when none).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from ..errors import LedgerError
from ..exemptions import ExemptionMask
from ..registry import Registry
from ..timebase import US_PER_S, UTC_OFFSET_US, day_start, format_instant
from .grid import SampleGrid
from .records import Exemption, HourRow
from .store import Ledger

HOUR_US = 3600 * US_PER_S
Ranges = list[tuple[int, int]]


def exempted_hours(ledger: Ledger, registry: Registry, start: int, end: int,
                   exemptions: Sequence[Exemption] | None = None) -> list[HourRow]:
    """The ledger's hours of ``[start, end)`` with the active exemptions applied (the ledger's own
    when ``exemptions`` is None)."""
    rows = ledger.hours(start, end)
    found = ledger.exemptions(start=start, end=end) if exemptions is None else exemptions
    active = [e for e in found if e.active and e.start < end and start < e.end]
    if not active or not rows:
        return rows
    since = ledger.status_since()
    early = [e for e in active if max(e.start, start) < since]  # the part read only: an old window's start is no matter
    if early:
        raise LedgerError(f"{ledger.path}: exemption {early[0].id} covers time before this ledger kept device status "
                          f"({format_instant(since)}, when it was upgraded from an older ptmon): recompute the month "
                          "from the archive with `ptmon ledger rebuild --month YYYY-MM`")
    minus = _corrections(ledger, registry, active, start, end)
    applied = _applied_ids(active)
    out = []
    for row in rows:
        online, expected = minus.get((row.hour, row.contract, row.street), (0, 0))
        ids = applied(row.hour, row.hour + HOUR_US)
        out.append(replace(row, online=row.online - online, expected=row.expected - expected, exemptions=ids)
                   if online or expected or ids else row)
    return out


def _applied_ids(exemptions: list[Exemption]) -> Callable[[int, int], str]:
    def ids(a: int, b: int) -> str:
        return ",".join(str(e.id) for e in exemptions if e.start < b and a < e.end)
    return ids


def _corrections(ledger: Ledger, registry: Registry, exemptions: list[Exemption], start: int,
                 end: int) -> dict[tuple[int, str, str], tuple[int, int]]:
    """(hour, contract, street) → (Σ online, Σ expected) the exemptions take out."""
    windows: dict[int, Ranges] = defaultdict(list)  # registry row → exemption windows (µs)
    mask = ExemptionMask(registry)
    for e in exemptions:
        for row in mask.rows_of(e).tolist():
            windows[row].append((e.start, e.end))
    rules = registry.rules
    streets = rules.street_codes()
    tick = np.gcd.reduce([c.sample_interval * US_PER_S for c in rules.contracts])
    bucket = HOUR_US if HOUR_US % tick == 0 else int(tick)
    spans = ledger.spans()
    history = ledger.status_history([registry.ids[i] for i in sorted(windows)], start, end)
    out: dict[tuple[int, str, str], tuple[int, int]] = {}
    for ci, contract in enumerate(rules.contracts):
        grid = SampleGrid(start, end, contract.sample_interval * US_PER_S)
        expected = np.zeros((len(streets), grid.k + 1), dtype=np.int64)
        online = np.zeros((len(streets), grid.k + 1), dtype=np.int64)
        for row, ranges in windows.items():
            if registry.contract[row] != ci:
                continue
            lease = (grid.index(day_start(int(registry.accepted_day[row]))),
                     grid.index(day_start(int(registry.retired_day[row]))))
            covered = _intersect(_union([(grid.index(a), grid.index(b)) for a, b in ranges]), [lease])
            street = int(registry.street[row])
            _add(expected[street], covered)
            _add(online[street], _intersect(covered, grid.online_ranges(history.get(registry.ids[row], []))))
        observed = grid.observed(spans)
        hours = grid.instants - (grid.instants + UTC_OFFSET_US) % bucket
        for si, street_code in enumerate(streets):
            per_sample_expected = np.cumsum(expected[si])[: grid.k] * observed
            per_sample_online = np.cumsum(online[si])[: grid.k] * observed
            for hour in np.unique(hours[per_sample_expected > 0]).tolist():
                in_hour = hours == hour
                out[hour, contract.code, street_code] = (int(per_sample_online[in_hour].sum()),
                                                    int(per_sample_expected[in_hour].sum()))
    return out


def _union(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for a, b in sorted(r for r in ranges if r[0] < r[1]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _intersect(left: Ranges, right: Ranges) -> Ranges:
    out = []
    for a, b in left:
        for c, d in right:
            lo, hi = max(a, c), min(b, d)
            if lo < hi:
                out.append((lo, hi))
    return out


def _add(diff: np.ndarray, ranges: Ranges) -> None:
    for a, b in ranges:
        diff[a] += 1
        diff[b] -= 1
