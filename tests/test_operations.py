"""An operator's month, compressed: one truth for the money whatever happens to the collector.

A real Mosquitto, `ptmon simulate` publishing a small two-street district at QoS 1 for the
whole of November (a simulated day every five seconds), and `ptmon collect` on the same
simulated clock, which the test meanwhile stops cleanly twice, kills twice, restarts once
with its checkpoint deleted, and under which it records an exemption whose window had
already begun and another that it then revokes. Devices keep publishing while the collector
is down; the broker queues their heartbeats on its persistent session.

At the end the ledger's report, the report recomputed from the archive and `ptmon replay`
give the same KPI and money columns, `ptmon ledger verify` finds nothing, and the observed
time is exactly the time the collector was up.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptmon.archive import MONITOR_TOPIC, ArchiveReader
from ptmon.decode import LIMITS_TOPIC
from ptmon.sinks.archive import archive_files
from ptmon.timebase import US_PER_S, UTC_OFFSET_US, month_bounds, parse_instant

from .brokers import MosquittoServer
from .conftest import HEADER

pytestmark = pytest.mark.slow

MONTH = "2026-11"
START = "2026-11-01T00:00"
DAY_WALL = 5.0  # wall seconds per simulated day
SPEED = 86_400 / DAY_WALL
STREETS = ("changzheng", "taopu")
PTMON = [sys.executable, "-m", "ptmon.cli"]


def write_registry(path: Path) -> Path:
    lines = [HEADER]
    for street in STREETS:
        for i in range(4):
            lines.append(f"{street}-cam{i},cam,face_cam,{street},scn,{street}-c1,gw-{street}-cam-{i % 2},2026-01-01,")
            lines.append(f"{street}-lift{i},iot,elevator,{street},scn,{street}-c1,gw-{street}-iot-{i % 2},2026-01-01,")
    path.write_text("\n".join(lines) + "\n")
    return path


class Operator:
    """Starts, stops and kills the collector; records exemptions; runs the commands."""

    def __init__(self, tmp_path: Path, port: int, anchor: float) -> None:
        self.tmp = tmp_path
        self.registry = write_registry(tmp_path / "registry.csv")
        self.data = tmp_path / "data"
        self.config = tmp_path / "ptmon.toml"
        self.config.write_text(
            f'registry = "{self.registry}"\ndata_dir = "{self.data}"\ncheckpoint_interval = 1\nmetrics_listen = ""\n'
            f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\nclient_id = "ops-collector"\nqos = 1\n')
        self.anchor = anchor
        self.log = tmp_path / "collector.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def sim_now(self) -> float:
        return parse_instant(START) / US_PER_S + (time.time() - self.anchor) * SPEED

    def start(self) -> None:
        marker = self.log.read_text().count("subscribed to") if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*PTMON, "-v", "collect", "--config", str(self.config), "--kpi-csv", str(self.tmp / "kpis.csv"),
                 "--sim-start", START, "--sim-anchor", str(self.anchor), "--sim-speed", str(SPEED)],
                stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + 300
        while self.log.read_text().count("subscribed to") <= marker:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "collector did not subscribe"
            time.sleep(0.05)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(300) == 0, self.log.read_text()[-3000:]

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PTMON, *args], capture_output=True, text=True, timeout=600)

    def day(self, d: float) -> str:
        """Simulated instant d days into the month, as the CLI takes it."""
        return str(parse_instant(START) / US_PER_S + d * 86_400)


def wait_for_day(op: Operator, d: float) -> None:
    while op.sim_now() < parse_instant(START) / US_PER_S + d * 86_400:
        time.sleep(0.02)


def observed_samples(files: list[Path], start: int, end: int, interval: int) -> int:
    """Sample instants of [start, end) inside the times the collector was up, from its own up/down records:
    a clean stop ends at its 'down', a crash at the last message or clock tick before the next 'up' (the limits
    record a starting collector writes before it connects is no sign that it observed anything)."""
    spans, opened, last = [], None, None
    for t, topic, payload in ArchiveReader(files):
        if topic == LIMITS_TOPIC:
            continue
        us = round(t * US_PER_S)
        if topic == MONITOR_TOPIC and payload == "up":
            if opened is not None:
                spans.append((opened, last))
            opened = us
        elif topic == MONITOR_TOPIC and payload == "down":
            spans.append((opened, us))
            opened = None
        last = us
    if opened is not None:
        spans.append((opened, last))
    grid = set()
    for a, b in spans:
        first = a + (-(a + UTC_OFFSET_US)) % interval
        grid.update(range(max(first, start), min(b, end - 1) + 1, interval))
    return len(grid)


def kpi_columns(path: Path, n: int) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [row[:n] for row in csv.reader(f)]


def test_an_operators_month_gives_one_truth(tmp_path: Path) -> None:
    """Test that through clean restarts, SIGKILLs, a deleted checkpoint and late and revoked exemptions, the ledger
    report, the report from the archive and a replay agree to the fen, verify passes, and only up-time is observed."""
    broker = MosquittoServer(tmp_path)
    broker.start()
    op = Operator(tmp_path, broker.port, anchor=time.time() + 8)
    simulator = None
    try:
        op.start()
        with (tmp_path / "simulator.log").open("wb") as out:
            simulator = subprocess.Popen(
                [*PTMON, "simulate", "--registry", str(op.registry), "--broker", f"mqtt://127.0.0.1:{broker.port}",
                 "--speed", str(SPEED), "--start", START, "--anchor", str(op.anchor), "--duration", "30d",
                 "--qos", "1", "--seed", "7"], stdout=out, stderr=subprocess.STDOUT)
        wait_for_day(op, 3)
        op.stop()  # a clean restart for maintenance, devices publishing meanwhile
        time.sleep(2)
        op.start()
        wait_for_day(op, 7)
        op.kill()
        time.sleep(1)
        op.start()
        wait_for_day(op, 10)
        late = op.run("exempt", "--config", str(op.config), "add", "--street", "taopu", "--from", op.day(8.25),
                      "--to", op.day(11.5), "--reason", "道路施工断电", "--approver", "王主任")
        assert late.returncode == 0, late.stderr
        wait_for_day(op, 12)
        gateway = op.run("exempt", "--config", str(op.config), "add", "--gateway", "gw-changzheng-cam-0",
                         "--from", op.day(11.3), "--to", op.day(14), "--reason", "网关更换", "--approver", "李工")
        assert gateway.returncode == 0, gateway.stderr
        wait_for_day(op, 13)
        revoked = op.run("exempt", "--config", str(op.config), "revoke", "2", "--by", "王主任", "--reason", "未获批准")
        assert revoked.returncode == 0, revoked.stderr
        wait_for_day(op, 15)
        op.stop()
        time.sleep(3)
        op.start()
        wait_for_day(op, 18)
        op.kill()
        op.start()
        wait_for_day(op, 22)
        op.stop()
        (op.data / "checkpoint.npz").unlink()  # the operator's "fix" for a checkpoint they distrust
        op.start()
        assert simulator.wait(900) == 0, (tmp_path / "simulator.log").read_text()[-2000:]
        wait_for_day(op, 30.2)
        op.stop()
    finally:
        if op.proc is not None and op.proc.poll() is None:
            op.proc.kill()
        if simulator is not None and simulator.poll() is None:
            simulator.kill()
        broker.stop()

    text = op.log.read_text()
    assert "rebuilding the state and this month's ledger from the archive" in text
    out = tmp_path / "out"
    for source, extra in (("ledger", []), ("archive", ["--from-archive"])):
        made = op.run("report", "--month", MONTH, "--config", str(op.config), "--format", "csv",
                      "--out", str(out / source), *extra)
        assert made.returncode == 0, made.stderr
    from_ledger = next((out / "ledger").glob("*.csv"))
    from_archive = next((out / "archive").glob("*.csv"))
    assert from_ledger.read_text() == from_archive.read_text()  # KPI and money columns alike
    files = archive_files(op.data / "archive")
    replayed = op.run("replay", *map(str, files), "--month", MONTH, "--registry", str(op.registry),
                      "--ledger", str(op.data / "ledger.sqlite"), "--csv", str(tmp_path / "replay.csv"), "--quiet")
    assert replayed.returncode == 0, replayed.stderr
    assert kpi_columns(tmp_path / "replay.csv", 10) == kpi_columns(from_ledger, 10)
    verified = op.run("ledger", "verify", "--month", MONTH, "--config", str(op.config))
    assert verified.returncode == 0, verified.stdout + verified.stderr

    rows = {(r[0], r[1], r[2]): r for r in kpi_columns(from_ledger, 10)[1:]}
    start, end = month_bounds(MONTH)
    up_samples = observed_samples(files, start, end, 60 * US_PER_S)
    assert int(rows["cam", "district", "online"][7]) == up_samples * 60
    assert int(rows["iot", "district", "online"][7]) == up_samples * 60
    assert up_samples < (end - start) // (60 * US_PER_S)  # the downtimes are gaps
    assert op.starts == 6
