"""Heartbeats applied to per-device state, a round at a time (the engine's heartbeat half).

A round holds at most one message of each device (the k-th of each in a stretch before the
next sample), so every step is one vectorised pass over the round's rows: duplicates and stale
copies left out, late messages of a gap heard, counter deltas and resets, plausibility, seq gaps
and the loss they imply. The rules are the engine's (engine.py's docstring); the state lives on
the :class:`~ptmon.engine.Engine`, which inherits these steps.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .batch import CountedEvents, DecodedBatch
from .counting import engine_events
from .engine_listeners import DeltaListener
from .plausibility import judge
from .registry import Registry
from .rowops import any_per_row, put_rows, take_rows
from .rules import COUNTERS
from .sequence import REORDER_WINDOW, advance, clock_restarted, fill, future_ts, head_met, restarted, ts_key
from .timebase import days_of

# What the listeners are owed for a round's applied rows: receive times, registry rows, counter
# deltas [row, COUNTERS], Shanghai days, and first heard that day under lease.
Applied = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class HeartbeatRounds:
    """The steps that apply a round of heartbeats; the :class:`~ptmon.engine.Engine` holds the
    state they read and write (declared here, set in ``Engine.__init__``)."""

    registry: Registry
    stats: Counter[str]
    spans: list[list[int]]
    delta_listeners: list[DeltaListener]
    type_timeout: np.ndarray
    type_attempt_cost: np.ndarray
    type_max_resets: np.ndarray
    type_burst_ms: np.ndarray
    last_heartbeat: np.ndarray
    online_until: np.ndarray
    seen: np.ndarray
    seq: np.ndarray
    has_seq: np.ndarray
    boot: np.ndarray
    has_boot: np.ndarray
    counters: np.ndarray
    has_baseline: np.ndarray
    seen_day: np.ndarray
    plausibility: np.ndarray
    missing: np.ndarray
    jump: np.ndarray
    last_ts: np.ndarray
    _missing_devices: int | None
    _jump_devices: int | None

    def _apply_round(self, b: DecodedBatch, idx: np.ndarray) -> tuple[Applied | None, CountedEvents]:
        """Apply rows of distinct devices (the k-th message of each), fully vectorised.

        Returns what the listeners are owed: (times, devices, counter deltas, days, first seen
        that day) of the applied rows, or None when every row was a duplicate or stale; and
        the round's counted events (heartbeats, duplicate, stale, outside_lease, resets, the
        implausible kinds, lost, recovered, seq_jump)."""
        rows = _contiguous(idx)  # a slice when it can be: views instead of copies of the batch's columns
        cols = self._row_columns(b)
        d = b.device[rows]
        seq, had_seq, boot, had_boot = self.seq[d], self.has_seq[d], self.boot[d], self.has_boot[d]  # gathered once
        boot_changed = b.has_boot[rows] & had_boot & (b.boot[rows] != boot)
        comparable = b.has_seq[rows] & had_seq & ~boot_changed
        behind = seq - b.seq[rows]
        back = comparable & (behind >= 0) & (behind <= REORDER_WINDOW)
        counted = []
        future = cols.future[rows]
        if future.any():  # its ts is ignored (RowColumns.ts is 0); the message is judged without it
            self.stats["future_ts"] += int(future.sum())
            counted.append(engine_events(b.t[idx[future]], d[future], "future_ts"))
        heard_out: Applied | None = None
        if back.any():
            missing, jump = self.missing[d], self.jump[d]
            bit = np.uint64(1) << (np.clip(behind, 1, 64) - 1).astype(np.uint64)
            late = back & (behind > 0) & ((missing & bit) != 0)  # a missing seq arriving: heard, not a copy
            met = back & (behind == 0) & head_met(missing, jump)
            back &= ~(late | met)
            back &= ~restarted(b.seq[rows], behind, cols.ts[rows], self.last_ts[d])
            duplicate, stale = back & (behind == 0), back & (behind > 0)
            self.stats["duplicate"] += int(duplicate.sum())
            self.stats["stale"] += int(stale.sum())
            counted += [engine_events(b.t[idx[mask]], d[mask], kind)
                        for kind, mask in (("duplicate", duplicate), ("stale", stale))]
            heard = late | met
            if heard.any():
                heard_out, heard_counted = self._heard_late(b, idx[heard], d[heard], behind[heard], met[heard], cols)
                counted += heard_counted
            keep = ~(back | heard)
            idx, d, boot_changed, comparable, behind = idx[keep], d[keep], boot_changed[keep], comparable[keep], behind[keep]
            seq, had_seq, boot, had_boot = seq[keep], had_seq[keep], boot[keep], had_boot[keep]
            if len(idx) == 0:
                return heard_out, CountedEvents.join(counted)
            rows = idx
        old = comparable & (behind > REORDER_WINDOW) & b.has_boot[rows] & had_boot
        if old.any():  # counters looked at only for the rare rows far behind in the same named boot
            far = np.flatnonzero(old)
            far_rows, far_d = idx[far], d[far]
            ts, last_ts = cols.ts[far_rows], self.last_ts[far_d]
            # A later clock (or one set back at a boot) says the device restarted without changing its boot id.
            clock_restart = (ts > 0) & (last_ts > 0) & clock_restarted(b.seq[far_rows], behind[far], ts, last_ts)
            old[far] = self._counters_down(b, far_rows, far_d) & ~clock_restart
        if old.any():  # an old message of the same boot (a late archive part, a broker's backlog): not a reset
            self.stats["stale"] += int(old.sum())
            counted.append(engine_events(b.t[idx[old]], d[old], "stale"))
            keep = ~old
            idx, d, boot_changed, comparable, behind = idx[keep], d[keep], boot_changed[keep], comparable[keep], behind[keep]
            seq, had_seq, boot, had_boot = seq[keep], had_seq[keep], boot[keep], had_boot[keep]
            if len(idx) == 0:
                return heard_out, CountedEvents.join(counted)
            rows = idx
        assert b.accepted is not None
        b.accepted[rows] = True
        t = b.t[rows]
        previous = self.last_heartbeat[d]
        self.last_heartbeat[d] = t
        self.online_until[d] = t + cols.timeout[rows]
        self.last_ts[d] = cols.ts[rows]

        first = ~self.seen[d]
        deltas, reset = self._counter_deltas(b, rows, d, boot_changed, first)
        day = cols.day[rows]
        first_today = self.seen_day[d] != day
        under_lease = cols.under_lease[rows]
        counted.append(engine_events(t, d, "heartbeats"))
        if reset is not None:
            counted.append(engine_events(t[reset], d[reset], "resets"))
        counted += self._plausible(t, d, rows, cols, deltas, reset, first, first_today, previous)
        counted += self._seq_gaps(b, rows, t, d, comparable, behind, boot_changed, previous)
        if not under_lease.all():
            self.stats["outside_lease"] += int(np.count_nonzero(~under_lease))
            counted.append(engine_events(t[~under_lease], d[~under_lease], "outside_lease"))
            deltas[~under_lease] = 0
        for delta_listener in self.delta_listeners:
            delta_listener.on_device_deltas(t, d, deltas)
        self.seen_day[d] = day

        has_seq = b.has_seq[rows]
        self.seq[d] = np.where(has_seq, b.seq[rows], seq)
        self.has_seq[d] = has_seq | (had_seq & ~boot_changed)
        has_boot = b.has_boot[rows]
        self.boot[d] = np.where(has_boot, b.boot[rows], boot)
        self.has_boot[d] = has_boot | had_boot
        self.seen[d] = True
        self.stats["heartbeats"] += len(d)
        out: Applied = (t, d, deltas, day, first_today & under_lease)
        if heard_out is not None:
            parts = [np.concatenate(pair) for pair in zip(heard_out, out)]
            out = (parts[0], parts[1], parts[2], parts[3], parts[4])
        return out, CountedEvents.join(counted)

    def _heard_late(self, b: DecodedBatch, idx: np.ndarray, d: np.ndarray, behind: np.ndarray, met: np.ndarray,
                    cols: RowColumns) -> tuple[Applied, list[CountedEvents]]:
        """Messages of a gap arriving late (and a provisional jump's seq reached by the device's own sequence):
        heartbeats received — online, seen that day — whose counters and seq change nothing (cumulative
        counters lose nothing; the next message counts them). The allowance's clock (last_heartbeat) stays."""
        assert b.accepted is not None
        b.accepted[idx] = True
        t, day = b.t[idx], cols.day[idx]
        self.online_until[d] = np.maximum(self.online_until[d], t + cols.timeout[idx])
        first_today = self.seen_day[d] != day
        if first_today.any():  # as any heartbeat: the device's resets are counted afresh on a new day
            self.plausibility["resets_today"][d[first_today]] = 0
        self.seen_day[d] = day
        self.stats["heartbeats"] += len(d)
        counted = [engine_events(t, d, "heartbeats")]
        if met.any():
            self.jump[d[met]] = 0
            self.stats["seq_suspect"] += int(met.sum())
            counted.append(engine_events(t[met], d[met], "seq_suspect"))
        late = ~met
        if late.any():
            counted.append(self._recover(t[late], d[late], behind[late]))
        deltas = np.zeros((len(d), len(COUNTERS)), dtype=np.int64)
        return (t, d, deltas, day, first_today & cols.under_lease[idx]), counted

    def _row_columns(self, b: DecodedBatch) -> RowColumns:
        """What each row of a batch needs that depends on no device state, computed once a batch."""
        cols = b.engine_columns
        if cols is None or len(cols.cost) != len(b):
            kind, day = self.registry.type[b.device], days_of(b.t)
            under_lease = (self.registry.accepted_day[b.device] <= day) & (day < self.registry.retired_day[b.device])
            ts = ts_key(b.ts)
            future = future_ts(ts, b.t)
            ts[future] = 0
            cols = b.engine_columns = RowColumns(timeout=self.type_timeout[kind], cost=self.type_attempt_cost[kind],
                                                 burst=self.type_burst_ms[kind], max_resets=self.type_max_resets[kind],
                                                 ts=ts, future=future, day=day, under_lease=under_lease)
        return cols

    def _counters_down(self, b: DecodedBatch, rows: np.ndarray | slice, d: np.ndarray) -> np.ndarray:
        """Rows with a counter below the device's baseline."""
        return _below_baseline(b.counters[rows], b.has_counter[rows], take_rows(self.counters, d),
                               take_rows(self.has_baseline, d))

    def _counter_deltas(self, b: DecodedBatch, rows: np.ndarray | slice, d: np.ndarray, boot_changed: np.ndarray,
                        first: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Deltas of the cumulative counters and the rows that reset them (None: none did); updates the baselines."""
        new, present = b.counters[rows], b.has_counter[rows]
        old, known = take_rows(self.counters, d), take_rows(self.has_baseline, d)
        went_down = _below_baseline(new, present, old, known)
        reset = (boot_changed | went_down) & ~first
        if not reset.any():
            put_rows(self.counters, d, np.where(present, new, old))
            put_rows(self.has_baseline, d, present | known)
            return np.where(present & known, new - old, 0), None
        self.stats["resets"] += int(reset.sum())
        reset_col = reset[:, None]
        deltas = np.where(present & (known | reset_col), np.where(reset_col, new, new - old), 0)
        put_rows(self.counters, d, np.where(present, new, np.where(reset_col, 0, old)))
        put_rows(self.has_baseline, d, present | known | reset_col)
        return deltas, reset

    def _plausible(self, t: np.ndarray, d: np.ndarray, rows: np.ndarray | slice, cols: RowColumns, deltas: np.ndarray,
                   reset: np.ndarray | None, first: np.ndarray, first_today: np.ndarray,
                   previous: np.ndarray) -> list[CountedEvents]:
        """Zero the deltas of heartbeats implausible for their type (plausibility.py) and count them by reason."""
        state = self.plausibility[d]
        max_resets = cols.max_resets[rows] if reset is not None else None
        verdict = judge(state, deltas, elapsed_us=t - previous, cost_ms=cols.cost[rows], burst_ms=cols.burst[rows], first=first,
                        first_today=first_today, reset=reset, max_resets=max_resets)
        self.plausibility[d] = state
        if verdict is None:
            return []
        deltas[verdict.rejected] = 0
        out = []
        for kind, mask in verdict.by_kind():
            if mask.any():
                self.stats[kind] += int(mask.sum())
                out.append(engine_events(t[mask], d[mask], kind))
        return out

    def _seq_gaps(self, b: DecodedBatch, rows: np.ndarray | slice, t: np.ndarray, d: np.ndarray, comparable: np.ndarray,
                  behind: np.ndarray, boot_changed: np.ndarray, previous: np.ndarray) -> list[CountedEvents]:
        """Lost messages from the gaps accepted heartbeats open in their device's ``seq``, and the
        bitmap of still-missing seqs moved along; a new sequence (first seq, new boot, restart)
        starts with nothing missing and counts no loss before its first message. A gap whose
        previous heartbeat came before the current observation span began spans a monitoring gap:
        it is also counted ``lost_across_gap`` (sent while the monitor could not receive)."""
        gapped = comparable & (behind < -1)
        if not gapped.any() and not self._missing_count() and not self._jump_count():
            return []  # no device is missing anything or holds a provisional jump, and no gap now
        missing, jump = self.missing[d], self.jump[d]
        if not gapped.any() and not missing.any() and not jump.any():
            return []
        now, jump_now, lost, big = advance(missing, jump, comparable, behind, b.has_seq[rows], boot_changed)
        self._missing_devices = self._missing_count() + int(np.count_nonzero(now)) - int(np.count_nonzero(missing))
        self._jump_devices = self._jump_count() + int(np.count_nonzero(jump_now)) - int(np.count_nonzero(jump))
        self.missing[d] = now
        self.jump[d] = jump_now
        out = []
        counted_lost = lost > 0
        if counted_lost.any():
            self.stats["lost"] += int(lost.sum())
            out.append(engine_events(t[counted_lost], d[counted_lost], "lost", lost[counted_lost]))
            across = counted_lost & (previous < self.spans[-1][0]) if self.spans else np.zeros_like(counted_lost)
            if across.any():
                self.stats["lost_across_gap"] += int(lost[across].sum())
                out.append(engine_events(t[across], d[across], "lost_across_gap", lost[across]))
        if big.any():
            self.stats["seq_jump"] += int(big.sum())
            out.append(engine_events(t[big], d[big], "seq_jump"))
        return out

    def _recover(self, t: np.ndarray, d: np.ndarray, behind: np.ndarray) -> CountedEvents:
        """Messages of a gap counted lost arriving late: ``recovered``, and no longer missing."""
        before = self.missing[d]
        after, filled = fill(before, behind)
        if not filled.any():
            return CountedEvents.empty()
        self._missing_devices = self._missing_count() - int(np.count_nonzero(filled & (after == 0)))
        self.missing[d] = after
        self.stats["recovered"] += int(filled.sum())
        return engine_events(t[filled], d[filled], "recovered")

    def _jump_count(self) -> int:
        if self._jump_devices is None:  # a fresh or restored engine
            self._jump_devices = int(np.count_nonzero(self.jump))
        return self._jump_devices

    def _missing_count(self) -> int:
        if self._missing_devices is None:  # a fresh or restored engine
            self._missing_devices = int(np.count_nonzero(self.missing))
        return self._missing_devices


@dataclass(eq=False)
class RowColumns:
    """A batch's per-row values that need no device state: its device type's, its day's, its ts."""

    timeout: np.ndarray  # µs, the type's online timeout
    cost: np.ndarray  # ms of allowance an attempt uses
    burst: np.ndarray  # ms of allowance the type may save up
    max_resets: np.ndarray  # the type's max_resets_per_day
    ts: np.ndarray  # ts_key, 0 for a ts too far ahead of the receive time (sequence.future_ts)
    future: np.ndarray  # its ts was too far ahead of the receive time and is ignored
    day: np.ndarray  # Shanghai day of the receive time
    under_lease: np.ndarray  # the device is under lease that day


def _below_baseline(new: np.ndarray, present: np.ndarray, old: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Rows with a counter present below its known baseline."""
    return any_per_row(present & known & (new < old))


def _contiguous(idx: np.ndarray) -> np.ndarray | slice:
    """Ascending indices as a slice when they are a run (the common round: every row of a stretch)."""
    if len(idx) and int(idx[-1]) - int(idx[0]) == len(idx) - 1:
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx
