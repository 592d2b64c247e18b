"""The engine's output summed per hour (and per day) and written to the ledger as hours close.

The hours hold samples without exemptions, and every device's online-status change at the
samples is written too: exemptions are applied when the ledger is read (``exempt.py``), so
an exemption recorded late, or revoked, counts exactly as a replay with the exemptions of
that moment counts it.

An engine listener holding two open tallies, the current hour's and the current day's. When
an event falls past the open hour, its rows (per contract × street) are written in one
transaction with the monitor's spans and the episodes gathered since. The open tallies
travel in the collector's checkpoint, so after a crash the restored hour continues where the
checkpoint left it and the replayed archive tail completes it; the hour is then written
again, replacing (never adding to) whatever was written before the crash.

A write the ledger refuses (locked by another process, disk full) never reaches the engine that
called the listener: the rows stay pending, ``error`` says why, and :meth:`LedgerWriter.flush`
writes them later (the collector retries it, and saves no checkpoint ahead of them).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable

import numpy as np

from ..engine import Engine
from ..tally import Tally
from ..timebase import DAY_US, US_PER_S, UTC_OFFSET_US, day_of, day_start
from .records import CountRow, DayRow, Episode, HourRow
from .store import Ledger

log = logging.getLogger(__name__)

HOUR_US = 3600 * US_PER_S


class LedgerWriter:
    def __init__(self, engine: Engine, ledger: Ledger, *, hour: Tally | None = None, day: Tally | None = None,
                 spans_since: int | None = None) -> None:
        """``spans_since``: the ledger holds the engine's spans that end before this instant as they
        are (the clock of the checkpoint the engine was restored from); None: it may hold none of them."""
        self.engine = engine
        self.ledger = ledger
        self.bucket = HOUR_US if HOUR_US % engine.tick == 0 else engine.tick
        self.hour = hour
        self.day = day
        self.pending_episodes: list[Episode] = []
        self._closed_hours: list[Tally] = []
        self._closed_days: list[DayRow] = []
        self.hours_written = 0
        self.pending_status: list[tuple[str, int, int]] = []  # (device, t, online) changes to write
        self.write_from: int | None = None  # rebuilding: leave what lies before this instant as the ledger has it
        self.error: sqlite3.Error | None = None  # the last write refused, None once one succeeds
        self._spans_since = spans_since  # spans ending at or after this may not be in the ledger as they are
        self.before_write: Callable[[], None] | None = None  # the collector's: its archive to disk first
        engine.listeners.append(self)
        engine.count_listeners.append(self)
        engine.unexempted_listeners.append(self)
        engine.status_listeners.append(self)

    # --- engine listener -------------------------------------------------------------------

    def on_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        """Samples with exemptions applied are not the ledger's: see :meth:`on_unexempted_sample`."""

    def on_unexempted_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        self._roll(t).on_sample(contract, t, online, expected)
        self._roll_day(t).on_sample(contract, t, online, expected)

    def on_status(self, contract: int, t: int, changed: np.ndarray, online: np.ndarray) -> None:
        ids = self.engine.registry.ids
        self.pending_status.extend((ids[i], t, int(o)) for i, o in zip(changed.tolist(), online.tolist()))

    def on_deltas(self, slot_start: int, sums: np.ndarray) -> None:
        self._roll(slot_start).on_deltas(slot_start, sums)

    def on_first_seen(self, day: int, counts: np.ndarray) -> None:
        self._roll_day(day_start(day)).on_first_seen(day, counts)

    def on_counts(self, slot_start: int, counts: dict[str, np.ndarray], unknown: dict[str, int]) -> None:
        self._roll(slot_start).on_counts(slot_start, counts, unknown)

    def on_episodes(self, episodes: list[Episode]) -> None:
        self.pending_episodes.extend(episodes)

    # --- buckets ---------------------------------------------------------------------------

    def _roll(self, t: int) -> Tally:
        if self.hour is None or t >= self.hour.end:
            if self.hour is not None:
                self._closed_hours.append(self.hour)
            start = t - (t + UTC_OFFSET_US) % self.bucket
            self.hour = Tally(self.engine, start, start + self.bucket)
            if self._closed_hours and self.error is None:
                # kept pending with self.error set; raising here would break the engine mid-sample
                with contextlib.suppress(sqlite3.Error):
                    self.flush()
        return self.hour

    def _roll_day(self, t: int) -> Tally:
        if self.day is None or t >= self.day.end:
            if self.day is not None:
                self._closed_days += self._day_rows(self.day)
            start = day_start(day_of(t))
            self.day = Tally(self.engine, start, start + DAY_US)
        return self.day

    def flush(self, *, open_buckets: bool = False) -> None:
        """Write what has closed, the spans, device status changes and the episodes gathered, in
        one transaction; when the ledger refuses (busy, disk full) it all stays pending.

        With ``open_buckets`` the open hour and day are written too, as they are so far. That is
        safe at any time: the open tallies continue (through the checkpoint) and the completed
        hour replaces the partial row.
        """
        tallies, days = list(self._closed_hours), list(self._closed_days)
        if open_buckets:
            tallies += [self.hour] if self.hour is not None else []
            days += self._day_rows(self.day) if self.day is not None else []
        status = self.pending_status
        spans = self._spans_to_write(tallies)
        if self.write_from is not None:
            tallies = [t for t in tallies if t.start >= self.write_from]
            days = [d for d in days if day_start(d.day) >= self.write_from]
            status = [s for s in status if s[1] >= self.write_from]
            spans = [s for s in spans if s[1] >= self.write_from]
        hours = [row for tally in tallies for row in self._hour_rows(tally)]
        counts = [row for tally in tallies for row in self._count_rows(tally)]
        unknown = [(tally.start, topic, n) for tally in tallies for topic, n in sorted(tally.unknown.items())]
        if self.before_write is not None:
            self.before_write()
        try:
            self.ledger.write_aggregates(hours, days, spans, self.pending_episodes, counts, unknown, status)
        except sqlite3.Error as exc:
            self.error = exc  # everything stays pending for the next flush
            raise
        self.error = None
        if spans:  # the last is the engine's latest span: only it can still change, and spans after it
            self._spans_since = spans[-1][1]
        self._closed_hours, self._closed_days, self.pending_episodes, self.pending_status = [], [], [], []
        self.hours_written += len({h.hour for h in hours})

    def _spans_to_write(self, tallies: list[Tally]) -> list[tuple[int, int]]:
        """The engine's spans the ledger may not hold as they are: those that changed since the last
        write that succeeded (the latest still grows), and every one that overlaps the hours written
        with them, so that every transaction leaves the hours it writes inside the ledger's spans."""
        since = self._spans_since
        if since is not None and tallies:
            since = min(since, *(t.start for t in tallies))
        return [(a, b) for a, b in self.engine.spans if since is None or b >= since]

    @property
    def pending(self) -> str:
        """What waits for the ledger, for the collector's log line."""
        return (f"{len({t.start for t in self._closed_hours})} closed hours, {len(self._closed_days)} day rows, "
                f"{len(self.pending_status)} device status changes and {len(self.pending_episodes)} episode changes "
                "kept in memory")

    def _versions(self) -> dict[str, str]:
        return {"rules_version": self.engine.registry.rules.version,
                "registry_version": self.engine.registry.version}

    def _hour_rows(self, tally: Tally) -> list[HourRow]:
        rules = self.engine.registry.rules
        rows = []
        n_streets = self.engine.n_streets
        for ci, contract in enumerate(rules.contracts):
            if not tally.samples[ci] and not tally.counters[ci * n_streets:(ci + 1) * n_streets].any():
                continue
            for si, street in enumerate(rules.street_codes()):
                rows.append(HourRow(
                    hour=tally.start, contract=contract.code, street=street, samples=int(tally.samples[ci]),
                    online=int(tally.online[ci, si]), expected=int(tally.expected[ci, si]),
                    counters=tuple(int(x) for x in tally.counters[ci * n_streets + si]),
                    **self._versions()))
        return rows

    def _count_rows(self, tally: Tally) -> list[CountRow]:
        contracts = [c.code for c in self.engine.registry.rules.contracts]
        streets = self.engine.registry.rules.street_codes()
        rows = []
        for kind, per_group in sorted(tally.counts.items()):
            for g in np.flatnonzero(per_group).tolist():
                contract, street = (("", "") if g == self.engine.n_groups
                                    else (contracts[g // len(streets)], streets[g % len(streets)]))
                rows.append(CountRow(hour=tally.start, contract=contract, street=street, kind=kind, n=int(per_group[g])))
        return rows

    def _day_rows(self, tally: Tally) -> list[DayRow]:
        rules = self.engine.registry.rules
        day = day_of(tally.start)
        counts = tally.day_online.get(day)
        rows = []
        n_streets = self.engine.n_streets
        for ci, contract in enumerate(rules.contracts):
            samples = tally.day_samples.get((ci, day), 0)
            if not samples and counts is None:
                continue
            for si, street in enumerate(rules.street_codes()):
                rows.append(DayRow(day=day, contract=contract.code, street=street, samples=samples,
                                   online_devices=int(counts[ci * n_streets + si]) if counts is not None else 0,
                                   **self._versions()))
        return rows


