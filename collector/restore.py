"""Start-up's restore stage: the collector's state from the checkpoint and the archive after it.

A crash loses the state since the last checkpoint, never the archive, so replaying the archive's
tail makes the state exact again. Without a usable checkpoint (none, unreadable, or made with
another ledger, registry or rules) the state is rebuilt from the archive: the latest month-start
snapshot and the files after it, rewriting this month's ledger rows.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

from .anomaly import DeviceHealth
from .archive import ArchiveReader
from .checkpoint import Checkpoint, load_checkpoint, restore_decoder
from .config import CollectorConfig
from .decode import DecodedBatch, Decoder
from .engine import Engine
from .errors import CheckpointError, PtmonError
from .faults import Faults
from .ledger.store import Ledger
from .ledger.writer import LedgerWriter
from .live import HeartbeatPoints, MonthTallies, SlaPoints
from .metrics import Metrics
from .partition import Partition, claim, partition_of, refuse_partitioned
from .registry import Registry
from .replay import Feed, freeze_startup_heap
from .sinks.archive import archive_files
from .snapshots import load_snapshot, month_code, month_sources, save_snapshot
from .tally import Tally
from .timebase import format_instant, month_bounds

log = logging.getLogger("ptmon.collect")  # the collector's own log, as before these stages had modules


def _inputs_changed(checkpoint: Checkpoint, registry: Registry) -> str:
    """What changed in the registry and rules since the checkpoint ('' when nothing did)."""
    changed = [f"the {what} changed ({old} → {new})" for what, old, new in (
        ("registry", checkpoint.registry_version, registry.version),
        ("rules", checkpoint.rules_version, registry.rules.version)) if old != new]
    return " and ".join(changed)


class StateRestore:
    """The restore stage of :class:`~ptmon.collect.Collector` (a mixin: it sets the collector's state)."""

    config: CollectorConfig
    registry: Registry
    metrics: Metrics
    notes: list[str]
    faults: Faults
    decoder: Decoder
    ledger: Ledger
    ledger_writer: LedgerWriter
    engine: Engine
    feed: Feed
    health: DeviceHealth | None
    partition: Partition | None  # the streets this collector owns (None: the whole district)
    _replaying: bool
    # the collector's other stages, called while restoring
    _emit: Callable[[list[str]], None]
    _on_batch: Callable[[DecodedBatch], None]
    _attach_loss: Callable[[], None]
    _attach_ledger: Callable[[Checkpoint | None], None]
    _forget_anomalies_to_replay: Callable[[int], None]
    _write_anomalies: Callable[[], bool]
    _saved_extensions: dict | None

    def _restore(self) -> None:
        """Engine, tallies and decoder from the checkpoint, then the archive's tail; without a
        usable checkpoint, from the archive (a month-start snapshot and the files after it)."""
        path = self.config.checkpoint_path
        self.partition = partition_of(self.registry, self.config.streets) if self.config.streets else None
        self.decoder = Decoder.from_config(self.registry, self.config.limits)
        self.ledger = Ledger(self.config.ledger_path)
        if self.partition is not None:  # before any history is read: refuse another partition's storage
            claim(self.partition, self.config.archive_path, self.ledger)
        else:  # nor may a whole-district collector write into a partition's storage
            refuse_partitioned(self.config.archive_path, self.ledger)
        checkpoint, lost = self._read_checkpoint(path)  # refused when another collector's
        history = bool(archive_files(self.config.archive_path)) or self.ledger.has_hours()
        if checkpoint is not None and (mismatch := self._mismatch(checkpoint, history)):
            lost, checkpoint = mismatch, None
        rebuild = checkpoint is None and history
        self._saved_extensions: dict | None = None  # the device-health state the engine's goes with
        if rebuild:
            self.engine, tallies, position = self._start_from_snapshot(lost)
        elif checkpoint is None:
            self.engine, tallies, position = Engine(self.registry), [], {}
        else:
            self._saved_extensions = checkpoint.extensions
            self.engine = checkpoint.engine
            tallies = checkpoint.tallies
            restore_decoder(self.decoder, checkpoint)
            position = dict(checkpoint.extra.get("archive") or {})
            self.notes += checkpoint.notes
            log.info("state restored from %s (saved %s)", path, checkpoint.saved_at)
        self.months = MonthTallies(self.engine, tallies)
        self.sla = SlaPoints(self.months, self._emit, self.metrics)
        self._attach_loss()
        self._attach_ledger(checkpoint)
        if rebuild or checkpoint is not None:  # a fresh engine rebuilds from the ledger's rebuilt hours on
            self._forget_anomalies_to_replay(self.engine.clock if self.engine.clock is not None else self._rebuild_from())
        self.heartbeats = HeartbeatPoints(self.engine) if self.config.influx.url and self.config.influx.heartbeats else None
        self.feed = Feed(self.engine, self.decoder, on_batch=self._on_batch, on_month=self._month_snapshot)
        self._pending_points: list[str] = []
        if rebuild:
            self.ledger_writer.write_from = self._rebuild_from()
            self._keep_ledger_as_it_was(self.ledger_writer.write_from)
            self.ledger.clear_from(self.ledger_writer.write_from)  # rows of other registries or rules go too
            self._replay_archive()
            self.ledger_writer.write_from = None
        elif checkpoint is not None:
            self._replay_tail(position)
        if (rebuild or checkpoint is not None) and self.engine.up and self.engine.clock is not None:
            self.notes.append(f"the previous run ended without a clean shutdown; its last record was at "
                              f"{format_instant(self.engine.clock)}: until the broker connection is back is a monitoring gap")
        freeze_startup_heap()

    def _mismatch(self, checkpoint: Checkpoint, history: bool) -> str:
        """Why the checkpoint cannot be continued with this ledger, registry and rules ('' when it can)."""
        if self.ledger.created and history:
            return f"the ledger {self.config.ledger_path} is new but the checkpoint is not"
        through, last = checkpoint.extra.get("ledger_last_hour"), self.ledger.last_hour()
        if isinstance(through, int) and (last is None or last < through):
            return (f"the ledger {self.config.ledger_path} is older than the checkpoint (its last hour "
                    f"{format_instant(last) if last is not None else 'none'}, the checkpoint's {format_instant(through)}; "
                    "restored from a backup?)")
        if changed := _inputs_changed(checkpoint, self.registry):
            return f"{changed} since the checkpoint, and the month's figures must come from one set of them"
        return ""

    def _read_checkpoint(self, path: Path) -> tuple[Checkpoint | None, str]:
        """The checkpoint, or None and why not; an unreadable one is moved aside, never reused."""
        if not path.exists():
            return None, f"there is no checkpoint at {path}"
        try:
            # another collector's checkpoint is refused (UsageError), left where it is, not moved aside
            return load_checkpoint(path, self.registry, partition=self.partition), ""
        except CheckpointError as exc:
            aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(path, aside)
            return None, f"the checkpoint was unreadable ({exc}); it is kept as {aside.name}"

    def _start_from_snapshot(self, why: str) -> tuple[Engine, list[Tally], dict[str, Any]]:
        """An engine from the latest month-start snapshot (fresh without one), before the archive is fed."""
        archive = self.config.archive_path
        files = archive_files(archive)
        if not files:
            raise PtmonError(f"{why}, and the ledger {self.config.ledger_path} holds hours but there is no archive in "
                             f"{archive} to rebuild the state from: restore the archive, or move the ledger away to "
                             "start a new one (its months would then be lost)")
        # The state from before the first hour the rebuild writes again (this month's start, or the ledger's
        # last hour if earlier): a later snapshot would leave the hours between unwritten once cleared
        first_month, last_month = month_code(self._rebuild_from()), files[-1].name[6:13]
        while True:
            self._sources = month_sources([archive], first_month, through=last_month)
            if self._sources.snapshot is None:
                engine = Engine(self.registry)
                break
            try:
                snapshot = load_snapshot(self._sources.snapshot, self.registry)
            except CheckpointError as exc:  # an earlier snapshot, or every file, gives the same state
                unreadable = self._sources.snapshot
                aside = unreadable.with_name(f"{unreadable.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
                os.replace(self._sources.snapshot, aside)
                self.notes.append(f"{exc}; it is kept as {aside.name}")
                continue
            restore_decoder(self.decoder, snapshot)
            self._saved_extensions = snapshot.extensions
            engine = snapshot.engine
            break
        note = (f"{why}: rebuilding the state and this month's ledger from the archive "
                f"({self._sources.describe()}); this reads every message again and takes a while")
        log.warning("%s", note)
        self.notes.append(note)
        return engine, [], {}

    def _keep_ledger_as_it_was(self, rewrite_from: int) -> None:
        """A copy of the ledger before a rebuild rewrites its rows from the archive: where the archive lost
        what the ledger counted (a day file emptied, zeroed or moved away), the copy still holds it."""
        last = self.ledger.last_hour()
        if last is None or last < rewrite_from:
            return  # no hour to rewrite
        path = self.config.ledger_path
        kept = path.with_name(f"{path.name}.before-rebuild-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            self.ledger.copy_to(kept)
        except (sqlite3.Error, OSError) as exc:
            raise PtmonError(f"cannot keep a copy of the ledger at {kept} before rebuilding its rows from "
                             f"{format_instant(rewrite_from)} from the archive ({exc}): free some room, or move the "
                             "ledger away to start a new one") from exc
        self.notes.append(f"the ledger as it was before the rebuild is kept as {kept.name}: its rows from "
                          f"{format_instant(rewrite_from)} are rewritten from the archive, and where the archive lost "
                          f"records they held, `ptmon ledger verify --month` against that copy shows it")

    def _rebuild_from(self) -> int:
        """Where a rebuild starts writing the ledger: this month (the archive's last), or the last hour
        the ledger holds if that is earlier; older months stay as they are."""
        files = archive_files(self.config.archive_path)
        month_start = month_bounds(files[-1].name[6:13])[0] if files else 0
        last = self.ledger.last_hour()
        return month_start if last is None else min(month_start, last)

    def _replay_archive(self) -> None:
        """Feed the archive files of the rebuild (points to InfluxDB were sent when they were live)."""
        began = time.monotonic()
        # The collector starts even on a damaged file (logged as an error): monitoring goes on, and a
        # replay, report or month close from that archive refuses it.
        reader = ArchiveReader(self._sources.files, on_damage="log")
        self._replaying = True
        try:
            self.feed.feed(reader, progress=lambda p: log.warning(
                "rebuilding from the archive: %s records, %s/s, at %s", f"{p.records:,}",
                f"{p.records / max(p.elapsed, 1e-9):,.0f}", format_instant(p.clock) if p.clock else "-"), every=10.0)
        finally:
            self._replaying = False
        self.ledger_writer.flush(open_buckets=True)
        self._write_anomalies()
        self.notes.append(f"rebuilt from {reader.records:,} archived records in {time.monotonic() - began:.0f} s")
        if reader.damaged:
            self.notes.append(f"DAMAGED archive file(s), read up to the damage: {', '.join(reader.damaged)}")

    def _month_snapshot(self, month_start: int) -> None:
        if not self._replaying:
            save_snapshot(self.config.archive_path, month_start, self.engine, self.decoder,
                          extensions=self.health.state_arrays() if self.health is not None else None)

    def _replay_tail(self, position: dict[str, Any]) -> None:
        """Feed the records archived after the checkpoint, so the state is as it was at the crash."""
        files = archive_files(self.config.archive_path)
        names = [p.name for p in files]
        if position.get("file") not in names:
            if position.get("file"):
                self.notes.append(f"archive file {position['file']} of the checkpoint is missing; state is as checkpointed")
            return
        start = names.index(position["file"])
        skip = int(position.get("records", 0))
        replayed = 0
        for i, path in enumerate(files[start:]):
            reader = ArchiveReader([path], on_damage="log")
            self.feed.feed(islice(iter(reader), skip if i == 0 else 0, None))
            replayed += reader.records - (skip if i == 0 else 0)
            if reader.damaged:
                self.notes.append(f"DAMAGED archive file {path}, read up to the damage")
        if replayed > 0:
            self.notes.append(f"replayed {replayed} archived records written after the checkpoint")
