"""Month-start snapshots: the collector's state as a month begins, so a month can be recomputed
from its own archive files.

The state a month's KPIs depend on reaches back before the month: each device's last heartbeat
(online at the first samples), counter baselines (the first delta of the month), sequence
numbers and boot ids, the rate-limit windows. When the live collector's clock crosses into a
new Shanghai month, it saves its state (the checkpoint format: engine and decoder, every
record before the month applied, none after) as ``ptmon-YYYY-MM.state.npz`` beside the
archive files. Recomputing month M — after a lost checkpoint, by ``ptmon ledger rebuild`` or
``verify``, by ``ptmon report --from-archive`` — then reads the latest snapshot at or before M
and the archive files from that month on, instead of every file ever written. Without any
snapshot it reads every archive file before the month's end, which gives the same numbers,
only slower.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .archive import day_and_part
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .decode import Decoder
from .engine import Engine
from .errors import CheckpointError
from .registry import Registry
from .sinks.archive import read_archive_files
from .timebase import day_of, day_to_date, month_bounds

log = logging.getLogger(__name__)

_NAME = re.compile(r"ptmon-(\d{4}-\d{2})\.state\.npz")


def month_code(t: int) -> str:
    """``YYYY-MM`` of the Shanghai month holding instant ``t``."""
    return day_to_date(day_of(t)).strftime("%Y-%m")


def snapshot_path(archive_dir: Path, month: str) -> Path:
    return archive_dir / f"ptmon-{month}.state.npz"


def save_snapshot(archive_dir: Path, month_start: int, engine: Engine, decoder: Decoder,
                  extensions: dict[str, np.ndarray] | None = None) -> Path:
    """The state as ``month_start`` begins (every earlier record applied, none later); ``extensions``
    as in the checkpoint (the device-health baselines)."""
    path = snapshot_path(archive_dir, month_code(month_start))
    save_checkpoint(path, engine=engine, tallies=[], decoder=decoder, extra={"month_start": month_start},
                    extensions=extensions)
    log.info("month-start snapshot %s", path)
    return path


@dataclass(frozen=True)
class MonthSources:
    """What recomputing a month reads: a snapshot (or none) and the archive files after it."""

    snapshot: Path | None
    files: list[Path]
    # The first day's files after the month (the next day's, or a later one's when it has none), read
    # only to their first record that tells whether the monitor was still observing at the month's end
    # (replay.py): then the month's last samples fired live, and the recomputation fires them too.
    following: list[Path] = field(default_factory=list)

    def describe(self) -> str:
        base = f"snapshot {self.snapshot.name} + " if self.snapshot else "no snapshot: "
        after = f" + the head of {len(self.following)} file(s) after it" if self.following else ""
        return f"{base}{len(self.files)} archive file(s){after}"

    def read(self) -> list[Path]:
        """Every archive file a recomputation reads, in order."""
        return [*self.files, *self.following]

    def roles(self) -> list[tuple[str, Path]]:
        """(role, path) of every input, for a report's list of what it was computed from."""
        return ([("snapshot", self.snapshot)] if self.snapshot else []) + [("archive", p) for p in self.files] + [
            ("following", p) for p in self.following]


def month_sources(archive_dirs: list[Path], month: str, *, through: str | None = None) -> MonthSources:
    """The latest snapshot at or before ``month`` in the first directory that has one, and every
    archive file from the snapshot's month to the end of ``month`` (all before it, without one), or
    to the end of the month ``through`` when given; and the first later day's files (``following``)."""
    _start, end = month_bounds(through or month)
    snapshot = None
    for directory in archive_dirs:
        found = sorted((m.group(1), p) for p in directory.glob("ptmon-*.state.npz") if (m := _NAME.fullmatch(p.name))
                       and m.group(1) <= month)
        if found:
            snapshot = found[-1][1]
            break
    named = _NAME.fullmatch(snapshot.name) if snapshot else None  # snapshot was found by this name
    first = f"{named.group(1)}-01" if named else ""
    last = day_to_date(day_of(end - 1)).isoformat()
    every = [p for d in archive_dirs for p in read_archive_files(d)]
    files = [p for p in every if first <= p.name[6:16] <= last]
    # the next day's, or the first later day's when there is none (the collector's clock jumped a day ahead,
    # or that file is gone): the live collector saw the first record after the end wherever it lay
    after = min((p.name[6:16] for p in every if p.name[6:16] > last), default=None)
    following = [p for p in every if p.name[6:16] == after]
    return MonthSources(snapshot, sorted(files, key=_written_order), sorted(following, key=_written_order))


def _written_order(path: Path) -> tuple[str, int, str]:
    """Day, then part (``ptmon-2026-12-01.1.jsonl.gz`` after ``ptmon-2026-12-01.jsonl.gz``), as
    written; then the name, for files of several directories (all are day files: archive_files)."""
    day, part = day_and_part(path) or (path.name[6:16], 0)
    return day, part, path.name


def load_snapshot(path: Path, registry: Registry) -> Checkpoint:
    try:
        return load_checkpoint(path, registry)
    except CheckpointError as exc:
        raise CheckpointError(f"month-start snapshot unusable: {exc}; move it away to recompute from every "
                              "archive file before the month") from exc
