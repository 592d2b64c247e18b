"""Alert emails across SIGKILL and SMTP outages: `ptmon collect` as a process, a real Mosquitto,
aiosmtpd stopped and started again. Every email arrives, and arrives once.

Real time, so the rules are scaled down: cameras report every second (timeout 3 s), the
contracts sample every second, and the alert durations are seconds.

An email that must not come is checked on evidence, not after a sleep: the collector's ledger
holds the alert evaluator's watermark (the last engine instant evaluated) in the same transaction
as the emails that evaluation queued, so once the watermark is past the instant a wrong email
would have been owed by, the outbox holds every email there is to hold, however loaded the machine.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ptmon.alerting.book import WATERMARK
from ptmon.alerting.rules import load_alert_rules
from ptmon.engine import NEVER
from ptmon.ledger.store import Ledger
from ptmon.rules import DEFAULT_RULES_DIR, load_rules
from ptmon.simulators.loopback import free_port
from ptmon.timebase import US_PER_S

from .brokers import MosquittoServer
from .conftest import HEADER
from .smtp import SmtpServer
from .test_alerts import event
from .test_collect_restarts import wait_until

TAOPU = [f"taopu-cam{i}" for i in range(4)]
WANLI = [f"wanli-cam{i}" for i in range(4)]
SAMPLE_S = 1  # the contracts' sample interval here (see setup)
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
    contracts.write_text(contracts.read_text(encoding="utf-8").replace("sample_interval: 60", f"sample_interval: {SAMPLE_S}"),
                         encoding="utf-8")
    types = rules / "types.yaml"
    types.write_text(types.read_text(encoding="utf-8").replace(
        "heartbeat_period: 60s, online_timeout: 180s", "heartbeat_period: 1s, online_timeout: 3s"), encoding="utf-8")
    (rules / "alerts.yaml").write_text(ALERTS, encoding="utf-8")
    registry = tmp_path / "registry.csv"
    registry.write_text("\n".join([HEADER, *(f"{d},cam,face_cam,{d.split('-')[0]},scn,c1,gw-{d.split('-')[0]},2026-01-01,"
                                             for d in TAOPU + WANLI)]) + "\n")
    return tmp_path


def write_config(tmp_path: Path, broker: int, smtp: int, metrics: int) -> Path:
    path = tmp_path / "ptmon.toml"
    path.write_text(
        f'registry = "{tmp_path / "registry.csv"}"\nrules = "{tmp_path / "rules"}"\ndata_dir = "{tmp_path / "data"}"\n'
        f'checkpoint_interval = 1\nmetrics_listen = "127.0.0.1:{metrics}"\n'
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


def evaluated(data: Path) -> int:
    """The last engine instant (µs) the collector's alerting has evaluated, as its ledger holds it
    (persisted at every checkpoint): every email owed by then is in the outbox, in the same transaction."""
    path = data / "ledger.sqlite"
    if not path.exists():
        return NEVER
    with Ledger(path, readonly=True) as ledger:
        return int(ledger.alert_states().get(WATERMARK, NEVER))


def evaluated_past(data: Path, instant: int) -> None:
    """Until the collector has evaluated past ``instant`` (engine µs): whatever it owed up to then is
    in the outbox read after this."""
    wait_until(lambda: evaluated(data) >= instant, timeout=90, what="the collector's alerting past the instant")


def queued_at(data: Path, notice: str) -> list[int]:
    """When (engine µs) the collector queued each email of ``notice`` (firing, resolved …)."""
    with Ledger(data / "ledger.sqlite", readonly=True) as ledger:
        return [a.at for a in ledger.alerts() if a.event == notice]


def reaction(rules_dir: Path) -> int:
    """How long (engine µs) after an instant the emails a change at that instant causes are queued at
    the latest, for an incident last emailed no later: a cause or breach holds its longest ``for`` (or
    ``resolve_for``) before it changes, its email waits ``group_wait`` after the change but comes no
    sooner than ``group_interval`` after the incident's previous one, on the next sample. (Device
    anomaly alerts, off here by their half-hour ``for``, are not among them.)"""
    rules = load_alert_rules(rules_dir / "alerts.yaml", load_rules(rules_dir))
    longest = max(rules.pipeline.for_, rules.street_silent.for_, rules.gateway_for,
                  *(max(r.for_, r.resolve_for) for r in rules.rules))
    g = rules.grouping
    return (max(longest + g.group_wait, g.group_interval) + SAMPLE_S) * US_PER_S


def online_cameras(port: int) -> dict[str, float]:
    """Online cameras per street at the collector's last sample, from its Prometheus endpoint."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}  # not listening yet
    return {s.labels["street"]: s.value for family in text_string_to_metric_families(text)
            if family.name == "ptmon_online_devices" for s in family.samples if s.labels.get("contract") == "cam"}


def test_no_alert_email_is_lost_or_sent_twice_across_sigkill_and_smtp_outages(setup):
    """Test that a street silence queued while the mail server is down survives a SIGKILL of the
    collector, is delivered once the server is back, and that its resolved email, queued during a
    second outage of the server, is delivered once too: four emails, each exactly once.

    What must not come (a resolved or second firing email after the restart, anything after the
    resolved emails) is checked once the collector has evaluated the time it would have been owed in."""
    tmp_path = setup
    broker, smtp, metrics = MosquittoServer(tmp_path), SmtpServer(), free_port()
    broker.start()
    config, log, data = write_config(tmp_path, broker.port, smtp.port, metrics), tmp_path / "collector.log", tmp_path / "data"
    late = reaction(tmp_path / "rules")
    devices = None
    collector = start(config, log)
    try:
        wait_until(lambda: "subscribed to" in log.read_text(), what="collector subscribed")
        devices = Devices(broker.port)
        every = {"taopu": len(TAOPU), "wanli": len(WANLI)}
        wait_until(lambda: every.items() <= online_cameras(metrics).items(), timeout=60,
                   what="every camera online as the collector samples them")
        devices.on -= set(TAOPU)
        wait_until(lambda: sum(1 for _, status, attempts in outbox(data) if attempts >= 1) >= 2, timeout=30,
                   what="the firing emails queued and failing (no mail server)")
        queued = outbox(data)
        assert all(status == "pending" for _, status, _ in queued)
        collector.send_signal(signal.SIGKILL)
        collector.wait(10)

        smtp.start()
        killed = evaluated(data)
        collector = start(config, log)
        wait_until(lambda: len(smtp.inbox.messages) >= 2, timeout=30, what="the firing emails after the restart")
        # Still silent after the restart: no resolved email, no second firing one, however late it would be
        # owed after the first instants the restarted collector evaluated.
        evaluated_past(data, killed + 1)
        evaluated_past(data, evaluated(data) + late)
        rows = outbox(data)
        assert [(key, status) for key, status, _ in rows] == [(key, "sent") for key, _, _ in queued], rows
        assert len(smtp.inbox.messages) == 2  # (one the mailer sends again is in the inbox by its round of the resolved ones)

        smtp.stop()
        devices.on |= set(TAOPU)
        wait_until(lambda: sum(1 for key, _, attempts in outbox(data) if key.startswith("resolved") and attempts >= 1)
                   >= 2, timeout=30, what="the resolved emails queued and failing")
        smtp.start()
        wait_until(lambda: len(smtp.inbox.messages) >= 4, timeout=30, what="the resolved emails")
        evaluated_past(data, max(queued_at(data, "resolved")) + late)  # nothing more owed after them: checked below
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
    rows = outbox(data)  # everything the collector queued until it stopped: nothing pending, nothing more
    assert len(rows) == 4 and all(status == "sent" and attempts >= 2 for _, status, attempts in rows), rows
    assert "replayed" in log.read_text() or "restored" in log.read_text()
