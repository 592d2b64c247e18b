"""Delivering one batch to InfluxDB: the write in a worker thread, and what each failure means.

Every failure is classified (collector/sinks/influx_transport.py): a batch too large is written in
halves; one InfluxDB rejects (4xx, parse errors, type conflicts) goes to the dead-letter spool and
is never retried; the rest (5xx, 429 with its Retry-After, the network) is retried with capped,
jittered backoff, and a failure only a person can fix (credentials, a missing database) is said
once, clearly. The buffering around it (memory, spool) is :class:`~.influx.InfluxSink`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

from ..config import InfluxConfig
from ..credentials import redact
from ..errors import SinkError
from ..lifecycle import in_daemon_thread
from ..metrics import Metrics
from .influx_setup import advice, needs_a_person
from .influx_transport import Transport, failure_reason
from .spool import (
    Batch,
    halves,
    write_dead_letter,
)

log = logging.getLogger("ptmon.sinks.influx")  # the sink's log, as before delivery had a module

RETRY_AFTER_CAP = 600.0  # seconds; a larger Retry-After is more likely a bug than a plan
WIRE_GZIP_LEVEL = 1


class InfluxDelivery:
    """The writer task's half of :class:`~.influx.InfluxSink`: deliver a batch, wait for work, stop (a mixin)."""

    config: InfluxConfig
    metrics: Metrics | None
    transport: Transport
    spool_dir: Path
    dead_letter_dir: Path
    written_points: int
    dead_letter_points: int
    last_error: str | None
    _compress: bool
    _creation: str
    _failures: int
    _failing_since: float | None
    _told: str | None
    _dead_letter_bytes: int
    _stop: asyncio.Event
    _wakeup: asyncio.Event
    _lines: list[str]
    _lines_since: float
    _close_by: float
    _writer: asyncio.Task[None] | None
    # the buffering half's, which the delivery reports and cuts with
    _next_seq: Callable[[], int]
    _cut: Callable[..., None]

    @property
    def pending_points(self) -> int:
        raise NotImplementedError  # the buffering half's: memory and spool

    async def _create_database(self) -> None:
        """CREATE DATABASE, as Telegraf does; the outcome is kept to explain a later 'database not found'."""
        create = getattr(self.transport, "create_database", None)
        if create is None:
            self._creation = "this transport cannot create databases"
            return
        try:
            await in_daemon_thread(create)  # as the writes: a hung request must not hold the process at exit
        except SinkError as exc:
            if exc.status == 401:  # authentication failed: the writes will say so, with the user
                self._creation = f"the credentials were refused: {exc}"
                log.warning("InfluxDB at %s refused the credentials for CREATE DATABASE (%s)", redact(self.config.url),
                            exc)
            elif exc.status == 403:
                self._creation = f"this account may not: {exc}"
                log.warning("InfluxDB at %s: this account may not create databases (%s); assuming %r exists "
                            "(influx.skip_database_creation = true skips the attempt)", redact(self.config.url), exc,
                            self.config.database)
            else:
                self._creation = f"it failed: {exc}"  # unreachable or refused: tried again when a write finds it missing
            return
        if self._creation != "created":
            log.info("InfluxDB database %r ready at %s (CREATE DATABASE)", self.config.database, redact(self.config.url))
        self._creation = "created"

    async def _deliver(self, batch: Batch) -> bool:
        """Write a batch (in halves on 413) until written or dead-lettered; False if the sink stops first."""
        parts = [(batch.body, batch.points)]
        while parts:
            body, points = parts[-1]
            try:
                await self._send(body)
            except SinkError as exc:
                self._note_failure(exc)
                if exc.status == 404 and self.config.api == "v1" and not self.config.skip_database_creation \
                        and not self._creation.startswith("this account may not"):
                    await self._create_database()  # it went missing, or InfluxDB was away at start
                smaller = halves(body, points) if exc.too_large else []
                if smaller:
                    if points == batch.points:
                        log.info("InfluxDB found %d points too large (%s); writing them in halves", points, exc)
                    parts[-1:] = smaller[::-1]
                elif not exc.retryable:
                    parts.pop()
                    await self._dead_letter(body, points, exc)
                elif not await self._pause(self._backoff(exc.retry_after)):
                    return False
                continue
            parts.pop()
            self._note_written(points)
        return True

    async def _send(self, body: bytes) -> None:
        started = time.perf_counter()
        try:
            await in_daemon_thread(lambda: self._post(body))  # a hung request must not hold the process at exit
        finally:
            if self.metrics is not None:
                self.metrics.influx_write_seconds.observe(time.perf_counter() - started)

    def _post(self, body: bytes) -> None:
        """In a worker thread: the only place that talks to InfluxDB."""
        if self._compress:
            self.transport.write(gzip.compress(body, WIRE_GZIP_LEVEL, mtime=0), gzipped=True)
        else:
            self.transport.write(body, gzipped=False)

    def _backoff(self, retry_after: float | None) -> float:
        delay = min(self.config.retry_max, self.config.retry_min * 2 ** min(self._failures - 1, 30))
        delay *= random.uniform(0.5, 1.0)  # jitter: collectors that lost InfluxDB together do not return in step
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
        return delay

    async def _pause(self, seconds: float) -> bool:
        """Sleep; False when the sink is stopping."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            return True
        return False

    def _note_written(self, points: int) -> None:
        self.written_points += points
        if self.metrics is not None:
            self.metrics.influx_points.labels("written").inc(points)
        if self._failing_since is not None:
            log.warning("InfluxDB writes work again after %.0f s and %d failures; %d points pending",
                        time.monotonic() - self._failing_since, self._failures, self.pending_points)
            self._failing_since, self._failures, self._told = None, 0, None

    def _note_failure(self, exc: SinkError) -> None:
        if self.metrics is not None:
            self.metrics.influx_failures.labels(failure_reason(exc)).inc()
        self.last_error = str(exc)
        if not exc.retryable:
            return  # split or dead-lettered, logged there
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        if needs_a_person(exc):
            # wrong credentials, a missing database or bucket: said once, clearly, not once per batch
            if self._told != f"{exc.status}":
                self._told = f"{exc.status}"
                log.error("%s", advice(self.config, exc, self._creation))
        elif self._failures == 1 or self._failures % 10 == 0:  # an outage usually just needs time
            log.warning("InfluxDB write failed (%d in a row), retrying; %d points pending: %s",
                        self._failures, self.pending_points, exc)

    async def _dead_letter(self, body: bytes, points: int, exc: SinkError) -> None:
        self.dead_letter_points += points
        if self.metrics is not None:
            self.metrics.influx_points.labels("dead_letter").inc(points)
        if self._dead_letter_bytes + len(body) > self.config.spool_limit:
            log.error("InfluxDB rejected %d points, dead-letter spool full, not kept: %s", points, exc)
            return
        path = self.dead_letter_dir / f"{self._next_seq():016d}-{points}.lp"
        header = "".join(f"# {text}\n" for text in f"status {exc.status}: {exc}".splitlines())
        try:
            await asyncio.to_thread(write_dead_letter, path, header.encode() + body + b"\n")
        except OSError as err:
            log.error("InfluxDB rejected %d points, and they cannot be kept in %s (%s): %s", points, path, err, exc)
            return
        self._dead_letter_bytes += len(body)
        log.error("InfluxDB rejected %d points, kept in %s: %s", points, path, exc)

    async def _wait_for_work(self) -> None:
        """Sleep until a batch is due: a full one was cut, a file spilled, or a line waited flush_interval."""
        self._wakeup.clear()
        timeout = None
        if self._lines:
            timeout = self._lines_since + self.config.flush_interval - time.monotonic()
            if timeout <= 0:
                self._cut()
                return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _stop_writer(self) -> None:
        """Let the writer finish its request until ``_close_by`` (which :meth:`hurry` brings forward)."""
        self._stop.set()
        self._wakeup.set()
        writer = self._writer
        if writer is None:
            return
        loop = asyncio.get_running_loop()
        while not writer.done() and loop.time() < self._close_by:
            await asyncio.wait({writer}, timeout=min(0.1, self._close_by - loop.time()))
        if not writer.done():
            # a request still hangs: leave its thread to time out; the batch is spilled and written again later
            writer.cancel()
            await asyncio.wait({writer})
        if not writer.cancelled() and writer.exception() is not None:
            log.error("InfluxDB writer died", exc_info=writer.exception())
