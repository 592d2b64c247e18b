"""Intake: take what the source received, archive it, and only then acknowledge it.

The archive is the collector's record: a QoS 1 message is acknowledged to the broker once it is
in the archive, and everything else (engine, ledger, checkpoint, InfluxDB) is derived from what
was archived, in archive order. :meth:`Intake.take` returns the records that were archived, for
the engine.

When the archive cannot be written (disk full, a write error) the batch is *held*: kept in
memory, unacknowledged, and written again after a capped backoff (``faults``); meanwhile nothing
more is taken, so the source keeps what arrives (for QoS 1 the broker's in-flight window bounds
it) and the broker keeps the rest. Intake also holds while ``blocked`` says a later stage cannot
take more (InfluxDB away and its spool failing). Records of a held batch that were written
before the failure go on to the engine at once; their acknowledgement waits for the whole batch.

Resuming after a hold, intake appends a ``$ptmon/monitor`` ``up`` record: while it held, the
collector could not take what the broker kept back, so the time from the last message received to
the resume is a monitoring gap (as after a crash), not devices going offline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .archive import MONITOR_TOPIC, TICK_TOPIC, Record
from .faults import Faults
from .metrics import Metrics
from .sinks.archive import ArchiveWriteError, ArchiveWriter
from .source import MqttSource

log = logging.getLogger(__name__)

IDLE_TICK = 1.0  # seconds: with no message, the clock still advances (and is archived) this often
Acks = tuple[int, list[int]]


class Intake:
    def __init__(self, source: MqttSource, archive: ArchiveWriter, faults: Faults, metrics: Metrics, *,
                 clock: Callable[[], float], blocked: Callable[[], str | None] = lambda: None) -> None:
        self.source, self.archive, self.faults, self.metrics = source, archive, faults, metrics
        self.clock = clock
        self.blocked = blocked
        self.held: list[Record] = []  # taken, not yet archived
        self._held_acks: list[Acks] = []
        self._resumed = False  # a hold ended: the next write starts with the gap's end
        self._last_tick = 0.0
        faults.details["archive"] = lambda: f"{self.unarchived():,} messages held, not acknowledged (the broker keeps the rest)"
        metrics.held_messages.set_function(self.unarchived)

    def unarchived(self) -> int:
        """Messages received and not yet archived (nor acknowledged): held, and waiting in the source."""
        return len(self.held) + self.source.pending()

    @property
    def holding(self) -> bool:
        return bool(self.held) or self.faults.waiting("archive") or self.faults.waiting("spool")

    def take(self, now: float, *, ticking: bool, retry_now: bool = False) -> list[Record]:
        """Archive and acknowledge what arrived; returns what was archived. ``ticking``: with nothing
        received, archive a clock tick once per ``IDLE_TICK`` (the engine is up). ``retry_now``: a held
        batch is tried again without waiting for its backoff (the last try, at shutdown)."""
        if not self._may_take(retry_now):
            return []
        stored: list[Record] = []
        if self.held:
            stored = self._store([], [], drained=False)
            if self.held:
                return stored  # still failing: the source keeps the rest
        records, acks = self.source.take()
        if not records and not self._resumed and ticking and now - self._last_tick >= IDLE_TICK:
            records = [(now, TICK_TOPIC, "")]
            self._last_tick = now
        if records or self._resumed:
            stored += self._store(records, [acks], drained=True)
        return stored

    def _may_take(self, retry_now: bool) -> bool:
        reason = self.blocked()
        if reason is not None:
            if self.faults.due("spool"):
                self.faults.failed("spool", reason)
            return False
        if self.faults.waiting("spool"):
            self.faults.cleared("spool")
            self._resumed = True
        return retry_now or self.faults.due("archive")

    def _store(self, records: list[Record], acks: list[Acks], *, drained: bool) -> list[Record]:
        """Write held + ``records``; returns the records written now and holds the rest.

        ``drained``: the source was just emptied, so a write ending a hold can carry its ``up`` record
        (it must come after every record received during the hold)."""
        batch = self.held + records
        self._held_acks += [a for a in acks if a[1]]
        resuming = self._resumed or self.faults.waiting("archive")
        marker = [(self.clock(), MONITOR_TOPIC, "up")] if resuming and drained else []
        try:
            self.archive.append(batch + marker)
        except ArchiveWriteError as exc:
            written = min(exc.written, len(batch))
            self.held = batch[written:]
            self.faults.failed("archive", str(exc))
            return batch[:written]
        self.held = []
        for a in self._held_acks:
            self.source.ack(a)
        self._held_acks = []
        if self.faults.waiting("archive"):
            self.faults.cleared("archive")
            self._resumed = True
        if marker:
            self._resumed = False
        return batch + marker
