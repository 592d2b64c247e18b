"""The InfluxDB sink: batches line protocol, writes it, and loses nothing while InfluxDB is away.

``submit`` (event loop, never blocks) → batches of ``batch_size`` lines in memory → one
writer task sends them, one at a time, through a transport in a thread. While InfluxDB is
down the writer retries its one batch with capped, jittered backoff; everything else waits
in memory and, beyond ``memory_limit``, spills to gzip files in ``spool_dir`` (the oldest
points first, so memory keeps the newest and dashboards catch up from the present). The
spool is bounded by ``spool_limit`` (the oldest files are dropped and counted). When InfluxDB
is back the writer drains memory, then the spool oldest first.

A spool file is line protocol, a ``#ptmon-batch points=N bytes=M`` comment before each
batch: ``zcat f.lp.gz | curl --data-binary @- '.../write?db=ptmon&precision=u'`` replays it.
Batches InfluxDB rejects (parse errors, type conflicts) go to ``spool_dir/dead-letter/``
with the error as a comment, never retried. Delivery is at-least-once: a batch cut short by
a crash or a shutdown is written again, which InfluxDB treats as the same points.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import http.client
import logging
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol

from ..config import InfluxConfig
from ..credentials import redact, split_credentials
from ..durable import replacing_file
from ..errors import ConfigError, SinkError
from ..metrics import Metrics
from .influx_setup import advice, create_database_statement, needs_a_person, query_error
from .lineproto import split_lines

log = logging.getLogger(__name__)

SPOOL_GLOB = "*.lp.gz"
SPOOL_NAME = re.compile(r"^(\d+)-(\d+)\.lp\.gz$")
FRAME = re.compile(rb"#ptmon-batch points=(\d+) bytes=(\d+)\n")
RETRY_AFTER_CAP = 600.0  # seconds; a larger Retry-After is more likely a bug than a plan
SPOOL_GZIP_LEVEL = 1  # the spool is written under load, speed matters more than size
WIRE_GZIP_LEVEL = 1


class Transport(Protocol):
    """Sends one body; raises ``SinkError`` saying what to do. Called in a worker thread.

    A transport with ``self_compressing = True`` compresses by itself and wants plain bodies.
    """

    def write(self, body: bytes, *, gzipped: bool) -> None: ...


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def classify(status: int, message: str, retry_after: str | None = None) -> SinkError:
    """The SinkError for a non-2xx answer, by what the sink should do with the batch."""
    text = f"InfluxDB answered {status}: {' '.join(message.split())[:500]}"
    if status == 413:
        # the body exceeds the server's max-body-size: halves of it may fit
        return SinkError(text, retryable=False, status=status, too_large=True)
    if status in (400, 422):
        # the data itself is bad (parse error, type conflict, partial write): it never will be written
        return SinkError(text, retryable=False, status=status)
    if status == 429 or status >= 500:
        # overloaded or failing server: the same batch goes through later
        return SinkError(text, retryable=True, status=status, retry_after=_retry_after(retry_after))
    # 401/403/404 (credentials, missing database) and the unexpected: a config fix must not lose data
    return SinkError(text, retryable=True, status=status)


class V1Transport:
    """POST ``/write`` (InfluxDB 1.x, and the 1.x compatibility API of 2.x/3.x)."""

    def __init__(self, config: InfluxConfig) -> None:
        # user:password@ in the URL (a caller that did not split it off) is used, never sent as a host name
        creds = split_credentials(config.url)
        if urllib.parse.urlsplit(creds.url).scheme not in ("http", "https"):
            raise ConfigError(f"influx.url must be http:// or https://: {redact(config.url)!r}")
        params = {"db": config.database, "precision": "u"}
        if config.retention_policy:
            params["rp"] = config.retention_policy
        base = creds.url.rstrip("/")
        self.url = f"{base}/write?{urllib.parse.urlencode(params)}"
        self.query_url = f"{base}/query"
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        username, password = (config.username, config.password) if config.username else (creds.username, creds.password)
        if username:
            user = f"{username}:{password or ''}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(user).decode()
        self.database = config.database
        self.timeout = config.timeout
        # environment proxies are for people's browsers, not for the path to the database
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def write(self, body: bytes, *, gzipped: bool) -> None:
        headers = {**self.headers, "Content-Encoding": "gzip"} if gzipped else self.headers
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise classify(exc.code, _error_text(exc), exc.headers.get("Retry-After")) from exc
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, a cut-short answer
            # the server is away or the network is: the batch is fine
            raise SinkError(f"InfluxDB unreachable: {getattr(exc, 'reason', exc)}", retryable=True) from exc


    def create_database(self) -> None:
        """``CREATE DATABASE`` (a no-op when it exists); SinkError when refused or unreachable."""
        body = urllib.parse.urlencode({"q": create_database_statement(self.database)}).encode()
        headers = {**self.headers, "Content-Type": "application/x-www-form-urlencoded"}
        request = urllib.request.Request(self.query_url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                error = query_error(response.read())
        except urllib.error.HTTPError as exc:
            raise SinkError(f"InfluxDB answered {exc.code}: {query_error(exc.read()) or exc.reason}", retryable=True,
                            status=exc.code) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise SinkError(f"InfluxDB unreachable: {getattr(exc, 'reason', exc)}", retryable=True) from exc
        if error:  # InfluxDB 1.x answers 200 with the statement's error (e.g. "requires admin privilege")
            status = 403 if "authoriz" in error or "privilege" in error else 400
            raise SinkError(f"InfluxDB refused CREATE DATABASE: {error}", retryable=True, status=status)


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read().decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return str(exc.reason)


class V2Transport:
    """influxdb-client's ``/api/v2/write`` (InfluxDB 2.x, 1.8+, 3.x; VictoriaMetrics)."""

    self_compressing = True  # the client gzips itself when enable_gzip

    def __init__(self, config: InfluxConfig) -> None:
        from influxdb_client import InfluxDBClient, WritePrecision
        from influxdb_client.client.write_api import SYNCHRONOUS

        if split_credentials(config.url).username is not None:
            raise ConfigError(f"influx.url holds credentials ({redact(config.url)}), but the v2 API authenticates "
                              "with a token: put it in $PTMON_INFLUX_TOKEN and give the URL without user:password@")
        self._client = InfluxDBClient(url=config.url, token=config.token, org=config.org,
                                      enable_gzip=config.gzip, timeout=int(config.timeout * 1000))
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._bucket, self._org, self._precision = config.bucket, config.org, WritePrecision.US

    def write(self, body: bytes, *, gzipped: bool) -> None:
        import urllib3
        from influxdb_client.rest import ApiException

        if gzipped:
            body = gzip.decompress(body)  # the client compresses (again) by itself
        try:
            self._write_api.write(self._bucket, self._org, record=body, write_precision=self._precision)
        except ApiException as exc:
            raise classify(int(exc.status or 0), str(exc.message or exc.reason), exc.retry_after) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # the server is away or the network is: the batch is fine
            raise SinkError(f"InfluxDB unreachable: {exc}", retryable=True) from exc

    def close(self) -> None:
        self._client.close()


def make_transport(config: InfluxConfig) -> Transport:
    return V2Transport(config) if config.api == "v2" else V1Transport(config)


@dataclass(eq=False)
class Batch:
    """Up to ``batch_size`` lines, joined; ``points`` counts lines (a string may hold a newline)."""

    body: bytes
    points: int
    origin: SpoolFile | None = None  # the spool file it was read from
    copy: SpoolFile | None = None  # persist() wrote it to disk while it was in flight
    resolved: bool = False  # written or dead-lettered


@dataclass(eq=False)
class SpoolFile:
    path: Path
    points: int
    size: int  # bytes on disk
    done: int = 0  # points of it already written or dead-lettered


def write_spool_file(directory: Path, seq: int, batches: list[Batch]) -> SpoolFile:
    """One gzip file holding the batches, made durable: tmp, fsync, rename, fsync the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    points = sum(b.points for b in batches)
    path = directory / f"{seq:016d}-{points}.lp.gz"
    with replacing_file(path) as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=SPOOL_GZIP_LEVEL,
                                                    mtime=0) as out:
        for batch in batches:
            out.write(b"#ptmon-batch points=%d bytes=%d\n" % (batch.points, len(batch.body)))
            out.write(batch.body)
            out.write(b"\n")
    return SpoolFile(path, points, path.stat().st_size)


def read_spool_file(spool: SpoolFile) -> list[Batch]:
    """The batches of a spool file; ValueError when it is not one."""
    data = gzip.decompress(spool.path.read_bytes())
    batches, pos = [], 0
    while pos < len(data):
        frame = FRAME.match(data, pos)
        if frame is None:
            raise ValueError(f"no batch header at byte {pos}")
        points, size = int(frame[1]), int(frame[2])
        start = frame.end()
        if data[start + size:start + size + 1] != b"\n":
            raise ValueError(f"batch at byte {pos} is cut short")
        batches.append(Batch(data[start:start + size], points, origin=spool))
        pos = start + size + 1
    return batches


def scan_spool(directory: Path) -> list[SpoolFile]:
    """Spool files left by earlier runs, oldest first; removes half-written ones."""
    directory.mkdir(parents=True, exist_ok=True)
    for tmp in directory.glob(".*.tmp"):
        tmp.unlink()  # never renamed: its points were still in memory and are not ours to restore
    files = []
    for path in sorted(directory.glob(SPOOL_GLOB)):
        if match := SPOOL_NAME.match(path.name):
            files.append(SpoolFile(path, int(match[2]), path.stat().st_size))
    return files


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _bytes_under(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*") if p.is_file()) if directory.is_dir() else 0


def failure_reason(exc: SinkError) -> str:
    """The ``reason`` label of ``ptmon_influx_failures``."""
    if exc.too_large:
        return "too_large"
    if exc.status is None:
        return "network"
    if exc.status == 429:
        return "throttled"
    if exc.status >= 500:
        return "server_error"
    if exc.status in (401, 403, 404):
        return "config"
    return "other" if exc.retryable else "rejected"


def _halves(body: bytes, points: int) -> list[tuple[bytes, int]]:
    """The body cut in two at a line boundary; [] when it is one line."""
    # every newline ends a line unless a string field holds one (then there are fewer lines than newlines+1)
    lines = body.split(b"\n") if body.count(b"\n") + 1 == points else split_lines(body)
    if len(lines) < 2:
        return []
    mid = len(lines) // 2
    return [(b"\n".join(lines[:mid]), mid), (b"\n".join(lines[mid:]), len(lines) - mid)]


def _file_groups(batches: list[Batch], limit: int) -> Iterable[list[Batch]]:
    """Consecutive batches in groups of at most ``limit`` bytes (a batch is never split)."""
    group: list[Batch] = []
    size = 0
    for batch in batches:
        if group and size + len(batch.body) > limit:
            yield group
            group, size = [], 0
        group.append(batch)
        size += len(batch.body)
    if group:
        yield group


class InfluxSink:
    """Batches submitted lines and writes them to InfluxDB; spills to ``spool_dir`` while it cannot.

    Counters for tests and the CLI: ``written_points``, ``dead_letter_points``,
    ``dropped_points``; ``buffered_points`` (memory), ``spilled_bytes`` (disk) and
    ``pending_points`` (memory + disk) are computed.
    """

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

    # -- the collector's API -------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer; spool files of an earlier run are written too."""
        if self._writer is not None:
            raise RuntimeError("InfluxSink already started")
        files = await asyncio.to_thread(scan_spool, self.spool_dir)
        self._dead_letter_bytes = await asyncio.to_thread(_bytes_under, self.dead_letter_dir)
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

    async def _create_database(self) -> None:
        """CREATE DATABASE, as Telegraf does; the outcome is kept to explain a later 'database not found'."""
        create = getattr(self.transport, "create_database", None)
        if create is None:
            self._creation = "this transport cannot create databases"
            return
        try:
            await asyncio.to_thread(create)
        except SinkError as exc:
            if exc.status in (401, 403):
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

    def holding(self) -> str | None:
        """Why intake should wait: InfluxDB cannot take points and the spool cannot either, with
        memory at its limit (points are not dropped while the collector can still hold messages)."""
        if self.spill_error is not None and self._memory_bytes > self.config.memory_limit:
            return f"InfluxDB unavailable ({self.last_error or 'writing'}) and its spool failing ({self.spill_error})"
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
                        await asyncio.to_thread(_unlink, copy.path)
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
        end = loop.time() + deadline
        try:
            # no point waiting for a server that is down: its batch is spilled with the rest
            while self._unwritten_in_memory() and self._failing_since is None and loop.time() < end \
                    and self._writer is not None and not self._writer.done():
                self._cut()
                await asyncio.sleep(0.02)
        finally:
            await self._stop_writer(max(0.0, end - loop.time()))
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
        while self._memory_bytes > 2 * limit and self._memory:
            # the spool cannot keep up (slow or failing disk): memory must stay bounded all the same
            batch = self._memory.popleft()
            self._forget([batch])
            self._drop(batch.points, "memory full and the spool cannot keep up")
        if self._memory_bytes > limit and not self._closed and (self._spill_task is None or self._spill_task.done()) \
                and time.monotonic() >= self._spill_retry_at:
            try:
                self._spill_task = asyncio.get_running_loop().create_task(self._spill_overflow())
            except RuntimeError:  # submitted outside the loop (before it runs): the next cut spills
                pass

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
        groups = list(_file_groups(batches, max(1, self.config.memory_limit // 8)))
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
        _unlink(spool.path)  # an unlink is a quick metadata update, fine on the loop
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
            _unlink(batch.copy.path)
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
                await asyncio.to_thread(_set_aside, spool.path, target)
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

    async def _wait_for_work(self) -> None:
        """Sleep until a batch is due: a full one was cut, a file spilled, or a line waited flush_interval."""
        self._wakeup.clear()
        timeout = None
        if self._lines:
            timeout = self._lines_since + self.config.flush_interval - time.monotonic()
            if timeout <= 0:
                self._cut()
                return
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except TimeoutError:
            pass

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
                halves = _halves(body, points) if exc.too_large else []
                if halves:
                    if points == batch.points:
                        log.info("InfluxDB found %d points too large (%s); writing them in halves", points, exc)
                    parts[-1:] = halves[::-1]
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
            await asyncio.to_thread(self._post, body)
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

    async def _stop_writer(self, timeout: float) -> None:
        self._stop.set()
        self._wakeup.set()
        writer = self._writer
        if writer is None:
            return
        done, _ = await asyncio.wait({writer}, timeout=timeout)
        if not done:
            # a request still hangs: leave its thread to time out; the batch is spilled and written again later
            writer.cancel()
            await asyncio.wait({writer})
        if not writer.cancelled() and writer.exception() is not None:
            log.error("InfluxDB writer died", exc_info=writer.exception())

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
            await asyncio.to_thread(_write_dead_letter, path, header.encode() + body + b"\n")
        except OSError as err:
            log.error("InfluxDB rejected %d points, and they cannot be kept in %s (%s): %s", points, path, err, exc)
            return
        self._dead_letter_bytes += len(body)
        log.error("InfluxDB rejected %d points, kept in %s: %s", points, path, exc)


def _set_aside(path: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    path.replace(target)


def _write_dead_letter(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
