"""Tally: the engine's samples and deltas summed over a period, turned into KPI rows.

A period is a half-open instant range ``[start, end)`` (a month in Asia/Shanghai, or any
range on the sample grid). Samples count when ``start <= t_k < end``; counter deltas when
their receive time is in the range; for the daily method, days that lie wholly inside the
range and were observed at every sample instant (a partly observed day is a monitoring
gap, counted neither online nor offline).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from .batch import REJECT_KINDS
from .counting import add_counts
from .engine import Engine
from .errors import UsageError
from .results import KpiRow, Results
from .rules import COUNTERS, RATIO_KPIS, Contract
from .timebase import DAY_US, US_PER_S, UTC_OFFSET_US, day_of, day_start

DISTRICT = "district"
_COUNTER_COLUMN = {name: i for i, name in enumerate(COUNTERS)}


@dataclass(eq=False)
class Tally:
    """Sums of one period; attach with ``Tally.attach(engine, start, end)``."""

    engine: Engine
    start: int
    end: int
    samples: np.ndarray = field(init=False)  # [contract] sample instants observed
    online: np.ndarray = field(init=False)  # [contract, street] Σ online
    expected: np.ndarray = field(init=False)  # [contract, street] Σ expected
    counters: np.ndarray = field(init=False)  # [group, counter] Σ deltas
    day_online: dict[int, np.ndarray] = field(init=False)  # day -> [group] devices seen that day
    day_samples: dict[tuple[int, int], int] = field(init=False)  # (contract, day) -> samples
    counts: dict[str, np.ndarray] = field(init=False)  # kind -> [group, + no device] messages counted
    unknown: dict[str, int] = field(init=False)  # unknown-device topic -> messages
    # [contract, street] sample instants observed by the street's own collector, when that may
    # differ from street to street (merged partitions' ledgers); None: every street's are ``samples``
    street_samples: np.ndarray | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise UsageError("the period's end must be after its start")
        for name, t in (("start", self.start), ("end", self.end)):
            if (t + UTC_OFFSET_US) % self.engine.tick:
                raise UsageError(f"the period's {name} must fall on the {self.engine.tick // US_PER_S} s sample grid")
        n_contracts, n_streets = len(self.engine.sample_interval), self.engine.n_streets
        self.samples = np.zeros(n_contracts, dtype=np.int64)
        self.online = np.zeros((n_contracts, n_streets), dtype=np.int64)
        self.expected = np.zeros((n_contracts, n_streets), dtype=np.int64)
        self.counters = np.zeros((self.engine.n_groups, len(COUNTERS)), dtype=np.int64)
        self.day_online = defaultdict(lambda: np.zeros(self.engine.n_groups, dtype=np.int64))
        self.day_samples = defaultdict(int)
        self.counts = {}
        self.unknown = {}

    @classmethod
    def attach(cls, engine: Engine, start: int, end: int) -> Tally:
        tally = cls(engine, start, end)
        engine.listeners.append(tally)
        engine.count_listeners.append(tally)
        return tally

    def on_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        if self.start <= t < self.end:
            self.samples[contract] += 1
            self.online[contract] += online
            self.expected[contract] += expected
            self.day_samples[contract, day_of(t)] += 1

    def on_deltas(self, slot_start: int, sums: np.ndarray) -> None:
        if self.start <= slot_start < self.end:
            self.counters += sums

    def on_first_seen(self, day: int, counts: np.ndarray) -> None:
        if self.start <= day_start(day) and day_start(day + 1) <= self.end:
            self.day_online[day] += counts

    def on_counts(self, slot_start: int, counts: dict[str, np.ndarray], unknown: dict[str, int]) -> None:
        if self.start <= slot_start < self.end:
            add_counts(self.counts, counts)
            for topic, n in unknown.items():
                self.unknown[topic] = self.unknown.get(topic, 0) + n

    # --- results ----------------------------------------------------------------------

    def complete_days(self, contract: int) -> list[int]:
        """Days wholly inside the period whose every sample instant of ``contract`` was observed."""
        first, last = day_of(self.start + DAY_US - 1), day_of(self.end) - 1
        per_day = self.engine.ticks_per_day(contract)
        return [d for d in range(first, last + 1) if self.day_samples.get((contract, d), 0) == per_day]

    def results(self) -> Results:
        rules = self.engine.registry.rules
        rows: list[KpiRow] = []
        coverage = {}
        for ci, contract in enumerate(rules.contracts):
            observed = int(self.samples[ci]) * contract.sample_interval
            online_num, online_den, days = self._online_sums(ci, contract)
            coverage[contract.code] = {
                "observed_seconds": observed,
                "period_seconds": (self.end - self.start) // US_PER_S,
                "samples": int(self.samples[ci]),
                "complete_days": len(days),
            }
            groups = slice(ci * self.engine.n_streets, (ci + 1) * self.engine.n_streets)
            counters = self.counters[groups]
            streets = [s.code for s in rules.streets]
            for si, street in enumerate([*streets, DISTRICT]):
                pick = slice(None) if street == DISTRICT else slice(si, si + 1)
                own = (observed if street == DISTRICT or self.street_samples is None
                       else int(self.street_samples[ci, si]) * contract.sample_interval)
                rows.extend(
                    self._rows(
                        contract, street,
                        int(online_num[pick].sum()), int(online_den[pick].sum()),
                        counters[pick].sum(axis=0), own,
                    )
                )
        totals = {kind: int(per_group.sum()) for kind, per_group in sorted(self.counts.items())}
        return Results(
            start=self.start,
            end=self.end,
            rows=rows,
            coverage=coverage,
            gaps=self.gaps(),
            rules_version=rules.version,
            registry_version=self.engine.registry.version,
            rejects=Counter({k: n for k, n in totals.items() if k in REJECT_KINDS and n}),
            engine_stats=Counter({k: n for k, n in totals.items() if k not in REJECT_KINDS and n}),
            unknown_topics=dict(sorted(self.unknown.items())),
        )

    def _online_sums(self, ci: int, contract: Contract) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Per-street (numerator, denominator) of the online rate under the contract's method."""
        days = self.complete_days(ci)
        if contract.online_method == "time_weighted":
            return self.online[ci], self.expected[ci], days
        n_streets = self.engine.n_streets
        online = np.zeros(n_streets, dtype=np.int64)
        expected = np.zeros(n_streets, dtype=np.int64)
        for day in days:
            online += self.day_online[day][ci * n_streets : (ci + 1) * n_streets] if day in self.day_online else 0
            expected += self.engine.expected_by_street(ci, day)[1]
        return online, expected, days

    @staticmethod
    def _rows(contract: Contract, street: str, online_num: int, online_den: int, counters: np.ndarray,
              observed: int) -> list[KpiRow]:
        rows = []
        for kpi in contract.kpis:
            if kpi.code == "online":
                num, den = online_num, online_den
            else:
                ok_names, try_names = RATIO_KPIS[kpi.code]
                num = sum(int(counters[_COUNTER_COLUMN[c]]) for c in ok_names)
                den = sum(int(counters[_COUNTER_COLUMN[c]]) for c in try_names)
            rows.append(
                KpiRow(
                    contract=contract.code,
                    street=street,
                    kpi=kpi.code,
                    numerator=num,
                    denominator=den,
                    threshold=kpi.threshold,
                    expected_device_samples=online_den,
                    observed_seconds=observed,
                )
            )
        return rows

    def gaps(self) -> list[tuple[int, int]]:
        """Runs of sample instants in the period the monitor did not observe, as [from, to).

        ``from`` is the first missed instant and ``to`` one tick after the last, on the shared
        tick grid (the gcd of the contracts' sample intervals). With one interval, as shipped,
        the gaps and each contract's ``observed_seconds`` add up to the period.
        """
        tick = self.engine.tick
        gaps, cursor = [], self.start  # cursor: first instant not yet known to be observed
        for span_start, span_end in self.engine.spans:
            first = max(self.engine.ceil_tick(span_start), self.start)
            last = min(span_end - (span_end + UTC_OFFSET_US) % tick, self.end - tick)
            if last < first or last < cursor:
                continue
            if first > cursor:
                gaps.append((cursor, first))
            cursor = last + tick
        if cursor < self.end:
            gaps.append((cursor, self.end))
        return gaps
