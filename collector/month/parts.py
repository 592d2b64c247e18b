"""`ptmon month` for a partitioned deployment: the partitions' ledgers and archives as one month.

A month is closed for the whole district. With partition collectors (docs/scale.md) the district's
month is in several ledgers and archives, so the month commands take them all (``--ledger P1 P2 …
--archive A1 A2 …``) and keep the seals in a ledger of their own, the district's **seal ledger**
(``--seal-ledger FILE``), created at the first close.

At every command the partitions are checked as a report checks them (disjoint, every street of
the rules, the same rules and registry versions) and their rows are merged
(:func:`ptmon.merge.merge_ledgers`) into a scratch ledger, with the seal ledger's closings copied
beside them: every check of `close` and `restate`, and all of `status` and `verify`, read that.
Only the sealing writes the seal ledger (:func:`seal_merged`): in one SQLite transaction it
replaces the seal ledger's rows with the merge the seal was made from (so that `ptmon report
--ledger SEAL` shows the district as sealed) and records the seals; a first close writes the new
seal ledger whole beside it and links it into place. So a refused close or restatement, or one
killed before it sealed, leaves the seal ledger exactly as it was (or absent), and seals that
another command committed meanwhile are never touched. The recomputation from the archive recomputes each partition's
archive with its own registry rows and merges the results the same way; the late-heartbeat scan
reads every partition's archive; the sealed archive files and snapshots are named
``STREETS/FILE`` (``changzheng+taopu/ptmon-2026-11-01.jsonl.gz``), since every partition's day
files have the same names; and the seal records each partition's ledger and its rows' SHA-256, so
that `verify` names the partition whose ledger changed.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shlex
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..durable import fsync_path
from ..errors import LedgerError, UsageError
from ..ledger.closing import Closing, record_closings
from ..ledger.rebuild import Recomputed, recompute_month
from ..ledger.store import Ledger
from ..merge import merge_ledgers, merged_exemptions, open_partition_ledgers, write_merged
from ..outputs import scratch_directory
from ..partition import (
    Partition,
    archive_tag,
    check_partitions,
    ledger_tag,
    refuse_untagged_archives,
    restrict_registry,
)
from ..registry import Registry
from ..replay import Progress
from ..rules import Rules
from ..snapshots import MonthSources, month_sources
from .late import LateScan, scan_late
from .room import disk_full, no_room

SEAL_KEY = "merged_partitions"  # meta key of a seal ledger: the partitions last merged into it


@dataclass(frozen=True)
class PartSource:
    """One partition: its tag, its ledger and its archive directory."""

    partition: Partition
    ledger: Path
    archive: Path

    @property
    def label(self) -> str:
        return self.partition.label


@dataclass(frozen=True)
class PartsSources(MonthSources):
    """What recomputing a partitioned month reads: each partition's snapshot and files."""

    parts: tuple[tuple[str, MonthSources], ...] = ()

    def describe(self) -> str:
        return "; ".join(f"partition {label}: {s.describe()}" for label, s in self.parts)


# --- the command's partitions ----------------------------------------------------------------------

def lone_partition(ledger: Path, tag: Partition, rules: Rules) -> UsageError:
    """The refusal of one partition's ledger given alone, naming the streets of the others."""
    others = [s for s in rules.street_codes() if s not in tag.streets]
    return UsageError(
        f"{ledger} is partition {tag.label}'s ledger: a month is closed for the whole district: give every "
        f"partition's ledger and archive (`--ledger P1 P2 … --archive A1 A2 …`: the streets {', '.join(others)} are "
        "in other partitions) and the district's seal ledger (`--seal-ledger FILE`); check a partition alone with "
        "`ptmon ledger verify --month`. See docs/scale.md (closing a partitioned deployment)")


def partition_sources(ledgers: Sequence[Path], archives: Sequence[Path], rules: Rules) -> tuple[PartSource, ...]:
    """The partitions of ``ledgers`` and ``archives`` paired by their tags and checked as a set (refused,
    with the reason, when they overlap, miss a street or ran with other rules or registry versions),
    in the rules' street order."""
    ledger_tags = [(p, _ledger_tag(p)) for p in ledgers]
    archive_tags = [(p, archive_tag(p) if p.is_dir() else None) for p in archives]
    if len(ledgers) == 1 and (tag := ledger_tags[0][1]) is not None:
        raise lone_partition(ledgers[0], tag, rules)
    check_partitions(rules, [(str(p), t) for p, t in ledger_tags])
    if ledger_tags[0][1] is None:  # one whole-district ledger (with several, check_partitions refused them)
        raise UsageError(f"{ledgers[0]} is a whole-district collector's ledger, not a partition's: close its month "
                         "with --ledger and --archive alone (--seal-ledger is for partitions)")
    missing = [str(p) for p in archives if not p.is_dir()]
    if missing:
        raise UsageError(f"archive directory not found: {', '.join(missing)}")
    refuse_untagged_archives(archive_tags, [(p, t) for p, t in ledger_tags if t is not None])
    check_partitions(rules, [(str(p), t) for p, t in archive_tags])
    if len(archives) != len(ledgers):
        raise UsageError(f"{len(ledgers)} partition ledger(s) and {len(archives)} archive directory(ies): give each "
                         "partition's archive (--archive A1 A2 …, in any order)")
    by_streets = {t.streets: p for p, t in archive_tags if t is not None}
    parts = []
    for path, tag in ledger_tags:
        assert tag is not None  # an untagged ledger beside partitions was refused above
        if tag.streets not in by_streets:
            raise UsageError(f"no archive of partition {tag.label} ({path}) was given: the archives given are "
                             f"those of {', '.join('+'.join(s) for s in by_streets)}")
        parts.append(PartSource(tag, path, by_streets[tag.streets]))
    order = rules.street_codes()
    return tuple(sorted(parts, key=lambda p: order.index(p.partition.streets[0])))


def _ledger_tag(path: Path) -> Partition | None:
    if not path.is_file():
        raise UsageError(f"ledger not found: {path}")
    with Ledger(path, readonly=True) as ledger:
        return ledger_tag(ledger.db, str(path))


# --- the seal ledger ---------------------------------------------------------------------------------

def open_merged(parts: Sequence[PartSource], seal: Path, rules: Rules, *,
                stack: ExitStack) -> tuple[Ledger, list[tuple[PartSource, Ledger]]]:
    """The district's month: a scratch ledger holding the partitions' rows merged and the seal
    ledger's closings (nothing is written to the seal ledger here: :func:`seal_merged` writes the
    merge and the seals at once); and the partitions' ledgers, open read-only until ``stack`` closes."""
    if any(seal.resolve() == p.ledger.resolve() for p in parts):
        raise UsageError(f"--seal-ledger {seal} is one of the partitions' ledgers: give the district's seal ledger, "
                         "a file of its own")
    opened = open_partition_ledgers([p.ledger for p in parts], rules)
    for _, ledger in opened:
        stack.callback(ledger.close)
    merged = Ledger(":memory:")
    try:
        merge_ledgers(opened, merged, rules)
        if seal.is_file():
            with Ledger(seal, readonly=True) as sealed:
                _check_seal_ledger(sealed)
                _copy_closings(sealed, merged)
    except BaseException:
        merged.close()
        raise
    return merged, [(part, ledger) for part, (_, ledger) in zip(parts, opened)]


def exemption_places(parts: Sequence[tuple[PartSource, Ledger]]) -> dict[int, str]:
    """Where each exemption of the merge (by its merged id) is recorded: its partition, its own number
    there and the ledger (what `ptmon exempt revoke N --ledger FILE` takes)."""
    merged = merged_exemptions([ledger.db for _, ledger in parts])
    return {i: "; ".join(f"partition {parts[n][0].label}: exemption {own} in {parts[n][0].ledger}" for n, own in where)
            for i, (_, where) in enumerate(merged, start=1)}


def seal_merged(merged: Ledger, seal: Path, parts: Sequence[PartSource],
                sealed: Sequence[tuple[dict[str, Any], Mapping[str, bytes]]]) -> list[Closing]:
    """Record the closings in the seal ledger and, in the same transaction, replace its rows with
    the merge they were made from (``merged``, the command's scratch ledger, which records them
    too). Until this commits the seal ledger is as it was: a refused or killed close or restatement
    leaves it untouched, and seals committed meanwhile by another command stay."""
    def rows(db: sqlite3.Connection) -> None:
        write_merged(merged, db)
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (SEAL_KEY, _tags_doc(parts)))

    try:
        done = None if seal.exists() else _seal_new(seal, sealed, rows)
        if done is None:
            ledger = _seal_ledger(seal, parts)
            try:
                done = record_closings(ledger, sealed, with_rows=rows)
            finally:
                ledger.close()
    except (OSError, sqlite3.Error, LedgerError) as exc:
        if no_room(exc, seal.parent):
            raise disk_full(seal, "sealing the partitions' merged month into the seal ledger") from exc
        raise
    record_closings(merged, sealed)  # the command's own view of the seal ledger (a restatement's next contract)
    return done


def _seal_new(seal: Path, sealed: Sequence[tuple[dict[str, Any], Mapping[str, bytes]]],
              rows: Callable[[sqlite3.Connection], None]) -> list[Closing] | None:
    """A first close: the seal ledger written whole in a file beside it and linked into place, so
    that it appears with its seals or not at all. None when another close created it meanwhile
    (it is never replaced) or the file system has no hard links: the caller seals into it then."""
    seal.parent.mkdir(parents=True, exist_ok=True)
    tmp = seal.parent / f".{seal.name}.{os.getpid()}-{secrets.token_hex(4)}.new"  # SQLite creates it as any ledger
    try:
        with Ledger(tmp) as ledger:
            done = record_closings(ledger, sealed, with_rows=rows)
            ledger.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            os.link(tmp, seal)  # never over a seal ledger another close made
        except FileExistsError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            return None
        fsync_path(seal.parent)
        return done
    finally:
        for path in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            path.unlink(missing_ok=True)


def _seal_ledger(path: Path, parts: Sequence[PartSource]) -> Ledger:
    if any(path.resolve() == p.ledger.resolve() for p in parts):
        raise UsageError(f"--seal-ledger {path} is one of the partitions' ledgers: give the district's seal ledger, "
                         "a file of its own")
    try:
        ledger = Ledger(path)
    except LedgerError as exc:
        if no_room(exc, path.parent):
            raise disk_full(path, "opening the seal ledger") from exc
        raise
    try:
        _check_seal_ledger(ledger)
    except BaseException:
        ledger.close()
        raise
    return ledger


def _check_seal_ledger(ledger: Ledger) -> None:
    """A seal ledger, or a new file: never a collector's ledger, whose rows a merge would replace."""
    if (tag := ledger_tag(ledger.db, str(ledger.path))) is not None:
        raise UsageError(f"--seal-ledger {ledger.path} is partition {tag.label}'s ledger: give the district's seal "
                         "ledger, a file of its own")
    if not is_seal_ledger(ledger.db) and ledger.has_hours():
        raise UsageError(f"--seal-ledger {ledger.path} holds a collector's data, not the seals of a partitioned "
                         "month: give the district's seal ledger (a new file at the first close)")


def is_seal_ledger(db: sqlite3.Connection) -> bool:
    """Whether the ledger is a partitioned month's seal ledger (its rows the partitions' merge)."""
    return db.execute("SELECT 1 FROM meta WHERE key = ?", (SEAL_KEY,)).fetchone() is not None


def refuse_seal_ledger(ledger: Ledger, doing: str) -> None:
    """A seal ledger's rows are replaced by the partitions' at each close and restatement: what is
    recorded in it by hand would be lost there, so nothing is."""
    if is_seal_ledger(ledger.db):
        raise UsageError(f"{ledger.path} is the seal ledger of a partitioned deployment, whose rows are replaced by the "
                         f"partitions' at each close and restatement: {doing} (docs/month-close.md, closing a "
                         "partitioned deployment)")


def _tags_doc(parts: Sequence[PartSource]) -> str:
    return json.dumps([json.loads(p.partition.to_json()) for p in parts], sort_keys=True)


def _copy_closings(src: Ledger, dst: Ledger) -> None:
    with dst.transaction() as db:
        for table in ("closings", "closing_blobs"):
            for row in src.db.execute(f"SELECT * FROM {table}"):
                db.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(row))})", row)


# --- the month recomputed from the partitions' archives --------------------------------------------

@contextmanager
def recomputed_parts(parts: Sequence[PartSource], registry: Registry, month: str, beside: Path,
                     progress: Callable[[Progress], None] | None = None) -> Iterator[tuple[Ledger, Recomputed]]:
    """A scratch ledger holding ``month`` recomputed from each partition's archive (its snapshot and
    files) with its own registry rows, merged (deleted afterwards)."""
    with ExitStack() as stack:
        try:
            scratch = stack.enter_context(scratch_directory("ptmon-month-", beside))
            ledgers: list[tuple[Partition | None, Ledger]] = []
            done: list[tuple[str, MonthSources]] = []
            records = 0
            for part in parts:
                ledger = stack.enter_context(Ledger(scratch / f"partition-{len(ledgers)}.sqlite"))
                own = restrict_registry(registry, part.partition.streets)
                found = recompute_month([part.archive], own, month, ledger, progress=progress)
                ledgers.append((part.partition, ledger))
                done.append((part.label, found.sources))
                records += found.records
            merged = stack.enter_context(Ledger(scratch / "recomputed.sqlite"))
            merge_ledgers(ledgers, merged, registry.rules)
        except (OSError, sqlite3.DatabaseError, LedgerError) as exc:
            if no_room(exc, beside):
                raise disk_full(beside, f"recomputing {month} from the partitions' archives") from exc
            raise
        files = [f for _, s in done for f in s.files]
        yield merged, Recomputed(PartsSources(snapshot=None, files=files, parts=tuple(done)), records)


# --- the partitions' archive files and late heartbeats --------------------------------------------

def part_files(parts: Sequence[PartSource], month: str) -> tuple[dict[str, Path], dict[str, Path]]:
    """Every partition's archive files of the month and month-start snapshot, by their sealed names."""
    files: dict[str, Path] = {}
    snapshots: dict[str, Path] = {}
    for part in parts:
        sources = month_sources([part.archive], month)
        files.update((f"{part.label}/{p.name}", p) for p in sources.files)
        if sources.snapshot is not None:
            snapshots[f"{part.label}/{sources.snapshot.name}"] = sources.snapshot
    return files, snapshots


def scan_late_parts(parts: Sequence[PartSource], registry: Registry, month: str, until: int) -> LateScan:
    """The late heartbeats in every partition's archive, each read as its collector decoded it."""
    scans = [scan_late([p.archive], restrict_registry(registry, p.partition.streets), month, until) for p in parts]
    return LateScan(heartbeats=sorted(h for s in scans for h in s.heartbeats), until=until,
                    files=sum(s.files for s in scans), records=sum(s.records for s in scans))


def parts_doc(parts: Sequence[tuple[PartSource, Ledger]], digest: Callable[[Ledger], str]) -> list[dict[str, Any]]:
    """What a seal records of each partition: its streets, versions, ledger and archive, and the
    SHA-256 of its ledger's rows of the month."""
    return [{**json.loads(part.partition.to_json()), "ledger": str(part.ledger), "archive_dir": str(part.archive),
             "ledger_month_sha256": digest(ledger)} for part, ledger in parts]


def partition_ledger_changes(sealed: Sequence[dict[str, Any]], now: Sequence[dict[str, Any]], month: str,
                             inputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """The partitions' ledgers now against those sealed: (what is as sealed, what differs); ``inputs``: the
    options that found the registry and rules, for the command suggested."""
    ok: list[str] = []
    bad: list[str] = []
    before = {tuple(d["streets"]): d for d in sealed}
    after = {tuple(d["streets"]): d for d in now}
    if set(before) != set(after):
        return ok, [f"the partitions given ({', '.join('+'.join(s) for s in after)}) are not those sealed "
                    f"({', '.join('+'.join(s) for s in before)})"]
    for streets, d in after.items():
        label = "+".join(streets)
        if d["ledger_month_sha256"] == before[streets]["ledger_month_sha256"]:
            ok.append(f"partition {label}'s ledger {d['ledger']}: its rows of the month as sealed")
        else:
            verify = shlex.join(["ptmon", "ledger", "verify", "--month", month, "--ledger", d["ledger"],
                                 "--archive", d["archive_dir"], *inputs])
            bad.append(f"partition {label}'s ledger {d['ledger']}: its rows of the month (hours, days, counts, device "
                       f"status, spans) changed since the closing; `{verify}` compares them with its archive")
    return ok, bad
