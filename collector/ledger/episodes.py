"""Device offline episodes (运维记录): when each expected device went offline and came back.

An engine device listener. At each sample instant of a contract it compares the devices that
are expected but not online with those at the contract's previous sample:

* a device newly offline opens an episode. It starts when its last heartbeat timed out if
  that happened since the previous sample, else at this sample (one that has just become
  expected again). A device never heard from is overdue one timeout after observation
  began, not at the first sample (the monitor starting is not a device failing);
* a device no longer offline closes its episode: ``restored`` at the receive time of the
  heartbeat that brought it back, or not restored at this sample when it left the
  denominator (retired, exempted).

Episodes are keyed by (device, start), a pure function of the engine's state, so the
archive tail replayed after a crash writes the same keys again instead of new episodes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..engine import NEVER, Engine
from ..sinks.lineproto import FieldValue, line
from ..timebase import US_PER_S, UTC_OFFSET_US, day_of
from .records import Episode

OnEpisodes = Callable[[list[Episode]], None]


class EpisodeTracker:
    def __init__(self, engine: Engine, emit: OnEpisodes, open_starts: dict[str, int] | None = None) -> None:
        self.engine = engine
        self.emit = emit
        registry = engine.registry
        self._names = (registry.rules, registry)
        self._previous: dict[int, tuple[int, np.ndarray]] = {}  # contract -> (t, offline mask)
        self._open_start: dict[int, np.ndarray] = {}  # contract -> start µs per device of its open episode
        if engine.clock is not None:
            self._resume(open_starts or {})
        engine.device_listeners.append(self)

    def _resume(self, open_starts: dict[str, int]) -> None:
        """After a checkpoint restore: the offline sets as at each contract's last sample, and
        the starts of their episodes as the ledger has them (``open_starts``, by device id)."""
        engine = self.engine
        for ci, interval in enumerate(engine.sample_interval):
            last = engine.next_tick - engine.tick
            last -= (last + UTC_OFFSET_US) % interval
            sl = engine.contract_slices[ci]
            expected, _ = engine.expected_by_street(ci, day_of(last))
            exempt = engine.exemptions.at(last) if engine.exemptions is not None else None
            if exempt is not None:
                expected = expected & ~exempt[sl]
            offline = expected & ~(engine.online_until[sl] > last) & (self._due(sl) <= last)
            self._previous[ci] = (last, offline)
            starts = self._open_start[ci] = np.full(sl.stop - sl.start, -1, dtype=np.int64)
            ids = engine.registry.ids
            for i in np.flatnonzero(offline):
                starts[i] = open_starts.get(ids[sl.start + int(i)], last)

    def _due(self, sl: slice) -> np.ndarray:
        """When each device of the slice is (or was) overdue: its heartbeat timing out, or for a
        device never heard from, one timeout after observation began."""
        engine = self.engine
        began = engine.spans[0][0] if engine.spans else 0
        heard = engine.last_heartbeat[sl] != NEVER
        return np.where(heard, engine.online_until[sl], began + engine.timeout[sl])

    def on_device_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        sl = self.engine.contract_slices[contract]
        due = self._due(sl)
        offline = expected & ~online & (due <= t)
        previous = self._previous.get(contract)
        starts = self._open_start.setdefault(contract, np.full(sl.stop - sl.start, -1, dtype=np.int64))
        if previous is None:
            prev_t, prev_offline = None, np.zeros_like(offline)
        else:
            prev_t, prev_offline = previous
        opened = np.flatnonzero(offline & ~prev_offline)
        closed = np.flatnonzero(prev_offline & ~offline)
        self._previous[contract] = (t, offline.copy())
        if not len(opened) and not len(closed):
            return
        episodes: list[Episode] = []
        if len(opened):
            timed_out = due[opened]
            recent = timed_out > (prev_t if prev_t is not None else np.iinfo(np.int64).min)
            opened_at = np.where(recent, timed_out, t)
            starts[opened] = opened_at
            episodes += [self._episode(sl.start + int(i), int(s)) for i, s in zip(opened, opened_at)]
        if len(closed):
            restored = online[closed]
            heartbeat = self.engine.last_heartbeat[sl][closed]
            end = np.where(restored, heartbeat, t)
            for i, e, r in zip(closed, end, restored):
                start = int(starts[i]) if starts[i] >= 0 else int(prev_t if prev_t is not None else t)
                starts[i] = -1
                episodes.append(self._episode(sl.start + int(i), start, end=int(e), restored=bool(r)))
        self.emit(episodes)

    def _episode(self, row: int, start: int, *, end: int | None = None, restored: bool = False) -> Episode:
        rules, registry = self._names
        return Episode(
            device=registry.ids[row],
            contract=rules.contracts[int(registry.contract[row])].code,
            street=rules.streets[int(registry.street[row])].code,
            type=rules.types[int(registry.type[row])].code,
            community=registry.communities[int(registry.community[row])],
            gateway=registry.gateways[int(registry.gateway[row])],
            start=start,
            end=end,
            restored=restored,
        )




def episode_line(e: Episode) -> str | None:
    """The ``episode`` point of an episode opening (at its start) or closing (at its end)."""
    closed = e.end is not None
    fields: dict[str, FieldValue] = {"community": e.community, "gateway": e.gateway, "start": e.start // US_PER_S,
              "end": (e.end or 0) // US_PER_S, "seconds": e.seconds(e.end) if closed and e.end is not None else 0.0,
              "open": 0 if closed else 1, "restored": int(e.restored)}
    return line("episode", {"contract": e.contract, "street": e.street, "type": e.type, "device": e.device},
                fields, e.end if closed and e.end is not None else e.start)
