"""A ledger recomputed from the raw archive, by the same listeners the live collector runs.

``recompute_month`` reads what a month needs (the month-start snapshot, or nothing, and the
archive files after it); ``ptmon ledger rebuild`` copies its month into the real ledger,
``ptmon ledger verify`` compares the two, ``ptmon report --from-archive`` reads it, so a
reviewer can check every number against the messages themselves. ``rebuild_ledger`` feeds
given archive files from the beginning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..anomaly import DeviceHealth
from ..anomaly.ledger import write_anomalies
from ..anomaly.records import Anomaly
from ..anomaly.rules import rules_in
from ..archive import ArchiveReader, Record, encode_record
from ..checkpoint import restore_decoder
from ..decode import Decoder
from ..engine import Engine
from ..exemptions import ExemptionMask
from ..registry import Registry
from ..replay import Feed, Progress, freeze_startup_heap
from ..snapshots import MonthSources, load_snapshot, month_sources
from ..timebase import month_bounds
from .episodes import EpisodeTracker
from .records import Exemption
from .store import Ledger
from .writer import LedgerWriter


@dataclass
class Recomputed:
    sources: MonthSources
    records: int  # archive records read
    told: Record | None = None  # the first record after the month that told whether its end was observed

    def inputs(self) -> list[tuple[str, Path, bytes | None]]:
        """(role, path, what of it to fingerprint: None for the whole file) of every file read. The later
        file where reading stopped was read only to the record that told, which stands for it: the
        file itself grows while its collector writes it."""
        told, last = self.told, self.sources.following[-1] if self.sources.following else None
        return [(role, p, encode_record(*told) if told is not None and p == last else None)
                for role, p in self.sources.roles()]


def rebuild_ledger(paths: Iterable[str | Path], registry: Registry, ledger: Ledger, *, end: int | None = None,
                   exemptions: Sequence[Exemption] = (),
                   progress: Callable[[Progress], None] | None = None) -> Feed:
    """Feed the archives from a fresh engine into ``ledger``; records at or after ``end`` are not
    read. ``exemptions`` shape the episodes (an exempted device is out of the denominator); the
    ledger's sums apply exemptions when read."""
    engine = Engine(registry)
    if exemptions:
        engine.exemptions = ExemptionMask(registry)
        engine.exemptions.load(exemptions)
    feed, _ = _feed_ledger(engine, Decoder(registry), ledger, [Path(p) for p in paths], end, progress)
    return feed


def recompute_month(archive_dirs: Sequence[Path], registry: Registry, month: str, ledger: Ledger, *,
                    progress: Callable[[Progress], None] | None = None) -> Recomputed:
    """Recompute ``month`` into ``ledger`` from the latest snapshot at or before it and the archive
    files after the snapshot (every file before the month's end without a snapshot)."""
    _, end = month_bounds(month)
    sources = month_sources(list(archive_dirs), month)
    decoder = Decoder(registry)
    saved = None
    if sources.snapshot is not None:
        snapshot = load_snapshot(sources.snapshot, registry)
        engine = snapshot.engine
        restore_decoder(decoder, snapshot)
        saved = snapshot.extensions
        _seed_status(ledger, engine)
    else:
        engine = Engine(registry)
    feed, reader = _feed_ledger(engine, decoder, ledger, sources.read(), end, progress, saved)
    if feed.reached_end and reader.reading is not None:  # it stopped at the record that told: later files unopened
        told = sources.following.index(reader.reading) + 1 if reader.reading in sources.following else 0
        sources = replace(sources, following=sources.following[:told])
    return Recomputed(sources, reader.records, feed.told)  # set only when reading reached the end


def _feed_ledger(engine: Engine, decoder: Decoder, ledger: Ledger, files: list[Path], end: int | None,
                 progress: Callable[[Progress], None] | None, saved: dict[str, np.ndarray] | None = None,
                 ) -> tuple[Feed, ArchiveReader]:
    writer = LedgerWriter(engine, ledger)
    EpisodeTracker(engine, writer.on_episodes)
    found: list[Anomaly] = []
    anomaly_rules = rules_in(engine.registry.rules.directory)
    health = DeviceHealth(engine, anomaly_rules, on_anomalies=found.extend, saved=saved) if anomaly_rules else None
    feed = Feed(engine, decoder, end=end)
    freeze_startup_heap()
    reader = ArchiveReader(files)
    feed.feed(reader, progress)
    if end is not None and feed.observing_at_end and engine.up:
        engine.advance_to(end)
    engine.finish()
    writer.flush(open_buckets=True)
    if health is not None:
        health.monitor.settle()
        write_anomalies(ledger, found + health.monitor.open_anomalies())
    return feed, reader


def _seed_status(ledger: Ledger, engine: Engine) -> None:
    """Devices online at the snapshot's last sample, as status rows before the month: the status
    log written from the snapshot on records changes only, and exemptions applied when the ledger
    is read need every device's status (most stay online for weeks)."""
    if engine.clock is None:
        return
    ids = engine.registry.ids
    online = np.flatnonzero(engine.sampled_online).tolist()
    ledger.write_aggregates([], [], [], status=[(ids[i], engine.clock, 1) for i in online])
