"""Live KPIs: the engine's output turned into month-to-date tallies, InfluxDB points and gauges.

* :class:`MonthTallies` keeps one :class:`~ptmon.tally.Tally` per Shanghai calendar month,
  opening the next one at the first event that falls in it.
* :class:`SlaPoints` writes the ``sla`` measurement at every sample instant: per contract ×
  street (and ``district``) × KPI, ``value`` is the month-to-date KPI; the online KPI carries
  ``online`` and ``expected`` devices at the instant, the success KPIs the month-to-date sums
  ``ok`` and ``tries``.
* :class:`HeartbeatPoints` writes the ``heartbeat`` measurement for each accepted heartbeat
  (a redelivered or stale message writes nothing).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import SupportsFloat

import numpy as np

from .batch import DecodedBatch
from .engine import Engine
from .metrics import Metrics
from .replay import month_of
from .results import Results
from .sinks.lineproto import series_prefix
from .tally import Tally
from .timebase import US_PER_S, day_of, day_start, day_to_date

log = logging.getLogger(__name__)

KEEP_MONTHS = 2  # the current month and the one before (its last samples may still arrive)
Emit = Callable[[list[str]], None]


class MonthTallies:
    """An engine listener that opens a tally for each month as its first event arrives.

    Registered first among the engine's listeners: a tally it attaches during an event is
    reached by the same event, since the engine walks its listener list by index.
    """

    def __init__(self, engine: Engine, restored: list[Tally] | None = None) -> None:
        self.engine = engine
        self.tallies: dict[int, Tally] = {t.start: t for t in restored or []}
        engine.listeners.insert(0, self)
        engine.count_listeners.insert(0, self)

    def current(self) -> Tally | None:
        return self.tallies[max(self.tallies)] if self.tallies else None

    def for_instant(self, t: int) -> Tally:
        start, end = month_of(t)
        tally = self.tallies.get(start)
        if tally is None:
            tally = self.tallies[start] = Tally.attach(self.engine, start, end)
            for old in sorted(self.tallies)[:-KEEP_MONTHS]:
                retired = self.tallies.pop(old)
                self.engine.listeners.remove(retired)
                self.engine.count_listeners.remove(retired)
            log.info("month from %s: new tally", day_to_date(day_of(start)))
        return tally

    def on_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        self.for_instant(t)

    def on_deltas(self, slot_start: int, sums: np.ndarray) -> None:
        self.for_instant(slot_start)

    def on_first_seen(self, day: int, counts: np.ndarray) -> None:
        self.for_instant(day_start(day))

    def on_counts(self, slot_start: int, counts: dict[str, np.ndarray], unknown: dict[str, int]) -> None:
        self.for_instant(slot_start)


class SlaPoints:
    """An engine listener after the tallies: KPI points and gauges at every sample instant."""

    def __init__(self, months: MonthTallies, emit: Emit, metrics: Metrics | None = None) -> None:
        self.months = months
        self.emit = emit
        self.metrics = metrics
        engine = months.engine
        rules = engine.registry.rules
        self.contracts = rules.contracts
        self.streets = [s.code for s in rules.streets] + ["district"]
        self.latest: Results | None = None
        engine.listeners.append(self)

    def on_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        tally = self.months.for_instant(t)
        results = tally.results()
        self.latest = results
        code = self.contracts[contract].code
        online_by_street = [*online.tolist(), int(online.sum())]
        expected_by_street = [*expected.tolist(), int(expected.sum())]
        lines = []
        for row in results.rows:
            if row.contract != code:
                continue
            si = self.streets.index(row.street)
            prefix = series_prefix("sla", {"contract": code, "street": row.street, "kpi": row.kpi})
            fields = []
            value = row.value
            if value is not None:
                fields.append(f"value={float(value)!r}")
            if row.kpi == "online":
                fields.append(f"online={online_by_street[si]}i,expected={expected_by_street[si]}i")
            else:
                fields.append(f"ok={row.numerator}i,tries={row.denominator}i")
            lines.append(f"{prefix}{','.join(fields)} {t}")
            self._gauges(row.contract, row.street, row.kpi, value, row.passed, online_by_street[si], expected_by_street[si])
        self.emit(lines)

    def _gauges(self, contract: str, street: str, kpi: str, value: SupportsFloat | None, passed: bool | None,
                online: int, expected: int) -> None:
        if self.metrics is None:
            return
        if value is not None:
            self.metrics.kpi.labels(contract, street, kpi).set(float(value))
            self.metrics.kpi_pass.labels(contract, street, kpi).set(1 if passed else 0)
        if kpi == "online":
            self.metrics.online_devices.labels(contract, street).set(online)
            self.metrics.expected_devices.labels(contract, street).set(expected)

    def on_deltas(self, slot_start: int, sums: np.ndarray) -> None:
        pass

    def on_first_seen(self, day: int, counts: np.ndarray) -> None:
        pass


class HeartbeatPoints:
    """``heartbeat`` points (tags contract, street, type, device; fields seq, bat, rssi, lag)."""

    def __init__(self, engine: Engine) -> None:
        registry = engine.registry
        rules = registry.rules
        contracts = [c.code for c in rules.contracts]
        streets = rules.street_codes()
        types = [t.code for t in rules.types]
        self.prefix = [
            series_prefix("heartbeat", {"contract": contracts[c], "street": streets[s], "type": types[k], "device": device})
            for c, s, k, device in zip(registry.contract.tolist(), registry.street.tolist(), registry.type.tolist(), registry.ids)
        ]
        self.skipped = 0  # accepted heartbeats with none of the fields (nothing to write)

    def lines(self, batch: DecodedBatch) -> list[str]:
        if not len(batch) or batch.accepted is None:
            return []
        rows = np.flatnonzero(batch.accepted)
        t = batch.t[rows]
        lag = np.round(t / US_PER_S - batch.ts[rows], 3)
        columns = (batch.device[rows].tolist(), batch.seq[rows].tolist(), batch.has_seq[rows].tolist(),
                   batch.bat[rows].tolist(), batch.rssi[rows].tolist(), lag.tolist(), t.tolist())
        prefix = self.prefix
        out = []
        for device, seq, has_seq, bat, rssi, lag_s, ts in zip(*columns):
            fields = []
            if has_seq:
                fields.append(f"seq={seq}i")
            if bat == bat:  # NaN when absent
                fields.append(f"bat={bat!r}")
            if rssi == rssi:
                fields.append(f"rssi={rssi!r}")
            if lag_s == lag_s and not math.isinf(lag_s):
                fields.append(f"lag={lag_s!r}")
            if fields:
                out.append(f"{prefix[device]}{','.join(fields)} {ts}")
            else:
                self.skipped += 1
        return out
