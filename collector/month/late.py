"""Late heartbeats (迟到心跳): received after the month's end, stamped (``ts``) inside it.

A gateway whose uplink failed may buffer its devices' heartbeats and flush them when the link
returns; after a month's end those land in the next month's archive files. Receive time
decides the KPIs (rules/README.md), so by default they count in the month they were received
and the month they describe is unchanged. They are always found and shown (`ptmon month status`,
the closing, the restatement); a contract may let them count for the month they describe
(contracts.yaml ``late_heartbeats.count: true``) within two limits:

* ``max_delay``: received at most this long after its ``ts`` (a gateway's buffer depth), so a
  late heartbeat can only ever change the last ``max_delay`` of a month; and
* ``received_within``: received at most this long after the month's end.

A counted late heartbeat stamped ``s`` makes its device online at every observed sample instant
``t`` of the month with ``s ≤ t < s + online_timeout`` where the device was expected (under
lease, not exempted) and offline by receive time: Σ online rises, Σ expected does not change.
Its counter deltas stay in the month it was received (cumulative counters: nothing is lost or
counted twice), and so do the maintenance record's episodes.

This lives outside the engine: the month's figures come from the ledger (or a recomputation
from the archive) as always, and the credit is added when a month is closed or restated, from
the archive files after the month and the ledger's device status changes. The live collector,
replay and every recomputation therefore keep agreeing on the receive-time figures.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..archive import CONTROL_PREFIX, ArchiveReader, Record
from ..decode import LIMITS_TOPIC, Decoder
from ..exemptions import ExemptionMask
from ..ledger.grid import SampleGrid
from ..ledger.records import Exemption
from ..ledger.store import Ledger
from ..registry import Registry
from ..rules import Contract
from ..sinks.archive import archive_files
from ..timebase import DAY_US, US_PER_S, UTC_OFFSET_US, day_of, day_start, day_to_date, month_bounds
from .words import when

BATCH = 16_384


@dataclass(frozen=True, order=True)
class LateHeartbeat:
    received: int  # µs, receive time (after the month's end)
    device: str
    stamped: int  # µs, the device's ts (inside the month)

    def to_doc(self) -> list[object]:
        return [self.device, self.received, self.stamped]

    @staticmethod
    def from_doc(d: Sequence[Any]) -> LateHeartbeat:
        return LateHeartbeat(device=str(d[0]), received=int(d[1]), stamped=int(d[2]))


@dataclass
class LateScan:
    """Late heartbeats of a month found in the archive files after it, up to ``until``."""

    heartbeats: list[LateHeartbeat]
    until: int  # µs: records received before this were read
    files: int = 0
    records: int = 0


@dataclass
class LateCredit:
    """Online samples a contract's counted late heartbeats add, per (street, day)."""

    samples: dict[tuple[str, int], int] = field(default_factory=dict)
    heartbeats: int = 0  # counted late heartbeats of the contract
    devices: int = 0

    def by_street(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for (street, _), n in self.samples.items():
            out[street] += n
        return dict(out)

    @property
    def total(self) -> int:
        return sum(self.samples.values())


def scan_late(archive_dirs: Sequence[Path], registry: Registry, month: str, until: int) -> LateScan:
    """Valid heartbeats of registry devices received in ``[month end, until)`` whose ``ts`` lies
    inside the month, decoded as the collector decodes them (rejects are no heartbeats)."""
    start, end = month_bounds(month)
    first, last = day_to_date(day_of(end)).isoformat(), day_to_date(day_of(max(end, until) - 1)).isoformat()
    files = [p for d in archive_dirs for p in archive_files(Path(d)) if first <= p.name[6:16] <= last]
    scan = LateScan(heartbeats=[], until=until, files=len(files))
    if until <= end or not files:
        return scan
    decoder = Decoder(registry)
    reader = ArchiveReader(sorted(files, key=lambda p: (Path(p).name[6:16], Path(p).name)))
    buffer: list[Record] = []
    for record in reader:
        if record[0] * US_PER_S >= until:
            break
        if record[1].startswith(CONTROL_PREFIX):
            if record[1] == LIMITS_TOPIC:
                _decode(decoder, buffer, start, end, until, scan)
                decoder.apply_limits_record(record[2])  # decode as the collector did from then on
            continue
        buffer.append(record)
        if len(buffer) >= BATCH:
            _decode(decoder, buffer, start, end, until, scan)
    _decode(decoder, buffer, start, end, until, scan)
    scan.records = reader.records
    scan.heartbeats.sort()
    return scan


def _decode(decoder: Decoder, buffer: list[Record], start: int, end: int, until: int, scan: LateScan) -> None:
    if not buffer:
        return
    batch = decoder.decode(buffer)
    buffer.clear()
    stamped = np.where(np.isnan(batch.ts), -1.0, batch.ts) * US_PER_S
    keep = np.flatnonzero((stamped >= start) & (stamped < end) & (batch.t >= end) & (batch.t < until))
    ids = decoder.registry.ids
    scan.heartbeats.extend(LateHeartbeat(received=int(batch.t[i]), device=ids[int(batch.device[i])],
                                         stamped=round(float(stamped[i]))) for i in keep.tolist())


def counted(heartbeats: Iterable[LateHeartbeat], registry: Registry, contract: Contract, month: str) -> list[LateHeartbeat]:
    """The late heartbeats of ``contract``'s devices that count under its ``late_heartbeats`` rule
    (none when ``count`` is false, the default)."""
    rule = contract.late_heartbeats
    if not rule.count:
        return []
    _, end = month_bounds(month)
    ci = [c.code for c in registry.rules.contracts].index(contract.code)
    out = []
    for h in heartbeats:
        row = registry.index.get(h.device)
        if (row is not None and int(registry.contract[row]) == ci and h.received - h.stamped <= rule.max_delay * US_PER_S
                and h.received < end + rule.received_within * US_PER_S):
            out.append(h)
    return out


def of_contract(heartbeats: Iterable[LateHeartbeat], registry: Registry, contract: str) -> list[LateHeartbeat]:
    ci = [c.code for c in registry.rules.contracts].index(contract)
    return [h for h in heartbeats if (row := registry.index.get(h.device)) is not None and int(registry.contract[row]) == ci]


def late_credit(ledger: Ledger, registry: Registry, month: str, contract: Contract, heartbeats: Sequence[LateHeartbeat],
                exemptions: Sequence[Exemption]) -> LateCredit:
    """Online samples the (counted) ``heartbeats`` add to the month, per street and day, against
    the ledger's observed spans and device status changes."""
    credit = LateCredit(heartbeats=len(heartbeats))
    if not heartbeats:
        return credit
    start, end = month_bounds(month)
    grid = SampleGrid(start, end, contract.sample_interval * US_PER_S)
    observed = grid.observed(ledger.spans())
    by_device: dict[int, list[LateHeartbeat]] = defaultdict(list)
    for h in heartbeats:
        by_device[registry.index[h.device]].append(h)
    history = ledger.status_history([registry.ids[i] for i in sorted(by_device)], start, end)
    exempt = _exempt_windows(registry, exemptions, set(by_device))
    streets = registry.rules.street_codes()
    days = (grid.instants + UTC_OFFSET_US) // DAY_US
    samples: dict[tuple[str, int], int] = defaultdict(int)
    for row, found in sorted(by_device.items()):
        timeout = registry.rules.types[int(registry.type[row])].online_timeout * US_PER_S
        mask = np.zeros(grid.k, dtype=bool)
        for h in found:
            mask[grid.index(h.stamped):grid.index(h.stamped + timeout)] = True
        mask &= observed
        lease = np.zeros(grid.k, dtype=bool)
        lease[grid.index(day_start(int(registry.accepted_day[row]))):grid.index(_retired(int(registry.retired_day[row])))] = True
        mask &= lease
        for a, b in exempt.get(row, []):
            mask[grid.index(a):grid.index(b)] = False
        for a, b in grid.online_ranges(history.get(registry.ids[row], [])):
            mask[a:b] = False
        if mask.any():
            credit.devices += 1
            street = streets[int(registry.street[row])]
            for day, n in zip(*np.unique(days[mask], return_counts=True)):
                samples[street, int(day)] += int(n)
    credit.samples = dict(samples)
    return credit


def _retired(day: int) -> int:
    return day_start(day) if day < np.iinfo(np.int32).max else 2**62


def _exempt_windows(registry: Registry, exemptions: Sequence[Exemption], rows: set[int]) -> dict[int, list[tuple[int, int]]]:
    mask = ExemptionMask(registry)
    out: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for e in exemptions:
        if e.active:
            for row in set(mask.rows_of(e).tolist()) & rows:
                out[row].append((e.start, e.end))
    return out


def describe(heartbeats: Sequence[LateHeartbeat]) -> str:
    """``1,234 条（56 台设备），收到于 … 至 …，设备时钟 … 至 …，最多迟到 16 小时`` ('无' when empty)."""
    if not heartbeats:
        return "无 (none)"
    received = [h.received for h in heartbeats]
    stamped = [h.stamped for h in heartbeats]
    delay = max(h.received - h.stamped for h in heartbeats) / US_PER_S / 3600
    return (f"{len(heartbeats):,} 条（{len({h.device for h in heartbeats}):,} 台设备），收到于 {when(min(received))} 至 "
            f"{when(max(received))}，设备时钟 (ts) {when(min(stamped))} 至 {when(max(stamped))}，"
            f"最多迟到 {math.ceil(delay * 10) / 10:g} 小时")
