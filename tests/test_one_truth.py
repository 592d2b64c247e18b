"""One truth for the month: the live path (checkpoints, clean restarts, the ledger's hours)
gives the same sums as a replay of the archive, whatever the order of arrivals."""

from __future__ import annotations

from pathlib import Path

from ptmon.checkpoint import load_checkpoint, save_checkpoint
from ptmon.decode import Decoder
from ptmon.engine import Engine
from ptmon.ledger.read import ledger_results
from ptmon.ledger.store import Ledger
from ptmon.ledger.writer import LedgerWriter
from ptmon.replay import Feed
from ptmon.tally import Tally

from .conftest import T0, down, hb, make_registry, run, tick, up

US = 1_000_000
HOUR = 3600


def test_clean_stop_and_restart_is_a_gap_as_in_the_replay(rules, tmp_path: Path) -> None:
    """Test that the downtime between a clean stop and the next start, through a checkpoint, is a gap and not stale samples."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu", "c2,cam,face_cam,taopu")
    before = [up(T0), *(hb(T0 + s, d, seq=s) for s in range(0, 150, 30) for d in ("c1", "c2")), down(T0 + 150)]
    after = [up(T0 + 390), *(hb(T0 + s, d, seq=s) for s in range(390, 540, 30) for d in ("c1", "c2")), tick(T0 + 540)]

    engine = Engine(registry)
    tally = Tally.attach(engine, T0 * US, (T0 + 600) * US)
    decoder = Decoder(registry)
    Feed(engine, decoder).feed(before)
    engine.finish()  # what the collector does at a clean shutdown
    path = tmp_path / "state.npz"
    save_checkpoint(path, engine=engine, tallies=[tally], decoder=decoder, extra={})
    restored = load_checkpoint(path, registry)
    Feed(restored.engine, decoder).feed(after)
    restored.engine.finish()
    live = restored.tallies[0].results()

    replayed = run(registry, before + after, T0, T0 + 600)
    assert live.csv_text() == replayed.csv_text()
    row = live.row("cam", "taopu", "online")
    assert row.observed_seconds == 360  # samples at 0, 60, 120 s before the stop; 420, 480, 540 s after the start
    assert (row.numerator, row.denominator) == (12, 12)


def test_hour_rows_keep_deltas_received_just_before_a_message_on_the_hour(rules, tmp_path: Path) -> None:
    """Test that the ledger's hour rows count every delta when one device reports exactly on the hour and another just before."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu", "s1,iot,smoke,taopu")
    h = T0 + HOUR
    records = [up(h - 300)]
    tries = ok = 0
    for i, offset in enumerate((-290, -230, -170, -110, -50, -10)):
        tries, ok = tries + 10, ok + (5 if offset == -10 else 10)
        records.append(hb(h + offset, "c1", seq=i, face_try=tries, face_ok=ok))
        if offset == -290:
            records.append(hb(h - 280, "s1", "iot", seq=1, reads=1, read_ok=1))
    records.append(hb(h, "s1", "iot", seq=2, reads=2, read_ok=2))
    records.append(tick(h + 120))
    records.sort(key=lambda r: r[0])

    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        engine = Engine(registry)
        writer = LedgerWriter(engine, ledger)
        Feed(engine, Decoder(registry)).feed(records)  # one batch: the rounds interleave the two devices
        engine.finish()
        writer.flush(open_buckets=True)
        from_ledger = ledger_results(ledger, registry, T0 * US, (T0 + 2 * HOUR) * US)
    replayed = run(registry, records, T0, T0 + 2 * HOUR)
    capture = replayed.row("cam", "taopu", "face")
    assert (capture.numerator, capture.denominator) == (45, 50)
    assert from_ledger.csv_text() == replayed.csv_text()


def test_data_quality_counts_come_from_the_period_in_ledger_and_replay(rules, tmp_path: Path) -> None:
    """Test that rejects, duplicates, stale and unknown devices are counted per hour, so the ledger and a replay give the
    same figures for a period."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu", "s1,iot,smoke,changzheng")
    records = [up(T0 - 600), hb(T0 - 300, "ghost"), (T0 - 200, "putuo/cam/taopu/c1/hb", "{bad")]  # before the period
    records += [hb(T0 + 10, "c1", seq=1), hb(T0 + 20, "c1", seq=1), hb(T0 + 30, "c1", seq=2), hb(T0 + 40, "c1", seq=1)]
    records += [hb(T0 + 50, "ghost"), hb(T0 + 55, "ghost"), (T0 + 60, "putuo/cam/taopu/c1/hb", "[1]"),
                (T0 + 70, "not/a/topic", "{}"), hb(T0 + HOUR - 1, "s1", "iot", "changzheng", reads=5, read_ok=9)]
    records += [hb(T0 + HOUR + s, "c1", seq=10 + s) for s in range(0, 300, 60)] + [tick(T0 + 2 * HOUR)]

    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        engine = Engine(registry)
        writer = LedgerWriter(engine, ledger)
        Feed(engine, Decoder(registry)).feed(records)
        engine.finish()
        writer.flush(open_buckets=True)
        from_ledger = ledger_results(ledger, registry, T0 * US, (T0 + 2 * HOUR) * US)
    replayed = run(registry, records, T0, T0 + 2 * HOUR)
    expected_rejects = {"unknown_device": 2, "not_object": 1, "bad_topic": 1, "counter_mismatch": 1}
    for results in (from_ledger, replayed):
        assert dict(results.rejects) == expected_rejects
        assert results.engine_stats["duplicate"] == 1 and results.engine_stats["stale"] == 1
        assert results.engine_stats["heartbeats"] == 2 + 5
        assert results.unknown_topics == {"putuo/cam/taopu/ghost/hb": 2}
    assert (from_ledger.rejects, from_ledger.engine_stats) == (replayed.rejects, replayed.engine_stats)


# --- a lost checkpoint, and the ledger against the archive ---------------------------------------

def _collector_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    from ptmon.config import CollectorConfig, MqttConfig

    from .conftest import write_two_street_registry

    registry = write_two_street_registry(tmp_path / "registry.csv")
    return CollectorConfig(registry=registry, data_dir=tmp_path / "data", metrics_listen="", mqtt=MqttConfig(port=1))


def _crash(collector) -> None:  # type: ignore[no-untyped-def]
    """What SIGKILL leaves: the archive as committed, the ledger as last written, no shutdown."""
    collector.archive.commit()
    collector.ledger.close()
    collector.lock.release()


def _month_csv_equals_replay(config, collector) -> None:  # type: ignore[no-untyped-def]
    from ptmon.replay import replay
    from ptmon.sinks.archive import archive_files
    from ptmon.timebase import month_bounds

    collector.engine.finish()
    collector.ledger_writer.flush(open_buckets=True)
    month = month_bounds("2026-11")
    from_ledger = ledger_results(collector.ledger, collector.registry, *month)
    replayed = replay([str(p) for p in archive_files(config.archive_path)], collector.registry, *month)
    assert from_ledger.csv_text() == replayed.csv_text()
    row = from_ledger.row("cam", "taopu", "online")
    assert row.observed_seconds > 180 * 60  # the hours before the checkpoint was lost are still there


import pytest  # noqa: E402


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_lost_checkpoint_is_rebuilt_from_the_archive_not_started_empty(tmp_path: Path, damage: str) -> None:
    """Test that a truncated or deleted checkpoint makes the collector rebuild its state from the archive, say so
    in one note, keep the unreadable file aside, and leave the ledger's month equal to a replay."""
    import asyncio

    from .conftest import restored_collector
    from .test_alerts import minutes, push

    config = _collector_config(tmp_path)
    collector = restored_collector(config)
    push(collector, minutes(0, 120))
    asyncio.run(collector.checkpoint())
    push(collector, minutes(120, 150))
    _crash(collector)
    checkpoint = config.checkpoint_path
    if damage == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    else:
        checkpoint.unlink()

    restarted = restored_collector(config)
    notes = " ".join(restarted.notes)
    assert "rebuilding the state and this month's ledger from the archive" in notes, notes
    assert ("unreadable" in notes) == (damage == "truncated")
    assert list(checkpoint.parent.glob("checkpoint.npz.unreadable-*")) if damage == "truncated" else True
    push(restarted, minutes(150, 200))
    _month_csv_equals_replay(config, restarted)


def test_ledger_verify_finds_a_difference_and_rebuild_repairs_it(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that `ptmon ledger verify` exits 0 on a ledger equal to its archive, 1 listing the row when an hour was
    altered, that `ptmon ledger rebuild` is refused while a collector runs and repairs the month once stopped."""
    import asyncio

    from ptmon.cli import main

    from .conftest import restored_collector
    from .test_alerts import minutes, push

    config = _collector_config(tmp_path)
    collector = restored_collector(config)
    push(collector, minutes(0, 130))
    asyncio.run(collector.checkpoint())
    args = ["--month", "2026-11", "--ledger", str(config.ledger_path), "--archive", str(config.archive_path),
            "--registry", str(config.registry)]
    assert main(["ledger", "rebuild", *args]) == 2  # the collector holds the data directory
    assert "stop it before rebuilding" in capsys.readouterr().err
    collector.engine.finish()
    collector.ledger_writer.flush(open_buckets=True)
    _crash(collector)
    assert main(["ledger", "verify", *args]) == 0, capsys.readouterr()
    assert "OK: the ledger's month equals the archive's" in capsys.readouterr().out

    with Ledger(config.ledger_path) as ledger:
        ledger.db.execute("UPDATE hours SET online = online - 5 WHERE street = 'taopu' AND contract = 'cam' "
                          "AND hour = (SELECT min(hour) FROM hours)")
    assert main(["ledger", "verify", *args]) == 1
    out = capsys.readouterr().out
    assert "DIFFERENT" in out and "ledger:  hour 2026-11-01T00:00:00+08:00 cam taopu" in out, out
    assert main(["ledger", "rebuild", *args]) == 0
    assert main(["ledger", "verify", *args]) == 0


@pytest.mark.parametrize("change", ["registry", "rules"])
def test_a_registry_or_rules_change_mid_month_recomputes_the_month_with_the_new_files(tmp_path: Path, rules_dir: Path,
                                                                                        change: str) -> None:
    """Test that a collector restarted with a changed registry or rules recomputes the month from the archive with
    them, so its ledger equals a replay with the new files (one set of inputs for the whole month)."""
    import asyncio
    import dataclasses

    from ptmon.registry import load_registry
    from ptmon.replay import replay
    from ptmon.rules import load_rules
    from ptmon.sinks.archive import archive_files
    from ptmon.timebase import month_bounds

    from .conftest import restored_collector
    from .test_alerts import minutes, push

    config = dataclasses.replace(_collector_config(tmp_path), rules=rules_dir)
    collector = restored_collector(config)
    push(collector, minutes(0, 120))
    asyncio.run(collector.checkpoint())
    _crash(collector)
    with Ledger(config.ledger_path) as ledger:
        ledger.add_exemption(scope="gateway", target="gw-taopu-cam-1", start=(T0 + 60 * 60) * US,
                             end=(T0 + 150 * 60) * US, reason="网关更换", approver="李工")
    if change == "registry":  # one camera retired, one moved to the other street, one added
        text = config.registry.read_text().replace("taopu-cam3,cam,face_cam,taopu,scn,taopu-c1,gw-taopu-cam-1,2026-01-01,",
                                                   "taopu-cam3,cam,face_cam,taopu,scn,taopu-c1,gw-taopu-cam-1,2026-01-01,2026-11-01")
        text = text.replace("taopu-cam5,cam,face_cam,taopu,scn,taopu-c1,gw-taopu-cam-1,2026-01-01,",
                            "taopu-cam5,cam,face_cam,changzheng,scn,taopu-c1,gw-taopu-cam-1,2026-01-01,")
        config.registry.write_text(text + "taopu-cam99,cam,face_cam,taopu,scn,taopu-c1,gw-taopu-cam-1,2026-01-01,\n")
    else:
        types = rules_dir / "types.yaml"
        types.write_text(types.read_text().replace("online_timeout: 180s", "online_timeout: 150s"))
    restarted = restored_collector(config)
    notes = " ".join(restarted.notes)
    assert f"the {change} changed" in notes and "rebuilding the state" in notes, notes
    push(restarted, minutes(120, 200))
    restarted.engine.finish()
    restarted.ledger_writer.flush(open_buckets=True)
    month = month_bounds("2026-11")
    registry = load_registry(config.registry, load_rules(rules_dir))
    exemptions = restarted.ledger.exemptions()
    replayed = replay([str(p) for p in archive_files(config.archive_path)], registry, *month, exemptions=exemptions)
    assert ledger_results(restarted.ledger, registry, *month).csv_text() == replayed.csv_text()


def test_a_ledger_without_archive_or_checkpoint_is_never_started_over(tmp_path: Path) -> None:
    """Test that a collector whose checkpoint and archive are gone refuses to start over the ledger's hours."""
    import asyncio
    import shutil

    from ptmon.errors import PtmonError

    from .conftest import restored_collector
    from .test_alerts import minutes, push

    config = _collector_config(tmp_path)
    collector = restored_collector(config)
    push(collector, minutes(0, 70))
    asyncio.run(collector.checkpoint())
    _crash(collector)
    config.checkpoint_path.unlink()
    shutil.rmtree(config.archive_path)
    with pytest.raises(PtmonError, match=r"no archive .* to rebuild the state from"):
        restored_collector(config)
    with Ledger(config.ledger_path, readonly=True) as ledger:
        assert ledger.has_hours()
def test_untrusted_input_counts_agree_in_ledger_and_replay(rules, tmp_path: Path) -> None:
    """Test that retained copies, implausible counters and messages lost and recovered are counted per hour
    for their street, so the ledger (written across a checkpoint restore) and a replay give the same counts."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu", "s1,iot,elevator,changzheng")
    records = [up(T0)]
    records += [hb(T0 + 60 * k, "c1", seq=seq, ts=T0 + 60 * k) for k, seq in enumerate((1, 2, 5, 6, 7, 12))]  # 2 + 4 lost
    records += [hb(T0 + 400, "c1", seq=4, ts=T0 + 180 - 1), hb(T0 + 410, "c1", seq=4, ts=T0 + 180 - 1),  # late, then a copy
                (T0 + 500, "$ptmon/retained", '{"topic": "putuo/cam/taopu/c1/hb"}')]
    records += [hb(T0 + 600, "s1", "iot", "changzheng", seq=1, reads=10, read_ok=10),
                hb(T0 + 660, "s1", "iot", "changzheng", seq=2, boot="x", read_ok=50),  # unmatched_success
                hb(T0 + HOUR + 60, "s1", "iot", "changzheng", seq=3, boot="x", reads=10**9, read_ok=0)]  # too_many_attempts
    records += [hb(T0 + HOUR + 120, "c1", seq=10**9, ts=T0 + HOUR + 120), tick(T0 + 2 * HOUR)]  # a seq_jump
    cut = 6
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        engine = Engine(registry)
        writer = LedgerWriter(engine, ledger)
        Feed(engine, Decoder(registry)).feed(records[:cut])
        writer.flush(open_buckets=True)
        path = tmp_path / "state.npz"
        save_checkpoint(path, engine=engine, tallies=[], decoder=Decoder(registry), extra={},
                        named={"ledger_hour": writer.hour, "ledger_day": writer.day})
        restored = load_checkpoint(path, registry)
        writer = LedgerWriter(restored.engine, ledger, hour=restored.named.get("ledger_hour"),
                              day=restored.named.get("ledger_day"))
        Feed(restored.engine, Decoder(registry)).feed(records[cut:])
        restored.engine.finish()
        writer.flush(open_buckets=True)
        from_ledger = ledger_results(ledger, registry, T0 * US, (T0 + 2 * HOUR) * US)
    replayed = run(registry, records, T0, T0 + 2 * HOUR)
    wanted = {"lost": 6, "recovered": 1, "stale": 1, "unmatched_success": 1, "too_many_attempts": 1, "seq_jump": 1}
    for results in (from_ledger, replayed):
        assert {k: results.engine_stats.get(k) for k in wanted} == wanted
        assert results.rejects["retained"] == 1
    assert (from_ledger.rejects, from_ledger.engine_stats) == (replayed.rejects, replayed.engine_stats)
    assert from_ledger.csv_text() == replayed.csv_text()


def test_a_month_recomputed_from_its_snapshot_applies_exemptions_as_the_ledger_does(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that a month recomputed from its month-start snapshot knows which devices were online as it began, so an
    exemption over devices online since the previous month counts alike in the ledger and in `ledger verify`."""
    import asyncio

    from ptmon.cli import main

    from .conftest import restored_collector
    from .test_alerts import minutes, push

    config = _collector_config(tmp_path)
    collector = restored_collector(config)
    push(collector, minutes(-90, 150))  # from 2026-10-31 22:30: the month-start snapshot is written at midnight
    asyncio.run(collector.checkpoint())
    collector.engine.finish()
    collector.ledger_writer.flush(open_buckets=True)
    _crash(collector)
    assert (config.archive_path / "ptmon-2026-11.state.npz").is_file()
    with Ledger(config.ledger_path) as ledger:
        ledger.add_exemption(scope="street", target="taopu", start=(T0 + 30 * 60) * US, end=(T0 + 50 * 60) * US,
                             reason="停电", approver="王主任")
    args = ["--month", "2026-11", "--ledger", str(config.ledger_path), "--archive", str(config.archive_path),
            "--registry", str(config.registry)]
    assert main(["ledger", "verify", *args]) == 0, capsys.readouterr()
    with Ledger(config.ledger_path, readonly=True) as ledger:
        row = ledger_results(ledger, collector.registry, *_november()).row("cam", "taopu", "online")
    assert row.numerator <= row.denominator


def _november() -> tuple[int, int]:
    from ptmon.timebase import month_bounds

    return month_bounds("2026-11")


def test_a_clock_stepped_back_at_a_restart_replays_in_the_order_the_collector_saw(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that after a restart whose clock stepped back (records of the new archive part stamped before the end of
    the previous part) the ledger, `ledger verify` and a replay of the directory agree: a collector's files are read
    in the order it wrote them, not merged by time."""
    import asyncio

    from ptmon.cli import main
    from ptmon.replay import replay
    from ptmon.sinks.archive import archive_paths

    from .conftest import restored_collector
    from .test_alerts import minutes, push

    config = _collector_config(tmp_path)
    collector = restored_collector(config)
    push(collector, minutes(0, 40))
    asyncio.run(collector.checkpoint())
    _crash(collector)
    restarted = restored_collector(config)
    counters: dict = {f"{street}-cam{i}": (400, 400) for street in ("changzheng", "taopu") for i in range(12)}
    push(restarted, [(float(T0 + 30 * 60 - 1), "$ptmon/monitor", "up"), *minutes(30, 90, counters=counters)])
    restarted.engine.finish()
    restarted.ledger_writer.flush(open_buckets=True)
    from_ledger = ledger_results(restarted.ledger, restarted.registry, *_november())
    _crash(restarted)
    assert len(list(config.archive_path.glob("ptmon-*.jsonl.gz"))) == 2
    replayed = replay(archive_paths([config.archive_path]), restarted.registry, *_november())
    assert from_ledger.csv_text() == replayed.csv_text()
    assert replayed.engine_stats["late"] > 0
    args = ["--month", "2026-11", "--ledger", str(config.ledger_path), "--archive", str(config.archive_path),
            "--registry", str(config.registry)]
    assert main(["ledger", "verify", *args]) == 0, capsys.readouterr().out


def test_a_ledger_restored_from_an_older_backup_is_rebuilt(tmp_path: Path) -> None:
    """Test that a ledger older than the checkpoint beside it (restored from a backup) makes the collector rebuild the
    month from the archive instead of continuing the checkpoint over the missing hours."""
    import asyncio
    import shutil

    from .conftest import restored_collector
    from .test_alerts import minutes, push

    config = _collector_config(tmp_path)
    collector = restored_collector(config)
    push(collector, minutes(0, 70))
    asyncio.run(collector.checkpoint())
    backup = tmp_path / "backup.sqlite"
    with Ledger(backup) as copy:
        collector.ledger.db.backup(copy.db)
    push(collector, minutes(70, 190))
    asyncio.run(collector.checkpoint())
    _crash(collector)
    shutil.copy(backup, config.ledger_path)
    for sidecar in ("-wal", "-shm"):
        Path(str(config.ledger_path) + sidecar).unlink(missing_ok=True)
    restarted = restored_collector(config)
    notes = " ".join(restarted.notes)
    assert "older than the checkpoint" in notes and "rebuilding the state" in notes, notes
    push(restarted, minutes(190, 230))
    _month_csv_equals_replay(config, restarted)


def test_a_corrupt_snapshot_is_set_aside_and_the_rebuild_reads_every_file(tmp_path: Path) -> None:
    """Test that a corrupt month-start snapshot met in a rebuild is kept aside, and the state comes from every
    archive file instead, equal to a replay."""
    import asyncio

    from .conftest import restored_collector
    from .test_alerts import minutes, push

    config = _collector_config(tmp_path)
    collector = restored_collector(config)
    push(collector, minutes(-60, 90))
    asyncio.run(collector.checkpoint())
    _crash(collector)
    snapshot = config.archive_path / "ptmon-2026-11.state.npz"
    snapshot.write_bytes(b"not a snapshot")
    config.checkpoint_path.unlink()
    restarted = restored_collector(config)
    notes = " ".join(restarted.notes)
    assert "snapshot unusable" in notes and "no snapshot" in notes, notes
    assert list(config.archive_path.glob("ptmon-2026-11.state.npz.unreadable-*"))
    push(restarted, minutes(90, 200))
    _month_csv_equals_replay(config, restarted)


def test_replay_of_an_archive_directory_for_a_month_starts_from_its_snapshot(tmp_path: Path) -> None:
    """Test that `ptmon replay DIR --month` reads the month-start snapshot and the files after it, and gives the
    ledger's KPIs, while the month's files alone (devices' baselines unknown) would not."""
    import asyncio
    import subprocess
    import sys

    from .conftest import restored_collector
    from .test_alerts import minutes, push

    config = _collector_config(tmp_path)
    collector = restored_collector(config)
    push(collector, minutes(-60, 120))
    asyncio.run(collector.checkpoint())
    collector.engine.finish()
    collector.ledger_writer.flush(open_buckets=True)
    from_ledger = ledger_results(collector.ledger, collector.registry, *_november())
    _crash(collector)
    done = subprocess.run([sys.executable, "-m", "ptmon.cli", "replay", str(config.archive_path), "--month", "2026-11",
                           "--registry", str(config.registry), "--csv", "-", "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "snapshot ptmon-2026-11.state.npz" in done.stderr
    assert done.stdout == from_ledger.csv_text()
