"""Alert emails across SIGKILL and SMTP outages: `ptmon collect` as a process, a real Mosquitto,
aiosmtpd stopped and started again. Every email arrives, and arrives once.

Real time, so the rules are scaled down: cameras report every second (timeout 3 s), the
contracts sample every second, and the alert durations are seconds.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ptmon.ledger.store import Ledger
from ptmon.rules import DEFAULT_RULES_DIR

from .brokers import MosquittoServer
from .conftest import HEADER
from .smtp import SmtpServer
from .test_alerts import event
from .test_collect_restarts import wait_until

TAOPU = [f"taopu-cam{i}" for i in range(4)]
WANLI = [f"wanli-cam{i}" for i in range(4)]
ALERTS = """
rules:
  - {contract: cam, kpi: online, window: 30s, for: 5s, resolve_for: 5s}
grouping: {group_wait: 1s, group_interval: 2s, repeat_interval: 1h}
pipeline: {for: 3s, min_messages: 5}
street_silent: {for: 4s, min_messages: 5}
gateway: {for: 5s}
month_risk: {enabled: false}
digest: {enabled: false}
recipients:
  district: [center@example.org]
  streets: {taopu: [taopu@example.org]}
"""


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    """Rules with one-second cameras and samples, a registry of two streets, the config."""
    rules = tmp_path / "rules"
    shutil.copytree(DEFAULT_RULES_DIR, rules, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    contracts = rules / "contracts.yaml"
    contracts.write_text(contracts.read_text(encoding="utf-8").replace("sample_interval: 60", "sample_interval: 1"),
                         encoding="utf-8")
    types = rules / "types.yaml"
    types.write_text(types.read_text(encoding="utf-8").replace(
        "heartbeat_period: 60s, online_timeout: 180s", "heartbeat_period: 1s, online_timeout: 3s"), encoding="utf-8")
    (rules / "alerts.yaml").write_text(ALERTS, encoding="utf-8")
    registry = tmp_path / "registry.csv"
    registry.write_text("\n".join([HEADER, *(f"{d},cam,face_cam,{d.split('-')[0]},scn,c1,gw-{d.split('-')[0]},2026-01-01,"
                                             for d in TAOPU + WANLI)]) + "\n")
    return tmp_path


def write_config(tmp_path: Path, broker: int, smtp: int) -> Path:
    path = tmp_path / "ptmon.toml"
    path.write_text(
        f'registry = "{tmp_path / "registry.csv"}"\nrules = "{tmp_path / "rules"}"\ndata_dir = "{tmp_path / "data"}"\n'
        'checkpoint_interval = 1\nmetrics_listen = ""\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{broker}"\nclient_id = "alert-kill-test"\nqos = 1\n'
        f'[email]\nhost = "127.0.0.1"\nport = {smtp}\nsecurity = "none"\nsender = "ptmon@example.org"\n'
        'poll_interval = 0.2\nretry_min = 1\nretry_max = 2\ntimeout = 5\n')
    return path


class Devices:
    """The eight cameras, each publishing a heartbeat every half second while it is on."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"cams-{time.monotonic_ns()}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.on = set(TAOPU + WANLI)
        self.seq = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seq += 1
            for device in sorted(self.on):
                street = device.split("-")[0]
                payload = {"seq": self.seq, "face_try": 10 * self.seq, "face_ok": 10 * self.seq}
                self.client.publish(f"putuo/cam/{street}/{device}/hb", json.dumps(payload), qos=1)
            self._stop.wait(0.5)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.client.loop_stop()
        self.client.disconnect()


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "ptmon.cli", "-v", "collect", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT)


def outbox(data: Path) -> list[tuple[str, str, int]]:
    """(event, status, attempts) of every queued email, read as another process would."""
    path = data / "ledger.sqlite"
    if not path.exists():
        return []
    with Ledger(path, readonly=True) as ledger:
        return [(a.event_key, a.status, a.attempts) for a in ledger.alerts()]


def test_no_alert_email_is_lost_or_sent_twice_across_sigkill_and_smtp_outages(setup):
    """Test that a street silence queued while the mail server is down survives a SIGKILL of the
    collector, is delivered once the server is back, and that its resolved email, queued during a
    second outage of the server, is delivered once too: four emails, each exactly once."""
    tmp_path = setup
    broker, smtp = MosquittoServer(tmp_path), SmtpServer()
    broker.start()
    config, log, data = write_config(tmp_path, broker.port, smtp.port), tmp_path / "collector.log", tmp_path / "data"
    devices = None
    collector = start(config, log)
    try:
        wait_until(lambda: "subscribed to" in log.read_text(), what="collector subscribed")
        devices = Devices(broker.port)
        time.sleep(8)  # the windows fill
        devices.on -= set(TAOPU)
        wait_until(lambda: sum(1 for _, status, attempts in outbox(data) if attempts >= 1) >= 2, timeout=30,
                   what="the firing emails queued and failing (no mail server)")
        assert all(status == "pending" for _, status, _ in outbox(data))
        collector.send_signal(signal.SIGKILL)
        collector.wait(10)

        smtp.start()
        collector = start(config, log)
        wait_until(lambda: len(smtp.inbox.messages) >= 2, timeout=30, what="the firing emails after the restart")
        time.sleep(3)  # still silent after the restart: no resolved email, no second firing one
        assert len(smtp.inbox.messages) == 2

        smtp.stop()
        devices.on |= set(TAOPU)
        wait_until(lambda: sum(1 for key, _, attempts in outbox(data) if key.startswith("resolved") and attempts >= 1)
                   >= 2, timeout=30, what="the resolved emails queued and failing")
        smtp.start()
        wait_until(lambda: len(smtp.inbox.messages) >= 4, timeout=30, what="the resolved emails")
        time.sleep(3)
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if devices is not None:
            devices.close()
        if collector.poll() is None:
            collector.kill()
        smtp.stop()
        broker.stop()
    emails = sorted((m["To"], event(m)["cause"], event(m)["notice"]) for m in smtp.inbox.messages)
    assert emails == [("center@example.org", "street_silent", "firing"), ("center@example.org", "street_silent", "resolved"),
                      ("taopu@example.org", "street_silent", "firing"), ("taopu@example.org", "street_silent", "resolved")]
    assert len({m["Message-ID"] for m in smtp.inbox.messages}) == 4
    rows = outbox(data)
    assert len(rows) == 4 and all(status == "sent" and attempts >= 2 for _, status, attempts in rows)
    assert "replayed" in log.read_text() or "restored" in log.read_text()
