"""A power cut loses what the operating system held but had not written to disk. The collector
writes its archive to the OS before it acknowledges a batch, and to disk (fsync) before it saves a
checkpoint or writes the ledger, so after the cut the checkpoint and the ledger count no record
the archive lost: the restarted collector's ledger still equals its month recomputed from the
archive. The cut is modelled on real files: every archive file is cut back to its size at its
last fsync (recorded from the real calls) and the rest left as zero bytes, as unwritten blocks
read back after a power cut."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

from ptmon.cli import main
from ptmon.sinks.archive import archive_files

from .conftest import restored_collector
from .test_alerts import make_config, minutes, setup  # noqa: F401  (setup: the fixture)


def _feed(collector, records) -> None:  # type: ignore[no-untyped-def]
    """As the main loop: each batch archived (to the OS only), then applied."""
    for start in range(0, len(records), 200):
        batch = records[start : start + 200]
        collector.archive.append(batch)
        collector.feed.feed(batch)


def _power_cut(directory: Path, synced: dict[int, int]) -> int:
    """Every archive file back to its size at its last fsync, the rest zero bytes; the bytes lost."""
    lost = 0
    for path in archive_files(directory):
        size, kept = path.stat().st_size, synced.get(path.stat().st_ino, 0)
        with path.open("r+b") as f:
            f.seek(kept)
            f.write(bytes(size - kept))
        lost += size - kept
    return lost


def test_after_a_power_cut_the_ledger_counts_no_record_the_archive_lost(tmp_path, setup, monkeypatch,  # noqa: F811
                                                                         capsys, caplog) -> None:
    """Test that a collector cut off by a power cut (a checkpoint saved, an hour written to the ledger, then
    more traffic only the OS held) restarts into a ledger that equals its month recomputed from the archive."""
    synced: dict[int, int] = {}
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        stat = os.fstat(fd)
        synced[stat.st_ino] = stat.st_size

    monkeypatch.setattr(os, "fsync", fsync)
    config = make_config(tmp_path, setup)
    counters: dict = {}
    collector = restored_collector(config)
    _feed(collector, minutes(0, 50, counters=counters))
    assert asyncio.run(collector.checkpoint())
    _feed(collector, minutes(50, 95, counters=counters))  # the ledger's first hour is written at minute 60
    assert collector.ledger.last_hour() is not None
    collector.ledger.close()
    collector.lock.release()
    assert _power_cut(config.archive_path, synced) > 0  # the cut took what came after the last fsync

    restarted = restored_collector(config)
    restarted.engine.finish()
    restarted.ledger_writer.flush(open_buckets=True)
    restarted.ledger.close()
    restarted.lock.release()
    capsys.readouterr()
    code = main(["ledger", "verify", "--month", "2026-11", "--ledger", str(config.ledger_path), "--archive",
                 str(config.archive_path), "--registry", str(config.registry)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert any("zero bytes" in r.getMessage() for r in caplog.records)  # read up to the cut, with its warning


def test_a_rebuild_keeps_the_ledger_as_it_was_where_the_archive_lost_its_records(tmp_path, setup) -> None:  # noqa: F811
    """Test that a collector that lost its checkpoint, with its day file emptied, rebuilds its ledger from what the
    archive holds but first keeps the ledger as it was beside it, hours and all, and says so."""
    config = make_config(tmp_path, setup)
    collector = restored_collector(config)
    _feed(collector, minutes(0, 130))
    assert asyncio.run(collector.checkpoint())
    hours = collector.ledger.db.execute("SELECT * FROM hours ORDER BY hour, contract, street").fetchall()
    collector.ledger.close()
    collector.lock.release()
    collector.archive.finish()
    assert len({h[0] for h in hours}) == 3  # two closed hours and the open one, written at the checkpoint
    config.checkpoint_path.unlink()
    for path in archive_files(config.archive_path):
        path.write_bytes(b"")  # emptied: the ledger alone holds those hours now

    restarted = restored_collector(config)
    restarted.ledger.close()
    restarted.lock.release()
    (kept,) = config.ledger_path.parent.glob(f"{config.ledger_path.name}.before-rebuild-*")
    assert any(f"the ledger as it was before the rebuild is kept as {kept.name}" in n for n in restarted.notes)
    with sqlite3.connect(kept) as db:
        assert db.execute("SELECT * FROM hours ORDER BY hour, contract, street").fetchall() == hours
    with sqlite3.connect(config.ledger_path) as db:
        assert db.execute("SELECT count(*) FROM hours").fetchone()[0] == 0  # rewritten from the empty archive
