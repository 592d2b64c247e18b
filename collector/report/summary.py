"""The report's summaries of the month: maintenance record, worst devices, device rows, exemptions.

Pure functions over :class:`~ptmon.report.model.ReportInputs`; every renderer reads them.

Episode arithmetic (rules/README.md, "The maintenance record") runs to the *horizon*: the
month's end, or the last observed instant when the monitor stopped observing before it
(:func:`ptmon.report.status.observed_until`); nothing is known beyond it. An episode overlapping
``[start, horizon)`` is

* **restored** when a heartbeat ended it (``restored``) at or before the horizon; its time
  to restore is its whole length, also the part before the month;
* **open at the horizon** (月末仍离线, or 截至 … 仍离线) when it has no end yet or ends after it;
* **left** when it ended in the month without a repair (retired, exempted).

Restored within the response time = restored episodes no longer than ``response_time``, out of
the episodes that are *due*: all restored ones, plus open ones already older than
``response_time`` at the horizon. Percentiles are nearest-rank (the ⌈p·n⌉-th shortest).
Offline time is clipped to ``[start, horizon)``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ..exemptions import ExemptionMask
from ..ledger.records import Episode, Exemption
from ..tally import DISTRICT
from ..timebase import US_PER_S, day_of, day_to_date
from .model import ReportInputs
from .status import observed_until

WORST_DEVICES = 20


@dataclass(frozen=True, kw_only=True)
class MaintenanceStats:
    """运维及维修记录 of one contract × street (or ``district``) for the month."""

    episodes: int
    restored: int
    left: int  # ended without a repair: retired or exempted
    open_at_end: int
    median_restore: float | None  # seconds
    p90_restore: float | None
    due: int
    within_response: int

    @property
    def within_share(self) -> Fraction | None:
        return Fraction(self.within_response, self.due) if self.due else None


@dataclass(frozen=True, kw_only=True)
class DeviceOutage:
    """One device's offline time within the month, from its episodes clipped to ``[start, horizon)``."""

    device: str
    contract: str
    street: str
    type: str
    community: str
    gateway: str
    offline_seconds: float
    episodes: int
    longest_seconds: float
    open_at_end: bool  # still offline at the horizon


@dataclass(frozen=True, kw_only=True)
class ExemptionLine:
    """An exemption overlapping the month, as the report lists it."""

    exemption: Exemption
    seconds_in_month: float  # its window clipped to the month
    devices: int  # registry devices of the report's contracts, leased in the month, it covers
    late: bool  # recorded after its window began


@dataclass(frozen=True, kw_only=True)
class DeviceTable:
    """The device-level sheet, column by column (113k rows: lists are what the writer wants)."""

    device: list[str]
    contract: list[str]
    type: list[str]
    type_name: list[str]
    street: list[str]
    street_name: list[str]
    community: list[str]
    gateway: list[str]
    accepted_on: list[str]
    retired_on: list[str]
    lease_days: list[int]  # days of the month under lease
    offline_seconds: list[float]
    episodes: list[int]

    def __len__(self) -> int:
        return len(self.device)


def nearest_rank(sorted_values: Sequence[float], p: float) -> float | None:
    """The ⌈p·n⌉-th smallest value (nearest-rank percentile), None when there is none."""
    if not sorted_values:
        return None
    return sorted_values[max(1, math.ceil(p * len(sorted_values))) - 1]


def maintenance(inputs: ReportInputs, contract: str) -> dict[str, MaintenanceStats]:
    """Per street of the contract, and ``district``, the month's maintenance record."""
    response = inputs.rules.contract(contract).response_time
    horizon = observed_until(inputs)
    by_street: dict[str, list[Episode]] = defaultdict(list)
    for e in inputs.episodes:
        if e.contract == contract and _overlaps(e, inputs.start, horizon):
            by_street[e.street].append(e)
            by_street[DISTRICT].append(e)
    streets = [*inputs.rules.street_codes(), DISTRICT]
    return {street: _stats(by_street.get(street, []), horizon, response) for street in streets}


def _stats(episodes: list[Episode], horizon: int, response_time: int) -> MaintenanceStats:
    restore_times, left, open_at_end, overdue = [], 0, 0, 0
    for e in episodes:
        if e.end is None or e.end > horizon:
            open_at_end += 1
            overdue += (horizon - e.start) > response_time * US_PER_S
        elif e.restored:
            restore_times.append((e.end - e.start) / US_PER_S)
        else:
            left += 1
    restore_times.sort()
    within = sum(1 for s in restore_times if s <= response_time)
    return MaintenanceStats(
        episodes=len(episodes), restored=len(restore_times), left=left, open_at_end=open_at_end,
        median_restore=nearest_rank(restore_times, 0.5), p90_restore=nearest_rank(restore_times, 0.9),
        due=len(restore_times) + overdue, within_response=within,
    )


def _overlaps(e: Episode, start: int, end: int) -> bool:
    return e.start < end and (e.end is None or e.end > start)


def outages(inputs: ReportInputs, contract: str | None = None) -> dict[str, DeviceOutage]:
    """Offline time within the month, up to the horizon, of every device with an episode, by device id."""
    horizon = observed_until(inputs)
    acc: dict[str, list[Any]] = {}
    for e in inputs.episodes:
        if (contract is not None and e.contract != contract) or not _overlaps(e, inputs.start, horizon):
            continue
        end = horizon if e.end is None else min(e.end, horizon)
        seconds = (end - max(e.start, inputs.start)) / US_PER_S
        still_open = e.end is None or e.end > horizon
        a = acc.get(e.device)
        if a is None:
            acc[e.device] = [e, seconds, 1, seconds, still_open]
        else:
            a[1] += seconds
            a[2] += 1
            a[3] = max(a[3], seconds)
            a[4] = a[4] or still_open
    return {
        device: DeviceOutage(device=device, contract=e.contract, street=e.street, type=e.type, community=e.community,
                             gateway=e.gateway, offline_seconds=total, episodes=n, longest_seconds=longest,
                             open_at_end=still_open)
        for device, (e, total, n, longest, still_open) in acc.items()
    }


def worst_devices(inputs: ReportInputs, contract: str, n: int = WORST_DEVICES) -> dict[str, list[DeviceOutage]]:
    """Per street, the ``n`` devices offline longest within the month (ties: by device id)."""
    by_street: dict[str, list[DeviceOutage]] = {s: [] for s in inputs.rules.street_codes()}
    for outage in outages(inputs, contract).values():
        by_street.setdefault(outage.street, []).append(outage)
    return {street: sorted(found, key=lambda o: (-o.offline_seconds, o.device))[:n] for street, found in by_street.items()}


def device_table(inputs: ReportInputs, contracts: Sequence[str]) -> DeviceTable:
    """Every registry device of ``contracts`` under lease on some day of the month, with its
    offline time and episode count within the month (0 for a device with no episode)."""
    registry, rules = inputs.registry, inputs.rules
    first_day, end_day = day_of(inputs.start), day_of(inputs.end)
    lease_days = np.minimum(registry.retired_day, end_day) - np.maximum(registry.accepted_day, first_day)
    wanted = np.isin(registry.contract, [i for i, c in enumerate(rules.contracts) if c.code in contracts])
    rows = np.flatnonzero(wanted & (lease_days > 0))
    found = outages(inputs)
    ids = [registry.ids[i] for i in rows.tolist()]
    contract_codes = [c.code for c in rules.contracts]
    street_codes = rules.street_codes()
    street_names = [s.name for s in rules.streets]
    type_codes = [t.code for t in rules.types]
    type_names = [t.name for t in rules.types]
    contract_col, street_col, type_col = (registry.contract[rows].tolist(), registry.street[rows].tolist(),
                                          registry.type[rows].tolist())
    zero = DeviceOutage(device="", contract="", street="", type="", community="", gateway="", offline_seconds=0.0,
                        episodes=0, longest_seconds=0.0, open_at_end=False)
    outage_col = [found.get(d, zero) for d in ids]
    dates = _dates(registry.accepted_day[rows]), _dates(registry.retired_day[rows])
    return DeviceTable(
        device=ids,
        contract=[contract_codes[i] for i in contract_col],
        type=[type_codes[i] for i in type_col],
        type_name=[type_names[i] for i in type_col],
        street=[street_codes[i] for i in street_col],
        street_name=[street_names[i] for i in street_col],
        community=[registry.communities[i] for i in registry.community[rows].tolist()],
        gateway=[registry.gateways[i] for i in registry.gateway[rows].tolist()],
        accepted_on=dates[0],
        retired_on=dates[1],
        lease_days=lease_days[rows].tolist(),
        offline_seconds=[o.offline_seconds for o in outage_col],
        episodes=[o.episodes for o in outage_col],
    )


def _dates(days: np.ndarray) -> list[str]:
    """Day numbers as ISO dates; the registry's ``NEVER`` (no retirement) as ''."""
    cache: dict[int, str] = {}
    out = []
    for day in days.tolist():
        text = cache.get(day)
        if text is None:
            text = cache[day] = "" if day >= np.iinfo(np.int32).max else day_to_date(day).isoformat()
        out.append(text)
    return out


def exemption_lines(inputs: ReportInputs, contracts: Sequence[str]) -> list[ExemptionLine]:
    """Exemptions overlapping the month that cover devices of ``contracts`` (revoked ones too,
    marked), in order of their windows; one that covers no registry device is listed with 0."""
    registry = inputs.registry
    mask = ExemptionMask(registry)
    wanted = np.isin(registry.contract, [i for i, c in enumerate(inputs.rules.contracts) if c.code in contracts])
    wanted &= (registry.accepted_day < day_of(inputs.end)) & (registry.retired_day > day_of(inputs.start))
    out = []
    for e in sorted(inputs.exemptions, key=lambda e: (e.start, e.id)):
        if not (e.start < inputs.end and inputs.start < e.end):
            continue
        rows = mask.rows_of(e)
        devices = int(wanted[rows].sum()) if len(rows) else 0
        if len(rows) and not devices:
            continue  # another contract's devices only, or none leased this month
        clipped = (min(e.end, inputs.end) - max(e.start, inputs.start)) / US_PER_S
        out.append(ExemptionLine(exemption=e, seconds_in_month=clipped, devices=devices, late=e.created_at > e.start))
    return out
