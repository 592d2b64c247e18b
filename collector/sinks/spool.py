"""The InfluxDB sink's spool: batches of line protocol kept on disk while InfluxDB is away.

A spool file is gzip'd line protocol, a ``#ptmon-batch points=N bytes=M`` comment before each
batch: ``zcat f.lp.gz | curl --data-binary @- '.../write?db=ptmon&precision=u'`` replays it.
Files are named ``<seq>-<points>.lp.gz`` (written oldest first, so names sort in write order)
and made durable before they count as written. Batches InfluxDB rejects go to
``dead-letter/`` beside them, with the error as a comment.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..durable import replacing_file
from .lineproto import split_lines

SPOOL_GLOB = "*.lp.gz"
SPOOL_NAME = re.compile(r"^(\d+)-(\d+)\.lp\.gz$")
FRAME = re.compile(rb"#ptmon-batch points=(\d+) bytes=(\d+)\n")
SPOOL_GZIP_LEVEL = 1  # the spool is written under load, speed matters more than size


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


def unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def bytes_under(directory: Path) -> int:
    try:
        return sum(p.stat().st_size for p in directory.glob("*") if p.is_file()) if directory.is_dir() else 0
    except PermissionError:  # out of reach for now (its permissions changed): nothing seen
        return 0


def halves(body: bytes, points: int) -> list[tuple[bytes, int]]:
    """The body cut in two at a line boundary; [] when it is one line."""
    # every newline ends a line unless a string field holds one (then there are fewer lines than newlines+1)
    lines = body.split(b"\n") if body.count(b"\n") + 1 == points else split_lines(body)
    if len(lines) < 2:
        return []
    mid = len(lines) // 2
    return [(b"\n".join(lines[:mid]), mid), (b"\n".join(lines[mid:]), len(lines) - mid)]


def file_groups(batches: list[Batch], limit: int) -> Iterable[list[Batch]]:
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


def set_aside(path: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    path.replace(target)


def write_dead_letter(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
