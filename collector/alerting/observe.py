"""What alerting sees of the engine at each sample, kept over the longest alert window.

Three things decide whether a low number is news, and they are all here:

* **Who can be judged.** A device that looks offline only because the monitor could not
  see (a restart, a broker disconnect) or because a cause silenced its street is *unknown*
  until it has had a whole timeout to report again: it timed out inside such a blind span and
  has not been heard since. A device never heard at all counts as heard when observation first
  began (before any restart), so it is unknown for one timeout from then whether or not the
  collector restarted meanwhile (and longer if a restart fell inside that timeout).
  Unknown devices are left out of the alert's counts (the KPIs count
  every device as defined; only alerting waits). A device that had timed out before the blind
  span began was seen going offline and still counts.
* **What a cause explains.** Devices behind a gateway whose Last Will stands are left out of
  a street's breach counts at that sample (the gateway alert covers them); samples inside a
  district silence or a street silence are left out of that street's window (the silence is
  the incident).
* **Silences.** Per street × contract, and for the whole district, when anything was last
  heard, and how many heartbeats were due since (Σ quiet time / heartbeat period).

Per-sample street counts and counter deltas go into the collector's checkpoint
(:meth:`doc` / :meth:`restore`), so a restart does not start the windows empty; only what the
monitor did not see is missing from them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ..engine import NEVER, Engine
from ..rules import COUNTERS, RATIO_KPIS
from ..timebase import US_PER_S, UTC_OFFSET_US
from .rules import AlertRules

_COLUMN = {name: i for i, name in enumerate(COUNTERS)}
FOREVER = np.iinfo(np.int64).max // 4
ONLINE, EXPECTED, DEAD_ONLINE, DEAD_EXPECTED = range(4)  # rows of a sample's counts


@dataclass
class Span:
    """A stretch of time a cause explains: ``(start, end]``; ``end`` None while it lasts."""

    start: int
    end: int | None = None


@dataclass(frozen=True)
class Quiet:
    """Nothing heard from a set of devices since ``since``; ``due`` heartbeats were expected meanwhile."""

    since: int
    last_heard: int
    due: float
    devices: int


@dataclass(frozen=True)
class WindowRate:
    numerator: int
    denominator: int
    coverage: Fraction  # observed (and not explained) sample instants / instants in the window

    @property
    def value(self) -> Fraction:
        return Fraction(self.numerator, self.denominator)


class Observations:
    def __init__(self, engine: Engine, rules: AlertRules) -> None:
        self.engine = engine
        self.rules = rules
        registry = engine.registry
        self.n_streets = engine.n_streets
        self.window = dict.fromkeys(range(len(engine.contract_slices)), 0)
        codes = [c.code for c in registry.rules.contracts]
        for r in rules.rules:
            ci = codes.index(r.contract)
            self.window[ci] = max(self.window[ci], r.window)
        self.delta_window = max((r.window for r in rules.rules if r.kpi != "online"), default=0)
        periods = np.array([t.heartbeat_period for t in registry.rules.types], dtype=np.float64)
        self.rate = 1.0 / periods[registry.type]  # heartbeats per second per device
        self.street_of = [registry.street[sl].astype(np.intp) for sl in engine.contract_slices]
        self.gateway_of = [registry.gateway[sl].astype(np.intp) for sl in engine.contract_slices]
        self.samples: dict[int, deque[tuple[int, np.ndarray]]] = {ci: deque() for ci in self.window}
        self.deltas: deque[tuple[int, np.ndarray]] = deque()
        self.district_spans: list[Span] = []
        self.street_spans: dict[tuple[int, int], list[Span]] = {}
        self.street_quiet: dict[tuple[int, int], Quiet] = {}
        self.contract_quiet: dict[int, tuple[int, float, int]] = {}  # ci -> (last heard, due per s, devices)
        self.district_quiet: Quiet | None = None
        self.snapshots = Snapshots(engine, rules)
        self._sample_cache: dict[int, tuple[Any, np.ndarray, np.ndarray]] = {}
        self._delta_cache: tuple[Any, np.ndarray, np.ndarray] | None = None
        self._delta_version = 0

    # --- at each sample --------------------------------------------------------------------

    def sample(self, ci: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        engine = self.engine
        resume = engine.spans[-1][0] if engine.spans else t
        dead = ~engine.gateway_online[self.gateway_of[ci]]
        judged = expected & ~self._unknown(ci, t, online, resume)
        counts = np.zeros((4, self.n_streets), dtype=np.int64)
        for row, mask in enumerate((online & judged, judged, online & judged & dead, judged & dead)):
            counts[row] = engine.count_by_street(ci, mask)
        if self.window[ci]:
            window = self.samples[ci]
            window.append((t, counts))
            while window and window[0][0] <= t - self.window[ci] * US_PER_S:
                window.popleft()
        self._quiet(ci, t, expected, dead, resume)
        self.snapshots.take(ci, t)
        horizon = t - self.delta_window * US_PER_S
        while self.deltas and self.deltas[0][0] <= horizon:
            self.deltas.popleft()
            self._delta_version += 1

    def on_deltas(self, slot_start: int, sums: np.ndarray) -> None:
        if self.delta_window:
            self.deltas.append((slot_start, sums))
            self._delta_version += 1

    def _unknown(self, ci: int, t: int, online: np.ndarray, resume: int) -> np.ndarray:
        """Devices that look offline only because nobody could see them: see the module docstring."""
        engine = self.engine
        sl = engine.contract_slices[ci]
        spans = engine.spans
        # Before the first span nothing was seen: every device not heard since is unknown.
        blind_from = np.full(self.n_streets, spans[-2][1] if len(spans) > 1 else NEVER - 1, dtype=np.int64)
        blind_to = np.full(self.n_streets, resume, dtype=np.int64)
        last = self.district_spans[-1] if self.district_spans else None
        if last is not None and last.end is not None and last.end > resume:
            blind_from[:], blind_to[:] = last.start, last.end
        for si in range(self.n_streets):
            spans_here = self.street_spans.get((ci, si))
            if spans_here and spans_here[-1].end is not None and spans_here[-1].end > blind_to[si]:
                blind_from[si], blind_to[si] = spans_here[-1].start, spans_here[-1].end
        street = self.street_of[ci]
        b_from, b_to = blind_from[street], blind_to[street]
        heard = engine.last_heartbeat[sl]
        timeout = engine.timeout[sl]
        # A device never heard is judged as if it had been heard at the first start of observation:
        # it is seen offline only a whole timeout after that, and only if no blind span (a restart)
        # fell before then, so a restart does not make it offline sooner than watching throughout.
        first = spans[0][0] if spans else resume
        until = np.where(heard == NEVER, first + timeout, engine.online_until[sl])
        return ~online & (heard < b_to) & (until > b_from) & (t < b_to + timeout)

    def _quiet(self, ci: int, t: int, expected: np.ndarray, dead: np.ndarray, resume: int) -> None:
        engine = self.engine
        sl = engine.contract_slices[ci]
        heard = engine.last_heartbeat[sl]
        rate = self.rate[sl]
        alive = expected & ~dead
        for si, (a, b) in enumerate(engine.street_bounds[ci]):
            mask = alive[a:b]
            n = int(np.count_nonzero(mask))
            last = int(heard[a:b][mask].max()) if n else NEVER
            since = max(last, resume)
            due = float(rate[a:b][mask].sum()) * (t - since) / US_PER_S
            self.street_quiet[ci, si] = Quiet(since=since, last_heard=last, due=due, devices=n)
        n = int(np.count_nonzero(expected))
        self.contract_quiet[ci] = (int(heard[expected].max()) if n else NEVER, float(rate[expected].sum()), n)
        last = max(q[0] for q in self.contract_quiet.values())
        since = max(last, resume)
        per_s = sum(q[1] for q in self.contract_quiet.values())
        self.district_quiet = Quiet(since=since, last_heard=last, due=per_s * (t - since) / US_PER_S,
                                    devices=sum(q[2] for q in self.contract_quiet.values()))

    # --- silences as causes ----------------------------------------------------------------

    def mark(self, spans: list[Span], silent: bool, quiet: Quiet | None, t: int) -> None:
        """Open a span when a silence holds; close it at the heartbeat that ended it (a restart,
        which makes the silence look short, does not end it)."""
        open_span = spans[-1] if spans and spans[-1].end is None else None
        if silent and open_span is None and quiet is not None:
            spans.append(Span(quiet.since))
        elif not silent and open_span is not None:
            heard = quiet.last_heard if quiet is not None else t
            if quiet is None or not quiet.devices or open_span.start < heard <= t:
                open_span.end = heard if open_span.start < heard <= t else t
        horizon = t - (max(self.window.values(), default=0) + self.max_timeout()) * US_PER_S
        while len(spans) > 1 and spans[0].end is not None and spans[0].end < horizon:
            spans.pop(0)

    def max_timeout(self) -> int:
        return max(t.online_timeout for t in self.engine.registry.rules.types)

    # --- window rates ----------------------------------------------------------------------

    def online_rate(self, ci: int, si: int, window: int, t: int, *, explain: bool = True) -> WindowRate | None:
        """Σ online / Σ expected of the judged devices over ``(t − window, t]``; with ``explain``
        without the devices of dead gateways and the samples of a silence."""
        ts, counts = self._stacked_samples(ci)
        keep = ts > t - window * US_PER_S
        if explain:
            keep &= ~self._explained(ci, si, ts)
        picked = counts[keep, :, si]
        num = int(picked[:, ONLINE].sum()) - (int(picked[:, DEAD_ONLINE].sum()) if explain else 0)
        den = int(picked[:, EXPECTED].sum()) - (int(picked[:, DEAD_EXPECTED].sum()) if explain else 0)
        coverage = Fraction(int(np.count_nonzero(keep)), self.instants(ci, window))
        return WindowRate(num, den, coverage) if den else None

    def success_rate(self, ci: int, si: int, kpi: str, window: int, t: int) -> WindowRate | None:
        since = t - window * US_PER_S
        ok_names, try_names = RATIO_KPIS[kpi]
        slots, sums = self._stacked_deltas()
        rows = sums[(slots > since) & (slots <= t), ci * self.n_streets + si]
        ok = sum(int(rows[:, _COLUMN[c]].sum()) for c in ok_names)
        tries = sum(int(rows[:, _COLUMN[c]].sum()) for c in try_names)
        ts, _ = self._stacked_samples(ci)
        coverage = Fraction(int(np.count_nonzero(ts > since)), self.instants(ci, window))
        return WindowRate(ok, tries, coverage) if tries else None

    def _explained(self, ci: int, si: int, ts: np.ndarray) -> np.ndarray:
        out = np.zeros(len(ts), dtype=bool)
        for s in (*self.district_spans, *self.street_spans.get((ci, si), ())):
            out |= (ts > s.start) & (ts <= (s.end if s.end is not None else FOREVER))
        return out

    def _stacked_samples(self, ci: int) -> tuple[np.ndarray, np.ndarray]:
        """The window's samples as arrays (instants; counts [sample, row, street]), built once per change."""
        window = self.samples.get(ci, deque())
        key = (len(window), window[-1][0] if window else None, window[0][0] if window else None)
        cached = self._sample_cache.get(ci)
        if cached is None or cached[0] != key:
            ts = np.array([t for t, _ in window], dtype=np.int64)
            counts = np.stack([c for _, c in window]) if window else np.zeros((0, 4, self.n_streets), dtype=np.int64)
            cached = self._sample_cache[ci] = (key, ts, counts)
        return cached[1], cached[2]

    def _stacked_deltas(self) -> tuple[np.ndarray, np.ndarray]:
        key = (self._delta_version, len(self.deltas))
        if self._delta_cache is None or self._delta_cache[0] != key:
            slots = np.array([slot for slot, _ in self.deltas], dtype=np.int64)
            sums = (np.stack([s for _, s in self.deltas]) if self.deltas
                    else np.zeros((0, self.engine.n_groups, len(COUNTERS)), dtype=np.int64))
            self._delta_cache = (key, slots, sums)
        return self._delta_cache[1], self._delta_cache[2]

    def instants(self, ci: int, window: int) -> int:
        return max(1, window * US_PER_S // self.engine.sample_interval[ci])

    # --- checkpoint ------------------------------------------------------------------------

    def doc(self) -> dict[str, Any]:
        rules = self.engine.registry.rules
        return {
            "streets": rules.street_codes(), "contracts": [c.code for c in rules.contracts],
            "samples": {str(ci): [[ts, counts.tolist()] for ts, counts in q] for ci, q in self.samples.items()},
            "deltas": [[slot, {str(g): sums[g].tolist() for g in np.flatnonzero(sums.any(axis=1))}]
                       for slot, sums in self.deltas],
            "district_spans": [[s.start, s.end] for s in self.district_spans],
            "street_spans": [[ci, si, s.start, s.end] for (ci, si), spans in self.street_spans.items() for s in spans],
        }

    def restore(self, doc: dict[str, Any]) -> bool:
        """The windows saved with the checkpoint the engine was restored from; False when they do
        not fit these rules (then they refill, and judge nothing until they have)."""
        rules = self.engine.registry.rules
        if doc.get("streets") != rules.street_codes() or doc.get("contracts") != [c.code for c in rules.contracts]:
            return False
        for key, rows in doc.get("samples", {}).items():
            if int(key) in self.samples:
                self.samples[int(key)].extend((int(ts), np.array(c, dtype=np.int64)) for ts, c in rows)
        shape = (self.engine.n_groups, len(COUNTERS))
        for slot, groups in doc.get("deltas", []):
            sums = np.zeros(shape, dtype=np.int64)
            for g, row in groups.items():
                sums[int(g)] = row
            self.deltas.append((int(slot), sums))
        self.district_spans = [Span(a, b) for a, b in doc.get("district_spans", [])]
        for ci, si, a, b in doc.get("street_spans", []):
            self.street_spans.setdefault((ci, si), []).append(Span(a, b))
        return True


class Snapshots:
    """Each device's success counters every quarter of the shortest success window, so an email
    can show what a device did in the window (not its counts since boot). Not checkpointed: after
    a restart the earliest snapshot is the first one taken, and the email says over what span."""

    def __init__(self, engine: Engine, rules: AlertRules) -> None:
        self.engine = engine
        codes = [c.code for c in engine.registry.rules.contracts]
        self.window: dict[int, int] = {}
        for r in rules.rules:
            if r.kpi != "online":
                ci = codes.index(r.contract)
                self.window[ci] = max(self.window.get(ci, 0), r.window)
        self.columns: dict[int, list[int]] = {}  # the counters a success KPI of the contract reads
        for r in rules.rules:
            if r.kpi != "online":
                cols = self.columns.setdefault(codes.index(r.contract), [])
                cols += [_COLUMN[c] for c in (*RATIO_KPIS[r.kpi][0], *RATIO_KPIS[r.kpi][1]) if _COLUMN[c] not in cols]
        self.every: dict[int, int] = {}
        for ci in self.window:
            interval = engine.sample_interval[ci]
            shortest = min(r.window for r in rules.rules if r.kpi != "online" and codes.index(r.contract) == ci)
            self.every[ci] = max(interval, shortest * US_PER_S // 4 // interval * interval)
        self.taken: dict[int, deque[tuple[int, np.ndarray, np.ndarray, np.ndarray]]] = {ci: deque() for ci in self.window}

    def take(self, ci: int, t: int) -> None:
        if ci not in self.window or (t + UTC_OFFSET_US) % self.every[ci]:
            return
        engine = self.engine
        sl = engine.contract_slices[ci]
        taken = self.taken[ci]
        taken.append((t, engine.counters[sl][:, self.columns[ci]], engine.boot[sl].copy(), engine.seen[sl].copy()))
        while len(taken) > 1 and taken[1][0] <= t - self.window[ci] * US_PER_S:
            taken.popleft()

    def deltas(self, ci: int, kpi: str, rows: np.ndarray, window: int, t: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """(from, ok, tries, known) per device row of the contract's slice since the snapshot
        nearest the window's start; ``known`` is False for devices not yet seen at it."""
        engine = self.engine
        columns = self.columns.get(ci, [])
        if not all(_COLUMN[c] in columns for c in (*RATIO_KPIS[kpi][0], *RATIO_KPIS[kpi][1])):
            columns = []  # no rule reads this KPI: no snapshots of it
        ok_cols = [columns.index(_COLUMN[c]) for c in RATIO_KPIS[kpi][0]] if columns else []
        try_cols = [columns.index(_COLUMN[c]) for c in RATIO_KPIS[kpi][1]] if columns else []
        taken = [s for s in self.taken.get(ci, ()) if s[0] >= t - window * US_PER_S and s[0] < t] if columns else []
        sl = engine.contract_slices[ci]
        now = engine.counters[sl][rows][:, columns]
        if not taken:
            return t, np.zeros(len(rows), np.int64), np.zeros(len(rows), np.int64), np.zeros(len(rows), bool)
        at, counters, boot, seen = taken[0]
        then = counters[rows]
        reset = (engine.boot[sl][rows] != boot[rows]) | (now < then).any(axis=1)
        delta = np.where(reset[:, None], now, now - then)
        return at, delta[:, ok_cols].sum(axis=1), delta[:, try_cols].sum(axis=1), seen[rows].copy()
