"""Loss in transit and the broker's drops as alerts, through a real SMTP server (aiosmtpd): the collector
fed records as its main loop feeds them (tests/test_alerts.py). A lossy street is one incident per
recipient and one resolved email; a street's network cut is its silence, not a loss; the broker's drops
are one email to the district naming the setting to raise; a restart in the middle sends nothing twice;
the daily digest's loss figures are the ledger's."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest

from ptmon.alerting.fmt import percent
from ptmon.collect import Collector
from ptmon.config import CollectorConfig, LossConfig
from ptmon.ledger.store import Ledger
from ptmon.tally import DISTRICT
from ptmon.timebase import US_PER_S

from .conftest import T0, restored_collector, write_two_street_registry
from .smtp import SmtpServer
from .test_alert_incidents import stamp
from .test_alerts import ALERTS_YAML, event, make_config, minutes, push, send_all, summary

MIN = 60
STREET_ONLY = LossConfig(window=1800, street_rate=0.02, broker_rate=0.5, min_messages=100)  # no district-wide alert


@pytest.fixture
def setup(tmp_path):
    registry = write_two_street_registry(tmp_path / "registry.csv")
    rules_file = tmp_path / "alerts.yaml"
    rules_file.write_text(ALERTS_YAML)
    return registry, rules_file


def loss_config(tmp_path: Path, setup, smtp_port: int, loss: LossConfig = STREET_ONLY) -> CollectorConfig:
    return replace(make_config(tmp_path, setup, smtp_port), loss=loss)


def taopu_every_other(first: int, last: int):
    """taopu's cameras lose every other heartbeat in transit from minute ``first`` to ``last`` (still online)."""
    return lambda street, i, m: street == "taopu" and i < 100 and first <= m < last and m % 2 == 0


def crash(collector: Collector) -> None:
    """SIGKILL: no shutdown, no checkpoint (the kernel releases a killed process's lock)."""
    collector.ledger.close()
    collector.lock.release()
    if getattr(collector.archive, "_file", None):
        collector.archive._file.close()


def window_loss(records, street: str, contract: str, at: float, window: int) -> tuple[int, int]:
    """(lost, received) of a street × contract in the loss window at ``at`` from the records themselves: per
    device, the seq gaps closed by its messages received in a minute that began after ``at − window``."""
    last: dict[str, int] = {}
    lost = received = 0
    for t, topic, payload in records:
        _, c, s, device, _ = topic.split("/")
        seq = json.loads(payload)["seq"]
        if (c, s) == (contract, street) and at - window < t - t % 60 and t <= at:
            received += 1
            lost += seq - last[device] - 1 if device in last else 0
        last[device] = seq
    return lost, received


def test_a_lossy_street_is_one_email_per_recipient_then_resolved(tmp_path, setup):
    """Test that taopu's cameras losing every other heartbeat for half an hour give taopu's contact and the
    district one loss email each, in Chinese, with the window's rate, lost of received + lost and the window,
    figures the records themselves give, and one resolved email each once the window is clean again."""
    records = minutes(0, 180, lost=taopu_every_other(60, 90))
    with SmtpServer() as smtp:
        config = loss_config(tmp_path, setup, smtp.port)
        collector = restored_collector(config)
        push(collector, records)
        send_all(config)
        crash(collector)
    assert summary(smtp.inbox) == [("center@example.org", "loss:firing"), ("center@example.org", "loss:resolved"),
                                   ("taopu@example.org", "loss:firing"), ("taopu@example.org", "loss:resolved")]
    firing = next(m for m in smtp.inbox.messages if m["To"] == "taopu@example.org" and event(m)["notice"] == "firing")
    body = firing.get_body().get_content()
    rate, lost, received = re.search(r"近 30 分钟 \(window\)：丢失率 \(loss rate\) (\S+%) = 净丢失 (\d+) / \(收到 (\d+) \+ "
                                     r"净丢失 \2\) 条", body).groups()
    at = stamp(body, r"发送时间 \(at\)")
    assert (int(lost), int(received)) == window_loss(records, "taopu", "cam", at, 1800)
    assert rate == percent(Fraction(int(lost), int(lost) + int(received))) and int(lost) > 0
    assert firing["Subject"] == f"【传输丢失】桃浦镇 智能安防：丢失率 {rate}（告警线 2.00%）"
    assert "告警线 (level)：2.00%，降至 1.60% 及以下恢复" in body
    assert "丢失的心跳对合同仍计为未上报" in body and "/d/ptmon-collector?orgId=1&from=" in body
    # The heartbeats lost at minute 60 count as their gaps close in minute 61, at the sample that ends it.
    assert stamp(body, r"首次发现 \(first seen\)") == T0 + 62 * MIN
    resolved = next(m for m in smtp.inbox.messages if m["To"] == "taopu@example.org" and event(m)["notice"] == "resolved")
    assert resolved["Subject"] == "【传输丢失恢复】桃浦镇 智能安防"
    assert "现丢失率 " in resolved.get_body().get_content()
    assert event(resolved)["opened"] == event(firing)["opened"]


def test_the_whole_district_losing_is_one_email_to_the_district(tmp_path, setup):
    """Test that every street losing a little (each below its own level) but the district above its level is
    one district-wide loss email to the district recipients only, and one resolved."""
    def everywhere(street, i, m):
        return i == 0 and 40 <= m < 60

    loss = LossConfig(window=1800, street_rate=0.2, broker_rate=0.01, min_messages=100)
    with SmtpServer() as smtp:
        config = loss_config(tmp_path, setup, smtp.port, loss)
        collector = restored_collector(config)
        push(collector, minutes(0, 150, lost=everywhere))
        send_all(config)
        crash(collector)
    assert summary(smtp.inbox) == [("center@example.org", "loss:firing"), ("center@example.org", "loss:resolved")]
    firing = next(m for m in smtp.inbox.messages if event(m)["notice"] == "firing")
    assert firing["Subject"].startswith("【传输丢失】全区：丢失率 ") and "（告警线 1.00%）" in firing["Subject"]
    assert "事件 (incident)：传输丢失 · 全区" in firing.get_body().get_content()


def test_a_district_wide_loss_is_the_districts_incident_not_a_storm_of_streets(tmp_path, setup):
    """Test that every street × contract losing about 3 % alike (each above its own 2 % level, the district
    above its 1 %) is one district loss incident to the district recipients: one firing and one resolved
    email, none to a street's contacts (they cannot act on the uplink or the broker), and the district's
    email lists no street."""
    def uniform(street, i, m):  # every 30th heartbeat of every device, from minute 40 to 100
        return 40 <= m < 100 and (m * 7 + i) % 30 == 0

    loss = LossConfig(window=1800, street_rate=0.02, broker_rate=0.01, min_messages=100)
    with SmtpServer() as smtp:
        config = loss_config(tmp_path, setup, smtp.port, loss)
        collector = restored_collector(config)
        rates = []
        counters: dict = {}
        push(collector, minutes(0, 80, lost=uniform, counters=counters))
        rates.append({k: r.rate for k, r in collector.alerts.transit.readings.items() if r.rate is not None})
        push(collector, minutes(80, 200, lost=uniform, counters=counters))
        send_all(config)
        crash(collector)
    assert len(rates[0]) == 5 and all(rate > 0.02 for rate in rates[0].values())  # every street above its own level
    assert summary(smtp.inbox) == [("center@example.org", "loss:firing"), ("center@example.org", "loss:resolved")]
    firing = next(m for m in smtp.inbox.messages if event(m)["notice"] == "firing")
    assert firing["Subject"].startswith("【传输丢失】全区：丢失率 ")


def test_a_streets_network_cut_is_its_silence_not_a_loss(tmp_path, setup):
    """Test that taopu's cameras cut off for 20 minutes while they keep counting (their heartbeats lost in
    transit) are one silent-street incident: the gaps their return closes are counted lost, but that loss
    is the silence's and sends nothing, neither for taopu nor for the district."""
    def cut(street, i, m):
        return street == "taopu" and i < 100 and 60 <= m < 80

    with SmtpServer() as smtp:
        config = loss_config(tmp_path, setup, smtp.port, replace(STREET_ONLY, broker_rate=0.01))
        collector = restored_collector(config)
        push(collector, minutes(0, 180, lost=cut))
        send_all(config)
        stats = dict(collector.engine.stats)
        crash(collector)
    assert stats["lost"] == 12 * 20  # counted all the same
    assert summary(smtp.inbox) == [("center@example.org", "street_silent:firing"),
                                   ("center@example.org", "street_silent:resolved"),
                                   ("taopu@example.org", "street_silent:firing"),
                                   ("taopu@example.org", "street_silent:resolved")]


def test_a_restart_mid_loss_sends_nothing_twice(tmp_path, setup):
    """Test that a collector killed after the loss emails went out and restarted from an older checkpoint
    (replaying the archive tail) sends no second firing email while it cannot judge the window yet, and one
    resolved email per recipient once it can and the loss has stopped."""
    counters: dict = {}
    with SmtpServer() as smtp:
        config = loss_config(tmp_path, setup, smtp.port)
        collector = restored_collector(config)
        push(collector, minutes(0, 40, counters=counters))
        asyncio.run(collector.checkpoint())
        push(collector, minutes(40, 75, counters=counters, lost=taopu_every_other(45, 75)))
        send_all(config)
        assert summary(smtp.inbox) == [("center@example.org", "loss:firing"), ("taopu@example.org", "loss:firing")]
        crash(collector)

        restarted = restored_collector(config)
        assert any("replayed" in note for note in restarted.notes)
        push(restarted, [(float(T0 + 78 * MIN), "$ptmon/monitor", "up"), *minutes(78, 105, counters=counters)])
        send_all(config)
        assert len(smtp.inbox.messages) == 2  # not judged until a whole window (30 min) was watched again
        push(restarted, minutes(105, 150, counters=counters))
        send_all(config)
        crash(restarted)
    assert summary(smtp.inbox) == [("center@example.org", "loss:firing"), ("center@example.org", "loss:resolved"),
                                   ("taopu@example.org", "loss:firing"), ("taopu@example.org", "loss:resolved")]
    resolved = next(m for m in smtp.inbox.messages if event(m)["notice"] == "resolved")
    assert stamp(resolved.get_body().get_content(), r"发送时间 \(at\)") >= T0 + 108 * MIN
    assert len({m["Message-ID"] for m in smtp.inbox.messages}) == 4


def drops(collector: Collector, minute: float, dropped: int) -> None:
    """The broker's $SYS drop count as the main loop reads it at ``minute``."""
    stats = collector.source.broker_stats
    assert stats is not None
    t = T0 + minute * MIN
    stats.update("$SYS/broker/publish/messages/dropped", str(dropped), t)
    collector._watch_broker(t, False)


def test_broker_drops_are_one_email_naming_the_setting_and_sent_once_across_a_restart(tmp_path, setup):
    """Test that the broker dropping 250 messages (taopu's cameras losing heartbeats meanwhile) is one email to
    the district naming max_queued_messages and max_queued_bytes, that the loss it explains is not sent apart,
    and that after a restart the same $SYS count sends nothing again; the resolved email goes out once."""
    counters: dict = {}
    loss = replace(STREET_ONLY, broker_rate=0.01)
    with SmtpServer() as smtp:
        config = loss_config(tmp_path, setup, smtp.port, loss)
        collector = restored_collector(config)
        push(collector, minutes(0, 36, counters=counters))
        drops(collector, 35.75, 0)  # the main loop reads $SYS as the engine's clock passes
        asyncio.run(collector.checkpoint())
        push(collector, minutes(36, 37, counters=counters, lost=taopu_every_other(36, 42)))
        drops(collector, 36.75, 250)
        push(collector, minutes(37, 50, counters=counters, lost=taopu_every_other(36, 42)))
        send_all(config)
        assert summary(smtp.inbox) == [("center@example.org", "broker_drops:firing")]
        held = {k.street for k in collector.alerts.book.alerts if k.cause.value == "loss"}
        assert held == {"", "taopu"}  # taopu's and the district's loss fired, held back by the drops
        crash(collector)

        restarted = restored_collector(config)
        push(restarted, [(float(T0 + 52 * MIN), "$ptmon/monitor", "up"), *minutes(52, 53, counters=counters)])
        drops(restarted, 52.75, 250)  # the broker still reports the drops it counted before the restart
        push(restarted, minutes(53, 130, counters=counters))
        send_all(config)
        crash(restarted)
    assert summary(smtp.inbox) == [("center@example.org", "broker_drops:firing"),
                                   ("center@example.org", "broker_drops:resolved")]
    firing = next(m for m in smtp.inbox.messages if event(m)["notice"] == "firing")
    assert firing["Subject"] == "【代理丢弃】MQTT 代理丢弃了 250 条消息：请调大 max_queued_messages / max_queued_bytes"
    body = firing.get_body().get_content()
    assert "本事件共 250 条" in body and "在 mosquitto.conf 中调大 max_queued_messages / max_queued_bytes" in body
    assert stamp(body, r"首次发现 \(first seen\)") == T0 + 36 * MIN + 45
    assert "采集器按序号推算 (the collector's own count)：近 30 分钟 全区" in body
    resolved = next(m for m in smtp.inbox.messages if event(m)["notice"] == "resolved")
    # A whole window (30 min) after the last growth, seen at 36:45: the instant at 67:00, sent a group_wait later.
    assert stamp(resolved.get_body().get_content(), r"发送时间 \(at\)") == T0 + 68 * MIN


DIGEST_YAML = ALERTS_YAML.replace("digest: {enabled: false}", 'digest: {enabled: true, at: "00:20", streets: true}')


def test_the_digest_gives_the_ledgers_loss_per_street(tmp_path, setup):
    """Test that the daily digest shows, per street and contract and for the district, yesterday's and the
    month's messages lost in transit net of those recovered (a late message filling a gap), with their rate,
    exactly as the ledger's hourly counts have them."""
    registry, rules_file = setup
    rules_file.write_text(DIGEST_YAML)
    counters: dict = {}
    before = minutes(-1500, -1470, counters=counters, lost=taopu_every_other(-1490, -1480))  # Oct 30, 23:00
    day = minutes(-120, 40, counters=counters, lost=lambda street, i, m: i in (0, 100) and m % 10 == 0 and m < 0)
    # The heartbeat taopu-cam0 lost at -60 min arrives after all, 30 s after the next one: recovered.
    sent = [json.loads(p)["seq"] for t, topic, p in day if topic.endswith("/taopu-cam0/hb") and t < T0 - 59 * MIN]
    late = [(float(T0 - 59 * MIN + 30), "putuo/cam/taopu/taopu-cam0/hb", json.dumps({"seq": sent[-1] + 1}))]
    records = sorted([*before, (float(T0 - 1470 * MIN + 5), "$ptmon/monitor", "down"), *day, *late], key=lambda r: r[0])
    with SmtpServer() as smtp:
        config = loss_config(tmp_path, (registry, rules_file), smtp.port)
        collector = restored_collector(config)
        push(collector, records)
        send_all(config)
        crash(collector)
    digests = {m["To"]: m.get_body().get_content() for m in smtp.inbox.messages if event(m)["notice"] == "digest"}
    assert sorted(digests) == ["center@example.org", "taopu@example.org"]
    month_start, yesterday, today = (T0 - 31 * 86_400) * US_PER_S, (T0 - 86_400) * US_PER_S, T0 * US_PER_S
    with Ledger(config.ledger_path, readonly=True) as ledger:
        figures = {period: ledger_loss(ledger, start, today) for period, start in (("day", yesterday), ("month", month_start))}
    names = {"changzheng": "长征镇", "taopu": "桃浦镇", DISTRICT: "全区合计"}
    for code in ("cam", "iot"):
        for street, name in names.items():
            line = f"  {name} | {cell(figures['day'][code, street])} | {cell(figures['month'][code, street])}"
            assert line in digests["center@example.org"]
            assert (line in digests["taopu@example.org"]) == (street == "taopu")
    day_lost, day_recovered, _, _ = figures["day"]["cam", "taopu"]
    month_lost, _, _, _ = figures["month"]["cam", "taopu"]
    assert (day_lost, day_recovered) == (12, 1)  # 12 heartbeats of taopu-cam0, one of them late
    assert month_lost == day_lost + 5 * 12  # and Oct 30's: 5 minutes of every other heartbeat of 12 cameras


def ledger_loss(ledger: Ledger, start: int, end: int) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    """(lost, recovered, heartbeats, lost across a monitoring gap) per contract × street and contract
    total, summed from the ledger's rows."""
    out: dict[tuple[str, str], list[int]] = {}
    kinds = {"lost": 0, "recovered": 1, "heartbeats": 2, "lost_across_gap": 3}
    for row in ledger.counts(start, end):
        if row.kind in kinds and row.contract:
            for street in (row.street, DISTRICT):
                out.setdefault((row.contract, street), [0, 0, 0, 0])[kinds[row.kind]] += row.n
    return {k: (v[0], v[1], v[2], v[3]) for k, v in out.items()}


def cell(counts: tuple[int, int, int, int]) -> str:
    lost, recovered, heartbeats, across = counts
    net = lost - across - recovered
    if not heartbeats + max(net, 0) and not net and not across:
        return "—"
    rate = percent(Fraction(max(net, 0), heartbeats + max(net, 0))) if heartbeats + max(net, 0) else "—"
    return f"{net} 条 ({rate})" + (f"，另监测缺口期间未收到 {across} 条" if across else "")


def test_heartbeats_sent_during_a_monitoring_gap_are_not_loss_in_transit(tmp_path, setup):
    """Test that the seq gaps a monitoring gap leaves, closed when each device is next heard (for a
    sensor, well after the first judged loss window), send no loss email: they were sent while the
    collector could not receive, and are counted apart as lost_across_gap."""
    loss = LossConfig(window=180, street_rate=0.02, broker_rate=0.5, min_messages=10)
    _registry, rules_file = setup
    rules_file.write_text(ALERTS_YAML.replace("group_wait: 1m", "group_wait: 10s"))  # the window is short
    counters: dict = {}
    everything = lambda street, i, m: True  # noqa: E731 - sent, never received: the collector is away
    records = [*minutes(0, 60, counters=counters),
               (float(T0 + 60 * MIN), "$ptmon/monitor", "down"),
               *minutes(60, 72, counters=counters, lost=everything),
               (float(T0 + 72 * MIN), "$ptmon/monitor", "up"),
               *minutes(72, 140, counters=counters)]
    with SmtpServer() as smtp:
        config = loss_config(tmp_path, setup, smtp.port, loss)
        collector = restored_collector(config)
        push(collector, sorted(records, key=lambda r: r[0]))
        send_all(config)
        stats = dict(collector.engine.stats)
        crash(collector)
    # 24 cameras × 12 minutes and 24 elevators × 3 heartbeats (60, 65, 70) sent into the gap; the
    # elevators' were closed at 75, after the first loss window since the gap was judged.
    assert stats["lost_across_gap"] == 24 * 12 + 24 * 3 == stats["lost"]
    assert [m for m in smtp.inbox.messages if event(m)["cause"] == "loss"] == []
