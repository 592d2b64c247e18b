"""Message archives: gzip JSON Lines, one object per received message.

Each line is ``{"t": <receive time, unix seconds>, "topic": "...", "payload": "<raw payload>"}``.
Lines whose topic starts with ``$ptmon/`` are the monitor's own control records (MQTT clients
cannot publish to ``$`` topics that ``putuo/#`` subscriptions match, so devices cannot forge
them):

* ``$ptmon/monitor`` with payload ``up`` or ``down``: the monitor started or stopped observing
  at ``t``. An ``up`` with no ``down`` before it marks a restart after a crash.
* ``$ptmon/tick``: the monitor's clock reached ``t`` with no message (keeps a replay of a quiet
  period identical to what the live engine sampled).
* ``$ptmon/limits``: a JSON object of the decoder's limits (``max_payload``, ``device_rate``,
  ``window``, ``unknown_limit``) from ``t`` on, written at each start, so a replay rejects
  what the live collector rejected.
* ``$ptmon/retained``: a message the broker delivered with the MQTT retain flag set — its
  stored copy, sent again on every subscribe — received at ``t``. The payload is a JSON object
  ``{"topic": <the message's topic>, "payload": <its raw payload>}``. It is never a heartbeat and
  counts toward nothing but the ``retained`` count of the device its topic names. Gateway
  statuses are retained by design and stay ordinary records. Unlike the others this record is
  a received message: it proves the monitor was observing, as a rejected message does.
  Archives written before it existed hold retained messages as ordinary records and read as
  they always did.
* ``$ptmon/partition``: the partition collector that wrote the file (``collector/partition.py``),
  a JSON object ``{"streets": [...], "rules_version": ..., "registry_version": ...}``, the first
  line of every file a partition writes (each day's file and each start's new part). Records
  carry no partition of their own, so a day file identifies itself by it: commands that read an
  archive refuse a file whose streets differ from its directory's ``partition.json``, or a
  partition's file in a directory without one (it would pass for the whole district). It counts
  toward nothing. A whole-district collector writes none; files without it (older archives, the
  district's) read as they always did. Readers older than this record skip it as an unknown
  control record (counted, logged).

A reader never stops on a bad line: it counts it, logs where it was, and goes on. A gzip
stream cut short (a crash mid-write) ends that file with a warning. A damaged gzip stream (a
failed check, invalid deflate data, a bad member: archive_damage.py) stops the reader with an
error naming the file and byte.
"""

from __future__ import annotations

import contextlib
import gzip
import heapq
import io
import itertools
import logging
import multiprocessing
import os
import re
import threading
import zlib
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import orjson
from zlib_ng import zlib_ng

from .archive_damage import (
    ArchiveDamaged,
    Garbled,
    ZeroTail,
    could_be_cut_record,
    damage_offset,
    inflated_bytewise,
    is_damage,
    trailing_zeros,
)
from .errors import ArchiveError, reason
from .lines import ArchiveLines, Block, scan
from .scan_slots import Packed, Slots
from .timebase import END_SERVED_S, FIRST_SERVED_S
from .worker_process import set_up_worker, sigint_held

log = logging.getLogger(__name__)

CONTROL_PREFIX = "$ptmon/"
MONITOR_TOPIC = "$ptmon/monitor"
TICK_TOPIC = "$ptmon/tick"
RETAINED_TOPIC = "$ptmon/retained"
GZIP_MAGIC = b"\x1f\x8b"
PARTITION_TOPIC = "$ptmon/partition"  # the partition that wrote the file: its first line
Record = tuple[float, str, str]
LOGGED_BAD_LINES = 5
BLOCK_BYTES = 1 << 22  # decompressed bytes a block of lines is cut from
SCAN_WORKERS = 2  # processes scanning blocks for a replay (the machine's two cores, with the replay's own)
SLOT_BYTES = 4 * BLOCK_BYTES  # shared memory a piece goes to its worker in, and its block comes back in
# The inflater: zlib-ng's, a fork of zlib's with the same stream checks and error messages, about
# 2.5x faster here (tests/test_archive_inflate.py compares it with zlib on cut and damaged files).
_INFLATE: Any = zlib_ng
INFLATE_ERRORS = (zlib.error, cast(type[Exception], zlib_ng.error))  # its stub types the class as an instance


class _GzipUntilCut(io.RawIOBase):
    """Gzip members decompressed in C (zlib-ng), ending quietly where a crash cut the file, all data before kept.

    A collector killed mid-file leaves a stream that was sync-flushed after every batch but
    has no trailer. GzipFile refuses such a stream outright (EOFError before returning the
    data it holds); zlib's decompressor gives back everything up to the cut.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.member: Any = None  # the current member's decompressor, None between members
        self.pending = b""
        self.cut: Exception | None = None
        self.ended = False
        self.size = raw.seek(0, io.SEEK_END)
        self.held = trailing_zeros(raw)  # the zeros ending the file: inflated only if they end its last member
        self.unread = self.size - self.held
        self.zeros: ZeroTail | None = None

    def read_raw(self) -> bytes:
        chunk = self.raw.read(min(1 << 16, self.unread))
        self.unread -= len(chunk)
        if not chunk and self.held:
            self._settle_zeros()
        return chunk

    def _settle_zeros(self) -> None:
        """The zeros ending the file are data only when they complete its last member's trailer (the
        CRC and size check out, nothing more inflated); else they are a power cut's unwritten blocks
        (inflated, they can decode as copies of earlier lines) and the file is cut where they begin."""
        held, self.held = self.held, 0
        if self.member is not None:
            member = self.member.copy()
            with contextlib.suppress(*INFLATE_ERRORS):
                if member.decompress(bytes(held)) == b"" and member.eof:
                    self.member, held = None, len(member.unused_data)
        if held:
            self.zeros = ZeroTail(held, self.size)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending and not self.ended:
            self._decompress(self.read_raw())
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def _decompress(self, chunk: bytes) -> None:
        if not chunk:
            self.ended = True
            if self.zeros is not None:
                self.cut = self.zeros
            elif self.member is not None:
                self.cut = EOFError("no gzip trailer")
            return
        out = []
        try:
            while chunk:
                if self.member is None:
                    self.member = _INFLATE.decompressobj(31)  # 31: a gzip header and trailer, CRC checked
                before = self.member.copy()
                try:
                    out.append(self.member.decompress(chunk))
                except INFLATE_ERRORS:
                    # a failing call returns nothing: keep what the chunk gave before the byte refused
                    out.append(inflated_bytewise(before, chunk, _INFLATE, INFLATE_ERRORS)[1])
                    raise
                chunk = b""
                if self.member.eof:
                    chunk, self.member = self.member.unused_data, None
        except INFLATE_ERRORS as exc:
            self.cut, self.ended, self.member = exc, True, None
        self.pending = b"".join(out)

    def close(self) -> None:
        self.raw.close()
        super().close()


class _Decompressed:
    """An archive's bytes in blocks of about ``BLOCK_BYTES``, decompressed as :class:`_GzipUntilCut`
    reads them (the same 64 KiB reads, so a damaged file yields the very bytes it yields)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cut: Exception | None = None

    def read(self) -> Iterator[bytes]:
        stream, gz = _open_text(self.path)
        with stream:
            if gz is None:
                while data := stream.read(BLOCK_BYTES):
                    yield data
                return
            if isinstance(gz, _NotGzip):
                self.cut = gz.cut
                return
            while not gz.ended:
                pieces, size = [], 0
                while size < BLOCK_BYTES and not gz.ended:
                    gz._decompress(gz.read_raw())
                    pieces.append(gz.pending)
                    size += len(gz.pending)
                    gz.pending = b""
                yield b"".join(pieces)
            self.cut = gz.cut


Piece = tuple[Path, "bytes | None", "Exception | None"]  # (path, whole lines, cut); None: the file's end
Scanned = tuple[Path, "Block | None", "Exception | None"]
Prepare = Callable[[ArchiveLines], None]


def _pieces(path: Path) -> Iterator[Piece]:
    """A file's decompressed bytes in blocks of whole lines, then its end (with the cut, if any)."""
    chunks = _Decompressed(path)
    rest = b""
    for chunk in chunks.read():
        cut = chunk.rfind(b"\n") + 1  # the chunk's whole lines, after the rest of the last: copied once
        if not cut:
            rest += chunk
            continue
        data = chunk if not rest and cut == len(chunk) else b"".join([rest, memoryview(chunk)[:cut]])
        rest = chunk[cut:]
        yield path, data, None
    if rest:
        yield path, rest, None
    yield path, None, chunks.cut


def _scan(data: bytes, prepare: Prepare | None) -> Block:
    block = scan(data)
    if prepare is not None and len(block.lines):
        prepare(block.lines)
    return block


_worker_prepare: Prepare | None = None  # a scanning worker's, inherited through the fork
_worker_slots: Slots | None = None


def _set_up_worker(parent: int, prepare: Prepare | None, slots: Slots | None = None) -> None:
    global _worker_prepare, _worker_slots
    set_up_worker(parent)
    _worker_prepare, _worker_slots = prepare, slots


def _scan_in_worker(piece: bytes | tuple[int, int]) -> Block | Packed:
    if isinstance(piece, bytes):
        return _scan(piece, _worker_prepare).without_buffer()  # the caller has the bytes: not sent back
    assert _worker_slots is not None
    at, length = piece
    return _worker_slots.pack(_scan(_worker_slots.take(at, length), _worker_prepare).without_buffer(), at)


def _scanned(pieces: Iterator[Piece], prepare: Prepare | None, workers: int) -> Generator[Scanned, None, None]:
    """The pieces' blocks scanned (and prepared), in order; by ``workers`` forked processes, a few
    blocks ahead, when ``workers`` > 0 and this process runs no other thread (``prepare`` is
    inherited by the fork, never pickled). The blocks are the same either way."""
    if workers <= 0 or "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        # in line: no fork of a process with other threads (a lock one holds would stay held in the child)
        yield from _scanned_here(pieces, prepare)
        return
    ahead = 2 * workers  # pieces in flight, bounded: a block is a few MB
    try:
        slots = Slots(ahead + 1, SLOT_BYTES)  # before the fork: the workers inherit it
    except OSError as exc:  # no room for it (ulimit -v, a container's memory limit)
        log.warning("cannot map %d MiB for the archive's scanning workers (%s): scanning in this process, more "
                    "slowly", (ahead + 1) * SLOT_BYTES >> 20, exc.strerror)
        yield from _scanned_here(pieces, prepare)
        return
    children = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_set_up_worker, initargs=(os.getpid(), prepare, slots))
    try:
        with sigint_held():  # the workers forked and the pool's thread running before a Ctrl-C lands
            pool.submit(int).result()
    except (OSError, BrokenProcessPool) as exc:  # a fork refused (memory, a process limit), a worker gone at once
        # A worker forked before the fork that failed waits for work the pool will never send (it
        # started no thread to tell it to stop), and the exit would wait for it: it is ended here.
        for started in set(multiprocessing.active_children()) - children:
            started.kill()
            started.join()
        pool.shutdown(wait=False, cancel_futures=True)
        log.warning("cannot start the archive's scanning workers (%s): scanning in this process, more slowly", exc)
        yield from _scanned_here(pieces, prepare)
        return
    except BaseException:  # Ctrl-C: every worker told to stop, or the interpreter's exit waits for them
        _shut_down(pool)
        raise
    pending: deque[tuple[Path, bytes | None, Future[Block | Packed] | None, Exception | None]] = deque()

    reading: Path | str = "the archive"  # the file whose block is awaited or sent (for the error)

    def received(path: Path, data: bytes | None, block: Future[Block | Packed] | None, cut: Exception | None) -> Scanned:
        """A block scanned by a worker, given its bytes again (its slot free once this returns)."""
        nonlocal reading
        reading = path
        return path, None if block is None or data is None else slots.unpack(block.result()).with_buffer(data), cut

    try:
        for path, data, cut in pieces:
            reading = path
            pending.append((path, data, None if data is None else pool.submit(_scan_in_worker, slots.put(data)), cut))
            while len(pending) > ahead:
                yield received(*pending.popleft())
        while pending:
            yield received(*pending.popleft())
    except BrokenProcessPool:
        raise ArchiveError(f"a worker process scanning {reading} was killed (out of memory? see the kernel "
                           "log): the archive could not be read to its end") from None
    finally:
        _shut_down(pool)


def _shut_down(pool: ProcessPoolExecutor) -> None:
    """Every worker told to stop and waited for; a second Ctrl-C must not cut this short (the
    interpreter's exit would then wait for ever for workers never told to stop)."""
    with sigint_held():
        pool.shutdown(wait=True, cancel_futures=True)


def _scanned_here(pieces: Iterator[Piece], prepare: Prepare | None) -> Iterator[Scanned]:
    for path, data, cut in pieces:
        yield path, None if data is None else _scan(data, prepare), cut


def _open_text(path: Path) -> tuple[IO[bytes], _GzipUntilCut | _NotGzip | None]:
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot open archive: {reason(exc)}") from exc
    magic = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    if (magic and GZIP_MAGIC.startswith(magic)) or (magic[:1] == b"\0" and trailing_zeros(raw) == path.stat().st_size):
        # GzipFile's own readline is Python per line; a BufferedReader over it splits lines in C.
        stream = _GzipUntilCut(raw)
        return io.BufferedReader(stream, buffer_size=1 << 20), stream
    if magic and path.name.endswith(".gz"):
        raw.close()
        return io.BytesIO(b""), _NotGzip(magic)
    if not magic and path.name.endswith(".gz"):
        log.warning("%s: archive file is empty (0 bytes; created just before a crash or a power cut, or emptied "
                    "since): nothing read from it", path)
    return raw, None


class _NotGzip:
    """A file named ``.gz`` that does not start as gzip: damage (one flipped bit of its first byte would
    otherwise have its compressed bytes read as text lines, every one skipped, the file's hours a gap)."""

    ended = True

    def __init__(self, magic: bytes) -> None:
        self.cut: Exception = zlib.error(f"not a gzip file: it starts with {magic.hex(' ')}, not 1f 8b")


class ArchiveReader:
    """Reads one or more archives as a single stream merged by receive time.

    A file cut short (a crash while writing) is read up to the cut, with a warning. A damaged
    file (archive_damage.py) raises :class:`ArchiveDamaged` once its readable records are read;
    ``on_damage="log"`` logs it as an error and goes on instead (``damaged`` lists the files)."""

    def __init__(self, paths: Iterable[str | Path], *, on_damage: str = "raise") -> None:
        self.paths = [Path(p) for p in paths]
        for p in self.paths:
            if not p.is_file():
                raise ArchiveError(f"{p}: archive not found")
        self.records = 0
        self.bad_lines = 0
        self.truncated: list[str] = []
        self.damaged: list[str] = []
        self.on_damage = on_damage
        # the file the last record given came from (where a reader that stopped stopped); None when files are
        # merged by time from several streams, each read ahead of the record given
        self.reading: Path | None = None
        self._merging = False
        self._first_bad: dict[Path, int] = {}  # a file's first bad line, named if the file turns out damaged
        self._last_bad_cut: dict[Path, bool] = {}  # whether a file's last bad line could be a cut's record start

    def __iter__(self) -> Iterator[Record]:
        """One collector's files (one directory, the collector's names) in the order it wrote them
        (day, then part): the order its engine saw the records in, also where its clock stepped
        back at a restart. Different directories, or other names, merge by receive time (stable:
        equal times keep file order, so the stream is deterministic)."""
        streams: list[Iterator[Record]] = []
        for _, group in itertools.groupby(sorted(self.paths, key=_write_order), key=lambda p: p.parent):
            paths = list(group)
            if all(ARCHIVE_FILE_NAME.fullmatch(p.name) for p in paths):
                streams.append(itertools.chain.from_iterable(map(self._read, paths)))
            else:
                streams += [self._read(p) for p in paths]
        self._merging = len(streams) > 1
        return heapq.merge(*streams, key=itemgetter(0))

    def _read(self, path: Path) -> Iterator[Record]:
        self.reading = None if self._merging else path
        stream, gz = _open_text(path)
        with stream:
            lineno = 0
            try:
                for line in stream:
                    lineno += 1
                    record = self._record(line, path, lineno)
                    if record is not None:
                        yield record
            except (EOFError, *INFLATE_ERRORS, gzip.BadGzipFile) as exc:
                gz = None
                self._cut(path, lineno, exc)
            if gz is not None and gz.cut is not None:
                self._cut(path, lineno, gz.cut)

    def _record(self, line: bytes, path: Path, lineno: int) -> Record | None:
        """One line's record; None (counted, logged) for a bad line, None for a blank one."""
        try:
            obj = orjson.loads(line)
            t, topic, payload = obj["t"], obj["topic"], obj["payload"]
            if type(t) not in (int, float) or type(topic) is not str or type(payload) is not str:
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            if line.strip():
                self._bad_line(path, lineno, line)
            return None
        if not FIRST_SERVED_S <= t < END_SERVED_S:  # NaN neither: a damaged line
            self._bad_line(path, lineno, line, "its receive time is outside the months ptmon serves (1970-01 to 9999-11)")
            return None
        self.records += 1
        return float(t), topic, payload

    def blocks(self, prepare: Prepare | None = None, *, in_process: bool = False) -> Iterator[Record | ArchiveLines]:
        """The records of ``iter(self)``, the plain lines (lines.py) as :class:`ArchiveLines` a
        block at a time, every other line as its record. ``prepare`` is called on each block's
        plain lines as it is scanned. ``in_process``: ``SCAN_WORKERS`` forked processes scan and
        prepare the next blocks while the caller works on this one (``prepare`` must then use
        nothing the caller changes after the first block); decompressing, counting,
        logging and every record stay here, in order, so reading stops exactly where the caller
        stops. Archives read as several streams merged by time are read line by line."""
        ordered = sorted(self.paths, key=_write_order)
        if len(ordered) > 1 and not (len({p.parent for p in ordered}) == 1
                                     and all(ARCHIVE_FILE_NAME.fullmatch(p.name) for p in ordered)):
            yield from self
            return

        pieces = itertools.chain.from_iterable(_pieces(path) for path in ordered)
        scanned = _scanned(pieces, prepare, SCAN_WORKERS if in_process else 0)
        lineno = 0  # lines of the file before this block
        try:
            for path, block, cut in scanned:
                if block is not None:
                    self.reading = path
                    yield from self._block_records(block, path, lineno)
                    lineno += len(block.starts)
                else:
                    if cut is not None:
                        self._cut(path, lineno, cut)
                    lineno = 0
        finally:
            scanned.close()

    def _block_records(self, block: Block, path: Path, lineno: int) -> Iterator[Record | ArchiveLines]:
        """A block's plain lines in runs, each other line's record between them, in order."""
        taken = line = 0  # plain lines yielded; the block's next line
        for row in [*np.flatnonzero(~block.plain).tolist(), len(block.plain)]:
            if row > line:
                self.records += row - line
                yield block.lines.rows(taken, taken + row - line)
                taken += row - line
            if row < len(block.plain):
                record = self._record(block.buffer[block.starts[row] : block.ends[row]], path, lineno + row + 1)
                if record is not None:
                    yield record
            line = row + 1

    def _cut(self, path: Path, lineno: int, exc: Exception) -> None:
        if not is_damage(exc, INFLATE_ERRORS) and self._garbled(path, lineno):
            exc = Garbled()
        if is_damage(exc, INFLATE_ERRORS):
            damage = ArchiveDamaged(path, exc, damage_offset(path, _INFLATE, INFLATE_ERRORS), path.stat().st_size,
                                    lineno=lineno, first_bad_line=self._first_bad.get(path))
            self.damaged.append(str(path))
            if self.on_damage == "raise":
                raise damage
            log.error("%s", damage)
            return
        self.truncated.append(str(path))
        if isinstance(exc, ZeroTail):
            log.warning("%s: archive is cut short after line %d: %s; read up to there", path, lineno, exc)
            return
        log.warning("%s: archive is cut short after line %d (%s), as a crash while writing leaves it, or a collector "
                    "still writing it; read up to there",
                    path, lineno, exc)

    def _garbled(self, path: Path, lineno: int) -> bool:
        """Whether a file that ends without its gzip trailer holds lines no crash leaves: a bad line
        before its last, or a last one that is no record's start."""
        if path not in self._first_bad:
            return False
        return self._first_bad[path] < lineno or not self._last_bad_cut[path]

    def _bad_line(self, path: Path, lineno: int, line: bytes, why: str = "") -> None:
        self.bad_lines += 1
        self._first_bad.setdefault(path, lineno)
        self._last_bad_cut[path] = could_be_cut_record(line.rstrip(b"\r\n"))
        if self.bad_lines <= LOGGED_BAD_LINES:
            log.warning("%s:%d: not an archive record (t, topic, payload)%s; skipped", path, lineno, f": {why}" if why else "")


def retained_record(t: float, topic: str, payload: str) -> Record:
    """The archive record of a retained message received at ``t`` (see ``$ptmon/retained``)."""
    return (t, RETAINED_TOPIC, orjson.dumps({"topic": topic, "payload": payload}).decode())


# The collector's archive files: ptmon-YYYY-MM-DD.jsonl.gz, then .1, .2, ... a part per start.
ARCHIVE_FILE_NAME = re.compile(r"ptmon-(\d{4}-\d{2}-\d{2})(?:\.(\d+))?\.jsonl\.gz")
UNCOMPRESSED_FILE_NAME = re.compile(r"ptmon-\d{4}-\d{2}-\d{2}(?:\.\d+)?\.jsonl")  # one decompressed by hand


def day_and_part(path: Path) -> tuple[str, int] | None:
    """A collector's day file's (day, part): ``ptmon-2026-12-01.1.jsonl.gz`` is ("2026-12-01", 1); None
    for another name."""
    m = ARCHIVE_FILE_NAME.fullmatch(path.name)
    return (m.group(1), int(m.group(2) or 0)) if m else None


def _write_order(path: Path) -> tuple[str, str, int, str]:
    """A collector's files by directory, day, part; other names after, by name."""
    found = day_and_part(path)
    return (str(path.parent), *found, "") if found else (str(path.parent), "~", 0, path.name)


def encode_record(t: float, topic: str, payload: str) -> bytes:
    return orjson.dumps({"t": t, "topic": topic, "payload": payload}) + b"\n"


def write_archive(path: str | Path, records: Iterable[Record]) -> int:
    """Write records to a gzip archive; returns how many. (The collector rotates its own.)"""
    count = 0
    with gzip.open(path, "wb", compresslevel=3) as out:
        for t, topic, payload in records:
            out.write(encode_record(t, topic, payload))
            count += 1
    return count
