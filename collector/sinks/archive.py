"""The archive sink: every received message appended to gzip JSON Lines, one file per day.

Files are ``ptmon-YYYY-MM-DD.jsonl.gz`` by Shanghai day of receive time. Every start of
the collector opens a new part (``ptmon-YYYY-MM-DD.1.jsonl.gz``, ...): a file left by a crash
has no gzip trailer, and a member appended after it could not be read. A partition's writer starts
every file with its ``$ptmon/partition`` record (``file_header``), written with the file's first
batch so that it lands with it or not at all.

:meth:`ArchiveWriter.append` compresses the records, ends them with a zlib sync flush and
writes them to the operating system before it returns, so a SIGKILL of the collector loses
none of them; the collector acknowledges messages to the broker only after that. Rotation and
close also fsync, and so does :meth:`ArchiveWriter.commit`, which the collector calls before it
saves a checkpoint or writes the ledger: a power cut loses at most the tail written since, and
the checkpoint and the ledger never count a record the archive lost.

A write either lands whole or not at all. When the disk is full (or any write fails), the file
is cut back to the end of the last batch that was written and the compressor goes back to the
state it had there, so the file stays one clean gzip stream and the same records can be
appended again once there is room: :class:`ArchiveWriteError` says how many records of the
call were written before the failure. A file that vanished under the collector (the data
directory deleted) is :class:`StorageGone`: nothing written there can be trusted any more.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

from ..archive import UNCOMPRESSED_FILE_NAME, Record, day_and_part, encode_record
from ..durable import directory_gone, file_replaced, fsync_directory
from ..errors import ArchiveError, StorageGone
from ..metrics import Metrics
from ..timebase import day_of, day_to_date, seconds_to_us

log = logging.getLogger(__name__)

_FINAL_EMPTY_BLOCK = b"\x03\x00"  # a final, empty fixed-Huffman deflate block: ends a stream after a sync flush
# Characters of payload encoded and written at a time: a batch of large payloads (JSON writes a control
# byte as six) is not turned into lines all at once. Thousands of real heartbeats per piece.
PIECE_CHARS = 8 * 2**20


def archive_files(directory: Path) -> list[Path]:
    """The archive's files in the order they were written (day, then part)."""
    found = []
    for path in directory.glob("ptmon-*.jsonl.gz") if directory.is_dir() else ():
        if (order := day_and_part(path)) is not None:
            found.append((order, path))
    return [path for _, path in sorted(found)]


class ArchiveWriteError(OSError):
    """Records could not be written; the first ``written`` records of the call were."""

    def __init__(self, cause: OSError, written: int, path: Path | None) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), str(path) if path else None)
        self.written = written


class _Member:
    """One gzip member on a raw file descriptor, written in batches that land whole or not at all."""

    def __init__(self, path: Path, compresslevel: int) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.inode = os.fstat(self.fd).st_ino
        self._z = zlib.compressobj(compresslevel, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._crc = self._size = self.offset = 0
        self._trailer_written = False
        header = b"\x1f\x8b\x08\x00" + struct.pack("<I", int(time.time())) + b"\x00\xff"
        try:
            self._write_or_undo(header, self._z)
        except OSError:
            self.abandon()
            path.unlink(missing_ok=True)  # empty: the next try makes it again
            raise

    def write(self, data: bytes) -> int:
        """Compress, sync-flush and write ``data``; on failure nothing of it stays. Returns the bytes written."""
        before = self._z.copy()  # the compressor's state at the last byte on disk
        out = self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)
        self._write_or_undo(out, before)
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        return len(out)

    def sync(self) -> None:
        """Everything written so far to disk (fsync)."""
        os.fsync(self.fd)

    def finish(self) -> None:
        """The gzip trailer, then fsync and close; may be called again after it failed."""
        if not self._trailer_written:
            self._write_or_undo(_FINAL_EMPTY_BLOCK + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF), self._z)
            self._trailer_written = True
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1

    def abandon(self) -> None:
        """Close without a trailer: readable up to the last batch, as after a crash."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def check_present(self) -> None:
        """StorageGone when the file is no longer at its path (deleted, or its directory was)."""
        if file_replaced(self.path, self.inode):
            raise StorageGone(f"archive file {self.path} is gone (was the data directory deleted?)")

    def _write_or_undo(self, data: bytes, state: zlib._Compress) -> None:
        view, done = memoryview(data), 0
        try:
            while done < len(data):
                done += os.write(self.fd, view[done:])
        except OSError:
            self._undo(state)
            raise
        self.offset += len(data)

    def _undo(self, state: zlib._Compress) -> None:
        try:
            os.ftruncate(self.fd, self.offset)
            os.lseek(self.fd, self.offset, os.SEEK_SET)
        except OSError as exc:
            # A cut that cannot be undone leaves half a batch in the file: do not write after it.
            self.abandon()
            raise StorageGone(f"archive file {self.path}: cannot undo a failed write ({exc.strerror})") from exc
        self._z = state
def read_archive_files(directory: Path) -> list[Path]:
    """:func:`archive_files` for a reader, refusing a directory that holds a day file decompressed in
    place (``ptmon-YYYY-MM-DD.jsonl``): read without it, its hours would pass for a monitoring gap."""
    plain = sorted(p.name for p in directory.glob("ptmon-*.jsonl") if UNCOMPRESSED_FILE_NAME.fullmatch(p.name))
    if plain:
        raise ArchiveError(f"{directory / plain[0]}: a day file that is not gzip-compressed, which is not read (the "
                           f"collector writes .jsonl.gz): compress it again (gzip {directory / plain[0]}) or move it "
                           "out of the archive directory; left as it is, its hours would count as a monitoring gap")
    return archive_files(directory)


def archive_paths(sources: Sequence[str | Path]) -> list[Path]:
    """Archive files named, and every archive file of the directories named (the collector's
    ``archive_dir``), in order. A replay reads all of a directory: what came before the period
    sets the devices' baselines and last heartbeats exactly as the live collector had them."""
    out: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = read_archive_files(source)
            if not found:
                raise ArchiveError(f"{source}: no archive files (ptmon-YYYY-MM-DD[.N].jsonl.gz) in this directory")
            out += found
        elif source.is_file():
            out.append(source)
        else:
            raise ArchiveError(f"{source}: no such archive file or directory")
    return out


class ArchiveWriter:
    """Appends records; rotates at Shanghai midnight; ``position`` says how far it has got.

    The first :class:`~.protocol.Sink`: ``submit`` is :meth:`append` (called by intake before a
    message is acknowledged), ``close`` finishes the current file."""

    name = "archive"

    def __init__(self, directory: Path, *, compresslevel: int = 3, metrics: Metrics | None = None,
                 file_header: tuple[str, str] | None = None) -> None:
        self.directory = directory
        self.compresslevel = compresslevel
        self.metrics = metrics
        # (topic, payload) of a control record that starts every file (a partition's ``$ptmon/partition``)
        self.file_header = file_header
        self._header_due = False
        self.path: Path | None = None
        self.records_in_file = 0
        self.records = 0
        self._day: int | None = None
        self._member: _Member | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def position(self) -> dict[str, object]:
        """Where the archive stands: the current file and how many records it holds."""
        return {"file": self.path.name if self.path else None, "records": self.records_in_file}

    def append(self, records: Sequence[Record]) -> None:
        """Write the records to the operating system, in order; :class:`ArchiveWriteError` says how
        many were written when one cannot be, :class:`StorageGone` when the archive vanished."""
        written = 0
        try:
            for start, end, day in self._segments(records):
                if day != self._day or self._member is None:
                    self._rotate(day)
                for a, b in _pieces(records, start, end):
                    self._write(records[a:b])
                    written = b
        except StorageGone:
            raise
        except OSError as exc:
            self._check_directory(exc)
            raise ArchiveWriteError(exc, written, self.path) from exc

    def commit(self) -> None:
        """Every record appended so far to disk (fsync). The collector calls it before it saves a checkpoint
        or writes the ledger: after a power cut, neither may count records the archive lost."""
        if self._member is not None and self._member.fd >= 0:
            self._member.sync()

    # -- the Sink protocol ---------------------------------------------------------------

    async def open(self) -> None:
        """Nothing to do: a file is opened by the first record of its day."""

    def submit(self, batch: list[Record]) -> None:
        self.append(batch)

    async def persist(self) -> None:
        self.commit()

    async def close(self) -> None:
        self.finish()

    def health(self) -> str | None:
        return None  # a failed write raises to intake, which holds and reports it (collector/faults.py)

    def _segments(self, records: Sequence[Record]) -> list[tuple[int, int, int]]:
        """(start, end, day) runs of records by the file they go to (clock steps back stay put)."""
        runs: list[tuple[int, int, int]] = []
        if not records:
            return runs
        day = self._day if self._day is not None else day_of(seconds_to_us(records[0][0]))
        if day_of(seconds_to_us(records[-1][0])) <= day:
            return [(0, len(records), day)]
        start = 0
        for i, record in enumerate(records):
            d = day_of(seconds_to_us(record[0]))
            if d > day:
                if i > start:
                    runs.append((start, i, day))
                start, day = i, d
        runs.append((start, len(records), day))
        return runs

    def _write(self, records: Sequence[Record]) -> None:
        assert self._member is not None
        if self._header_due and self.file_header is not None:  # with the file's first records: lands with them
            records = [(records[0][0], *self.file_header), *records]
        size = self._member.write(b"".join([encode_record(t, topic, payload) for t, topic, payload in records]))
        self._member.check_present()  # before anything written here is acknowledged
        self._header_due = False
        self.records_in_file += len(records)
        self.records += len(records)
        if self.metrics is not None:
            self.metrics.archive_records.inc(len(records))
            self.metrics.archive_bytes.inc(size)

    def _rotate(self, day: int) -> None:
        self.finish()
        path = self._new_path(day)
        member = _Member(path, self.compresslevel)
        self._member, self.path, self._day, self.records_in_file = member, path, day, 0
        self._header_due = True
        log.info("archiving to %s", self.path)

    def _new_path(self, day: int) -> Path:
        date = day_to_date(day).isoformat()
        path, part = self.directory / f"ptmon-{date}.jsonl.gz", 0
        while path.exists():
            part += 1
            path = self.directory / f"ptmon-{date}.{part}.jsonl.gz"
        return path

    def _check_directory(self, exc: OSError) -> None:
        if directory_gone(self.directory):
            raise StorageGone(f"archive directory {self.directory} is gone ({exc.strerror})") from exc

    def finish(self) -> None:
        """Finish the current file (gzip trailer) and fsync it and the directory.

        When that fails (a full disk) the file stays open for another try, and the error is raised;
        :meth:`abandon` then leaves it readable up to its last batch, as a crash would.
        """
        member = self._member
        if member is None:
            return
        member.finish()
        self._member = None
        fsync_directory(self.directory)

    def abandon(self) -> None:
        """Close the current file without its trailer (shutdown on a disk that stays full)."""
        if self._member is not None:
            self._member.abandon()
            self._member = None


def _pieces(records: Sequence[Record], start: int, end: int) -> list[tuple[int, int]]:
    """``[start, end)`` cut where the payloads reach ``PIECE_CHARS``; each piece holds a record at least."""
    pieces, a, chars = [], start, 0
    for i in range(start, end):
        chars += len(records[i][2])
        if chars >= PIECE_CHARS:
            pieces.append((a, i + 1))
            a, chars = i + 1, 0
    if a < end:
        pieces.append((a, end))
    return pieces
