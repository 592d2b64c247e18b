"""Alert emails through a real SMTP server (aiosmtpd): one breach and one resolved email per
street for an outage, root-cause emails, no spam from flapping, nothing sent twice across a
restart, and nothing lost while the mail server is down."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from ptmon.alerting.mailer import Mailer
from ptmon.collect import Collector
from ptmon.config import AlertsConfig, CollectorConfig, EmailConfig, MqttConfig
from ptmon.ledger.read import ledger_results
from ptmon.ledger.store import Ledger
from ptmon.replay import replay
from ptmon.sinks.archive import archive_files
from ptmon.timebase import month_bounds

from .conftest import T0, TWO_STREETS, write_two_street_registry
from .smtp import SmtpServer

MIN = 60
ALERTS_YAML = """
defaults: {window: 30m, for: 10m, hysteresis: 0.005, resolve_for: 10m, repeat: 4h}
rules:
  - {contract: cam, kpi: online}
  - {contract: iot, kpi: online}
month_risk: {enabled: false}
gateway: {for: 5m}
street_silent: {for: 10m}
recipients:
  district: [center@example.org]
  streets: {taopu: [taopu@example.org]}
dashboard_url: "http://grafana.example/d/street?var-street={street}"
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


def minutes(first: int, last: int, silent=lambda street, i, m: False, counters: dict | None = None):
    """Heartbeat records, minute by minute: cameras every minute, elevators every 5 (unless silent)."""
    counters = counters if counters is not None else {}
    out = []
    for m in range(first, last):
        for street in TWO_STREETS:
            for i in range(12):
                t = T0 + m * MIN + i
                device = f"{street}-cam{i}"
                if not silent(street, i, m):
                    tries = counters[device] = counters.get(device, 0) + 10
                    payload = {"seq": m, "face_try": tries, "face_ok": tries}
                    out.append((float(t), f"putuo/cam/{street}/{device}/hb", json.dumps(payload)))
                if m % 5 == 0:
                    out.append((float(t) + 20, f"putuo/iot/{street}/{street}-lift{i}/hb", json.dumps({"seq": m})))
    out.sort(key=lambda r: r[0])
    return out


def outage(street, i, m):
    """taopu's cameras all silent from minute 60 to 120; three of changzheng's too."""
    return 60 <= m < 120 and (street == "taopu" or i < 3)


def push(collector: Collector, records) -> None:
    """What the main loop does with records from the broker: archive, commit, apply."""
    collector.archive.append(records)
    collector.archive.commit()
    collector.feed.feed(records)


def send_all(config: CollectorConfig, clock=None) -> Mailer:
    mailer = Mailer(str(config.ledger_path), config.email, clock=clock or (lambda: 2e9))
    with Ledger(config.ledger_path) as ledger:
        mailer.send_due(ledger)
    return mailer


def summary(inbox) -> list[tuple[str, str]]:
    return sorted((m["To"], ":".join(m["X-Ptmon-Event"].strip().split(":")[i] for i in (0, 4)))
                  for m in inbox.messages)


EXPECTED = [
    ("center@example.org", "breach:firing"),  # changzheng has no list of its own: the district's
    ("center@example.org", "breach:resolved"),
    ("taopu@example.org", "breach:firing"),
    ("taopu@example.org", "breach:resolved"),
    ("taopu@example.org", "street_silent:firing"),
    ("taopu@example.org", "street_silent:resolved"),
]


def test_outage_sends_one_breach_and_one_resolved_email_per_street(tmp_path, setup):
    """Test that a camera outage in two streets gives, per street, one breach and one resolved
    email (plus one silent-street email pair where every camera went dark), in Chinese."""
    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        collector = Collector(config)
        push(collector, minutes(0, 240, outage))
        send_all(config)
        collector.ledger.close()
    assert summary(smtp.inbox) == EXPECTED

    taopu = next(m for m in smtp.inbox.messages
                 if m["To"] == "taopu@example.org" and "breach:cam:taopu:online:firing" in m["X-Ptmon-Event"])
    assert taopu["Subject"].startswith("【SLA告警】桃浦镇 监控点位在线率 ")
    assert "（阈值 95.00%）" in taopu["Subject"]
    assert taopu["From"] == "ptmon@example.org"
    body = taopu.get_body().get_content()
    assert taopu.get_body().get_content_charset() == "utf-8"
    assert "街镇 (street)：桃浦镇 (taopu)" in body and "阈值 (threshold)：95.00%" in body
    assert "最差设备（前 12）" in body and "taopu-cam0" in body
    assert "http://grafana.example/d/street?var-street=taopu" in body
    silent = next(m for m in smtp.inbox.messages if "street_silent:cam:taopu:online:firing" in m["X-Ptmon-Event"])
    assert silent["Subject"] == "【整街失联】桃浦镇 普陀区智能安防建设项目：12 台设备全部离线"
    (attachment,) = list(silent.iter_attachments())
    assert attachment.get_filename() == "taopu-cam-devices.csv"
    rows = attachment.get_content().lstrip("\ufeff").strip().splitlines()
    assert rows[0] == "device,type,community,gateway,last_heartbeat,online" and len(rows) == 13
    with Ledger(config.ledger_path) as ledger:
        sent = ledger.alerts()
    assert all(a.status == "sent" and a.attempts == 1 for a in sent) and len(sent) == 6


def test_flapping_around_the_threshold_sends_one_email_not_one_per_flap(tmp_path, setup):
    """Test that a rate crossing the threshold again and again fires once and, thanks to the
    hysteresis, resolves once, instead of an email per crossing."""
    def flapping(street, i, m):  # one changzheng camera silent 20 minutes of every 28, for three hours
        return street == "changzheng" and i == 0 and 30 <= m < 210 and (m - 30) % 28 < 20

    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        collector = Collector(config)
        values = []
        collector.alerts.emit_points = lambda lines: values.extend(
            float(x.split("value=")[1].split(",")[0].split(" ")[0]) for x in lines
            if "street=changzheng" in x and "kind=breach" in x and "contract=cam" in x and "value=" in x)
        push(collector, minutes(0, 300, flapping))
        send_all(config)
        collector.ledger.close()
    crossings = sum(1 for a, b in zip(values, values[1:]) if (a < 0.95) != (b < 0.95))
    assert crossings >= 8  # the window rate really did flap across the threshold
    assert summary(smtp.inbox) == [("center@example.org", "breach:firing"), ("center@example.org", "breach:resolved")]


def test_a_restart_mid_breach_sends_nothing_twice(tmp_path, setup):
    """Test that a collector that crashed after the breach email and restarted from an older
    checkpoint (replaying the archive tail) sends each email exactly once."""
    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        counters: dict = {}
        collector = Collector(config)
        push(collector, minutes(0, 70, outage, counters))
        asyncio.run(collector.checkpoint())
        push(collector, minutes(70, 95, outage, counters))  # the breach fires in here
        send_all(config)
        assert sorted(x[1] for x in summary(smtp.inbox)) == ["breach:firing", "breach:firing", "street_silent:firing"]
        collector.ledger.close()  # SIGKILL: no shutdown, no checkpoint; the archive holds 70-95
        collector.lock.release()  # (the kernel releases a killed process's lock)
        collector.archive._file.close() if getattr(collector.archive, "_file", None) else None

        restarted = Collector(config)
        assert any("replayed" in note for note in restarted.notes)
        push(restarted, minutes(95, 240, outage, counters))
        send_all(config)
        restarted.engine.finish()
        restarted.ledger_writer.flush(open_buckets=True)
        restarted.ledger.close()
        restarted.archive.close()
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
    collector = Collector(config)
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
    assert len(server.inbox.messages) == 1 + len(rest)
    collector.ledger.close()


def test_the_mailer_thread_sends_without_blocking_the_collector(tmp_path, setup):
    """Test that the collector's mailer thread delivers queued emails on its own."""
    import time

    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        collector = Collector(config)
        push(collector, minutes(0, 100, outage))
        mailer = Mailer(str(config.ledger_path), config.email)
        mailer.start()
        deadline = time.monotonic() + 20
        while len(smtp.inbox.messages) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        mailer.stop()
        collector.ledger.close()
    assert len(smtp.inbox.messages) == 3


RISK_YAML = ALERTS_YAML.replace("month_risk: {enabled: false}", "month_risk: {enabled: true, every: 30m, min_elapsed: 1h}")


def test_month_at_risk_warns_once_with_the_projection(tmp_path, setup):
    """Test that a street whose cameras stay dark gets one month-at-risk email: at the recent rate
    the month ends below the threshold (though it could still recover, so not 'unreachable')."""
    registry, rules_file = setup
    rules_file.write_text(RISK_YAML)
    with SmtpServer() as smtp:
        config = make_config(tmp_path, setup, smtp.port)
        collector = Collector(config)
        push(collector, minutes(0, 240, lambda street, i, m: street == "taopu" and m >= 60))
        send_all(config)
        collector.ledger.close()
    risk = [m for m in smtp.inbox.messages if m["X-Ptmon-Event"].strip().startswith("month_risk:")]
    assert [m["Subject"] for m in risk] == ["【月度风险】桃浦镇 监控点位在线率：按当前趋势月末将低于阈值"]
    body = risk[0].get_body().get_content()
    projected = body.split("按近期水平预计月末 (projected)：")[1].split("%")[0]
    best = body.split("月末最高可达 (best case)：")[1].split("%")[0]
    assert float(projected) < 20.0 and float(best) > 99.0  # at the last half hour's rate vs. everything back now
