"""A frozen collector (SIGSTOP, a paused container or VM, a suspended host) is a monitoring gap."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ptmon.registry import load_registry
from ptmon.replay import replay
from ptmon.rules import load_rules
from ptmon.sinks.archive import archive_files
from ptmon.timebase import month_bounds

from .brokers import MosquittoServer
from .test_collect_restarts import CAMERAS, Publisher, wait_until, write_camera_registry

SPEED = 60.0  # a simulated minute per wall second: a camera heartbeat each second
START = "2026-11-10T08:00"


def test_a_frozen_collector_counts_the_freeze_as_a_gap_not_devices_offline(tmp_path: Path) -> None:
    """Test that a collector stopped with SIGSTOP for six simulated minutes (cameras kept publishing) shows the freeze
    as a monitoring gap, every observed sample online, and the same KPIs in its CSV and a replay of its archive."""
    registry_file = write_camera_registry(tmp_path)
    broker = MosquittoServer(tmp_path)
    broker.start()
    config = tmp_path / "ptmon.toml"
    config.write_text(f'registry = "{registry_file}"\ndata_dir = "{tmp_path / "data"}"\ncheckpoint_interval = 1\n'
                      f'stall_gap = 2\nmetrics_listen = ""\n[mqtt]\nurl = "mqtt://127.0.0.1:{broker.port}"\n'
                      'client_id = "stall-test"\nqos = 1\n')
    anchor = time.time() + 3
    log, kpis = tmp_path / "collector.log", tmp_path / "kpis.csv"
    with log.open("wb") as out:
        collector = subprocess.Popen(
            [sys.executable, "-m", "ptmon.cli", "-v", "collect", "--config", str(config), "--kpi-csv", str(kpis),
             "--sim-start", START, "--sim-anchor", str(anchor), "--sim-speed", str(SPEED)], stdout=out, stderr=subprocess.STDOUT)
    publisher = Publisher(broker.port)
    stop = threading.Event()

    def publish() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            for device in CAMERAS:
                publisher.heartbeat(device, seq)
            stop.wait(1.0)

    sender = threading.Thread(target=publish)
    try:
        wait_until(lambda: "subscribed to" in log.read_text(), timeout=120, what="collector subscribed")
        sender.start()
        time.sleep(max(0.0, anchor - time.time()) + 8)
        collector.send_signal(signal.SIGSTOP)
        time.sleep(6)
        collector.send_signal(signal.SIGCONT)
        time.sleep(8)
        stop.set()
        sender.join(30)
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(120) == 0, log.read_text()[-3000:]
    finally:
        stop.set()
        publisher.close()
        if collector.poll() is None:
            collector.kill()
        broker.stop()
    assert "did not run for" in log.read_text()
    rows = {(r[0], r[1], r[2]): r for r in (line.split(",") for line in kpis.read_text().splitlines()[1:])}
    online = rows["cam", "taopu", "online"]
    assert int(online[8]) == int(online[9]) > 0, online  # every observed sample: all cameras online
    registry = load_registry(registry_file, load_rules())
    month = month_bounds("2026-11")
    replayed = replay([str(p) for p in archive_files(tmp_path / "data" / "archive")], registry, *month)
    assert replayed.csv_text() == kpis.read_text()
    inner = replayed.gaps[1:-1]  # the month before the run and after it aside
    assert len(inner) == 1 and inner[0][1] - inner[0][0] >= 5 * 60_000_000, replayed.gaps
