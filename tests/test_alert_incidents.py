"""Acceptance: the live collector, the district simulator over a real Mosquitto and a real SMTP
server (aiosmtpd), on one simulated clock. Each scenario counts the emails it must give:

(a) every device stops → one incident email to the district, within group wait, and one resolved;
(b) one street's outage → one email per recipient for the incident, and one resolved each;
(c) a gateway dies → one gateway email per recipient (and resolved), no street email;
(d) a restart after 20 minutes of monitoring → no month-at-risk email;
(e) the daily digest's figures are the ledger's.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from ptmon.archive import ArchiveReader
from ptmon.collect import Collector
from ptmon.config import AlertsConfig, CollectorConfig, EmailConfig, MqttConfig
from ptmon.ledger.read import ledger_results
from ptmon.ledger.store import Ledger
from ptmon.registry import Registry
from ptmon.simulators.link import BrokerAddress
from ptmon.simulators.live_demo import SimulatedClock
from ptmon.simulators.scenario import load_scenario
from ptmon.simulators.simulate import Options, Simulator
from ptmon.sinks.archive import archive_files
from ptmon.timebase import SHANGHAI, US_PER_S, month_bounds, parse_instant

from .brokers import MosquittoServer
from .conftest import HEADER, restored_collector
from .smtp import SmtpServer
from .test_alerts import event, send_all

SPEED = 120.0  # simulated seconds per wall second
MIN = 60
WAIT = 60.0  # wall seconds a scenario may wait for the emails it expects, past its last minute, on a loaded machine
MORE = 30  # simulated minutes the simulator runs past a scenario's last minute: devices heard while it waits
STREETS = ("changzheng", "taopu")
ALERTS = """
rules:
  - {contract: cam, kpi: online}
  - {contract: iot, kpi: online}
  - {contract: cam, kpi: capture, window: 1h}
grouping: {group_wait: 1m, group_interval: 5m, repeat_interval: 4h}
month_risk: {enabled: false}
digest: {enabled: false}
recipients:
  district: [center@example.org]
  streets: {taopu: [taopu@example.org]}
grafana_url: "http://grafana.example"
"""


def write_registry(path: Path) -> Path:
    """Two streets, each with 12 cameras (a heartbeat a minute) and 60 elevators (every 5 minutes),
    two camera and two iot gateways per street: dense enough that a street's last heartbeat before
    an outage is seconds before it, as in the real district."""
    lines = [HEADER]
    for s in STREETS:
        lines += [f"{s}-cam{i},cam,face_cam,{s},scn,{s}-c{i % 3},gw-{s}-cam-{i % 2},2026-01-01," for i in range(12)]
        lines += [f"{s}-lift{i},iot,elevator,{s},scn,{s}-c{i % 3},gw-{s}-iot-{i % 2},2026-01-01," for i in range(60)]
    path.write_text("\n".join(lines) + "\n")
    return path


class Run:
    """A broker, an SMTP server, the collector and the simulator on one simulated clock."""

    def __init__(self, tmp_path: Path, alerts: str, start: str, scenario: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.registry_file = write_registry(tmp_path / "registry.csv")
        (tmp_path / "alerts.yaml").write_text(alerts)
        self.scenario = None
        if scenario is not None:
            self.scenario = tmp_path / "scenario.yaml"
            self.scenario.write_text(scenario)
        self.start_us = parse_instant(start)
        self.clock = SimulatedClock(self.start_us / US_PER_S, time.time() + 1.5, SPEED)
        self.broker = MosquittoServer(tmp_path)
        self.smtp = SmtpServer()

    def config(self) -> CollectorConfig:
        return CollectorConfig(
            registry=self.registry_file, data_dir=self.tmp_path / "data", checkpoint_interval=2.0, metrics_listen="",
            mqtt=MqttConfig(port=self.broker.port, client_id="alert-collector", qos=1),
            alerts=AlertsConfig(rules_file=self.tmp_path / "alerts.yaml"),
            email=EmailConfig(host="127.0.0.1", port=self.smtp.port, security="none", sender="ptmon@example.org",
                              poll_interval=0.2, retry_min=1.0, retry_max=2.0, timeout=5.0))

    def sim_minutes(self, at_us: int) -> float:
        return (at_us - self.start_us) / US_PER_S / 60

    def simulator(self, registry: Registry, minutes: float) -> Simulator:
        end = self.start_us + int(minutes * 60) * US_PER_S
        plan = load_scenario(self.scenario, registry, self.start_us, end, 7)
        options = Options(broker=BrokerAddress.parse(f"mqtt://127.0.0.1:{self.broker.port}"), start_us=self.start_us,
                          duration_us=end - self.start_us, speed=SPEED, qos=1, anchor_wall=self.clock.anchor,
                          client_prefix=f"sim-{time.monotonic_ns()}")
        return Simulator(registry, plan, options)

    async def collect(self, until_minute: float, until: Callable[[Collector], bool] | None = None) -> Collector:
        """Run a collector until the simulated clock reaches ``until_minute`` and ``until`` holds (the
        emails the scenario expects are in: on a loaded machine they may come later on this clock,
        which runs on regardless); returns it stopped."""
        collector = restored_collector(self.config(), clock=self.clock)
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop))
        await self.wait(task, until_minute, (lambda: until(collector)) if until else None, "the scenario's emails")
        stop.set()
        await task
        return collector

    async def wait(self, task: asyncio.Task[None], minute: float, condition: Callable[[], bool] | None,
                   what: str) -> None:
        """Until the simulated clock reaches ``minute`` and ``condition`` holds (or the collector's task
        ended); fails after ``WAIT`` wall seconds more than the minute needs."""
        deadline = time.monotonic() + (minute * MIN - (self.clock() - self.start_us / US_PER_S)) / SPEED + WAIT
        while not task.done() and not (self.clock() >= self.start_us / US_PER_S + minute * MIN
                                       and (condition is None or condition())):
            minute_now = self.sim_minutes(int(self.clock() * US_PER_S))
            assert time.monotonic() < deadline, f"timed out waiting for {what} (at minute {minute_now:.0f})"
            await asyncio.sleep(0.05)

    def inbox_count(self, notice: str) -> int:
        return sum(1 for m in self.smtp.inbox.messages if event(m)["notice"] == notice)

    def __enter__(self) -> Run:
        self.broker.start()
        self.smtp.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.smtp.stop()
        self.broker.stop()

    def flush_outbox(self) -> None:
        """What the collector queued last and had no time to send (its clock was about to stop)."""
        send_all(self.config(), clock=lambda: 4e9)

    def emails(self) -> list[tuple[str, str, str]]:
        return sorted((m["To"], event(m)["cause"], event(m)["notice"]) for m in self.smtp.inbox.messages)

    def received(self, topic: str, payload: str | None = None) -> list[float]:
        """When the collector received each message of ``topic`` (ending with it), as it archived them."""
        records = ArchiveReader(archive_files(self.config().archive_path))
        return sorted(t for t, name, text in records if name.endswith(topic) and payload in (None, text))


class District:
    """The district simulator on an event loop of its own, in a thread: its devices go on publishing
    while the collector's loop is busy, as real devices do. On the collector's loop they fell silent
    whenever it was (a checkpoint's fsync on a loaded machine), and a pause of 1.5 wall seconds is
    the 3 simulated minutes of pipeline.for here: a pipeline email for a silence of the test's own
    making. Ended early by its stop event; ``errors``: the simulator raised (a broken test)."""

    def __init__(self, run: Run, registry: Registry, minutes: float, *, errors: bool = True) -> None:
        self.run, self.registry, self.minutes, self.errors = run, registry, minutes, errors
        self.loop: asyncio.AbstractEventLoop | None = None
        self.simulator: Simulator | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="district", daemon=True)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            self.simulator = self.run.simulator(self.registry, self.minutes)
        finally:
            self.ready.set()
        try:
            await self.simulator.run()
        except Exception as exc:  # reported by __exit__, in the test's thread
            self.error = exc

    def __enter__(self) -> District:
        self.thread.start()
        assert self.ready.wait(60) and self.simulator is not None, "the simulator did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.simulator.stop.set)  # type: ignore[union-attr]
        self.thread.join(30)
        assert not self.thread.is_alive(), "the simulator did not stop"
        if self.errors and self.error is not None:
            raise self.error


def simulate(run: Run, registry_minutes: float, *phases: float, until: Callable[[Collector], bool] | None = None
             ) -> list[Collector]:
    """The simulator for ``registry_minutes`` (and ``MORE`` while the last collector waits for
    ``until``) and collectors one after the other until each phase's end; the last one also until
    ``until`` holds."""
    async def main() -> list[Collector]:
        collectors = []
        for i, end in enumerate(phases):
            collectors.append(await run.collect(end, until if i == len(phases) - 1 else None))
        return collectors

    from ptmon.registry import load_registry
    from ptmon.rules import load_rules

    registry = load_registry(run.registry_file, load_rules())
    with District(run, registry, registry_minutes + (MORE if until else 0)):
        return asyncio.run(main())


def stamp(body: str, label: str) -> int:
    text = re.search(label + r"：(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", body).group(1)
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI).timestamp())


def outage(streets: tuple[str, ...], start: str, end: str) -> str:
    return "events:\n" + "".join(f"  - street_outage: {{street: {s}, from: {start}, to: {end}}}\n" for s in streets)


def test_a_every_device_stopping_is_one_district_email_and_one_resolved(tmp_path):
    """Test (a): every device of the district silent from minute 10 to 30 gives the district
    recipients one pipeline email within group wait of the alert and one resolved email; nobody
    gets a street, gateway or breach email."""
    with Run(tmp_path, ALERTS, "2026-11-02T09:00", outage(STREETS, "10m", "30m")) as run:
        simulate(run, 45, 42, until=lambda _: run.inbox_count("resolved") >= 1)
        run.flush_outbox()
    assert run.emails() == [("center@example.org", "pipeline", "firing"), ("center@example.org", "pipeline", "resolved")]
    firing = next(m for m in run.smtp.inbox.messages if event(m)["notice"] == "firing")
    body = firing.get_body().get_content()
    first_seen, at = stamp(body, r"首次发现 \(first seen\)"), stamp(body, r"发送时间 \(at\)")
    # pipeline.for (3 min) after the last heartbeat, at the next sample instant, then group_wait (1 min).
    assert 3 * MIN < at - first_seen <= 3 * MIN + 60 + 60
    # The last heartbeat the collector received before the outage's silence (received some simulated
    # seconds after it was sent: wall latency × SPEED, however long that is on a loaded machine).
    heard = run.received("/hb")
    silence = max(range(1, len(heard)), key=lambda i: heard[i] - heard[i - 1])
    assert first_seen == int(heard[silence - 1])
    assert 10 * MIN - 70 <= first_seen - run.start_us // US_PER_S < 30 * MIN


def test_b_one_streets_outage_is_one_email_per_recipient_and_one_resolved(tmp_path):
    """Test (b): taopu's power cut (both contracts) from minute 10 to 35 is one incident: one email
    to taopu's contact and one to the district, each with both contracts, then one resolved each."""
    with Run(tmp_path, ALERTS, "2026-11-02T09:00", outage(("taopu",), "10m", "35m")) as run:
        simulate(run, 55, 52, until=lambda _: run.inbox_count("resolved") >= 2)
        run.flush_outbox()
    assert run.emails() == [("center@example.org", "street_silent", "firing"),
                            ("center@example.org", "street_silent", "resolved"),
                            ("taopu@example.org", "street_silent", "firing"),
                            ("taopu@example.org", "street_silent", "resolved")]
    firing = next(m for m in run.smtp.inbox.messages if m["To"] == "taopu@example.org" and event(m)["notice"] == "firing")
    assert firing["Subject"].startswith("【整街失联】桃浦镇 ")
    body = firing.get_body().get_content()
    assert "■ 桃浦镇 物联感知 整街无心跳" in body and "■ 桃浦镇 智能安防 整街无心跳" in body


def test_c_a_dead_gateway_is_one_gateway_email_and_no_street_email(tmp_path):
    """Test (c): a camera gateway of taopu losing power (its Last Will) from minute 8 to 30 gives one
    gateway email per recipient and a resolved one; its six silent cameras raise no breach email."""
    scenario = "events:\n  - gateway_death: {gateway: gw-taopu-cam-0, at: 8m, revive: 30m}\n"
    with Run(tmp_path, ALERTS, "2026-11-02T09:00", scenario) as run:
        simulate(run, 48, 45, until=lambda _: run.inbox_count("resolved") >= 2)
        run.flush_outbox()
    assert run.emails() == [("center@example.org", "gateway", "firing"), ("center@example.org", "gateway", "resolved"),
                            ("taopu@example.org", "gateway", "firing"), ("taopu@example.org", "gateway", "resolved")]
    firing = next(m for m in run.smtp.inbox.messages if event(m)["notice"] == "firing")
    assert firing["Subject"] == "【网关离线】桃浦镇 网关 gw-taopu-cam-0：6 台设备受影响"


def test_c_a_dead_gateway_holds_its_incident_across_a_restart(tmp_path):
    """Test (c) with the collector stopped at minute 20 and started again: the retained Last Will the
    broker redelivers on subscribing is no new death, so the incident neither resolves nor fires
    again; its one resolved email tells the whole outage (minute 8 to 40), not the time since the
    restart."""
    scenario = "events:\n  - gateway_death: {gateway: gw-taopu-cam-0, at: 8m, revive: 40m}\n"
    with Run(tmp_path, ALERTS, "2026-11-02T09:00", scenario) as run:
        _first, _second = simulate(run, 58, 20, 55, until=lambda _: run.inbox_count("resolved") >= 2)
        run.flush_outbox()
    assert run.emails() == [("center@example.org", "gateway", "firing"), ("center@example.org", "gateway", "resolved"),
                            ("taopu@example.org", "gateway", "firing"), ("taopu@example.org", "gateway", "resolved")]
    resolved = next(m for m in run.smtp.inbox.messages if event(m)["notice"] == "resolved")
    body = resolved.get_body().get_content()
    first_seen = stamp(body, r"首次发现 \(first seen\)")
    death, *redelivered = run.received("/gw-taopu-cam-0/status", "offline")
    assert redelivered and first_seen == int(death)  # the death, not the Will's redelivery after the restart
    assert 8 * MIN - 70 <= first_seen - run.start_us // US_PER_S < 20 * MIN


def test_a_broker_outage_is_one_monitoring_gap_incident_told_while_it_lasts(tmp_path):
    """Test that the MQTT broker down for 20 minutes (minute 15 to 35) is one monitoring-gap email
    to the district, sent while the broker is still down (monitor_gap.for 5m + group_wait; the
    collector's loop turns every wall second, 2 simulated minutes here), and one resolved email after
    the collector has watched 5 minutes again; nothing else (no silence, no loss, no breach) for the
    time it could not see.

    The scenario waits on what it asserts, not on this clock alone, which runs on however loaded the
    machine is: the broker stays down past minute 35 until the firing email is in (it must come
    before the broker is back), and the collector watches past minute 55 until the resolved email is
    in. The collector reconnects with its production backoff, in wall seconds (0.5 doubling to 30,
    jittered): after a 10 wall-second outage its next attempt may come up to 16 wall seconds, half
    an hour of this clock, after the broker is back; then it must watch 5 minutes more."""
    async def main() -> float:
        collector = restored_collector(run.config(), clock=run.clock)
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop))
        await run.wait(task, 15, None, "minute 15")
        await asyncio.to_thread(run.broker.stop)  # off the loop: the collector turns meanwhile
        await run.wait(task, 35, lambda: run.inbox_count("firing") >= 1, "the firing email during the outage")
        back = run.clock()
        await asyncio.to_thread(run.broker.start)
        await run.wait(task, 55, lambda: run.inbox_count("resolved") >= 1, "the resolved email")
        stop.set()
        await task
        return back - run.start_us / US_PER_S

    from ptmon.registry import load_registry
    from ptmon.rules import load_rules

    with Run(tmp_path, ALERTS, "2026-11-02T09:00", None) as run:
        registry = load_registry(run.registry_file, load_rules())
        with District(run, registry, 58 + MORE * 2, errors=False):  # heard until the last wait ends
            back = asyncio.run(main())
        run.flush_outbox()
    assert run.emails() == [("center@example.org", "monitor_gap", "firing"), ("center@example.org", "monitor_gap", "resolved")]
    firing = next(m for m in run.smtp.inbox.messages if event(m)["notice"] == "firing")
    at = stamp(firing.get_body().get_content(), r"发送时间 \(at\)") - run.start_us // US_PER_S
    assert 21 * MIN <= at < back  # told during the outage
    assert firing["Subject"].startswith("【监测中断】采集器监测中断已 ")
    resolved = next(m for m in run.smtp.inbox.messages if event(m)["notice"] == "resolved")
    assert stamp(resolved.get_body().get_content(), r"发送时间 \(at\)") - run.start_us // US_PER_S >= back + 5 * MIN


RISK = ALERTS.replace("month_risk: {enabled: false}", "month_risk: {enabled: true, every: 1h, min_observed: 0, min_elapsed: 0}")


def test_d_a_restart_after_20_minutes_sends_no_month_at_risk_email(tmp_path):
    """Test (d): two days into the month, 20 minutes of monitoring, a restart, and 40 minutes more,
    with month at risk evaluated at 10:00 on whatever has been observed (no minimum): it is
    evaluated, and no month-at-risk email (nor any other) is sent."""
    with Run(tmp_path, RISK, "2026-11-03T09:05", None) as run:
        first, second = simulate(run, 65, 20, 62, until=lambda c: c.alerts is not None and bool(c.alerts.risks))
        run.flush_outbox()
    assert run.emails() == []
    assert first.alerts is not None and not first.alerts.risks  # 09:05–09:25: no whole hour
    risks = second.alerts.risks
    assert risks and {r.as_of for r in risks.values()} == {parse_instant("2026-11-03T10:00")}
    assert all(r.level == 0 for r in risks.values()) and all(r.best > r.threshold for r in risks.values())


DIGEST = ALERTS.replace("digest: {enabled: false}", 'digest: {enabled: true, at: "00:05"}')


def test_e_the_digest_gives_the_ledgers_figures(tmp_path):
    """Test (e): the digest sent at 00:05 reports yesterday and the month so far exactly as the ledger
    has them (its CSV rows against ledger_results)."""
    scenario = "events:\n  - success_drop: {contract: cam, street: taopu, factor: 0.9}\n"
    with Run(tmp_path, DIGEST, "2026-11-02T23:35", scenario) as run:
        (collector,) = simulate(run, 45, 42, until=lambda _: run.inbox_count("digest") >= 1)
        run.flush_outbox()
        with Ledger(run.config().ledger_path, readonly=True) as ledger:
            day = parse_instant("2026-11-02")
            yesterday = ledger_results(ledger, collector.registry, day, day + 86_400 * US_PER_S)
            month = ledger_results(ledger, collector.registry, month_bounds("2026-11")[0], day + 86_400 * US_PER_S)
    digests = [m for m in run.smtp.inbox.messages if event(m)["notice"] == "digest"]
    assert [m["To"] for m in digests] == ["center@example.org"]  # not the street contacts (off by default)
    (attachment,) = list(digests[0].iter_attachments())
    rows = list(csv.reader(io.StringIO(attachment.get_content().lstrip("\ufeff"))))[1:]
    expected = [[period, r.contract, r.street, r.kpi, str(r.numerator), str(r.denominator), r.value_text()]
                for period, results in (("yesterday", yesterday), ("month", month)) for r in results.rows]
    assert [row[:7] for row in rows] == expected
    assert yesterday.row("cam", "district", "online").denominator > 0
    body = digests[0].get_body().get_content()
    capture = yesterday.row("cam", "taopu", "capture")
    assert f"桃浦镇 | 人脸车卡抓拍成功率 | {capture.percent_text(2)}%" in body


@pytest.fixture(autouse=True)
def _timeout_guard():
    began = time.monotonic()
    yield
    assert time.monotonic() - began < 240, "a scenario took far longer than its simulated time"
