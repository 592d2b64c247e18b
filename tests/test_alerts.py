"""Alert emails through a real SMTP server (aiosmtpd), the collector fed records as its main loop
feeds them: one incident per cause and recipient, causes holding back what they explain, a
resolved email, nothing sent twice across a restart, nothing lost while the mail server is
down, and earlier versions' alert state adopted."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import re
from pathlib import Path

import pytest

from ptmon.alerting.mailer import Mailer
from ptmon.collect import Collector
from ptmon.config import AlertsConfig, CollectorConfig, EmailConfig, MqttConfig
from ptmon.ledger.read import ledger_results
from ptmon.ledger.store import Ledger
from ptmon.replay import replay
from ptmon.sinks.archive import archive_files
from ptmon.timebase import US_PER_S, month_bounds

from .conftest import T0, TWO_STREETS, restored_collector, write_two_street_registry
from .smtp import SmtpServer

MIN = 60
ALERTS_YAML = """
defaults: {window: 30m, for: 10m, hysteresis: 0.005, resolve_for: 10m}
rules:
  - {contract: cam, kpi: online}
  - {contract: iot, kpi: online}
  - {contract: cam, kpi: capture, window: 1h}
grouping: {group_wait: 1m, group_interval: 5m, repeat_interval: 4h}
month_risk: {enabled: false}
digest: {enabled: false}
gateway: {for: 5m}
street_silent: {for: 10m}
monitor_gap: {for: 10m}
recipients:
  district: [center@example.org]
  streets: {taopu: [taopu@example.org]}
grafana_url: "http://grafana.example"
"""


@pytest.fixture
def setup(tmp_path):
    registry = write_two_street_registry(tmp_path / "registry.csv")
    rules_file = tmp_path / "alerts.yaml"
    rules_file.write_text(ALERTS_YAML)
    return registry, rules_file


def make_config(tmp_path: Path, setup, smtp_port: int = 1) -> CollectorConfig:
    registry, rules_file = setup
    return CollectorConfig(
        registry=registry, data_dir=tmp_path / "data", metrics_listen="",
        mqtt=MqttConfig(port=1), alerts=AlertsConfig(rules_file=rules_file),
        email=EmailConfig(host="127.0.0.1", port=smtp_port, security="none", sender="ptmon@example.org",
                          retry_min=1.0, retry_max=4.0, timeout=5.0),
    )


def minutes(first: int, last: int, silent=lambda street, i, m: False, counters: dict | None = None,
            failing=lambda street, i, m: False, lost=lambda street, i, m: False):
    """Heartbeat records, minute by minute: cameras every minute (10 captures, all good unless
    failing: then 4 of 10), elevators (i + 100) every 5 minutes. A silent device sends nothing
    (its seq stands still); a heartbeat lost in transit was sent (its seq and counters moved on)
    but never arrives."""
    counters = counters if counters is not None else {}

    def sent(device: str) -> int:
        seq = counters[device, "seq"] = counters.get((device, "seq"), 999) + 1
        return seq

    out = []
    for m in range(first, last):
        for street in TWO_STREETS:
            for i in range(12):
                t = T0 + m * MIN + i
                device = f"{street}-cam{i}"
                if not silent(street, i, m):
                    tries, ok = counters.get(device, (0, 0))
                    tries, ok = tries + 10, ok + (4 if failing(street, i, m) else 10)
                    counters[device] = (tries, ok)
                    payload = {"seq": sent(device), "face_try": tries, "face_ok": ok}
                    if not lost(street, i, m):
                        out.append((float(t), f"putuo/cam/{street}/{device}/hb", json.dumps(payload)))
                lift = f"{street}-lift{i}"
                if m % 5 == 0 and not silent(street, i + 100, m):
                    payload = {"seq": sent(lift)}
                    if not lost(street, i + 100, m):
                        out.append((float(t) + 20, f"putuo/iot/{street}/{lift}/hb", json.dumps(payload)))
    out.sort(key=lambda r: r[0])
    return out


def outage(street, i, m):
    """taopu's cameras all silent from minute 60 to 120; three of changzheng's too."""
    return 60 <= m < 120 and i < 100 and (street == "taopu" or i < 3)


def push(collector: Collector, records) -> None:
    """What the main loop does with records from the broker: archive, commit, apply, a few seconds'
    worth at a time (the engine applies a batch's gateway statuses after its heartbeats)."""
    collector.archive.append(records)
    collector.archive.commit()
    start = 0
    for end in range(1, len(records) + 1):
        if end == len(records) or records[end][0] - records[start][0] >= 5:
            collector.feed.feed(records[start:end])
            start = end


def send_all(config: CollectorConfig, clock=None) -> Mailer:
    mailer = Mailer(str(config.ledger_path), config.email, clock=clock or (lambda: 2e9))
    with Ledger(config.ledger_path) as ledger:
        mailer.send_due(ledger)
    return mailer


def event(message) -> dict[str, str]:
    """The parts of an email's event key: notice|cause|contract|recipient|opened|seq (digest|day|recipient|street)."""
    parts = message["X-Ptmon-Event"].strip().split("|")
    if parts[0] == "digest":
        return {"notice": "digest", "cause": "digest", "day": parts[1], "to": parts[2], "street": parts[3]}
    notice, cause, contract, recipient, opened, seq = parts
    return {"notice": notice, "cause": cause, "contract": contract, "to": recipient, "opened": opened, "seq": seq}


def summary(inbox) -> list[tuple[str, str]]:
    return sorted((m["To"], f"{event(m)['cause']}:{event(m)['notice']}") for m in inbox.messages)


EXPECTED = [
    ("center@example.org", "breach:firing"),  # changzheng has no list of its own: the district's
    ("center@example.org", "breach:resolved"),
    ("center@example.org", "street_silent:firing"),  # copied on every incident (district_always)
    ("center@example.org", "street_silent:resolved"),
    ("taopu@example.org", "street_silent:firing"),  # taopu's breach is its silence: not sent apart
    ("taopu@example.org", "street_silent:resolved"),
]


def test_an_outage_is_one_incident_per_cause_and_recipient(tmp_path, setup):
    """Test that a camera outage of a whole street and of three cameras elsewhere gives one silent-street
    incident and one breach incident, each with one firing and one resolved email per recipient, in
    Chinese, with what the window saw per device, times to the second and a Grafana link with a range."""
    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        collector = restored_collector(config)
        push(collector, minutes(0, 240, outage))
        send_all(config)
        collector.ledger.close()
        collector.lock.release()
    assert summary(smtp.inbox) == EXPECTED
    assert all(rcpts == [m["To"]] for (_, rcpts), m in zip(smtp.inbox.envelopes, smtp.inbox.messages))

    silent = next(m for m in smtp.inbox.messages if m["To"] == "taopu@example.org" and event(m)["notice"] == "firing")
    assert silent["Subject"] == "【整街失联】桃浦镇 智能安防：12 台设备全部无心跳"
    body = silent.get_body().get_content()
    assert silent.get_body().get_content_charset() == "utf-8"
    assert "首次发现 (first seen)：2026-11-01 00:59:11" in body  # the last heartbeat before the silence
    assert "事件 (incident)：整街失联 · 桃浦镇" in body and "本事件第 1 封邮件" in body
    assert "街镇 (street)：桃浦镇 (taopu)" in body
    assert re.search(r"taopu-cam0 .*小区 taopu-c1 .*网关 gw-taopu-cam-0 .*离线起 2026-11-01 01:02:00 .*最后心跳 "
                     r"2026-11-01 00:59:00", body), body
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", body)  # never microseconds
    start, end = (int(x) for x in re.search(r"var-street=taopu&from=(\d+)&to=(\d+)", body).groups())
    assert "http://grafana.example/d/ptmon-street?orgId=1&var-street=taopu&from=" in body
    assert start == (T0 + 59 * MIN + 11) * 1000 - 900_000 and end > start  # the incident's start, 15 min of context
    (attachment,) = list(silent.iter_attachments())
    rows = attachment.get_content().lstrip("\ufeff").strip().splitlines()
    assert rows[0].startswith("street,contract,device,type,community,gateway,last_heartbeat,offline_since")
    assert len(rows) == 13 and ",2026-11-01 00:59:00,2026-11-01 01:02:00,False," in rows[1]

    breach = next(m for m in smtp.inbox.messages if event(m)["cause"] == "breach" and event(m)["notice"] == "firing")
    assert breach["Subject"].startswith("【SLA告警】长征镇 监控点位在线率 ") and "（阈值 95.00%）" in breach["Subject"]
    text = breach.get_body().get_content()
    assert "离线设备 (offline devices)：3 台" in text and "changzheng-cam3" not in text.split("离线设备")[1]
    resolved = next(m for m in smtp.inbox.messages if event(m)["cause"] == "breach" and event(m)["notice"] == "resolved")
    assert resolved["Subject"] == "【SLA恢复】长征镇 监控点位在线率"
    assert "已全部恢复 (resolved)" in resolved.get_body().get_content()
    assert event(resolved)["opened"] == event(breach)["opened"] and event(resolved)["seq"] == "2"
    with Ledger(config.ledger_path) as ledger:
        sent = ledger.alerts()
    assert all(a.status == "sent" and a.attempts == 1 for a in sent) and len(sent) == 6


def test_a_success_breach_lists_what_each_device_did_in_the_window(tmp_path, setup):
    """Test that a capture breach lists per device the window's attempts and successes, not its
    counters since boot."""
    def failing(street, i, m):
        return street == "changzheng" and i < 4 and m >= 120

    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        collector = restored_collector(config)
        push(collector, minutes(0, 150, failing=failing))
        send_all(config)
        collector.ledger.close()
        collector.lock.release()
    assert summary(smtp.inbox) == [("center@example.org", "breach:firing")]
    (message,) = smtp.inbox.messages
    assert message["Subject"].startswith("【SLA告警】长征镇 人脸车卡抓拍成功率 ")
    body = message.get_body().get_content()
    # Below 95 % over the hour from 02:15, firing at 02:25, sent at 02:26: per device what it did
    # since the snapshot at 01:30 (taken every quarter of the window). Camera 1 reports at second 1:
    # 01:30:01 … 02:25:01, 56 heartbeats of 10 tries, 10 ok each before 02:00 and 4 ok after.
    assert "首次发现 (first seen)：2026-11-01 02:15:00" in body and "2026-11-01 01:30:00 起的窗口内" in body
    assert re.search(r"changzheng-cam1 .*尝试 560  成功 404  成功率 72\.14%", body), body
    assert re.search(r"changzheng-cam4 .*尝试 560  成功 560  成功率 100\.00%", body), body
    assert "4530" not in body and "1500" not in body  # no cumulative counters


def gateway_records(t: float, gateway: str, state: str):
    return [(t, f"putuo/gw/{gateway}/status", state)]


def test_a_dead_gateway_is_one_gateway_email_and_no_street_email(tmp_path, setup):
    """Test that a gateway's Last Will and its six cameras going silent send one gateway email (with
    the devices) and resolved, and no breach email for its street: the gateway explains it."""
    def behind(street, i, m):
        return street == "taopu" and i < 12 and i % 2 == 0 and 60 <= m < 120

    records = minutes(0, 180, behind)
    records += gateway_records(T0 + 60 * MIN + 30.0, "gw-taopu-cam-0", "offline")
    records += gateway_records(T0 + 120 * MIN + 5.0, "gw-taopu-cam-0", "online")
    records.sort(key=lambda r: r[0])
    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        collector = restored_collector(config)
        push(collector, records)
        send_all(config)
        collector.ledger.close()
        collector.lock.release()
    assert summary(smtp.inbox) == [("center@example.org", "gateway:firing"), ("center@example.org", "gateway:resolved"),
                                   ("taopu@example.org", "gateway:firing"), ("taopu@example.org", "gateway:resolved")]
    firing = next(m for m in smtp.inbox.messages if event(m)["notice"] == "firing")
    assert firing["Subject"] == "【网关离线】桃浦镇 网关 gw-taopu-cam-0：6 台设备受影响"
    assert "首次发现 (first seen)：2026-11-01 01:00:30" in firing.get_body().get_content()


@pytest.mark.parametrize("streets", [("changzheng",), ("taopu",)])
def test_a_partition_alerts_only_for_its_own_gateways(tmp_path, setup, streets):
    """Test that a partition collector receiving another partition's gateway's Last Will (every partition
    takes every gateway status) changes nothing and sends nothing; the gateway's own partition sends the
    gateway email with its street and devices."""
    import dataclasses

    def behind(street, i, m):
        return street == "taopu" and i < 12 and i % 2 == 0 and 60 <= m < 120

    records = [r for r in minutes(0, 180, behind) if r[1].split("/")[2] in streets]  # its streets' topics
    records += gateway_records(T0 + 60 * MIN + 30.0, "gw-taopu-cam-0", "offline")
    records += gateway_records(T0 + 120 * MIN + 5.0, "gw-taopu-cam-0", "online")
    records.sort(key=lambda r: r[0])
    with SmtpServer() as smtp:
        config = dataclasses.replace(make_config(tmp_path, setup, smtp.port), streets=streets)
        collector = restored_collector(config)
        push(collector, records)
        offline = [collector.registry.gateways[g] for g in (~collector.engine.gateway_online).nonzero()[0].tolist()]
        went = collector.engine.gateway_since[collector.registry.gateways.index("gw-taopu-cam-0")]
        send_all(config)
        collector.ledger.close()
        collector.lock.release()
    assert offline == []  # it came back online in both
    if streets == ("changzheng",):
        assert went < 0 and smtp.inbox.messages == []  # never taken: no state, no email
        return
    assert went == (T0 + 120 * MIN + 5) * US_PER_S
    assert summary(smtp.inbox) == [("center@example.org", "gateway:firing"), ("center@example.org", "gateway:resolved"),
                                   ("taopu@example.org", "gateway:firing"), ("taopu@example.org", "gateway:resolved")]
    firing = next(m for m in smtp.inbox.messages if event(m)["notice"] == "firing")
    assert firing["Subject"] == "【网关离线】桃浦镇 网关 gw-taopu-cam-0：6 台设备受影响"


def test_a_partition_restored_with_another_partitions_gateway_offline_alerts_nothing(tmp_path, setup):
    """Test that a partition whose restored state holds another partition's gateway offline (as an earlier
    version took every gateway's status) sends no gateway email for it."""
    import dataclasses

    records = [r for r in minutes(0, 60) if r[1].split("/")[2] == "changzheng"]
    with SmtpServer() as smtp:
        config = dataclasses.replace(make_config(tmp_path, setup, smtp.port), streets=("changzheng",))
        collector = restored_collector(config)
        g = collector.registry.gateways.index("gw-taopu-cam-0")
        collector.engine.gateway_online[g], collector.engine.gateway_since[g] = False, (T0 + 30) * US_PER_S
        push(collector, records)
        send_all(config)
        collector.ledger.close()
        collector.lock.release()
    assert smtp.inbox.messages == []


def test_the_whole_district_silent_is_one_pipeline_email(tmp_path, setup):
    """Test that every device going silent at once (uplink, broker) is one incident to the district
    recipients, and nothing to the streets: no silent-street, gateway or breach email."""
    def everything(street, i, m):
        return 60 <= m < 100

    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        collector = restored_collector(config)
        push(collector, minutes(0, 180, everything))
        send_all(config)
        collector.ledger.close()
        collector.lock.release()
    assert summary(smtp.inbox) == [("center@example.org", "pipeline:firing"), ("center@example.org", "pipeline:resolved")]
    firing = next(m for m in smtp.inbox.messages if event(m)["notice"] == "firing")
    assert firing["Subject"] == "【全区失联】全区设备心跳同时中断：疑似采集链路故障"
    body = firing.get_body().get_content()
    assert "/d/ptmon-overview?orgId=1&from=" in body and "/d/ptmon-collector?orgId=1&from=" in body
    # First seen at the last heartbeat (camera 11 at 00:59:11); sent 3 min later, then group_wait.
    assert "首次发现 (first seen)：2026-11-01 00:59:11" in body and "发送时间 (at)：2026-11-01 01:04:00" in body
    assert "涉及 (alerts)：1 项（全区）" in body  # not "1 项，0 个街镇"
    # The resolved email threads under the firing one (mail clients show the incident as one thread).
    resolved = next(m for m in smtp.inbox.messages if event(m)["notice"] == "resolved")
    assert firing["In-Reply-To"] is None and firing["References"] is None
    assert resolved["In-Reply-To"] == resolved["References"] == firing["Message-ID"]


def test_a_monitoring_gap_raises_nothing_for_the_time_it_could_not_see(tmp_path, setup):
    """Test that a collector stopped for 40 minutes and started again sends no device or street
    email: the devices it could not hear are not offline, and the windows it did not see are not
    judged. The gap itself is one incident to the district: a firing email naming it when the
    monitor is back, and a resolved one once it has watched monitor_gap.for again."""
    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        counters: dict = {}
        collector = restored_collector(config)
        push(collector, minutes(0, 60, counters=counters))
        collector.engine.finish()
        asyncio.run(collector.checkpoint())
        collector.ledger.close()
        collector.lock.release()
        collector.archive.finish()
        restarted = restored_collector(config)
        push(restarted, [(float(T0 + 100 * MIN), "$ptmon/monitor", "up"), *minutes(100, 200, counters=counters)])
        send_all(config)
        restarted.ledger.close()
        restarted.lock.release()
    assert summary(smtp.inbox) == [("center@example.org", "monitor_gap:firing"), ("center@example.org", "monitor_gap:resolved")]
    firing = next(m for m in smtp.inbox.messages if event(m)["notice"] == "firing")
    assert firing["Subject"].startswith("【监测中断】采集器监测中断 40 分钟")
    body = firing.get_body().get_content()
    assert "监测中断 (monitoring gap)：2026-11-01 00:59:" in body and "— 2026-11-01 01:40:00" in body


def test_flapping_around_the_threshold_sends_one_email_not_one_per_flap(tmp_path, setup):
    """Test that a rate crossing the threshold again and again fires once and, thanks to the
    hysteresis, resolves once, instead of an email per crossing."""
    def flapping(street, i, m):  # one changzheng camera silent 20 minutes of every 28, for three hours
        return street == "changzheng" and i == 0 and 30 <= m < 210 and (m - 30) % 28 < 20

    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        collector = restored_collector(config)
        values = []
        collector.alerts.emit_points = lambda lines: values.extend(
            float(x.split("value=")[1].split(",")[0].split(" ")[0]) for x in lines
            if "street=changzheng" in x and "kind=breach" in x and "kpi=online" in x and "contract=cam" in x
            and "value=" in x)
        push(collector, minutes(0, 300, flapping))
        send_all(config)
        collector.ledger.close()
        collector.lock.release()
    crossings = sum(1 for a, b in itertools.pairwise(values) if (a < 0.95) != (b < 0.95))
    assert crossings >= 8  # the window rate really did flap across the threshold
    assert summary(smtp.inbox) == [("center@example.org", "breach:firing"), ("center@example.org", "breach:resolved")]


def test_a_restart_mid_incident_sends_nothing_twice(tmp_path, setup):
    """Test that a collector that crashed after the first emails and restarted five minutes later
    from an older checkpoint (replaying the archive tail) sends each email exactly once."""
    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        counters: dict = {}
        collector = restored_collector(config)
        push(collector, minutes(0, 70, outage, counters))
        asyncio.run(collector.checkpoint())
        push(collector, minutes(70, 95, outage, counters))  # the incidents fire in here
        send_all(config)
        assert sorted(x[1] for x in summary(smtp.inbox)) == ["breach:firing", "street_silent:firing", "street_silent:firing"]
        collector.ledger.close()  # SIGKILL: no shutdown, no checkpoint; the archive holds 70-95
        collector.lock.release()  # (the kernel releases a killed process's lock)
        collector.archive._file.close() if getattr(collector.archive, "_file", None) else None

        restarted = restored_collector(config)
        assert any("replayed" in note for note in restarted.notes)
        assert restarted.alerts.restored  # the windows came back with the checkpoint
        # Back after five minutes down, taopu still silent: its silence goes on (no resolved email,
        # no second firing one) until its cameras are heard again.
        push(restarted, [(float(T0 + 100 * MIN), "$ptmon/monitor", "up"), *minutes(100, 240, outage, counters)])
        send_all(config)
        restarted.engine.finish()
        restarted.ledger_writer.flush(open_buckets=True)
        restarted.ledger.close()
        restarted.lock.release()
        restarted.archive.finish()
    assert summary(smtp.inbox) == EXPECTED
    # The hours the replayed tail wrote again replaced the first writes: the ledger equals a replay.
    month = month_bounds("2026-11")
    files = [str(p) for p in archive_files(config.archive_path)]
    with Ledger(config.ledger_path, readonly=True) as ledger:
        assert ledger.integrity_check() == "ok"
        from_ledger = ledger_results(ledger, restarted.registry, *month)
    assert from_ledger.csv_text() == replay(files, restarted.registry, *month).csv_text()


def test_an_smtp_server_down_at_first_still_gets_the_email(tmp_path, setup):
    """Test that emails queued while the mail server is down are retried with backoff and
    delivered once it is up, and that the failure is recorded meanwhile."""
    server = SmtpServer()
    config = make_config(tmp_path, setup, server.port)
    collector = restored_collector(config)
    push(collector, minutes(0, 100, outage))
    now = [2e9]
    mailer = Mailer(str(config.ledger_path), config.email, clock=lambda: now[0])
    with Ledger(config.ledger_path) as ledger:
        assert mailer.send_due(ledger) == 0
        (first, *rest) = ledger.alerts()
        assert first.status == "pending" and first.attempts == 1 and "Connection refused" in (first.last_error or "")
        assert mailer.send_due(ledger) == 0  # not due again before its backoff
        with server:
            now[0] += 1.5
            mailer.send_due(ledger)
            now[0] += 60
            mailer.send_due(ledger)
        assert {a.status for a in ledger.alerts()} == {"sent"}
    assert len(server.inbox.messages) == 1 + len(rest) == 3
    collector.ledger.close()
    collector.lock.release()


def test_the_mailer_thread_sends_without_blocking_the_collector(tmp_path, setup):
    """Test that the collector's mailer thread delivers queued emails on its own."""
    import time

    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        collector = restored_collector(config)
        push(collector, minutes(0, 100, outage))
        mailer = Mailer(str(config.ledger_path), config.email)
        mailer.start()
        deadline = time.monotonic() + 20
        while len(smtp.inbox.messages) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        mailer.stop()
        collector.ledger.close()
        collector.lock.release()
    assert len(smtp.inbox.messages) == 3


LEGACY_ROWS = {
    "breach:cam:changzheng:online": {"state": "firing", "since": (T0 + 60 * MIN) * US_PER_S,
                                     "fired": (T0 + 70 * MIN) * US_PER_S, "last_sent": (T0 + 70 * MIN) * US_PER_S},
    "gateway:gw-taopu-cam-1": {"state": "firing", "since": (T0 + 60 * MIN) * US_PER_S, "fired": (T0 + 65 * MIN) * US_PER_S},
    "$watermark": (T0 + 89 * MIN) * US_PER_S,
}


def test_alert_state_of_an_earlier_version_is_adopted(tmp_path, setup):
    """Test that a ledger holding an earlier version's alert rows (keys split on ':') resumes them:
    the firing breach is not sent again, and its resolved email goes out once; the legacy rows are
    replaced by typed ones."""
    config = make_config(tmp_path, setup)
    with Ledger(config.ledger_path) as ledger:
        ledger.record_alerts({k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in LEGACY_ROWS.items()}, [])
    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        collector = restored_collector(config)
        records = minutes(90, 150) + gateway_records(T0 + 91 * MIN + 30.0, "gw-taopu-cam-1", "online")
        push(collector, sorted(records, key=lambda r: r[0]))
        send_all(config)
        rows = collector.ledger.alert_states()
        collector.ledger.close()
        collector.lock.release()
    assert summary(smtp.inbox) == [("center@example.org", "breach:resolved"), ("center@example.org", "gateway:resolved"),
                                   ("taopu@example.org", "gateway:resolved")]
    assert not any(":" in k.split(" ")[0] for k in rows if not k.startswith("$"))


RISK_YAML = ALERTS_YAML.replace("month_risk: {enabled: false}",
                                "month_risk: {enabled: true, every: 1h, min_observed: 0, min_elapsed: 1h}")


def test_month_at_risk_warns_once_with_numbers_from_the_ledger(tmp_path, setup):
    """Test that a street half of whose cameras stay dark gets one month-at-risk email, its figures
    those of the ledger's closed hours: with less than a day observed it projects at the month so
    far, which ends below the threshold, though all devices coming back now would pass (so it is not
    'unreachable'). (All of them dark would be a street silence, which holds the month at risk back.)"""
    _, rules_file = setup
    rules_file.write_text(RISK_YAML)
    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        collector = restored_collector(config)
        push(collector, minutes(0, 240, lambda street, i, m: street == "taopu" and i < 6 and m >= 60))
        send_all(config)
        collector.ledger.close()
        collector.lock.release()
    risk = [m for m in smtp.inbox.messages if event(m)["cause"] == "month_risk"]
    assert [(m["To"], m["Subject"]) for m in risk] == [
        ("center@example.org", "【月度风险】桃浦镇 监控点位在线率：按当前趋势月末将低于阈值"),
        ("taopu@example.org", "【月度风险】桃浦镇 监控点位在线率：按当前趋势月末将低于阈值")]
    body = risk[0].get_body().get_content()
    as_of, num, den = re.search(r"账本本月至 (\S+ \S+) \(ledger, month so far\)：(\d+)/(\d+)", body).groups()
    assert as_of == "2026-11-01 02:00:00"
    with Ledger(config.ledger_path, readonly=True) as ledger:
        row = ledger_results(ledger, collector.registry, T0 * US_PER_S, (T0 + 7200) * US_PER_S).row("cam", "taopu", "online")
    assert (int(num), int(den)) == (row.numerator, row.denominator)
    best = body.split("月末最高可达 (best case)：")[1].split("%")[0]
    projected = body.split("预计月末 (projected)：")[1].split("%")[0]
    month = re.search(r"按本月累计水平 \(month so far\) (\S+)%", body).group(1)
    assert month == projected and abs(float(projected) - 100 * row.numerator / row.denominator) < 0.01
    assert float(projected) < 95.0 and float(best) > 99.0
    assert "预计扣款 (lease amount at risk)：" in body and "本街镇本合同的" in body  # the contract's, not the KPI's


def smoke_and_cameras(tmp_path: Path) -> Path:
    """A registry of taopu's 12 smoke detectors (a heartbeat every 6 h) and 12 face cameras."""
    from .conftest import HEADER

    registry = tmp_path / "smoke.csv"
    registry.write_text("\n".join([HEADER, *(f"taopu-smoke{i},iot,smoke,taopu,scn,taopu-c1,gw-taopu-iot,2026-01-01,"
                                             for i in range(12)),
                                   *(f"taopu-cam{i},cam,face_cam,taopu,scn,taopu-c1,gw-taopu-cam,2026-01-01,"
                                     for i in range(12))]) + "\n")
    return registry


def cameras(first: int, last: int) -> list[tuple[float, str, str]]:
    """The 12 cameras of :func:`smoke_and_cameras` heard every minute from minute ``first`` to ``last``."""
    return [(float(T0 + m * MIN + i), f"putuo/cam/taopu/taopu-cam{i}/hb", json.dumps({"seq": m}))
            for m in range(first, last) for i in range(12)]


def test_devices_not_heard_since_a_long_gap_are_not_judged_until_they_could_report(tmp_path, setup):
    """Test that after 14 hours down, smoke detectors (a heartbeat every 6 h, offline after 13 h)
    that timed out unseen are not counted offline until they had a timeout to report: no breach."""
    _, rules_file = setup
    registry = smoke_and_cameras(tmp_path)
    smoke = [(float(T0 + 5 + i), f"putuo/iot/taopu/taopu-smoke{i}/hb", json.dumps({"seq": 1})) for i in range(12)]
    with SmtpServer() as smtp:
        config = make_config(tmp_path, (registry, rules_file), smtp.port)
        collector = restored_collector(config)
        push(collector, sorted(smoke + cameras(0, 60)))
        collector.engine.finish()
        asyncio.run(collector.checkpoint())
        collector.ledger.close()
        collector.lock.release()
        collector.archive.finish()
        restarted = restored_collector(config)
        push(restarted, [(float(T0 + 900 * MIN), "$ptmon/monitor", "up"), *cameras(900, 1020)])
        iot = restarted.sla.latest
        assert iot is not None and iot.row("iot", "taopu", "online").numerator > 0  # the KPI counts them as it must
        send_all(config)
        restarted.ledger.close()
        restarted.lock.release()
    # No breach: only the 14-hour gap itself, told to the district.
    assert summary(smtp.inbox) == [("center@example.org", "monitor_gap:firing"), ("center@example.org", "monitor_gap:resolved")]


GUARDED_DIGEST_YAML = ALERTS_YAML.replace("digest: {enabled: false}", 'digest: {enabled: true, at: "00:20", streets: true}')
# The month-at-risk guard off, so that an hour and a half of data may be judged as the month's.
DIGEST_YAML = GUARDED_DIGEST_YAML.replace("month_risk: {enabled: false}",
                                          "month_risk: {enabled: false, min_observed: 0, min_elapsed: 0s}")


def test_the_daily_digest_gives_the_ledgers_figures(tmp_path, setup):
    """Test that the daily digest, sent once after its hour to the district and (with streets: true)
    to each street's contacts for their street, reports yesterday and the month so far exactly as the
    ledger has them, with the open incidents, the provisional deduction and the rejected messages."""
    _, rules_file = setup
    rules_file.write_text(DIGEST_YAML)
    counters: dict = {}
    records = minutes(-60, 40, counters=counters, failing=lambda street, i, m: street == "taopu" and i < 3)
    records += [(float(T0 - 1800), "putuo/cam/taopu/taopu-cam0/hb", "{not json"),
                (float(T0 - 1700), "putuo/cam/taopu/nobody/hb", "{}")]
    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        collector = restored_collector(config)
        push(collector, sorted(records, key=lambda r: r[0]))
        send_all(config)
        collector.ledger.close()
        collector.lock.release()
    digests = [m for m in smtp.inbox.messages if event(m)["notice"] == "digest"]
    assert sorted(m["To"] for m in digests) == ["center@example.org", "taopu@example.org"]
    district = next(m for m in digests if m["To"] == "center@example.org")
    assert district["Subject"].startswith("【每日简报】全区 2026-10-31：")
    body = district.get_body().get_content()
    assert "生成时间 (at)：2026-11-01 00:20:00" in body
    assert "拒收 (rejected)：JSON 错误 1，未登记设备 1" in body and "暂未统计" not in body
    assert "  桃浦镇 | 0 条 (0.00%) | 0 条 (0.00%)" in body  # nothing lost in transit (test_loss_alerts.py loses some)
    (attachment,) = list(district.iter_attachments())
    rows = list(csv.reader(io.StringIO(attachment.get_content().lstrip("\ufeff"))))
    day = (T0 - 86_400) * US_PER_S
    with Ledger(config.ledger_path, readonly=True) as ledger:
        yesterday = ledger_results(ledger, collector.registry, day, T0 * US_PER_S)
        month = ledger_results(ledger, collector.registry, month_bounds("2026-10")[0], T0 * US_PER_S)
    expected = [[period, r.contract, r.street, r.kpi, str(r.numerator), str(r.denominator), r.value_text()]
                for period, results in (("yesterday", yesterday), ("month", month)) for r in results.rows]
    assert [row[:7] for row in rows[1:]] == expected
    capture = yesterday.row("cam", "taopu", "capture")
    assert capture.passed is False and f"桃浦镇 | 人脸车卡抓拍成功率 | {capture.percent_text(2)}%" in body
    assert "桃浦镇 智能安防：" in body.split("暂估扣款")[1]  # its provisional deduction
    assert "智能安防：依据本月监测覆盖 " in body.split("暂估扣款")[1]  # and what it stands on
    street = next(m for m in digests if m["To"] == "taopu@example.org")
    assert street["Subject"].startswith("【每日简报】桃浦镇 2026-10-31：") and "长征镇" not in street.get_body().get_content()


def test_the_digest_withholds_verdicts_and_money_below_the_month_guard(tmp_path, setup):
    """Test that a digest sent 20 minutes into a month (and 20 minutes after monitoring began) states
    no deduction and no 未达标 verdict for the month: below month_risk's min_observed / min_elapsed
    it shows the values with the coverage and withholds the money, however bad the minutes were."""
    _, rules_file = setup
    rules_file.write_text(GUARDED_DIGEST_YAML)
    def failing(street, i, m):
        return street == "taopu" and i < 10  # taopu's capture far below its threshold
    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        collector = restored_collector(config)
        push(collector, minutes(-20, 25, failing=failing))
        send_all(config)
        collector.ledger.close()
        collector.lock.release()
    digests = [m for m in smtp.inbox.messages if event(m)["notice"] == "digest"]
    assert len(digests) == 2  # the district and taopu, once each
    for digest in digests:
        body = digest.get_body().get_content()
        assert "本月监测不足，暂不判定达标" in digest["Subject"] and "未达标" not in digest["Subject"]
        money = body.split("暂估扣款")[1].split("传输丢失")[0]
        assert "暂不估算" in money and "元（月租" not in money and "扣 " not in money
        assert "| 未达标" not in body and "| 暂不判定" in body
        assert "本月监测覆盖 0.0" in money  # the coverage it would have been judged on


def test_devices_never_heard_are_unknown_alike_with_or_without_a_restart(tmp_path, setup):
    """Test that smoke detectors never heard since the collector first started (a heartbeat every
    6 h, offline after 13 h) stay unknown after a SIGKILL and restart just as they would without
    one: an hour watched, 15 minutes down, an hour more gives no iot breach."""
    _, rules_file = setup
    registry = smoke_and_cameras(tmp_path)
    smoke = [(float(T0 + 5 + i), f"putuo/iot/taopu/taopu-smoke{i}/hb", json.dumps({"seq": 1})) for i in range(3)]
    with SmtpServer() as smtp:
        config = make_config(tmp_path, (registry, rules_file), smtp.port)
        collector = restored_collector(config)
        push(collector, sorted(smoke + cameras(0, 60)))
        asyncio.run(collector.checkpoint())  # then SIGKILL: no clean shutdown
        collector.ledger.close()
        collector.lock.release()
        collector.archive.close()
        restarted = restored_collector(config)
        push(restarted, [(float(T0 + 75 * MIN), "$ptmon/monitor", "up"), *cameras(75, 150)])
        send_all(config)
        restarted.ledger.close()
        restarted.lock.release()
    assert [s for s in summary(smtp.inbox) if not s[1].startswith("monitor_gap")] == []


@pytest.mark.parametrize("back_minute", [71, 90])
def test_last_wills_of_a_broker_shutdown_and_the_gap_make_no_gateway_incident(tmp_path, setup, back_minute):
    """Test that the Last Wills a broker publishes as it shuts down (archived 34 s before the
    collector's 'down') and the 10-minute gap after make no gateway email when the gateways are back a
    minute after monitoring resumes; a gateway still offline 20 minutes after it is one incident."""
    gateways = [f"gw-{s}-{c}-{i}" for s in ("taopu", "changzheng") for c in ("cam", "iot") for i in (0, 1)]
    counters: dict = {}
    # the collector archives its 'up' before what it receives once back (the sort below is stable)
    records = [(float(T0 + 60 * MIN), "$ptmon/monitor", "down"), (float(T0 + 70 * MIN), "$ptmon/monitor", "up")]
    records += minutes(0, 60, counters=counters) + minutes(70, 130, counters=counters)
    records += [r for g in gateways for r in gateway_records(T0 + 60 * MIN - 34.0, g, "offline")]
    records += [r for g in gateways for r in gateway_records(T0 + 71 * MIN, g, "online") if g != "gw-taopu-cam-0"]
    records += gateway_records(T0 + back_minute * MIN, "gw-taopu-cam-0", "online")
    records.sort(key=lambda r: r[0])
    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        collector = restored_collector(config)
        push(collector, records)
        send_all(config)
        collector.ledger.close()
        collector.lock.release()
    gateway = [("taopu@example.org", "gateway:firing"), ("taopu@example.org", "gateway:resolved"),
               ("center@example.org", "gateway:firing"), ("center@example.org", "gateway:resolved")]
    assert summary(smtp.inbox) == sorted([("center@example.org", "monitor_gap:firing"),
                                          ("center@example.org", "monitor_gap:resolved")]
                                         + (gateway if back_minute == 90 else []))
    if back_minute == 90:
        firing = next(m for m in smtp.inbox.messages if event(m) == {**event(m), "cause": "gateway", "notice": "firing"})
        assert firing["Subject"] == "【网关离线】桃浦镇 网关 gw-taopu-cam-0：6 台设备受影响"


def test_month_at_risk_projects_from_the_ledgers_last_day_not_a_dark_hour(tmp_path, setup):
    """Test that half of a street's cameras dark from 23:00 (a night hour at 50 %) raise no month at
    risk at midnight, when the rule's half-hour window would have projected 50 % over the month; the
    risk comes at 02:00 when the ledger's last 24 hours fall below the threshold, and the email's
    24-hour level is the ledger's over those 24 hours."""
    _, rules_file = setup
    rules_file.write_text(RISK_YAML)
    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        collector = restored_collector(config)
        push(collector, minutes(0, 27 * 60, lambda street, i, m: street == "taopu" and i < 6 and 23 * 60 <= m < 30 * 60))
        send_all(config)
        collector.ledger.close()
        collector.lock.release()
    risk = [m for m in smtp.inbox.messages if event(m)["cause"] == "month_risk"]
    assert [m["To"] for m in risk] == ["center@example.org", "taopu@example.org"]
    body = risk[0].get_body().get_content()
    assert "账本本月至 2026-11-02 02:00:00" in body
    level = re.search(r"按账本 2026-11-01 02:00:00 起近 24 小时水平 \(ledger, last 24 h\) (\S+)%", body).group(1)
    with Ledger(config.ledger_path, readonly=True) as ledger:
        row = ledger_results(ledger, collector.registry, (T0 + 2 * 3600) * US_PER_S,
                             (T0 + 26 * 3600) * US_PER_S).row("cam", "taopu", "online")
    assert abs(float(level) - 100 * row.numerator / row.denominator) < 0.005 and float(level) < 95.0
