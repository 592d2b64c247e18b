"""The InfluxDB sink: batches line protocol, writes it, and loses nothing while InfluxDB is away.

``submit`` (event loop, never blocks) → batches of ``batch_size`` lines in memory → one
writer task sends them, one at a time, through a transport in a thread. While InfluxDB is
down the writer retries its one batch with capped, jittered backoff; everything else waits
in memory and, beyond ``memory_limit``, spills to gzip files in ``spool_dir`` (the oldest
points first, so memory keeps the newest and dashboards catch up from the present). The
spool is bounded by ``spool_limit`` (the oldest files are dropped and counted). When InfluxDB
is back the writer drains memory, then the spool oldest first.

The spool's file format is in :mod:`.spool`, the HTTP transports in :mod:`.influx_transport`,
how one batch is delivered (retries, splits, dead letters) in :mod:`.influx_delivery`.
Batches InfluxDB rejects (parse errors, type conflicts) go to ``spool_dir/dead-letter/``
with the error as a comment, never retried. Delivery is at-least-once: a batch cut short by
a crash or a shutdown is written again, which InfluxDB treats as the same points.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import deque
from pathlib import Path

from ..config import InfluxConfig
from ..credentials import redact
from ..errors import SinkError
from ..metrics import Metrics
from .influx_delivery import InfluxDelivery
from .influx_transport import Transport, make_transport
from .spool import (
    Batch,
    SpoolFile,
    bytes_under,
    file_groups,
    read_spool_file,
    scan_spool,
    set_aside,
    unlink,
    write_spool_file,
)

log = logging.getLogger(__name__)



class InfluxSink(InfluxDelivery):
    """Batches submitted lines and writes them to InfluxDB; spills to ``spool_dir`` while it cannot.

    Counters for tests and the CLI: ``written_points``, ``dead_letter_points``,
    ``dropped_points``; ``buffered_points`` (memory), ``spilled_bytes`` (disk) and
    ``pending_points`` (memory + disk) are computed. A :class:`~.protocol.Sink`: ``open`` is
    :meth:`start`.
    """

    name = "influx"

    def __init__(self, config: InfluxConfig, *, spool_dir: Path, metrics: Metrics | None = None,
                 transport: Transport | None = None) -> None:
        self.config = config
        self.spool_dir = Path(spool_dir)
        self.dead_letter_dir = self.spool_dir / "dead-letter"
        self.metrics = metrics
        self.transport = transport if transport is not None else make_transport(config)
        self._compress = config.gzip and not getattr(self.transport, "self_compressing", False)
        self.written_points = self.dead_letter_points = self.dropped_points = 0
        self.last_error: str | None = None
        self._lines: list[str] = []
        self._lines_since = 0.0  # monotonic time the oldest unbatched line arrived
        self._memory: deque[Batch] = deque()  # oldest first
        self._memory_bytes = self._memory_points = 0  # includes batches being spilled
        self._inflight: Batch | None = None
        self._files: deque[SpoolFile] = deque()  # oldest first, not yet opened by the writer
        self._draining: SpoolFile | None = None  # the file the writer is writing from
        self._drain: deque[Batch] = deque()  # its batches not yet written
        self._disk_bytes = self._disk_points = 0  # of _files and _draining
        self._copies_bytes = 0  # persist()'s copies of in-flight batches
        self._dead_letter_bytes = 0
        self._seq = 0
        self._failures = 0  # consecutive retryable failures
        self._failing_since: float | None = None
        self._told: str | None = None  # the failure a person must fix, already logged once
        self._creation = "not tried yet" if config.api == "v1" and not config.skip_database_creation else \
            "influx.skip_database_creation is set" if config.api == "v1" else "v2: buckets are not created by ptmon"
        self.spill_error: str | None = None  # the spool's last write error, None once a spill succeeds
        self._spill_failures = 0
        self._spill_retry_at = 0.0  # monotonic: no new spill before this after a failed one
        self._wakeup = asyncio.Event()
        self._stop = asyncio.Event()
        self._spool_lock = asyncio.Lock()
        self._spill_task: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._close_by = float("inf")  # loop time by which close() stops waiting for InfluxDB

    def hurry(self) -> None:
        """A forced exit: close() (running or to come) stops waiting for InfluxDB and spools the rest."""
        self._close_by = 0.0
        self._stop.set()
        self._wakeup.set()

    # -- the collector's API -------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer; spool files of an earlier run are written too."""
        if self._writer is not None:
            raise RuntimeError("InfluxSink already started")
        files = await asyncio.to_thread(scan_spool, self.spool_dir)
        self._dead_letter_bytes = await asyncio.to_thread(bytes_under, self.dead_letter_dir)
        known = {f.path for f in self._files}  # persist() may have run before start()
        for spool in files:
            if spool.path not in known:
                self._add_file(spool)
            self._seq = max(self._seq, int(spool.path.name.split("-", 1)[0]))
        if files:
            log.info("InfluxDB spool: %d points in %d files from an earlier run", self._disk_points, len(files))
        self._enforce_spool_limit()
        self._update_gauges()
        if self._creation == "not tried yet":
            await self._create_database()
        self._writer = asyncio.create_task(self._run_writer(), name="influx-writer")

    async def open(self) -> None:
        await self.start()

    def health(self) -> str | None:
        """None while InfluxDB takes the points; else the state line of :meth:`describe`."""
        return None if self._failing_since is None and self.spill_error is None else self.describe()

    def holding(self) -> str | None:
        """Why intake should wait: InfluxDB cannot take points and the spool cannot either, with
        memory at its limit (points are not dropped while the collector can still hold messages)."""
        if self.spill_error is not None and self._memory_bytes > self.config.memory_limit:
            return f"InfluxDB unavailable ({self.last_error or 'writing'}) and its spool failing ({self.spill_error})"
        if self._memory_bytes > 2 * self.config.memory_limit:
            return f"InfluxDB unavailable ({self.last_error or 'writing'}) and its spool not keeping up"
        return None

    def submit(self, lines: list[str]) -> None:
        """Queue ready lines (no trailing newline). Never blocks; InfluxDB's state never raises here."""
        if not lines:
            return
        if self._closed:
            self._drop(len(lines), "submitted after close()")
            return
        if not self._lines:
            self._lines_since = time.monotonic()
            self._wakeup.set()  # an idle writer starts the flush_interval clock
        self._lines.extend(lines)
        if len(self._lines) >= self.config.batch_size:
            self._cut(full_only=True)

    async def persist(self) -> None:
        """Make every point submitted so far durable: in the spool (fsync'd), or, while the spool's disk
        fails, written to InfluxDB within ``timeout``; SinkError when neither can be done."""
        async with self._spool_lock:
            self._cut()
            batches = list(self._memory)
            self._memory.clear()
            unspilled = [] if await self._spill(batches) else [b for b in batches if b in self._memory]
            inflight = self._inflight
            if inflight is not None and inflight.origin is None and inflight.copy is None:
                try:
                    copy = await asyncio.to_thread(write_spool_file, self.spool_dir, self._next_seq(), [inflight])
                except OSError as exc:
                    self._spill_failed(exc)
                    unspilled.append(inflight)
                else:
                    if inflight.resolved:  # written while we were copying it
                        await asyncio.to_thread(unlink, copy.path)
                    else:
                        inflight.copy = copy
                        self._copies_bytes += copy.size
        if unspilled and not await self._written(unspilled, self.config.timeout):
            raise SinkError(f"cannot persist InfluxDB points: the spool {self.spool_dir} fails ({self.spill_error}) "
                            f"and InfluxDB did not take them ({self.last_error})", retryable=True)

    async def _written(self, batches: list[Batch], timeout: float) -> bool:
        """Wait until InfluxDB has taken every one of ``batches`` (a written point is durable too)."""
        end = time.monotonic() + timeout
        while not all(b.resolved for b in batches):
            if time.monotonic() >= end or self._failing_since is not None or self._stop.is_set():
                return False
            await asyncio.sleep(0.02)
        return True

    async def close(self, deadline: float = 10.0) -> None:
        """Write what can be written within ``deadline`` seconds, spill the rest, stop the writer."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        self._close_by = min(self._close_by, loop.time() + deadline)
        try:
            # no point waiting for a server that is down: its batch is spilled with the rest
            while self._unwritten_in_memory() and self._failing_since is None and loop.time() < self._close_by \
                    and self._writer is not None and not self._writer.done():
                self._cut()
                await asyncio.sleep(0.02)
        finally:
            await self._stop_writer()
            await self._final_spill()
            if close := getattr(self.transport, "close", None):
                close()

    async def __aenter__(self) -> InfluxSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def buffered_points(self) -> int:
        inflight = self._inflight
        return len(self._lines) + self._memory_points + (inflight.points if inflight and not inflight.origin else 0)

    @property
    def spilled_bytes(self) -> int:
        return self._disk_bytes + self._copies_bytes

    @property
    def pending_points(self) -> int:
        return self.buffered_points + self._disk_points - (self._draining.done if self._draining else 0)

    def describe(self) -> str:
        """One line for the CLI and the logs."""
        state = "ok" if self._failing_since is None else \
            f"failing for {time.monotonic() - self._failing_since:.0f} s ({self.last_error})"
        files = len(self._files) + (self._draining is not None)
        return (f"InfluxDB {self.config.api} {redact(self.config.url)}: {state}; written {self.written_points}, "
                f"pending {self.pending_points} (memory {self.buffered_points}, spool {files} files, "
                f"{self.spilled_bytes} bytes), dead-letter {self.dead_letter_points}, dropped {self.dropped_points}")

    # -- memory and spool ----------------------------------------------------------------

    def _cut(self, *, full_only: bool = False) -> None:
        """Turn unbatched lines into batches (only whole ``batch_size`` ones if ``full_only``)."""
        lines, size = self._lines, self.config.batch_size
        end = len(lines) - len(lines) % size if full_only else len(lines)
        for i in range(0, end, size):
            chunk = lines[i:i + size]
            batch = Batch("\n".join(chunk).encode(), len(chunk))
            self._memory.append(batch)
            self._memory_bytes += len(batch.body)
            self._memory_points += batch.points
        del lines[:end]
        self._lines_since = time.monotonic()
        if end:
            self._wakeup.set()
            self._check_memory()
            self._update_gauges()

    def _check_memory(self) -> None:
        limit = self.config.memory_limit
        spilling = self._spill_task is not None and not self._spill_task.done()
        while spilling and self._memory_bytes > 2 * limit and self._memory:
            # a spill is under way and cannot keep up (a slow disk): memory must stay bounded all the same.
            # Not before a spill was tried, nor while the spool fails: then ``holding`` stops intake, and what
            # is over the limit came with the intake step already under way.
            batch = self._memory.popleft()
            self._forget([batch])
            self._drop(batch.points, "memory full and the spool cannot keep up")
        if self._memory_bytes > limit and not self._closed and (self._spill_task is None or self._spill_task.done()) \
                and time.monotonic() >= self._spill_retry_at:
            with contextlib.suppress(RuntimeError):  # submitted outside the loop (before it runs): the next cut spills
                self._spill_task = asyncio.get_running_loop().create_task(self._spill_overflow())

    async def _spill_overflow(self) -> None:
        async with self._spool_lock:
            # lines keep coming while a file is written: go on until memory is back under the limit
            while self._memory and self._memory_bytes > self.config.memory_limit:
                batches, size = [], 0
                while self._memory and self._memory_bytes - size > self.config.memory_limit // 2:
                    batches.append(batch := self._memory.popleft())
                    size += len(batch.body)
                if not await self._spill(batches):
                    return

    async def _spill(self, batches: list[Batch]) -> bool:
        """Move memory batches to spool files; on a disk error they go back to memory (False)."""
        groups = list(file_groups(batches, max(1, self.config.memory_limit // 8)))
        written = 0
        try:
            for group in groups:
                spool = await asyncio.to_thread(write_spool_file, self.spool_dir, self._next_seq(), group)
                written += 1
                self._forget(group)
                self._add_file(spool)
        except OSError as exc:
            self._spill_failed(exc)
        finally:  # also when cancelled: what is not on disk must stay in memory
            unwritten = [b for g in groups[written:] for b in g]
            if unwritten:
                self._memory.extendleft(reversed(unwritten))
                self._wakeup.set()  # the writer may have gone to sleep while they were out of memory
            self._enforce_spool_limit()
            self._update_gauges()
        if written == len(groups) and groups and self.spill_error is not None:
            log.warning("InfluxDB spool %s works again", self.spool_dir)
            self.spill_error, self._spill_failures = None, 0
        return written == len(groups)

    def _spill_failed(self, exc: OSError) -> None:
        """Keep the points in memory and try the disk again after a capped backoff, logging once."""
        if self.spill_error is None:
            log.error("cannot spill InfluxDB points to %s: %s; they stay in memory", self.spool_dir, exc)
        self.spill_error = f"{exc.strerror or exc}"
        self._spill_failures += 1
        delay = min(self.config.retry_max, self.config.retry_min * 2 ** min(self._spill_failures - 1, 30))
        self._spill_retry_at = time.monotonic() + delay

    async def _final_spill(self) -> None:
        async with self._spool_lock:
            self._closed = True
            self._cut()
            batches = []
            for batch in self._memory:
                if batch.copy is None:
                    batches.append(batch)
                else:  # persist() copied it to disk already: that file is now part of the spool
                    self._forget([batch])
                    self._copies_bytes -= batch.copy.size
                    self._add_file(batch.copy)
            self._memory.clear()
            if not await self._spill(batches):
                self._forget(list(self._memory))
                self._drop(sum(b.points for b in self._memory), "could not spill them at close")
                self._memory.clear()

    def _forget(self, batches: list[Batch]) -> None:
        self._memory_bytes -= sum(len(b.body) for b in batches)
        self._memory_points -= sum(b.points for b in batches)

    def _add_file(self, spool: SpoolFile) -> None:
        self._files.append(spool)
        self._disk_bytes += spool.size
        self._disk_points += spool.points
        self._wakeup.set()

    def _remove_file(self, spool: SpoolFile) -> None:
        unlink(spool.path)  # an unlink is a quick metadata update, fine on the loop
        self._disk_bytes -= spool.size
        self._disk_points -= spool.points

    def _enforce_spool_limit(self) -> None:
        while self._disk_bytes > self.config.spool_limit and self._files:
            spool = self._files.popleft()  # the oldest; the file being written from is not in _files
            self._remove_file(spool)
            self._drop(spool.points, f"the spool is over spool_limit ({self.config.spool_limit} bytes)")

    def _unwritten_in_memory(self) -> bool:
        inflight = self._inflight
        return bool(self._lines or self._memory or (inflight and not inflight.origin))

    def _next_seq(self) -> int:
        self._seq = max(time.time_ns() // 1000, self._seq + 1)
        return self._seq

    def _drop(self, points: int, why: str) -> None:
        self.dropped_points += points
        if self.metrics is not None:
            self.metrics.influx_points.labels("dropped").inc(points)
        log.error("InfluxDB sink dropped %d points: %s", points, why)

    def _update_gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.influx_buffered_points.set(self.buffered_points)
            self.metrics.influx_spilled_bytes.set(self.spilled_bytes)

    # -- the writer ----------------------------------------------------------------------

    async def _run_writer(self) -> None:
        while not self._stop.is_set():
            batch = self._next_batch()
            if batch is None:
                if self._files and self._draining is None:
                    await self._open_next_file()
                else:
                    await self._wait_for_work()
                continue
            self._inflight, done = batch, False
            try:
                done = await self._deliver(batch)
            except Exception:
                # a bug, or an error no transport should raise: keep the batch and the writer alive
                log.exception("InfluxDB writer failed; the batch is kept")
                await self._pause(self.config.retry_max)
            finally:  # also when cancelled at close: an unwritten batch goes back to be spilled
                self._inflight = None
                self._settle(batch, done)

    def _next_batch(self) -> Batch | None:
        if self._memory:
            batch = self._memory.popleft()
            self._forget([batch])
            return batch
        return self._drain.popleft() if self._drain else None

    def _settle(self, batch: Batch, done: bool) -> None:
        if not done:
            if batch.origin is not None:
                self._drain.appendleft(batch)
            else:
                self._memory.appendleft(batch)
                self._memory_bytes += len(batch.body)
                self._memory_points += batch.points
            return
        batch.resolved = True
        if batch.copy is not None:
            unlink(batch.copy.path)
            self._copies_bytes -= batch.copy.size
        spool = batch.origin
        if spool is not None:
            spool.done += batch.points
            if spool is self._draining and not self._drain:
                self._remove_file(spool)
                self._draining = None
        self._update_gauges()

    async def _open_next_file(self) -> None:
        spool = self._draining = self._files.popleft()
        try:
            batches = await asyncio.to_thread(read_spool_file, spool)
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            # a damaged file will not get better: set it aside for a human, count its points as lost
            target = self.dead_letter_dir / (spool.path.name + ".damaged")
            try:
                await asyncio.to_thread(set_aside, spool.path, target)
            except OSError as err:
                log.error("cannot move %s to %s: %s", spool.path, target, err)
            self._remove_file(spool)
            self._draining = None
            self._drop(spool.points, f"{spool.path.name} is damaged ({exc}); moved to {target}")
            return
        self._drain.extend(batches)
        if not batches:
            self._remove_file(spool)
            self._draining = None

