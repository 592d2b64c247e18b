"""Restarts around the collector: the broker's, and the collector's own after SIGKILL."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ptmon.ledger.read import ledger_results
from ptmon.ledger.store import Ledger
from ptmon.live import month_of
from ptmon.registry import load_registry
from ptmon.replay import replay
from ptmon.rules import load_rules
from ptmon.sinks.archive import archive_files

from .brokers import MosquittoServer
from .conftest import HEADER, restored_collector
from .test_collect import current_minute, make_config, sim_clock

CAMERAS = [f"taopu-cam{i}" for i in range(4)]


def write_camera_registry(directory: Path) -> Path:
    lines = [HEADER] + [f"{d},cam,face_cam,taopu,scn,taopu-c1,gw-taopu-cam-0,2026-01-01," for d in CAMERAS]
    path = directory / "registry.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def registry_file(tmp_path):
    return write_camera_registry(tmp_path)


class Publisher:
    """A paho publisher at QoS 1 that reconnects by itself (paho's loop thread)."""

    def __init__(self, port: int, *, tries: int = 10, ok: int = 9) -> None:
        self.tries, self.ok = tries, ok  # camera counters grow by these per heartbeat
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}")
        self.client.reconnect_delay_set(0.1, 0.5)
        self.connected = threading.Event()
        self.client.on_connect = lambda *a: self.connected.set()
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def heartbeat(self, device: str, seq: int) -> None:
        """Camera counters grow by ``tries`` tries and ``ok`` successes per heartbeat (10 and 9)."""
        assert self.connected.wait(60), "publisher not connected"
        payload = {"seq": seq, "boot": "b1", "face_try": self.tries * seq, "face_ok": self.ok * seq,
                   "plate_try": 0, "plate_ok": 0}
        info = self.client.publish(f"putuo/cam/taopu/{device}/hb", json.dumps(payload), qos=1)
        info.wait_for_publish(60)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_until(predicate, timeout: float = 90.0, what: str = "condition") -> None:  # generous: a loaded machine  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


PROTOCOLS = pytest.mark.parametrize("protocol", ["3.1.1", "5"])


@PROTOCOLS
def test_broker_restart_keeps_engine_state(tmp_path, registry_file, protocol):
    """Test that after the broker is killed and restarted the collector reconnects, resubscribes and keeps its
    state: counter baselines survive (no delta lost or doubled) and the broker's downtime is a monitoring gap."""
    broker = MosquittoServer(tmp_path)
    broker.start()
    config = make_config(tmp_path, registry_file, broker.port)
    config = config.__class__(**{**config.__dict__, "mqtt": config.mqtt.__class__(
        **{**config.mqtt.__dict__, "reconnect_min": 0.2, "reconnect_max": 0.5, "protocol": protocol})})
    clock = sim_clock(current_minute() - 3600)
    collector = restored_collector(config, clock=clock)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(collector.run(stop),))
    thread.start()
    try:
        wait_until(lambda: collector.source.connected, what="first connect")
        publisher = Publisher(broker.port)
        for seq in (1, 2, 3):
            for device in CAMERAS:
                publisher.heartbeat(device, seq)
        wait_until(lambda: collector.engine.stats["heartbeats"] == 12, what="12 heartbeats")
        broker.stop()
        wait_until(lambda: not collector.source.connected, what="disconnect")
        time.sleep(1.5)  # three simulated minutes down
        broker.start()
        wait_until(lambda: collector.source.connected, what="reconnect")
        for seq in (4, 5):
            for device in CAMERAS:
                publisher.heartbeat(device, seq)
        wait_until(lambda: collector.engine.stats["heartbeats"] == 20, what="20 heartbeats")
        publisher.close()
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        broker.stop()
    assert collector.source.connects == 2
    results = collector.month_results()
    assert results is not None
    face = results.row("cam", "taopu", "face")
    assert (face.numerator, face.denominator) == (4 * 9 * 4, 4 * 10 * 4)  # seq 1 is the baseline of each camera
    assert any(b - a >= 120_000_000 for a, b in results.gaps if a > results.start), results.gaps


def write_config(tmp_path: Path, registry_file: Path, port: int, protocol: str = "3.1.1") -> Path:
    path = tmp_path / "ptmon.toml"
    path.write_text(
        f'registry = "{registry_file}"\ndata_dir = "{tmp_path / "data"}"\ncheckpoint_interval = 1\nmetrics_listen = ""\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\nclient_id = "collector-kill-test"\nqos = 1\nprotocol = "{protocol}"\n'
    )
    return path


def start_collector(config: Path, kpi_csv: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "ptmon.cli", "-v", "collect", "--config", str(config),
                                 "--kpi-csv", str(kpi_csv)], stdout=out, stderr=subprocess.STDOUT)


def archived_heartbeats(data: Path) -> int:
    """Distinct heartbeats (device, seq) in the archive. A message archived but not yet acknowledged
    when the collector is killed comes again after the restart: a duplicate, the same heartbeat."""
    from ptmon.archive import ArchiveReader

    return len({(r[1], json.loads(r[2])["seq"]) for r in ArchiveReader(archive_files(data / "archive"))
                if r[1].endswith("/hb")})


@PROTOCOLS
def test_sigkill_restart_continues_the_month_from_the_checkpoint(tmp_path, registry_file, protocol):
    """Test that a collector killed with SIGKILL and restarted continues its month-to-date KPIs (counts from before
    the kill, and those the broker queued while it was dead, each counted once), reports the crash, and that
    replaying its archives gives the same KPIs, as does its ledger (intact, no hour counted twice)."""
    broker = MosquittoServer(tmp_path)
    broker.start()
    config = write_config(tmp_path, registry_file, broker.port, protocol)
    kpi_csv, log = tmp_path / "kpis.csv", tmp_path / "collector.log"
    publisher = Publisher(broker.port)
    try:
        first = start_collector(config, kpi_csv, log)
        wait_until(lambda: "subscribed to" in log.read_text(), what="collector subscribed")
        for seq in (1, 2, 3):
            for device in CAMERAS:
                publisher.heartbeat(device, seq)
        wait_until(lambda: archived_heartbeats(tmp_path / "data") == 12, what="12 archived")
        archived_at = time.time()
        checkpoint = tmp_path / "data" / "checkpoint.npz"
        wait_until(lambda: checkpoint.exists() and checkpoint.stat().st_mtime > archived_at + 0.01,
                   what="a checkpoint after them")
        for device in CAMERAS:
            publisher.heartbeat(device, 4)  # after the checkpoint: only the archive has these
        wait_until(lambda: archived_heartbeats(tmp_path / "data") == 16, what="16 archived")
        first.send_signal(signal.SIGKILL)
        first.wait(60)
        for device in CAMERAS:
            publisher.heartbeat(device, 5)  # queued by the broker for the collector's session
        second = start_collector(config, kpi_csv, log)
        wait_until(lambda: archived_heartbeats(tmp_path / "data") == 20, what="queued ones after the restart")
        for device in CAMERAS:
            publisher.heartbeat(device, 6)
        wait_until(lambda: archived_heartbeats(tmp_path / "data") == 24, what="24 archived")
        second.send_signal(signal.SIGTERM)
        assert second.wait(90) == 0, log.read_text()[-3000:]
    finally:
        publisher.close()
        broker.stop()
    text = log.read_text()
    assert "replayed" in text and "without a clean shutdown" in text, text[-3000:]
    rows = {(r[0], r[1], r[2]): r for r in (line.split(",") for line in kpi_csv.read_text().splitlines()[1:])}
    face = rows["cam", "taopu", "face"]
    assert (int(face[8]), int(face[9])) == (4 * 9 * 5, 4 * 10 * 5)  # seq 2..6 of each camera, once each
    registry = load_registry(registry_file, load_rules())
    files = archive_files(tmp_path / "data" / "archive")
    assert len(files) == 2  # a new part after the restart
    month = month_of(int(time.time() * 1_000_000))
    replayed = replay([str(p) for p in files], registry, *month)
    assert replayed.csv_text() == kpi_csv.read_text()
    with Ledger(tmp_path / "data" / "ledger.sqlite", readonly=True) as ledger:
        assert ledger.integrity_check() == "ok"
        assert ledger_results(ledger, registry, *month).csv_text() == replayed.csv_text()  # no hour twice
