"""The collector rides through storage faults on real parts: Mosquitto, a size-limited filesystem
(tmpfs, else a loop-mounted image) as its data directory, filled while it runs, an SQLite lock
held by another process, InfluxDB 1.6.7 stopped while its spool has no room. Each time it stays
up, acknowledges nothing it has not archived, resumes by itself, and its live KPIs (and ledger)
equal a replay of its archive afterwards."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ptmon.archive import ArchiveReader
from ptmon.collect import Collector
from ptmon.config import CollectorConfig, EmailConfig, InfluxConfig, MqttConfig, StorageConfig
from ptmon.ledger.read import ledger_results
from ptmon.ledger.store import Ledger
from ptmon.live import month_of
from ptmon.registry import load_registry
from ptmon.replay import replay
from ptmon.rules import load_rules
from ptmon.sinks import archive as archive_sink
from ptmon.sinks.archive import ArchiveWriteError, ArchiveWriter, archive_files

from .brokers import MosquittoServer
from .conftest import HEADER, restored_collector
from .servers import InfluxServer, influx_rows, influxql
from .smtp import SmtpServer
from .storage import Filler, ledger_locked, small_filesystem, wait_until
from .test_collect_restarts import CAMERAS, Publisher


@pytest.fixture
def registry_file(tmp_path: Path) -> Path:
    """Four cameras of taopu (heartbeats every minute)."""
    return write_registry(tmp_path)


LAST = 160  # rounds of heartbeats (one per camera) in the disk-full tests: ~13 bytes each in the archive,
# so more than a page (the room the archive file still has in its last page when the disk fills)
FAST = StorageConfig(retry_min=0.05, retry_max=0.5, alert_after=1.0)


def write_registry(tmp_path: Path) -> Path:
    path = tmp_path / "registry.csv"
    rows = [f"{d},cam,face_cam,taopu,scn,taopu-c1,gw-taopu-cam-0,2026-01-01," for d in CAMERAS]
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def collector_config(tmp_path: Path, data: Path, registry: Path, port: int, **changes: Any) -> CollectorConfig:
    return CollectorConfig(
        registry=registry, data_dir=data, checkpoint_interval=1.0, metrics_listen="", storage=FAST,
        mqtt=MqttConfig(port=port, client_id=f"collector-{time.monotonic_ns()}", qos=1, reconnect_min=0.1,
                        reconnect_max=0.5),
        **changes)


class Running:
    """A Collector running in a thread of its own, as `ptmon collect` runs it."""

    def __init__(self, config: CollectorConfig) -> None:
        self.collector = restored_collector(config)
        self.stop = asyncio.Event()
        self.loop = asyncio.new_event_loop()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        wait_until(lambda: self.collector.source.connected, what="the collector to connect")

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self.collector.run(self.stop))
        except BaseException as exc:
            self.error = exc

    def heartbeats(self) -> int:
        return self.collector.engine.stats["heartbeats"]

    def finish(self) -> Collector:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(60)
        assert not self.thread.is_alive() and self.error is None, self.error
        return self.collector


def publish_round(publisher: Publisher, seq: int) -> None:
    for device in CAMERAS:
        publisher.heartbeat(device, seq)


def archived(data: Path) -> list[tuple[str, int]]:
    """(device, seq) of every heartbeat in the archive, in order."""
    out = []
    for _, topic, payload in ArchiveReader(archive_files(data / "archive")):
        if topic.endswith("/hb"):
            out.append((topic.split("/")[3], json.loads(payload)["seq"]))
    return out


def assert_live_equals_replay(collector: Collector, data: Path, registry_path: Path) -> None:
    live = collector.month_results()
    assert live is not None
    registry = load_registry(registry_path, load_rules())
    replayed = replay([str(p) for p in archive_files(data / "archive")], registry, live.start, live.end)
    assert replayed.csv_text() == live.csv_text()
    with Ledger(data / "ledger.sqlite", readonly=True) as ledger:
        assert ledger.integrity_check() == "ok"
        assert ledger_results(ledger, registry, live.start, live.end).csv_text() == replayed.csv_text()


def waiting_seconds(collector: Collector, stage: str) -> float:
    return collector.metrics.registry.get_sample_value("ptmon_storage_waiting_seconds", {"stage": stage}) or 0.0


@pytest.fixture
def broker(tmp_path):
    server = MosquittoServer(tmp_path)
    server.start()
    yield server
    server.stop()


def test_full_disk_holds_intake_unacknowledged_and_resumes(tmp_path, registry_file, broker, caplog):
    """Test that with its data directory's filesystem full the collector stays connected, archives and
    acknowledges nothing, says what it waits for (log, gauge, alert email after alert_after), and once
    space is back archives every held message by itself, with live KPIs and ledger equal to the replay."""
    caplog.set_level(logging.INFO)
    data = tmp_path / "data"
    with small_filesystem(data, 8), SmtpServer() as smtp:
        email = EmailConfig(host="127.0.0.1", port=smtp.port, security="none", poll_interval=0.2)
        run = Running(collector_config(tmp_path, data, registry_file, broker.port, email=email))
        publisher = Publisher(broker.port)
        filler = Filler(data)
        try:
            for seq in (1, 2, 3):
                publish_round(publisher, seq)
            wait_until(lambda: run.heartbeats() == 12, what="12 heartbeats applied")
            filler.fill()
            # The archive's last page still has room for a few records: enough rounds to need more.
            for seq in range(4, LAST):
                publish_round(publisher, seq)  # the broker acknowledges the publisher; the collector cannot archive
            collector = run.collector
            wait_until(lambda: waiting_seconds(collector, "archive") > 1.5, what="the archive fault to last")
            assert collector.source.connected
            stuck = archived(data)
            assert run.heartbeats() == len(stuck) < 4 * (LAST - 1)  # the engine has exactly what was archived
            assert collector.metrics.registry.get_sample_value("ptmon_collector_held_messages") >= 1
            wait_until(lambda: any("存储故障" in m["Subject"] for m in smtp.inbox.messages), what="the alert email")
            assert archived(data) == stuck and run.heartbeats() == len(stuck)
            filler.release()
            wait_until(lambda: run.heartbeats() == 4 * (LAST - 1), what="the held messages applied once space is back")
            wait_until(lambda: not collector.faults.active, what="every stage working again")
            publish_round(publisher, LAST)
            wait_until(lambda: run.heartbeats() == 4 * LAST, what="intake as before")
            wait_until(lambda: any("存储恢复" in m["Subject"] for m in smtp.inbox.messages), what="the all-clear email")
        finally:
            publisher.close()
            filler.release()
            collector = run.finish()
        assert sorted(archived(data)) == sorted((d, s) for d in CAMERAS for s in range(1, LAST + 1))
        assert_live_equals_replay(collector, data, registry_file)
    text = caplog.text
    assert "storage fault: waiting for the archive to take messages" in text
    assert "storage fault over: the archive to take messages" in text
    assert collector.metrics.registry.get_sample_value("ptmon_storage_faults_total", {"stage": "archive"}) == 1
    results = collector.month_results()
    assert results is not None and results.engine_stats.get("restarts", 0) >= 1  # the hold ended as a gap


def start_collector_process(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "ptmon.cli", "-v", "collect", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT)


def write_toml(tmp_path: Path, data: Path, registry: Path, port: int, client_id: str) -> Path:
    path = tmp_path / "ptmon.toml"
    path.write_text(
        f'registry = "{registry}"\ndata_dir = "{data}"\ncheckpoint_interval = 1\nmetrics_listen = ""\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\nclient_id = "{client_id}"\nqos = 1\n'
        '[storage]\nretry_min = 0.05\nretry_max = 0.5\n')
    return path


def test_sigkill_while_the_disk_is_full_loses_nothing(tmp_path, registry_file, broker):
    """Test that a collector killed while it holds messages it could not archive had acknowledged none
    of them: restarted with space back, the broker delivers them again and every one is archived once
    at least, with the KPIs and the ledger equal to the replay."""
    data = tmp_path / "data"
    with small_filesystem(data, 8):
        config = write_toml(tmp_path, data, registry_file, broker.port, "collector-kill-full")
        log = tmp_path / "collector.log"
        publisher, filler = Publisher(broker.port, tries=1, ok=1), Filler(data)
        try:
            first = start_collector_process(config, log)
            wait_until(lambda: "subscribed to" in log.read_text(), what="collector subscribed")
            for seq in (1, 2):
                publish_round(publisher, seq)
            wait_until(lambda: len(archived(data)) == 8, what="8 archived")
            time.sleep(1.5)  # a checkpoint after them
            filler.fill()
            for seq in range(3, LAST):
                publish_round(publisher, seq)
            wait_until(lambda: "storage fault: waiting for the archive" in log.read_text(), what="the fault logged")
            assert first.poll() is None
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            filler.release()
            second = start_collector_process(config, log)
            wait_until(lambda: len(set(archived(data))) == 4 * (LAST - 1), what="the unacknowledged messages redelivered")
            publish_round(publisher, LAST)
            wait_until(lambda: ("taopu-cam3", LAST) in archived(data), what="the last round")
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0, log.read_text()[-3000:]
        finally:
            publisher.close()
            filler.release()
        assert set(archived(data)) == {(d, s) for d in CAMERAS for s in range(1, LAST + 1)}
        registry = load_registry(registry_file, load_rules())
        month = month_of(int(time.time() * 1_000_000))
        replayed = replay([str(p) for p in archive_files(data / "archive")], registry, *month)
        with Ledger(data / "ledger.sqlite", readonly=True) as ledger:
            assert ledger_results(ledger, registry, *month).csv_text() == replayed.csv_text()
        face = replayed.row("cam", "taopu", "face")
        # seq 2.. once each; one try a heartbeat: 159 in seconds stay within a camera's burst (60 s at 5 a second)
        assert (face.numerator, face.denominator) == (4 * (LAST - 1), 4 * (LAST - 1))


def test_ledger_locked_by_another_process(tmp_path, registry_file, broker, caplog):
    """Test that while another process holds BEGIN EXCLUSIVE on the ledger far longer than the busy
    timeout, the collector keeps archiving and acknowledging (the archive is its record), keeps the
    ledger's rows in memory, saves no checkpoint ahead of them, and catches up once the lock goes."""
    caplog.set_level(logging.INFO)
    data = tmp_path / "data"
    run = Running(collector_config(tmp_path, data, registry_file, broker.port))
    collector = run.collector
    publisher = Publisher(broker.port)
    try:
        publish_round(publisher, 1)
        wait_until(lambda: run.heartbeats() == 4, what="4 heartbeats")
        wait_until(lambda: collector.metrics.registry.get_sample_value("ptmon_checkpoint_age_seconds") < 1.0,
                   what="a checkpoint")
        with ledger_locked(data / "ledger.sqlite", 4.0):
            for seq in (2, 3):
                publish_round(publisher, seq)
            wait_until(lambda: run.heartbeats() == 12, what="intake goes on during the lock")
            wait_until(lambda: collector.faults.waiting("ledger"), what="the ledger fault")
            time.sleep(2.0)
            assert collector.metrics.registry.get_sample_value("ptmon_checkpoint_age_seconds") > 1.5
            assert ("taopu-cam3", 3) in archived(data)
        wait_until(lambda: not collector.faults.active, what="the ledger and checkpoint to catch up")
        wait_until(lambda: collector.metrics.registry.get_sample_value("ptmon_checkpoint_age_seconds") < 1.0,
                   what="a checkpoint after the lock")
        publish_round(publisher, 4)
        wait_until(lambda: run.heartbeats() == 16, what="16 heartbeats")
    finally:
        publisher.close()
        collector = run.finish()
    assert "storage fault: waiting for the ledger to take its writes" in caplog.text
    assert "database is locked" in caplog.text
    assert_live_equals_replay(collector, data, registry_file)


def test_checkpoint_without_room_is_retried_while_intake_goes_on(tmp_path, registry_file, broker):
    """Test that a checkpoint file on a full filesystem of its own is retried while messages are still
    archived and acknowledged, and that its measured age grows until a save succeeds."""
    data, own = tmp_path / "data", tmp_path / "checkpoint"
    with small_filesystem(own, 1):
        config = collector_config(tmp_path, data, registry_file, broker.port, checkpoint_file=own / "state.npz")
        run = Running(config)
        collector, filler = run.collector, Filler(own)
        publisher = Publisher(broker.port)
        def age() -> float:
            return collector.metrics.registry.get_sample_value("ptmon_checkpoint_age_seconds") or 0.0

        try:
            publish_round(publisher, 1)
            wait_until(lambda: run.heartbeats() == 4 and (own / "state.npz").exists(), what="a first checkpoint")
            filler.fill()  # no room for the next one (written beside it, then renamed over it)
            wait_until(lambda: collector.faults.waiting("checkpoint"), what="the checkpoint fault")
            for seq in (2, 3):
                publish_round(publisher, seq)
            wait_until(lambda: run.heartbeats() == 12, what="intake goes on")
            wait_until(lambda: age() > 2.0, what="the age to grow")
            filler.release()
            wait_until(lambda: not collector.faults.active and age() < 1.0, what="a checkpoint once there is room")
        finally:
            publisher.close()
            filler.release()
            collector = run.finish()
        assert (own / "state.npz").is_file()
    assert_live_equals_replay(collector, data, registry_file)


def test_influx_away_and_spool_full_holds_intake_instead_of_dropping(tmp_path, registry_file, broker):
    """Test that with InfluxDB 1.6.7 stopped and no room for its spool the collector stops taking
    messages once its memory limit is reached (no point dropped), and that when InfluxDB is back every
    accepted heartbeat is written and the KPIs equal the replay."""
    data = tmp_path / "data"
    influx = InfluxServer(tmp_path)
    influx.start()
    influxql(influx.url, "", "CREATE DATABASE spoolfull")
    try:
        with small_filesystem(data / "spool", 1):
            config = collector_config(tmp_path, data, registry_file, broker.port, influx=InfluxConfig(
                url=influx.url, database="spoolfull", flush_interval=0.05, retry_min=0.05, retry_max=0.3,
                batch_size=50, memory_limit=20_000))
            run = Running(config)
            collector, filler = run.collector, Filler(data / "spool")
            publisher = Publisher(broker.port)
            try:
                publish_round(publisher, 1)
                wait_until(lambda: run.heartbeats() == 4, what="4 heartbeats")
                filler.fill()
                influx.stop()
                for seq in range(2, LAST + 1):
                    publish_round(publisher, seq)
                wait_until(lambda: collector.faults.waiting("spool"), what="intake held for the spool")
                held_at = run.heartbeats()
                time.sleep(1.0)
                # held: nothing more taken (on a loaded machine the whole burst may be in the step under way)
                assert run.heartbeats() == held_at and collector.influx.dropped_points == 0
                influx.start()
                wait_until(lambda: run.heartbeats() == 4 * LAST, timeout=60, what="every heartbeat once InfluxDB is back")
                wait_until(lambda: collector.influx.pending_points == 0, timeout=60, what="every point written")
            finally:
                publisher.close()
                filler.release()
                collector = run.finish()
            assert collector.influx.dropped_points == 0
        rows = influx_rows(influx.url, "spoolfull", "SELECT count(seq) FROM heartbeat")
        assert rows[0][1] == collector.engine.stats["heartbeats"] == 4 * LAST
    finally:
        influx.stop()
    assert_live_equals_replay(collector, data, registry_file)


def test_data_directory_deleted_stops_with_status_3(tmp_path, registry_file, broker):
    """Test that deleting the data directory under a running collector stops it with exit status 3
    and a message saying the storage is gone, instead of writing on into deleted files."""
    data = tmp_path / "data"
    config = write_toml(tmp_path, data, registry_file, broker.port, "collector-gone")
    log = tmp_path / "collector.log"
    proc = start_collector_process(config, log)
    try:
        wait_until(lambda: "subscribed to" in log.read_text(), what="collector subscribed")
        shutil.rmtree(data)
        assert proc.wait(30) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "stopped, storage gone" in text and "exit status 3" in text and "Traceback" not in text


@pytest.mark.parametrize("piece_chars", [None, 100], ids=["batch-at-once", "in-pieces"])
def test_archive_writer_on_a_full_filesystem_keeps_one_clean_stream(tmp_path, monkeypatch, piece_chars):
    """Test that writes failing for lack of space leave each archive file one readable gzip stream:
    after space is back every record is read once, in order, across a day change, with no file cut;
    also when a batch is written in pieces (a failure in a later piece keeps the earlier ones)."""
    if piece_chars is not None:
        monkeypatch.setattr(archive_sink, "PIECE_CHARS", piece_chars)
    directory = tmp_path / "fs"
    with small_filesystem(directory, 1):
        writer, filler = ArchiveWriter(directory / "archive"), Filler(directory)
        t0 = 1_793_462_400.0 + 86_400 - 100  # 100 s before a Shanghai midnight
        written: list[tuple[float, str, str]] = []
        pending: list[tuple[float, str, str]] = []
        failures = 0
        for i in range(400):
            if i == 100:
                filler.fill()
            if i == 300:
                filler.release()
            batch = pending + [(t0 + i * 0.5 + j / 100, f"putuo/cam/taopu/d{j}/hb", f"{i:04d}{j}" * 8) for j in range(10)]
            try:
                writer.append(batch)
                written += batch
                pending = []
            except ArchiveWriteError as exc:
                failures += 1
                written += batch[:exc.written]
                pending = batch[exc.written:]
        writer.finish()
        reader = ArchiveReader(archive_files(directory / "archive"))
        assert failures > 50 and list(reader) == written and len(written) == 4000
        assert reader.truncated == [] and len(archive_files(directory / "archive")) == 2


def test_an_email_sent_while_the_ledger_is_locked_is_not_sent_again(tmp_path):
    """Test that the mailer, when the server accepted an email but the ledger is locked by another process and
    cannot record it, sends nothing more (that email least of all) until it could record it, then goes on."""
    from ptmon.alerting.mailer import Mailer

    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.record_alerts({}, [{"event_key": f"k{i}", "kind": "breach", "event": "firing", "contract": "cam",
                                   "street": "taopu", "kpi": "online", "at": 0, "subject": f"test {i}",
                                   "recipients": ["ops@example.org"],
                                   "message": f"Subject: test {i}\r\n\r\nbody\r\n".encode()} for i in range(2)])
    with SmtpServer() as smtp:
        mailer = Mailer(str(path), EmailConfig(host="127.0.0.1", port=smtp.port, security="none",
                                               sender="ptmon@example.org", timeout=5.0), clock=lambda: 2e9)
        with Ledger(path) as ledger:
            ledger.db.execute("PRAGMA busy_timeout = 100")
            with ledger_locked(path, 3.0):
                time.sleep(0.5)  # the other process holds BEGIN EXCLUSIVE now
                assert mailer.send_due(ledger) == 2
                for _ in range(3):
                    assert mailer.send_due(ledger) == 0
            assert len(smtp.inbox.messages) == 2
            assert mailer.send_due(ledger) == 0  # recorded now: nothing is due
            assert {a.status for a in ledger.alerts()} == {"sent"}
        assert len(smtp.inbox.messages) == 2


def test_storage_out_of_reach_is_not_storage_gone(tmp_path):
    """Test that a data directory whose permissions are taken away while the collector runs counts
    as a storage fault to wait on, not as storage gone (which stops the collector): the presence
    checks, run as a process the permissions hold for, see it there; a deleted one is gone."""
    from . import readonly

    readonly.require("permissions")
    data = tmp_path / "data"
    (data / "archive").mkdir(parents=True)
    (data / "ledger.sqlite").write_bytes(b"")
    check = (
        "import os, sys; from pathlib import Path\n"
        "from ptmon.config import CollectorConfig\n"
        "from ptmon.durable import directory_gone\n"
        "from ptmon.errors import StorageGone\n"
        "from ptmon.faults import check_storage_present\n"
        "data = Path(sys.argv[1])\n"
        "config = CollectorConfig(registry='r.csv', data_dir=str(data))\n"
        "try:\n"
        "    check_storage_present(config, int(sys.argv[2]))\n"
        "    print('present', directory_gone(data / 'archive'))\n"
        "except StorageGone as exc:\n"
        "    print('gone', exc)\n"
    )
    inode = str((data / "ledger.sqlite").stat().st_ino)

    def run() -> str:
        done = subprocess.run(readonly.unprivileged([sys.executable, "-c", check, str(data), inode]),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run() == "present False"
    data.chmod(0)
    try:
        assert run() == "present False"
    finally:
        data.chmod(0o755)
    shutil.rmtree(data / "archive")
    assert run().startswith(f"gone the archive directory {data / 'archive'} is gone")
