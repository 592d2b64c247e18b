"""Month KPIs from the ledger: the hours and days summed into the same Tally replay fills.

Because the sums land in a :class:`~ptmon.tally.Tally` and leave through its
``results()``, the ledger and a replay of the archive are turned into KPIs by one code path:
equal sums give byte-equal CSVs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from ..engine import Engine
from ..registry import Registry
from ..report.model import DailyKpi
from ..results import Results
from ..rules import COUNTERS, RATIO_KPIS
from ..tally import DISTRICT, Tally
from ..timebase import US_PER_S, UTC_OFFSET_US, day_of, day_to_date
from .exempt import HOUR_US, exempted_hours
from .grid import SampleGrid
from .records import Exemption
from .store import Ledger

_COLUMN = {name: i for i, name in enumerate(COUNTERS)}
MERGED_SPANS_KEY = "merged_spans"  # meta key of a ledger merged from partitions (merge.py)


def ledger_tally(ledger: Ledger, registry: Registry, start: int, end: int,
                 exemptions: Sequence[Exemption] | None = None) -> Tally:
    """A tally of ``[start, end)`` holding the ledger's sums, on an engine with its spans, with the
    exemptions applied (the ledger's own unless ``exemptions`` is given)."""
    engine = Engine(registry)
    engine.spans = ledger.spans()
    tally = Tally(engine, start, end)
    rules = registry.rules
    contracts = {c.code: i for i, c in enumerate(rules.contracts)}
    streets = {s: i for i, s in enumerate(rules.street_codes())}
    n_streets = len(streets)
    samples: dict[tuple[int, int], int] = {}
    tally.street_samples = np.zeros_like(tally.online)
    for row in exempted_hours(ledger, registry, start, end, exemptions):
        ci, si = contracts.get(row.contract), streets.get(row.street)
        if ci is None or si is None:
            continue  # a contract or street no longer in the rules: reported by versions
        # the hour's instants observed by every street's collector: equal for one collector; for
        # merged partitions at most the fewest of their counts, and at most the instants inside
        # the merged ledger's spans, which are the intersection of theirs (below), while each
        # street keeps its own collector's (its sums are over those). One collector's ledger is
        # read as its hours say: its spans hold the very instants they sampled (observed.py), but a
        # ledger written before that was made sure of can miss some (`ptmon ledger verify` names them)
        samples[ci, row.hour] = min(samples.get((ci, row.hour), row.samples), row.samples)
        tally.street_samples[ci, si] += row.samples
        tally.online[ci, si] += row.online
        tally.expected[ci, si] += row.expected
        tally.counters[ci * n_streets + si] += np.array(row.counters, dtype=np.int64)
    merged = ledger.db.execute("SELECT 1 FROM meta WHERE key = ?", (MERGED_SPANS_KEY,)).fetchone() is not None
    observed = _observed_per_bucket(engine, start, end) if merged else None
    for (ci, hour), n in samples.items():
        if observed is not None:
            n = min(n, observed[ci].get(hour, 0))
        tally.samples[ci] += n
        tally.day_samples[ci, day_of(hour)] += n
    for day in ledger.days(day_of(start), day_of(end)):
        ci, si = contracts.get(day.contract), streets.get(day.street)
        if ci is None or si is None:
            continue
        tally.day_online[day.day][ci * n_streets + si] += day.online_devices
    for count in ledger.counts(start, end):
        ci, si = contracts.get(count.contract), streets.get(count.street)
        group = engine.n_groups if count.contract == "" else (ci * n_streets + si if ci is not None and si is not None else None)
        if group is None:
            continue
        per_group = tally.counts.setdefault(count.kind, np.zeros(engine.n_groups + 1, dtype=np.int64))
        per_group[group] += count.n
    tally.unknown = ledger.unknown_topics(start, end)
    return tally


def _observed_per_bucket(engine: Engine, start: int, end: int) -> list[dict[int, int]]:
    """Per contract, the sample instants inside the engine's spans, counted by ledger bucket (the
    hour). Two partitions down at different minutes of one hour each keep most of its samples,
    but the district observed only the instants both did: the least of their counts would take
    one partition's gap for the district's."""
    bucket = HOUR_US if HOUR_US % engine.tick == 0 else engine.tick
    out = []
    for contract in engine.registry.rules.contracts:
        grid = SampleGrid(start, end, contract.sample_interval * US_PER_S)
        seen = grid.instants[grid.observed(engine.spans)]
        buckets, counts = np.unique(seen - (seen + UTC_OFFSET_US) % bucket, return_counts=True)
        out.append(dict(zip(buckets.tolist(), counts.tolist())))
    return out


def ledger_results(ledger: Ledger, registry: Registry, start: int, end: int,
                   exemptions: Sequence[Exemption] | None = None) -> Results:
    return ledger_tally(ledger, registry, start, end, exemptions).results()


def ledger_daily(ledger: Ledger, registry: Registry, start: int, end: int,
                 exemptions: Sequence[Exemption] | None = None) -> list[DailyKpi]:
    """Each day's KPIs per contract × street and district (time-weighted online rate)."""
    rules = registry.rules
    sums: dict[tuple[int, str, str], np.ndarray] = defaultdict(lambda: np.zeros(2 + len(COUNTERS), dtype=np.int64))
    for row in exempted_hours(ledger, registry, start, end, exemptions):
        day = day_of(row.hour)
        for street in (row.street, DISTRICT):
            sums[day, row.contract, street] += np.array([row.online, row.expected, *row.counters], dtype=np.int64)
    out = []
    for (day, code, street), s in sorted(sums.items()):
        if code not in {c.code for c in rules.contracts}:
            continue
        for kpi in rules.contract(code).kpis:
            if kpi.code == "online":
                num, den = int(s[0]), int(s[1])
            else:
                ok, tries = RATIO_KPIS[kpi.code]
                num = sum(int(s[2 + _COLUMN[c]]) for c in ok)
                den = sum(int(s[2 + _COLUMN[c]]) for c in tries)
            out.append(DailyKpi(day=day_to_date(day), contract=code, street=street, kpi=kpi.code,
                                numerator=num, denominator=den))
    return out


def ledger_warnings(ledger: Ledger, registry: Registry, start: int, end: int) -> list[str]:
    """What a reviewer must know about the ledger's hours: versions that differ from the
    current rules and registry. (Exemptions need no warning: they are applied when read.)"""
    warnings = []
    hours = ledger.hours(start, end)
    versions = {(h.rules_version, h.registry_version) for h in hours}
    current = (registry.rules.version, registry.version)
    other = sorted(v for v in versions if v != current)
    for rules_version, registry_version in other:
        warnings.append(f"部分小时由其他版本计算 (hours computed with other versions): 规则 rules {rules_version}, "
                        f"登记 registry {registry_version}")
    return warnings


