"""The SLA engine: per-device state in numpy arrays, samples on the contract grid.

Pure: no I/O and no clock of its own. Time is what the events and the caller say it is
(int64 µs), so the live collector, replay, tests and benchmarks all drive the same code.

What it does, in the order docs/domain.md defines it:

* **Heartbeats** set a device's last receive time ``h``. A device is online at sample instant
  ``t`` when it is expected and ``t - timeout(type) < h <= t``. Events are applied in time
  order and every sample instant ``t_k`` fires after all events with ``h <= t_k`` and before
  any later one, so a heartbeat exactly at ``t_k`` counts and one exactly ``timeout`` old
  does not.
* **Counters** are cumulative since boot. The first message seen from a device only sets its
  baseline. A new ``boot`` or any counter going down is a reset: the new values are the
  deltas. A delta is attributed to the slot (and so the period) in which its message was
  received, and only while the device is under lease.
* **Duplicates and reordering**: with a ``seq`` in the same boot, a message whose ``seq`` equals
  the last one is a duplicate and one up to ``REORDER_WINDOW`` behind it is stale; both are
  counted and ignored (no heartbeat, no counts). Further behind, or at least two behind with a
  ``seq`` smaller than the distance (nearer the start of a sequence than the last ``seq``: a
  device that rebooted without a ``boot`` id), or by its ``ts`` (later, or set back by more than
  a month, or a ``seq`` back at 0/1), is taken as a restart of the sequence, except that a message
  further behind in the same explicit ``boot`` with a counter below the last is an old message
  (stale): a device that restarts changes its ``boot``. A message of a gap
  arriving late is heard (online) but counts nothing, so a forged jump hides no real message.
  Cumulative counters mean an ignored message loses no counts.
* **Plausible counters**: a heartbeat's counter deltas count only when plausible for its type
  (rules/README.md "Plausible counters"): no more resets in a day than ``max_resets_per_day``,
  no more successes than the attempts the device's accounting left unmatched, and no more
  attempts than ``max_attempt_rate`` allows for the receive time elapsed (with at most a day
  saved up). Otherwise the heartbeat counts but its deltas are rejected, counted by reason.
* **Loss in transit**: a ``seq`` more than one ahead of the last opens a gap of lost messages
  (``lost``); a late message filling one of them is ``recovered`` (a bitmap of the last
  ``REORDER_WINDOW`` seqs per device says which are still missing; ``jump`` remembers a gap
  until a message continues from it, for ``seq_suspect``).
* **Observed time**: samples fire only while the monitor is up. The first event (or an
  explicit :meth:`monitor_up`) starts observation; :meth:`monitor_down` ends it at an instant;
  a :meth:`monitor_up` while already up is a restart after a crash, and the time since the
  last event (the last instant the monitor was provably alive) is a gap.
* **Daily method**: a device's first accepted heartbeat of a Shanghai day is reported per
  contract × street; listeners decide which days were fully observed.

Results leave through listeners (engine_listeners.py), e.g. :class:`ptmon.tally.Tally`. How a
round of heartbeats changes the per-device state is heartbeats.py's.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from .batch import CountedEvents, DecodedBatch
from .counting import KIND_CODE, CountListener, by_slot, engine_events
from .engine_listeners import DeltaListener, DeviceListener, EngineListener, GatewayListener, StatusListener, UnexemptedListener
from .exemptions import ExemptionMask
from .heartbeats import HeartbeatRounds
from .plausibility import ALLOWANCE_CAP_MS, PLAUSIBILITY
from .registry import Registry
from .rowops import any_per_row
from .rules import COUNTERS
from .timebase import DAY_US, US_PER_S, UTC_OFFSET_US, day_of

NEVER = np.iinfo(np.int64).min // 4  # last heartbeat of a device never heard from


class Engine(HeartbeatRounds):
    """Per-device SLA state of one registry. Feed it with :meth:`apply` in time order."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        rules = registry.rules
        n = len(registry)
        self.n_streets = len(rules.streets)
        self.n_groups = len(rules.contracts) * self.n_streets
        self.group = registry.group.astype(np.int16)
        # per type, looked up through registry.type: a per-device copy would cost 8 bytes a device
        self.type_timeout = np.array([t.online_timeout for t in rules.types], dtype=np.int64) * US_PER_S
        self.type_attempt_cost = np.array([t.attempt_cost_ms for t in rules.types], dtype=np.int64)
        self.type_max_resets = np.array([t.max_resets_per_day for t in rules.types], dtype=np.int16)
        self.type_burst_ms = np.array([min(t.heartbeat_period * 1000, ALLOWANCE_CAP_MS) for t in rules.types], dtype=np.int64)
        self.contract_slices = [registry.contract_slices[c.code] for c in rules.contracts]
        self.sample_interval = [c.sample_interval * US_PER_S for c in rules.contracts]
        self.tick = math.gcd(*self.sample_interval)
        self.street_bounds = [  # each street's devices within its contract's slice
            [(g.start - sl.start, g.stop - sl.start)
             for g in map(registry.group_slice, range(ci * self.n_streets, (ci + 1) * self.n_streets))]
            for ci, sl in enumerate(self.contract_slices)
        ]

        self.last_heartbeat = np.full(n, NEVER, dtype=np.int64)
        self.online_until = np.full(n, NEVER, dtype=np.int64)
        self.seen = np.zeros(n, dtype=bool)
        self.seq = np.zeros(n, dtype=np.int64)
        self.has_seq = np.zeros(n, dtype=bool)
        self.boot = np.zeros(n, dtype=np.int64)
        self.has_boot = np.zeros(n, dtype=bool)
        self.counters = np.zeros((n, len(COUNTERS)), dtype=np.int64)
        self.has_baseline = np.zeros((n, len(COUNTERS)), dtype=bool)
        self.seen_day = np.full(n, -1, dtype=np.int32)
        self.sampled_online = np.zeros(n, dtype=bool)  # online status at the contract's last sample
        # plausibility (one 8-byte record: one random access a heartbeat) and loss accounting
        self.plausibility = np.zeros(n, dtype=PLAUSIBILITY)
        self.missing = np.zeros(n, dtype=np.uint64)  # bit j: seq (last seq − 1 − j) skipped by a gap, not arrived yet
        self.jump = np.zeros(n, dtype=np.uint8)  # the step of a provisional gap (2–65) not yet confirmed; 0: none
        self._missing_devices: int | None = None  # devices whose missing is not 0 (None: count it when needed)
        self._jump_devices: int | None = None  # devices whose jump is not 0 (likewise)
        self.last_ts = np.zeros(n, dtype=np.uint32)  # ts_key() of the last accepted heartbeat; 0: it had no ts
        self.gateway_online = np.ones(len(registry.gateways), dtype=bool)
        self.gateway_since = np.full(len(registry.gateways), NEVER, dtype=np.int64)

        self.clock: int | None = None
        self.up = False
        self.down_at: int | None = None  # when the monitor went down, its last sample still owed
        self.next_tick = 0
        self.spans: list[list[int]] = []  # observed [start, end] instants, in order
        self.stats: Counter[str] = Counter()
        self.listeners: list[EngineListener] = []
        self.device_listeners: list[DeviceListener] = []  # per-device masks at each sample (episodes)
        # The ledger: it keeps samples without exemptions and each device's status changes, and
        # applies the exemptions as they stand when it is read (ledger/exempt.py).
        self.unexempted_listeners: list[UnexemptedListener] = []
        self.status_listeners: list[StatusListener] = []
        self.gateway_listeners: list[GatewayListener] = []
        self.count_listeners: list[CountListener] = []  # messages counted by kind (data quality)
        self.delta_listeners: list[DeltaListener] = []  # per-device counter deltas (device health)
        self._queued = CountedEvents.empty()  # the decoder's counted events not yet emitted, in time order
        self.exemptions: ExemptionMask | None = None  # devices out of the denominator, by instant
        self._expected_cache: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}

    # --- time -------------------------------------------------------------------------

    def ceil_tick(self, t: int) -> int:
        """The first tick instant at or after ``t`` (ticks are aligned to Shanghai midnight)."""
        return t + (-(t + UTC_OFFSET_US)) % self.tick

    def monitor_up(self, t: int) -> None:
        """The monitor (re)starts observing at ``t``; while already up, a crash gap ends here."""
        if self.clock is not None:
            t = max(t, self.clock)
            last_alive = self.clock if self.up else self.down_at
            restarted = self.up
            if last_alive is not None and t > last_alive:
                # The sample at the instant observation ended is owed now; a restart at that
                # same instant instead leaves it to fire later, seeing the events at it too.
                self._fire_ticks(last_alive, inclusive=True)
            # Nothing between the end of observation and ``t`` is sampled. After finish() (a clean
            # shutdown) the owed sample was already taken and ``down_at`` is gone, but the
            # downtime is a gap all the same.
            self.next_tick = max(self.next_tick, self.ceil_tick(t))
            if restarted:
                self.stats["restarts"] += 1
                self._emit_counted(engine_events(np.array([t], dtype=np.int64), np.array([-1], dtype=np.int64), "restarts"))
        else:
            self.next_tick = self.ceil_tick(t)
        self.up = True
        self.down_at = None
        self.clock = t
        self.spans.append([t, t])

    def monitor_down(self, t: int) -> None:
        """The monitor stops observing at ``t`` (a clean shutdown); the sample at ``t`` is owed."""
        if self.clock is None:
            self.monitor_up(t)  # the first record of any kind shows the monitor was running
        if not self.up:
            return
        assert self.clock is not None
        t = max(t, self.clock)
        self._fire_ticks(t, inclusive=False)
        self._emit_queued(t)
        self.clock = t
        self.spans[-1][1] = t
        self.up = False
        self.down_at = t

    def advance_to(self, t: int) -> None:
        """Time has reached ``t`` with no event: fire every sample instant before ``t``."""
        if not self.up:
            self.monitor_up(t)
        assert self.clock is not None
        if t <= self.clock:
            self._emit_queued(self.clock)
            return
        self._fire_ticks(t, inclusive=False)
        self._emit_queued(t)
        self.clock = t
        self.spans[-1][1] = t

    def finish(self) -> None:
        """End of input: the monitor was alive at its last record, so samples up to it fire."""
        if self.clock is not None:
            self._emit_queued(self.clock)
        if self.up and self.clock is not None:
            self.monitor_down(self.clock)
        if self.down_at is not None:
            self._fire_ticks(self.down_at, inclusive=True)
            self.down_at = None

    def _fire_ticks(self, until: int, *, inclusive: bool) -> None:
        while self.next_tick < until or (inclusive and self.next_tick == until):
            self._emit_queued(self.next_tick)  # what was received at or before the sample instant comes first
            if self.spans and self.spans[-1][1] < self.next_tick:
                # observed up to here: a listener writing this sample (the ledger's hour) writes it inside the spans
                self.spans[-1][1] = self.next_tick
            self._sample(self.next_tick)
            self.next_tick += self.tick

    # --- samples ----------------------------------------------------------------------

    def expected_by_street(self, contract: int, day: int) -> tuple[np.ndarray, np.ndarray]:
        """(mask over the contract's slice, count per street) of devices under lease on ``day``."""
        cached = self._expected_cache.get(contract)
        if cached is None or cached[0] != day:
            mask = self.registry.expected_mask(day, self.contract_slices[contract])
            cached = self._expected_cache[contract] = (day, mask, self.count_by_street(contract, mask))
        return cached[1], cached[2]

    def count_by_street(self, contract: int, mask: np.ndarray) -> np.ndarray:
        """True entries of a mask over the contract's slice, per street (streets are contiguous)."""
        return np.array([np.count_nonzero(mask[a:b]) for a, b in self.street_bounds[contract]], dtype=np.int64)

    def _sample(self, t: int) -> None:
        day = day_of(t)
        for contract, interval in enumerate(self.sample_interval):
            if (t + UTC_OFFSET_US) % interval:
                continue
            sl = self.contract_slices[contract]
            expected, expected_counts = self.expected_by_street(contract, day)
            status = self.online_until[sl] > t
            self._note_status(contract, t, status)
            if self.unexempted_listeners:
                lease_online = self.count_by_street(contract, status & expected)
                for unexempted in self.unexempted_listeners:
                    unexempted.on_unexempted_sample(contract, t, lease_online, expected_counts.copy())
            exempt = self.exemptions.at(t) if self.exemptions is not None else None
            if exempt is not None:
                expected = expected & ~exempt[sl]
                expected_counts = self.count_by_street(contract, expected)
            online = status & expected
            online_counts = self.count_by_street(contract, online)
            for listener in self.listeners:
                listener.on_sample(contract, t, online_counts, expected_counts.copy())
            for device_listener in self.device_listeners:
                device_listener.on_device_sample(contract, t, online, expected)
        self.stats["samples"] += 1

    def _note_status(self, contract: int, t: int, status: np.ndarray) -> None:
        sl = self.contract_slices[contract]
        changed = np.flatnonzero(self.sampled_online[sl] != status)
        if len(changed):
            self.sampled_online[sl.start + changed] = status[changed]
            for listener in self.status_listeners:
                listener.on_status(contract, t, changed + sl.start, status[changed])

    # --- events -----------------------------------------------------------------------

    def apply(self, batch: DecodedBatch) -> None:
        """Apply decoded heartbeats (in arrival order), firing samples between them as time passes.

        The batch's counted events (rejects, late arrivals) are emitted in time order with the
        heartbeats' deltas and the samples; those after the last heartbeat wait for the next
        :meth:`advance_to` (the caller's clock) or batch.
        """
        if not self.up and len(batch):
            self.monitor_up(int(batch.t[0]))
        if len(batch.counted):
            counted = batch.counted
            counted.t = np.maximum.accumulate(counted.t if self.clock is None else np.maximum(counted.t, self.clock))
            self.stats["late"] += int(np.count_nonzero(counted.kind == KIND_CODE["late"]))
            self._queued = CountedEvents.join([self._queued, counted])
        if len(batch) == 0:
            self._apply_gateway_events(batch)
            return
        t = batch.t
        batch.accepted = np.zeros(len(t), dtype=bool)
        if not self.up:
            self.monitor_up(int(t[0]))
        assert self.clock is not None
        monotone = np.maximum.accumulate(np.maximum(t, self.clock))
        late = int(np.count_nonzero(monotone != t))
        if late:
            # A message stamped before one already applied (clock step, merged archives): it is
            # applied now, at the engine's time, rather than rewriting samples already taken.
            self.stats["late"] += late
            batch.t = t = monotone
        start = 0
        while start < len(t):
            end = int(np.searchsorted(t, self.next_tick, side="right"))
            if end > start:
                self._update(batch, np.arange(start, end))
            else:
                self._emit_queued(self.next_tick)
            if end >= len(t):
                break
            self._fire_ticks(int(t[end]), inclusive=False)
            start = end
        self.clock = int(t[-1])
        self._emit_queued(self.clock)
        self.spans[-1][1] = self.clock
        self._apply_gateway_events(batch)

    def _apply_gateway_events(self, batch: DecodedBatch) -> None:
        for t, gateway, online in batch.gateway_events:
            changed = bool(self.gateway_online[gateway]) != online
            self.gateway_online[gateway] = online
            if changed or self.gateway_since[gateway] == NEVER:
                # A status repeated (the retained Last Will redelivered when the collector subscribes
                # again) is no new change: the gateway has been so since it first said so.
                self.gateway_since[gateway] = t
            self.stats["gateway_status"] += 1
            if changed:
                for listener in self.gateway_listeners:
                    listener.on_gateway(t, gateway, online)

    def _update(self, batch: DecodedBatch, rows: np.ndarray) -> None:
        """Apply rows that all precede the next sample; a device's messages in arrival order."""
        devices = batch.device[rows]
        # A device's rows in arrival order: keys made unique by the position sort the same as a
        # stable sort of the devices, and numpy's default sort of them is several times faster.
        order = np.argsort(devices * len(rows) + np.arange(len(rows)))
        sorted_devices = devices[order]
        new_run = np.empty(len(rows), dtype=bool)
        new_run[0] = True
        np.not_equal(sorted_devices[1:], sorted_devices[:-1], out=new_run[1:])
        if new_run.all():
            rounds = [self._apply_round(batch, rows)]
        else:
            run_start = np.maximum.accumulate(np.where(new_run, np.arange(len(rows)), 0))
            occurrence = np.arange(len(rows)) - run_start
            rounds = [self._apply_round(batch, rows[np.sort(order[occurrence == k])])
                      for k in range(int(occurrence.max()) + 1)]
        # Emitted once for all rounds, in time order: a round holds the k-th message of each
        # device, so round 2 of one device can precede round 1 of another in time, and a listener
        # that closes a period at the first later event (the ledger's hour) must not see it first.
        counted = CountedEvents.join([self._take_queued(self.next_tick), *(r[1] for r in rounds)])
        applied = [r[0] for r in rounds if r[0] is not None]
        if applied:
            t, d, deltas, day, first = (np.concatenate(parts) for parts in zip(*applied))
            self._emit_slots(t, d, deltas, counted)
            self._emit_first_seen(day, d, first)
        else:
            self._emit_counted(counted)


    def _take_queued(self, until: int) -> CountedEvents:
        """The queued counted events received at or before ``until``."""
        n = int(np.searchsorted(self._queued.t, until, side="right"))
        if n == 0:
            return CountedEvents.empty()
        q = self._queued
        taken = q.take(slice(None, n), [u for u in q.unknown if u[0] <= until])
        self._queued = q.take(slice(n, None), [u for u in q.unknown if u[0] > until])
        return taken

    def _emit_queued(self, until: int) -> None:
        if len(self._queued):
            self._emit_counted(self._take_queued(until))

    def _emit_counted(self, counted: CountedEvents) -> None:
        if self.count_listeners:
            for slot in by_slot(counted, self.group, self.n_groups, self.tick):
                for listener in self.count_listeners:
                    listener.on_counts(slot.slot_start, slot.counts, slot.unknown)

    def _emit_slots(self, t: np.ndarray, d: np.ndarray, deltas: np.ndarray, counted: CountedEvents) -> None:
        """Counter deltas and counted events, slot by slot in time order (deltas first in a slot)."""
        nonzero = any_per_row(deltas)
        slots: dict[int, list[Any]] = {}  # slot start -> [counter sums or None, SlotCounts or None]
        if nonzero.any() and self.listeners:
            slot = (t[nonzero] + UTC_OFFSET_US) // self.tick
            groups = self.group[d[nonzero]]
            first_slot = int(slot.min())
            cell = (slot - first_slot) * self.n_groups + groups
            flat = np.zeros(((int(slot.max()) - first_slot + 1) * self.n_groups, len(COUNTERS)), dtype=np.int64)
            for j, column in enumerate(deltas[nonzero].T):  # a column at a time: numpy's fast 1-D add.at
                np.add.at(flat[:, j], cell, column)
            sums = flat.reshape(-1, self.n_groups, len(COUNTERS))
            for k in np.flatnonzero(sums.any(axis=(1, 2))):
                slots.setdefault((first_slot + int(k)) * self.tick - UTC_OFFSET_US, [None, None])[0] = sums[k]
        if self.count_listeners:
            for found in by_slot(counted, self.group, self.n_groups, self.tick):
                slots.setdefault(found.slot_start, [None, None])[1] = found
        for slot_start in sorted(slots):
            sums_k, found = slots[slot_start]
            if sums_k is not None:
                for listener in self.listeners:
                    listener.on_deltas(slot_start, sums_k.copy())
            if found is not None:
                for count_listener in self.count_listeners:
                    count_listener.on_counts(slot_start, found.counts, found.unknown)

    def _emit_first_seen(self, day: np.ndarray, d: np.ndarray, counted: np.ndarray) -> None:
        if not counted.any() or not self.listeners:
            return
        for one_day in np.unique(day[counted]):
            on_day = counted & (day == one_day)
            counts = np.bincount(self.group[d[on_day]], minlength=self.n_groups).astype(np.int64)
            for listener in self.listeners:
                listener.on_first_seen(int(one_day), counts)

    # --- introspection ----------------------------------------------------------------

    @property
    def timeout(self) -> np.ndarray:
        """Each device's online timeout (µs), by registry row."""
        timeout: np.ndarray = self.type_timeout[self.registry.type]
        return timeout

    @property
    def allowance(self) -> np.ndarray:
        """Each device's attempt allowance in ms (a view of :attr:`plausibility`)."""
        return self.plausibility["allowance"]

    @property
    def unmatched(self) -> np.ndarray:
        """Each device's unmatched attempts per counter pair (a view)."""
        return self.plausibility["unmatched"]

    @property
    def resets_today(self) -> np.ndarray:
        """Each device's resets on its last heartbeat's day (a view)."""
        return self.plausibility["resets_today"]

    def state_bytes(self) -> int:
        """Bytes held by the per-device state arrays."""
        return sum(a.nbytes for a in vars(self).values() if isinstance(a, np.ndarray))

    def ticks_per_day(self, contract: int) -> int:
        return DAY_US // self.sample_interval[contract]
