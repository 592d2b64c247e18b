"""The issue's cases through the live collector on a real Mosquitto: implausible counters, a retained
heartbeat redelivered at a restart, a reboot without a boot id, messages lost in transit, and a
broker whose queue is small enough to drop. Each live result equals a replay of what it archived."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ptmon.collect import Collector
from ptmon.config import CollectorConfig, EmailConfig
from ptmon.replay import replay
from ptmon.simulators.live_demo import SimulatedClock
from ptmon.simulators.loopback import free_port
from ptmon.sinks.archive import archive_files

from .brokers import MosquittoServer
from .conftest import HEADER, restored_collector
from .smtp import SmtpServer
from .test_collect import current_minute, make_config, sim_clock
from .test_collect_restarts import wait_until


@pytest.fixture
def registry_file(tmp_path: Path) -> Path:
    lines = [HEADER, "honest,iot,elevator,changshou,scn,c1,gw-1,2026-01-01,",
             "liar,iot,elevator,changshou,scn,c1,gw-1,2026-01-01,"]
    lines += [f"cam{i},cam,face_cam,taopu,scn,c2,gw-2,2026-01-01," for i in range(20)]
    path = tmp_path / "registry.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


class Publisher:
    """A paho publisher at QoS 1 (every publish waits for the broker's PUBACK)."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}")
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def hb(self, contract: str, street: str, device: str, *, retain: bool = False, **payload: object) -> None:
        info = self.client.publish(f"putuo/{contract}/{street}/{device}/hb", json.dumps(payload), qos=1, retain=retain)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@contextmanager
def running(config: CollectorConfig, clock: SimulatedClock) -> Iterator[Collector]:
    """A live collector in a thread of its own until the block ends (then a clean shutdown)."""
    collector = restored_collector(config, clock=clock)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(collector.run(stop),))
    thread.start()
    try:
        wait_until(lambda: collector.source.connected, what="collector connected")
        time.sleep(0.3)  # the SUBACK
        yield collector
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def config_for(tmp_path: Path, registry_file: Path, port: int, **changes: object) -> CollectorConfig:
    config = make_config(tmp_path, registry_file, port)
    return replace(config, **changes) if changes else config


def replayed_csv(config: CollectorConfig, collector: Collector) -> str:
    live = collector.month_results()
    assert live is not None
    again = replay([str(p) for p in archive_files(config.archive_path)], collector.registry, live.start, live.end)
    assert again.csv_text() == live.csv_text()
    return live.csv_text()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoServer]:
    server = MosquittoServer(tmp_path, "sys_interval 1\n")
    server.start()
    yield server
    server.stop()


def test_live_device_cannot_inflate_its_street(tmp_path, registry_file, broker):
    """Test that over MQTT a device sending only read_ok with a new boot each time leaves its street at the
    honest device's 50 %, its messages counted unmatched_success, and that replay agrees."""
    config = config_for(tmp_path, registry_file, broker.port)
    publisher = Publisher(broker.port)
    with running(config, sim_clock(current_minute() - 3600)) as collector:
        for k in range(12):
            publisher.hb("iot", "changshou", "honest", seq=k, boot="h", reads=10 * k, read_ok=5 * k)
            publisher.hb("iot", "changshou", "liar", seq=k, boot=f"b{k}", read_ok=1000)
        wait_until(lambda: collector.engine.stats["heartbeats"] == 24, what="24 heartbeats")
    publisher.close()
    results = collector.month_results()
    assert results is not None
    row = results.row("iot", "changshou", "sensing")
    assert (row.numerator, row.denominator) == (55, 110)
    assert results.engine_stats["unmatched_success"] == 11
    replayed_csv(config, collector)


def test_live_boot_flips_at_the_counter_limit_add_nothing(tmp_path, registry_file, broker):
    """Test that over MQTT a device flipping boot with counters at 2^40 on every message (which wrapped
    Σ reads past int64 before) adds nothing: each claim is beyond any allowance, or beyond the resets a
    day allows."""
    config = config_for(tmp_path, registry_file, broker.port)
    publisher = Publisher(broker.port)
    with running(config, sim_clock(current_minute() - 3600)) as collector:
        for k in range(30):
            publisher.hb("iot", "changshou", "liar", seq=k, boot=f"b{k}", reads=2**40, read_ok=2**40)
        wait_until(lambda: collector.engine.stats["heartbeats"] == 30, what="30 heartbeats")
    publisher.close()
    results = collector.month_results()
    assert results is not None
    row = results.row("iot", "changshou", "sensing")
    assert (row.numerator, row.denominator) == (0, 0)
    stats = results.engine_stats  # resets beyond 24 a day are refused first, the rest for their attempts
    assert stats["resets"] == 29 and stats["too_many_attempts"] + stats["too_many_resets"] == 29
    replayed_csv(config, collector)


def test_live_retained_heartbeat_is_not_counted_again_after_a_restart(tmp_path, registry_file, broker):
    """Test that a heartbeat published retained counts once when it arrives live; after an ordinary collector
    restart the broker's redelivered copy is archived as $ptmon/retained and counts nothing (90/100, not
    190/200), and replaying both archive parts gives the same KPIs."""
    config = config_for(tmp_path, registry_file, broker.port)
    clock = sim_clock(current_minute() - 3600)
    publisher = Publisher(broker.port)
    counters = [{"reads": 100 + round(100 * (k - 1) / 99), "read_ok": 100 + round(90 * (k - 1) / 99)} for k in range(1, 101)]
    with running(config, clock) as collector:
        publisher.hb("iot", "changshou", "honest", retain=True, seq=1, **counters[0])
        for k in range(2, 101):
            publisher.hb("iot", "changshou", "honest", seq=k, **counters[k - 1])
        wait_until(lambda: collector.engine.stats["heartbeats"] == 100, what="100 heartbeats")
    with running(config, clock) as restarted:
        wait_until(lambda: restarted.decoder.rejects["retained"] == 1, what="the retained copy")
    publisher.close()
    results = restarted.month_results()
    assert results is not None
    row = results.row("iot", "changshou", "sensing")
    assert (row.numerator, row.denominator) == (90, 100)
    assert results.rejects["retained"] == 1 and "resets" not in results.engine_stats
    assert restarted.engine.stats["heartbeats"] == 100
    replayed_csv(config, restarted)


def test_live_reboot_without_boot_id_stays_accepted(tmp_path, registry_file, broker):
    """Test that a lift whose seq restarts at 1 without a boot id has every heartbeat accepted live (none
    stale) and its counts carried across the reset."""
    config = config_for(tmp_path, registry_file, broker.port)
    publisher = Publisher(broker.port)
    with running(config, sim_clock(current_minute() - 3600)) as collector:
        for k in range(40):
            seq = k + 1 if k < 24 else k - 23
            publisher.hb("iot", "changshou", "honest", seq=seq, reads=2 * seq, read_ok=seq)
        wait_until(lambda: collector.engine.stats["heartbeats"] == 40, timeout=10, what="40 heartbeats accepted")
    publisher.close()
    assert (collector.engine.stats["stale"], collector.engine.stats["resets"]) == (0, 1)
    results = collector.month_results()
    assert results is not None
    row = results.row("iot", "changshou", "sensing")
    assert (row.numerator, row.denominator) == (23 + 16, 2 * 23 + 2 * 16)  # within an elevator's burst (300)
    replayed_csv(config, collector)


def test_live_reset_on_another_devices_topic_cannot_pass_its_street(tmp_path, registry_file, broker):
    """Test that over MQTT one message on a lift's topic claiming a day of attempts, all good, with a new boot,
    is refused (so is the lift's own boot coming back with its counts since boot) and changshou's sensing stays
    its honest 50 % (a day saved up let it pass before), live and in replay alike."""
    config = config_for(tmp_path, registry_file, broker.port)
    publisher = Publisher(broker.port)
    with running(config, sim_clock(current_minute() - 3600)) as collector:
        for k in range(1, 13):
            publisher.hb("iot", "changshou", "honest", seq=k, boot="h", reads=100_000 + 10 * k, read_ok=100_000 + 5 * k)
            if k == 6:
                publisher.hb("iot", "changshou", "honest", seq=1, boot="evil", reads=86_400, read_ok=86_400)
        wait_until(lambda: collector.engine.stats["heartbeats"] == 13, what="13 heartbeats")
    publisher.close()
    results = collector.month_results()
    assert results is not None
    row = results.row("iot", "changshou", "sensing")
    assert row.value == Fraction(1, 2) and (row.numerator, row.denominator) == (5 * 10, 10 * 10)  # 11 deltas, 1 refused
    assert results.engine_stats["too_many_attempts"] == 2
    replayed_csv(config, collector)


def test_live_forged_seq_and_future_ts_hide_no_heartbeat(tmp_path, registry_file, broker):
    """Test that over MQTT one message with a lift's boot, its seq + 64 and a ts in the year 2223 hides none of
    the lift's own messages: every one is a heartbeat (none stale), the ts is counted future_ts, the jump
    seq_suspect, the loss it claimed is all recovered, its counts all arrive, and replay agrees."""
    config = config_for(tmp_path, registry_file, broker.port)
    publisher = Publisher(broker.port)
    start = current_minute() - 3600
    with running(config, sim_clock(start)) as collector:
        for k in range(1, 76):
            publisher.hb("iot", "changshou", "honest", seq=k, boot="v1", ts=start + k, reads=1000 + 2 * k, read_ok=1000 + k)
            if k == 7:
                publisher.hb("iot", "changshou", "honest", seq=71, boot="v1", ts=8_000_000_000)
        wait_until(lambda: collector.engine.stats["heartbeats"] == 76, what="76 heartbeats")
    publisher.close()
    stats = collector.engine.stats
    assert (stats["future_ts"], stats["seq_suspect"], stats["stale"], stats["duplicate"]) == (1, 1, 0, 0)
    assert stats["lost"] == stats["recovered"] == 63
    results = collector.month_results()
    assert results is not None
    row = results.row("iot", "changshou", "sensing")
    assert (row.numerator, row.denominator) == (74, 2 * 74)  # seq 1 is the baseline; every later count arrives
    replayed_csv(config, collector)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def metric(text: str, name: str, **labels: str) -> float | None:
    """A sample's value in a /metrics text, None when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and (match[1] or "") == wanted:
            return float(match[2])
    return None


def test_live_loss_is_counted_and_exported(tmp_path, registry_file, broker):
    """Test that gaps in seq are counted lost and a late message recovered (and heard: a heartbeat), live and in
    replay alike, and that /metrics shows them per contract × street with the loss ratio of the window."""
    port = free_port()
    config = config_for(tmp_path, registry_file, broker.port, metrics_listen=f"127.0.0.1:{port}")
    publisher = Publisher(broker.port)
    with running(config, sim_clock(current_minute() - 3600)) as collector:
        for seq in (1, 2, 5, 4, 6, 8, 9, 13, 14):  # 3, 7, 10-12 lost; 4 arrives late
            publisher.hb("cam", "taopu", "cam0", seq=seq, boot="a", ts=1_700_000_000 + 60 * seq)
        wait_until(lambda: collector.engine.stats["heartbeats"] == 9, what="9 heartbeats")
        wait_until(lambda: (metric(scrape(port), "ptmon_mqtt_loss_ratio", contract="cam", street="taopu") or 0) > 0,
                   what="a sample with the loss ratio")
        text = scrape(port)
    publisher.close()
    assert (collector.engine.stats["lost"], collector.engine.stats["recovered"]) == (6, 1)
    assert metric(text, "ptmon_mqtt_lost_messages_total", contract="cam", street="taopu") == 6
    assert metric(text, "ptmon_mqtt_recovered_messages_total", contract="cam", street="taopu") == 1
    assert metric(text, "ptmon_mqtt_loss_ratio", contract="cam", street="taopu") == pytest.approx(5 / 14)
    assert metric(text, "ptmon_mqtt_lost_messages_total", contract="iot", street="taopu") == 0
    replayed_csv(config, collector)


def test_broker_queue_overflow_is_reported_as_loss(tmp_path, registry_file):
    """Test that with max_queued_messages 100 and the collector away while 20 cameras publish 50 heartbeats
    each at QoS 1 to its persistent session, the broker keeps 100 and drops the rest, and the collector
    reports that loss within 5 % of the true number (from the seq gaps), shows the broker's $SYS drop count,
    and emails the district (through a real SMTP server) one broker-drop alert naming the settings to raise;
    the loss it explains (and that the monitoring gap explains) is not emailed apart."""
    broker = MosquittoServer(tmp_path, "sys_interval 1\nmax_queued_messages 100\n")
    broker.start()
    smtp = SmtpServer().start()
    port = free_port()
    email = EmailConfig(host="127.0.0.1", port=smtp.port, security="none", sender="ptmon@example.org", poll_interval=0.2)
    config = config_for(tmp_path, registry_file, broker.port, metrics_listen=f"127.0.0.1:{port}", email=email)
    clock = sim_clock(current_minute() - 3600)
    cameras = [f"cam{i}" for i in range(20)]
    publisher = Publisher(broker.port)
    try:
        with running(config, clock):
            pass  # subscribed with a persistent session, then away
        for seq in range(1, 51):
            for camera in cameras:
                publisher.hb("cam", "taopu", camera, seq=seq)
        with running(config, clock) as collector:
            wait_until(lambda: collector.engine.stats["heartbeats"] >= 100, what="the queued heartbeats")
            for camera in cameras:
                publisher.hb("cam", "taopu", camera, seq=51)  # the next ones show the gaps
            wait_until(lambda: collector.engine.stats["heartbeats"] >= 120, what="the heartbeats after")
            wait_until(lambda: any(m["Subject"].startswith("【代理丢弃】") for m in smtp.inbox.messages),
                       what="the broker-drop email")
            text = scrape(port)
            time.sleep(2)  # minutes of engine time: no second one
    finally:
        publisher.close()
        smtp.stop()
        broker.stop()
    received = collector.engine.stats["heartbeats"] - len(cameras)  # of the burst
    true_lost = 50 * len(cameras) - received
    reported = collector.engine.stats["lost"] - collector.engine.stats["recovered"]
    assert true_lost >= 800  # the broker did drop
    assert abs(reported - true_lost) <= 0.05 * true_lost, (reported, true_lost)
    assert metric(text, "ptmon_broker_dropped_seen_messages_total") == pytest.approx(true_lost, rel=0.05)
    assert (metric(text, "ptmon_broker_dropped_messages_total") or 0) >= 800
    # The cameras stop after the burst, so the district may also go silent (a pipeline email): nothing else.
    # no loss email (the drops explain it); the daily digest may fall due under a loaded machine's clock
    assert {m["Subject"][:6] for m in smtp.inbox.messages} <= {"【代理丢弃】", "【全区失联】", "【每日简报】"}
    (message,) = [m for m in smtp.inbox.messages if m["Subject"].startswith("【代理丢弃】")]
    assert message["To"] == "ops@ptcenter.example"  # the shipped rules/alerts.yaml's district recipients
    assert re.fullmatch(r"【代理丢弃】MQTT 代理丢弃了 \d+ 条消息：请调大 max_queued_messages / max_queued_bytes",
                        message["Subject"]), message["Subject"]
    dropped = int(re.search(r"丢弃了 (\d+) 条", message["Subject"]).group(1))
    assert dropped == pytest.approx(true_lost, rel=0.05)
    assert collector.metrics.alerts.labels("broker_drops", "firing")._value.get() == 1
    assert collector.metrics.alerts.labels("loss", "firing")._value.get() == 0
