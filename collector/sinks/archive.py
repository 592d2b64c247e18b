"""The archive sink: every received message appended to gzip JSON Lines, one file per day.

Files are ``ptmon-YYYY-MM-DD.jsonl.gz`` by Shanghai day of receive time. Every start of
the collector opens a new part (``ptmon-YYYY-MM-DD.1.jsonl.gz``, ...): a file left by a crash
has no gzip trailer, and a member appended after it could not be read.

:meth:`ArchiveWriter.commit` pushes what was appended through zlib (a sync flush) into the
operating system, so once it returns a SIGKILL of the collector loses none of it; the
collector acknowledges messages to the broker only after that. Rotation and close also
fsync, so a power cut loses at most the current day's unsynced tail.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..archive import Record, encode_record
from ..durable import fsync_directory
from ..errors import ArchiveError
from ..metrics import Metrics
from ..timebase import day_of, day_to_date, seconds_to_us

log = logging.getLogger(__name__)

_NAME = re.compile(r"ptmon-(\d{4}-\d{2}-\d{2})(?:\.(\d+))?\.jsonl\.gz")


def archive_files(directory: Path) -> list[Path]:
    """The archive's files in the order they were written (day, then part)."""
    found = []
    for path in directory.glob("ptmon-*.jsonl.gz") if directory.is_dir() else ():
        m = _NAME.fullmatch(path.name)
        if m:
            found.append(((m.group(1), int(m.group(2) or 0)), path))
    return [path for _, path in sorted(found)]


def archive_paths(sources: Sequence[str | Path]) -> list[Path]:
    """Archive files named, and every archive file of the directories named (the collector's
    ``archive_dir``), in order. A replay reads all of a directory: what came before the period
    sets the devices' baselines and last heartbeats exactly as the live collector had them."""
    out: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = archive_files(source)
            if not found:
                raise ArchiveError(f"{source}: no archive files (ptmon-YYYY-MM-DD[.N].jsonl.gz) in this directory")
            out += found
        elif source.is_file():
            out.append(source)
        else:
            raise ArchiveError(f"{source}: no such archive file or directory")
    return out


class ArchiveWriter:
    """Appends records; rotates at Shanghai midnight; ``position`` says how far it has got."""

    def __init__(self, directory: Path, *, compresslevel: int = 3, metrics: Metrics | None = None) -> None:
        self.directory = directory
        self.compresslevel = compresslevel
        self.metrics = metrics
        self.path: Path | None = None
        self.records_in_file = 0
        self.records = 0
        self._day: int | None = None
        self._raw: object = None
        self._gzip: gzip.GzipFile | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def position(self) -> dict[str, object]:
        """Where the archive stands: the current file and how many records it holds."""
        return {"file": self.path.name if self.path else None, "records": self.records_in_file}

    def append(self, records: Sequence[Record]) -> None:
        if not records:
            return
        start = 0
        for i in self._day_changes(records):
            self._write(records[start:i])
            self._rotate(day_of(seconds_to_us(records[i][0])))
            start = i
        self._write(records[start:])

    def _day_changes(self, records: Sequence[Record]) -> list[int]:
        """Indices where a record's Shanghai day is later than the open file's (clock steps back stay put)."""
        if self._day is None:
            self._rotate(day_of(seconds_to_us(records[0][0])))
        last_day = day_of(seconds_to_us(records[-1][0]))
        if last_day <= (self._day or 0):
            return []
        changes, day = [], self._day
        for i, record in enumerate(records):
            d = day_of(seconds_to_us(record[0]))
            if day is not None and d > day:
                changes.append(i)
                day = d
        return changes

    def _write(self, records: Sequence[Record]) -> None:
        if not records:
            return
        assert self._gzip is not None
        self._gzip.write(b"".join([encode_record(t, topic, payload) for t, topic, payload in records]))
        self.records_in_file += len(records)
        self.records += len(records)
        if self.metrics is not None:
            self.metrics.archive_records.inc(len(records))

    def commit(self) -> None:
        """Everything appended so far reaches the operating system (not yet the disk)."""
        if self._gzip is not None:
            self._gzip.flush()  # zlib sync flush, then the file object's buffer

    def _rotate(self, day: int) -> None:
        self.close()
        self._day = day
        self.path = self._new_path(day)
        self._raw = self.path.open("xb")
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=self.compresslevel)  # type: ignore[arg-type]
        self.records_in_file = 0
        log.info("archiving to %s", self.path)

    def _new_path(self, day: int) -> Path:
        date = day_to_date(day).isoformat()
        path, part = self.directory / f"ptmon-{date}.jsonl.gz", 0
        while path.exists():
            part += 1
            path = self.directory / f"ptmon-{date}.{part}.jsonl.gz"
        return path

    def close(self) -> None:
        """Finish the current file (gzip trailer) and fsync it and the directory."""
        if self._gzip is None:
            return
        self._gzip.close()
        raw = self._raw
        raw.flush()  # type: ignore[attr-defined]
        os.fsync(raw.fileno())  # type: ignore[attr-defined]
        raw.close()  # type: ignore[attr-defined]
        if self.metrics is not None and self.path is not None:
            self.metrics.archive_bytes.inc(self.path.stat().st_size)
        fsync_directory(self.directory)
        self._gzip = None
        self._raw = None
