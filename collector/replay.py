"""Replay: archive → decode → engine → tally, for one period.

Records before ``start`` are applied too (they set device baselines and last heartbeats)
but count toward nothing; the first record at or after ``end`` stops the replay. When that
record shows the monitor still observing (a message, a tick, a ``down``), the clock is
advanced to ``end`` so the period's last samples fire, as they fired live. When it is the
``up`` of a restart, the monitor had stopped (crashed) before ``end``: observation ends at
its last record before, and the rest is a monitoring gap, as the live collector counted it.
A starting collector's limits and partition records come before its ``up`` and say nothing
either way: reading goes on past them. When the archive ends before ``end`` (or before such a
record), observation ends at its last record.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from . import kernels
from .archive import CONTROL_PREFIX, MONITOR_TOPIC, PARTITION_TOPIC, RETAINED_TOPIC, TICK_TOPIC, ArchiveReader, Record
from .checkpoint import Checkpoint, restore_decoder
from .decode import LIMITS_TOPIC, DecodedBatch, Decoder
from .engine import Engine
from .exemptions import ExemptionMask
from .ledger.records import Exemption
from .lines import ArchiveLines
from .registry import Registry
from .results import Results
from .tally import Tally
from .timebase import US_PER_S, day_of, day_to_date, month_bounds, seconds_to_us, times_to_us


def month_of(t: int) -> tuple[int, int]:
    """``[start, end)`` of the Shanghai calendar month holding instant ``t``."""
    return month_bounds(day_to_date(day_of(t)).strftime("%Y-%m"))

log = logging.getLogger(__name__)

BATCH_SIZE = 16_384
BATCH_CHARS = 32 * 2**20  # payload characters a batch is cut at too: a month with a flood of 1 MiB payloads
# in it would otherwise need gigabytes (16,384 heartbeats of the wire contract are a few MB)


@dataclass
class Progress:
    """How far a replay has got, for a progress line."""

    records: int
    clock: int | None
    elapsed: float


class Feed:
    """Records (messages and ``$ptmon/`` control records) → decoder → engine, in arrival order.

    The one place this logic lives: replay, the live collector and its restart from a
    checkpoint all drive it. ``on_batch`` sees each decoded batch after the engine applied it
    (``batch.accepted`` marks the rows that were not duplicates or stale).
    """

    def __init__(self, engine: Engine, decoder: Decoder, *, end: int | None = None,
                 on_batch: Callable[[DecodedBatch], None] | None = None,
                 on_month: Callable[[int], None] | None = None) -> None:
        self.engine = engine
        self.decoder = decoder
        self.end = end
        self.on_batch = on_batch
        self.on_month = on_month  # called with a month's start before its first record is fed
        self._next_month_s = math.inf if engine.clock is None else month_of(engine.clock)[1] / US_PER_S
        # Records from here on may lie at or past ``end`` (in µs, as ``_flush`` tells exactly): each one is
        # flushed at once, so reading stops at the first record past the end, not a batch later.
        self._end_s = math.inf if end is None else (end - 2) / US_PER_S
        self.reached_end = False
        self.observing_at_end = False  # the first record at or after ``end`` showed the monitor observing
        self.told: Record | None = None  # that record
        self.control = {"monitor": 0, "tick": 0, "limits": 0, "partition": 0, "unknown": 0}
        self._batches = 0  # batches decoded so far
        # An ArchiveReader's blocks scanned ahead by forked processes (archive.py): for a replay
        # alone in its process, not in the live collector with its threads.
        self.read_ahead = False

    def feed(self, records: Iterable[Record], progress: Callable[[Progress], None] | None = None, every: float = 2.0) -> None:
        """Feed records; an :class:`ArchiveReader`'s plain lines a block at a time (lines.py)."""
        items: Iterable[Record | ArchiveLines] = records
        if isinstance(records, ArchiveReader):
            items = records.blocks(prepare=lambda lines: lines.prepare(self.decoder.topics), in_process=self.read_ahead)
        began = last_report = time.monotonic()
        buffer = _Buffer()
        count = blocks = 0
        for item in items:
            batches = self._batches
            if isinstance(item, ArchiveLines):
                count += len(item)
                self._feed_lines(item, buffer)
                if self.reached_end:
                    break
                blocks += 1
                if blocks % TRIM_EVERY_BLOCKS == 0:
                    hand_back_freed_memory()
            else:
                count += 1
                if not self._feed_record(item, buffer):
                    break
            if self._batches != batches and progress is not None and time.monotonic() - last_report >= every:
                last_report = time.monotonic()
                progress(Progress(count, self.engine.clock, last_report - began))
        self._flush(buffer)

    def _feed_record(self, record: Record, buffer: _Buffer) -> bool:
        """One record (False: stop reading)."""
        if record[0] >= self._next_month_s or self._next_month_s == math.inf:
            self._flush(buffer)
            if self.reached_end:
                return False
            self._month_crossed(record[0])
        if record[1].startswith(CONTROL_PREFIX) and record[1] != RETAINED_TOPIC:  # a retained message is a message
            self._flush(buffer)
            return not self.reached_end and self._control(record)
        buffer.add_record(record)
        if len(buffer) >= BATCH_SIZE or buffer.chars >= BATCH_CHARS or record[0] >= self._end_s:
            self._flush(buffer)
            return not self.reached_end
        return True

    def _feed_lines(self, lines: ArchiveLines, buffer: _Buffer) -> None:
        """Plain archive lines, cut into batches exactly where their records one by one would be."""
        t, p = lines.t, 0
        while p < len(lines):
            if t[p] >= self._next_month_s or self._next_month_s == math.inf:
                self._flush(buffer)
                if self.reached_end:
                    return
                self._month_crossed(float(t[p]))
            later = np.flatnonzero(t[p + 1 :] >= self._next_month_s)
            stop = p + 1 + int(later[0]) if len(later) else len(lines)
            while p < stop:
                m = min(BATCH_SIZE - len(buffer), stop - p)
                past = np.flatnonzero(t[p : p + m] >= self._end_s)
                m = int(past[0]) + 1 if len(past) else m  # up to the first record past the end, then flushed
                full = np.flatnonzero(buffer.chars + np.cumsum(lines.payload_chars[p : p + m]) >= BATCH_CHARS)
                m = int(full[0]) + 1 if len(full) else m  # up to the record that fills it, as one by one
                buffer.add_lines(lines.rows(p, p + m))
                p += m
                if len(buffer) >= BATCH_SIZE or buffer.chars >= BATCH_CHARS or len(past):
                    self._flush(buffer)
                    if self.reached_end:
                        return

    def _month_crossed(self, t: float) -> None:
        """The first record of a month (or of the run) is next: the month-start hook sees the
        state with every earlier record applied and none later."""
        month_start, month_end = month_of(seconds_to_us(t))
        if self.on_month is not None and self._next_month_s != math.inf and self.engine.clock is not None:
            self.on_month(month_start)
        self._next_month_s = month_end / US_PER_S

    def _flush(self, buffer: _Buffer | list[Record]) -> None:
        pending = buffer.take() if isinstance(buffer, _Buffer) else buffer
        if not len(pending) or self.reached_end:
            return
        times = times_to_us(pending.t if isinstance(pending, ArchiveLines) else [r[0] for r in pending])
        past_end = np.flatnonzero(times >= self.end) if self.end is not None else np.zeros(0, dtype=np.intp)
        if len(past_end):
            self.reached_end = self.observing_at_end = True  # a message received: the monitor was up
            cut = int(past_end[0])
            self.told = pending.rows(cut, cut + 1).records()[0] if isinstance(pending, ArchiveLines) else pending[cut]
            pending = pending.rows(0, cut) if isinstance(pending, ArchiveLines) else pending[:cut]
            times = times[:cut]
        if len(pending):
            self._batches += 1
            # Every record, accepted or rejected, proves the monitor was observing at its time.
            if not self.engine.up:
                self.engine.monitor_up(int(times[0]))
            # A record stamped before one already received (the collector's clock stepped back)
            # counts at the monitor's time, whatever the batching: the clock only moves forward.
            assert self.engine.clock is not None
            clock = np.maximum.accumulate(np.maximum(times, self.engine.clock))
            late = clock != times
            batch = self.decoder.decode(pending, clock, late if late.any() else None)
            self.engine.apply(batch)
            self.engine.advance_to(int(clock[-1]))
            if self.on_batch is not None:
                self.on_batch(batch)

    def _control(self, record: Record) -> bool:
        """Apply a ``$ptmon/`` record; False when it lies at or past the period's end."""
        t = seconds_to_us(record[0])
        topic, payload = record[1], record[2].strip().strip('"')
        if self.end is not None and t >= self.end:
            if topic != TICK_TOPIC and not (topic == MONITOR_TOPIC and payload in ("up", "down")):
                # a starting collector's limits and partition records, written before its up, and records
                # the engine passes by (unknown ones) tell nothing: read on
                return True
            self.reached_end, self.told = True, record
            self.observing_at_end = payload != "up"  # a tick or a down: observing; an up: a restart
            return False
        if topic == MONITOR_TOPIC and payload in ("up", "down"):
            self.control["monitor"] += 1
            (self.engine.monitor_up if payload == "up" else self.engine.monitor_down)(t)
        elif topic == TICK_TOPIC:
            self.control["tick"] += 1
            self.engine.advance_to(t)
        elif topic == LIMITS_TOPIC:  # the live collector's limits, so replay rejects what it rejected
            self.control["limits"] += 1
            self.decoder.apply_limits_record(record[2])
        elif topic == PARTITION_TOPIC:  # which partition wrote the file: checked before reading (partition.py)
            self.control["partition"] += 1
        else:
            self.control["unknown"] += 1
            log.warning("unknown control record %r at %s; ignored", topic, record[0])
        return True



class _Buffer:
    """The next batch: records, or plain archive lines (turned into records when a record
    that is no plain line joins them, so a batch is decoded one way)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.lines: list[ArchiveLines] = []
        self.size = 0
        self.chars = 0  # of the payloads

    def __len__(self) -> int:
        return self.size

    def add_record(self, record: Record) -> None:
        if self.lines:
            self.records = ArchiveLines.join(self.lines).records()
            self.lines = []
        self.records.append(record)
        self.size += 1
        self.chars += len(record[2])

    def add_lines(self, lines: ArchiveLines) -> None:
        if self.records:
            self.records += lines.records()
        else:
            self.lines.append(lines)
        self.size += len(lines)
        self.chars += int(lines.payload_chars.sum())

    def take(self) -> list[Record] | ArchiveLines:
        taken: list[Record] | ArchiveLines = ArchiveLines.join(self.lines) if self.lines else self.records
        self.records, self.lines, self.size, self.chars = [], [], 0, 0
        return taken


class Replayer(Feed):
    """An engine (fresh, or a saved state's) and a tally of ``[start, end)`` fed from archives."""

    def __init__(self, registry: Registry, start: int, end: int, exemptions: Sequence[Exemption] = (),
                 state: Checkpoint | None = None) -> None:
        decoder = Decoder(registry)
        if state is not None:
            restore_decoder(decoder, state)
        super().__init__(state.engine if state is not None else Engine(registry), decoder, end=end)
        if exemptions:
            self.engine.exemptions = ExemptionMask(registry)
            self.engine.exemptions.load(exemptions)
        self.tally = Tally.attach(self.engine, start, end)

    def results(self) -> Results:
        assert self.end is not None
        if self.observing_at_end and self.engine.up:
            self.engine.advance_to(self.end)
        self.engine.finish()
        return finish_results(self.tally, self.decoder)


def finish_results(tally: Tally, decoder: Decoder) -> Results:
    """A tally's results. The counts of rejects, duplicates and unknown devices are the
    period's own (the tally's), so the ledger and a replay show the same ones."""
    return tally.results()


def freeze_startup_heap() -> None:
    """Exclude what start-up built (registry ids, topic map: a few hundred thousand objects)
    from the cyclic GC. Decoding allocates a dict per message, which keeps triggering
    collections; without this each full collection walks the whole registry again, which
    costs about a third of the decode rate."""
    gc.collect()
    gc.freeze()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
TRIM_EVERY_BLOCKS = 32  # archive blocks (4 MiB of lines each) between two hand-backs of freed memory


@functools.cache  # looked up once: the trim runs every few blocks
def _glibc_function(name: str) -> Callable[..., int] | None:
    try:
        return cast(Callable[..., int], getattr(ctypes.CDLL(None), name))
    except (OSError, AttributeError):  # another C library
        return None


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed memory for reuse instead of handing it back to the kernel at
    once. A replay allocates and frees arrays of megabytes for every block; returning them and
    faulting them in again cost about a sixth of its CPU, in the kernel. At most 128 MiB is kept
    free at the heap's top: as much CPU saved as with 1 GiB. For a replay's process only;
    elsewhere, and on other C libraries, nothing changes."""
    if (mallopt := _glibc_function("mallopt")) is not None:
        mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's own ceiling for this threshold
        mallopt(_M_TRIM_THRESHOLD, 128 << 20)


def hand_back_freed_memory() -> None:
    """Give the kernel back the pages of the heap's free chunks, wherever they lie (malloc_trim).
    The trim threshold only ever frees the heap's top, and a block's arrays freed below a chunk
    still in use stay resident: a district day's replay grew from 100 to 480 MB of RSS with some
    40 MB in use, three days to 640 MB. Done every :data:`TRIM_EVERY_BLOCKS` blocks of an archive
    (a replay, a rebuild of the ledger or of the collector's state), it keeps the RSS near what is
    in use for a few page faults on memory reused after it."""
    if (trim := _glibc_function("malloc_trim")) is not None:
        trim(0)


def replay(
    paths: Iterable[str | Path],
    registry: Registry,
    start: int,
    end: int,
    progress: Callable[[Progress], None] | None = None,
    exemptions: Sequence[Exemption] = (),
    state: Checkpoint | None = None,
) -> Results:
    """KPIs of ``[start, end)`` recomputed from message archives, with the exemptions given, from a
    saved state (a month-start snapshot) when one is given."""
    reader = ArchiveReader(paths)
    log.info("archive scanner and payload parser: %s", kernels.in_use())
    replayer = Replayer(registry, start, end, exemptions, state)
    replayer.read_ahead = True
    freeze_startup_heap()
    keep_freed_memory()
    replayer.feed(reader, progress)
    results = replayer.results()
    if reader.bad_lines:
        results.rejects["bad_archive_line"] = reader.bad_lines
    return results
