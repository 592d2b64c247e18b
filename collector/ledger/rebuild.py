"""A ledger recomputed from the raw archive, by the same listeners the live collector runs.

``ptmon report --from-archive`` reads one of these (in memory) instead of the collector's
ledger, so a reviewer can check every number against the messages themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from ..archive import ArchiveReader
from ..decode import Decoder
from ..engine import Engine
from ..exemptions import ExemptionMask
from ..registry import Registry
from ..replay import Feed, Progress, freeze_startup_heap
from .episodes import EpisodeTracker
from .records import Exemption
from .store import Ledger
from .writer import LedgerWriter


def rebuild_ledger(paths: Iterable[str], registry: Registry, ledger: Ledger, *, end: int | None = None,
                   exemptions: Sequence[Exemption] = (),
                   progress: Callable[[Progress], None] | None = None) -> Feed:
    """Feed the archives through a fresh engine into ``ledger``; records at or after ``end`` are not read."""
    engine = Engine(registry)
    if exemptions:
        engine.exemptions = ExemptionMask(registry)
        engine.exemptions.load(exemptions)
    writer = LedgerWriter(engine, ledger)
    EpisodeTracker(engine, writer.on_episodes)
    feed = Feed(engine, Decoder(registry), end=end)
    freeze_startup_heap()
    reader = ArchiveReader(paths)
    feed.feed(reader, progress)
    if end is not None and feed.reached_end and engine.up:
        engine.advance_to(end)
    engine.finish()
    writer.flush(open_buckets=True)
    return feed
