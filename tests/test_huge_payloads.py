"""A publisher's huge payload, through a real Mosquitto: kept out of the archive, still counted.

Mosquitto relays payloads of up to 256 MB by default. Reading an archive line takes about 40
bytes of memory per byte of the longest line, so one such message would make every later replay
of its month need gigabytes. The source cuts a payload longer than the largest ``max_payload``
allowed to one byte past it: ``oversize`` for every configuration, live and in replay alike.
"""

from __future__ import annotations

import time
from itertools import pairwise
from pathlib import Path

import paho.mqtt.client as mqtt

from ptmon import source as source_module
from ptmon.archive import ArchiveReader, write_archive
from ptmon.config import PAYLOAD_CEILING, MqttConfig
from ptmon.decode import Decoder
from ptmon.metrics import Metrics
from ptmon.replay import Replayer, replay
from ptmon.source import MqttSource
from ptmon.timebase import seconds_to_us

from .brokers import MosquittoServer
from .conftest import T0, hb, make_registry

TIMEOUT = 30.0
TOPIC = "putuo/cam/taopu/c1/hb"


def _received(source: MqttSource, count: int) -> list:
    records: list = []
    deadline = time.monotonic() + TIMEOUT
    while len(records) < count and time.monotonic() < deadline:
        records += [r for r in source.take()[0] if not r[1].startswith("$ptmon/monitor")]
        time.sleep(0.02)
    return records


def test_a_huge_payload_is_archived_cut_and_rejected_as_oversize_live_and_in_replay(tmp_path: Path, rules):
    """Test that 3 MB payloads (plain, cut inside a multi-byte character, retained) reach the
    archive cut to PAYLOAD_CEILING + 1 bytes, a prefix of what was sent, and that the largest
    max_payload allowed rejects them as oversize both live and when the archive is replayed,
    while a normal heartbeat beside them is accepted."""
    broker = MosquittoServer(tmp_path)
    broker.start()
    source = MqttSource(MqttConfig(port=broker.port, client_id=f"huge-{time.monotonic_ns()}", qos=1,
                                   topics=("putuo/+/+/+/hb",)))
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    digits = b'{"seq":1,"pad":"' + b"7" * 3_000_000 + b'"}'
    ideographs = "{\"pad\": \"" + "普" * (PAYLOAD_CEILING // 3 + 5) + "\"}"  # 3-byte characters: the cut splits one
    normal = hb(T0, "c1", seq=2, faces=1, face_ok=1)[2]
    try:
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        publisher.publish(TOPIC, digits, qos=1, retain=True).wait_for_publish(TIMEOUT)  # sent on subscribe
        source.start()
        assert source.subscribed.wait(TIMEOUT)
        for payload in (digits, ideographs.encode(), normal.encode()):
            publisher.publish(TOPIC, payload, qos=1).wait_for_publish(TIMEOUT)
        got = _received(source, 4)
    finally:
        publisher.loop_stop()
        source.stop()
        broker.stop()

    assert len(got) == 4
    retained, plain, cut_char, heartbeat = got
    assert plain[2] == digits[: PAYLOAD_CEILING + 1].decode()
    assert cut_char[2].encode()[: PAYLOAD_CEILING - 2] == ideographs.encode()[: PAYLOAD_CEILING - 2]
    assert len(cut_char[2].encode()) > PAYLOAD_CEILING and cut_char[2].endswith("\ufffd")
    assert heartbeat[2] == normal
    assert retained[1] == "$ptmon/retained" and len(retained[2]) < PAYLOAD_CEILING + 100

    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    records = [(T0 + k, topic, payload) for k, (_, topic, payload) in enumerate(got)]
    live = Decoder(registry, max_payload=PAYLOAD_CEILING)
    live.decode(records)
    assert (live.accepted, dict(live.rejects)) == (1, {"oversize": 2, "retained": 1})

    archive = tmp_path / "ptmon-2026-11-01.jsonl.gz"
    write_archive(archive, records)
    longest = max(len(r[2]) for r in ArchiveReader([archive]))
    assert longest < PAYLOAD_CEILING + 100  # the retained record wraps its payload with its topic
    results = replay([archive], registry, int(T0 * 1e6) - 60_000_000, int(T0 * 1e6) + 600_000_000)
    assert results.rejects.get("oversize") == 2


def test_a_qos0_flood_past_the_backlog_budget_is_dropped_counted_and_a_monitoring_gap(tmp_path: Path, rules,
                                                                                       monkeypatch) -> None:
    """Test that QoS 0 payloads arriving faster than the collector takes them stop being held once
    their memory passes the backlog budget: the rest are dropped and counted (attribute, metric),
    the time of dropping is archived as a down/up gap, so a replay counts it as unobserved, and
    messages are held again once the backlog was taken."""
    monkeypatch.setattr(source_module, "QOS0_BACKLOG_BYTES", 4 * 2**20)
    broker = MosquittoServer(tmp_path)
    broker.start()
    metrics = Metrics(process=False)
    source = MqttSource(MqttConfig(port=broker.port, client_id=f"flood-{time.monotonic_ns()}", qos=0,
                                   topics=("putuo/+/+/+/hb",)), metrics)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    big = b'{"pad":"' + b"x" * PAYLOAD_CEILING + b'"}'
    flood = 12
    try:
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        source.start()
        assert source.subscribed.wait(TIMEOUT)
        for _ in range(flood):
            publisher.publish(TOPIC, big, qos=0).wait_for_publish(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while source.received + source.dropped < flood and time.monotonic() < deadline:
            time.sleep(0.02)
        flooded, _ = source.take()
        publisher.publish(TOPIC, hb(T0, "c1", seq=2, faces=1, face_ok=1)[2], qos=0).wait_for_publish(TIMEOUT)
        after: list = []
        while not any(r[1] == TOPIC for r in after) and time.monotonic() < deadline:
            after += source.take()[0]
            time.sleep(0.02)
    finally:
        publisher.loop_stop()
        source.stop()
        broker.stop()

    held = [r for r in flooded if r[1] == TOPIC]
    assert len(held) == 3 and source.dropped == flood - 3  # a 4th 1 MiB + 1 payload would pass 4 MiB
    assert metrics.registry.get_sample_value("ptmon_mqtt_dropped_messages_total") == flood - 3
    controls = [(r[1], r[2]) for r in flooded if r[1] != TOPIC]
    assert controls == [("$ptmon/monitor", "up"), ("$ptmon/monitor", "down")]
    assert [(r[1], r[2]) for r in after][:1] == [("$ptmon/monitor", "up")]  # observing again from the take
    assert after[1:] and after[-1][1] == TOPIC  # and held again

    down, up = flooded[-1][0], after[0][0]
    archive = tmp_path / "ptmon-2026-11-01.jsonl.gz"
    write_archive(archive, flooded + after)
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    minute = int(flooded[0][0]) // 60 * 60
    replayer = Replayer(registry, (minute - 60) * 1_000_000, (minute + 600) * 1_000_000, (), None)
    replayer.feed(ArchiveReader([archive]), None)
    observed = [tuple(span) for span in replayer.engine.spans]
    assert [(a, b) for (_, a), (b, _) in pairwise(observed)] == [(seconds_to_us(down), seconds_to_us(up))]


def test_a_broker_lost_while_dropping_keeps_the_gap_open_until_it_is_back(tmp_path: Path, monkeypatch) -> None:
    """Test that when the connection drops while QoS 0 messages are being dropped, taking the backlog
    does not end the gap (the monitor still observes nothing): the next 'up' is the reconnect's."""
    monkeypatch.setattr(source_module, "QOS0_BACKLOG_BYTES", 4 * 2**20)
    broker = MosquittoServer(tmp_path)
    broker.start()
    source = MqttSource(MqttConfig(port=broker.port, client_id=f"lost-{time.monotonic_ns()}", qos=0,
                                   topics=("putuo/+/+/+/hb",)))
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    big = b'{"pad":"' + b"x" * PAYLOAD_CEILING + b'"}'
    deadline = time.monotonic() + TIMEOUT
    try:
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        source.start()
        assert source.subscribed.wait(TIMEOUT)
        for _ in range(8):
            publisher.publish(TOPIC, big, qos=0).wait_for_publish(TIMEOUT)
        while source.received + source.dropped < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        publisher.loop_stop()
        broker.stop()
        while source.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        while_away = source.take()[0]
        time.sleep(0.2)
        while_away += source.take()[0]
        broker.start()
        back: list = []
        while not back and time.monotonic() < deadline:
            back += source.take()[0]
            time.sleep(0.05)
    finally:
        source.stop()
        broker.stop()

    assert source.dropped > 0
    controls = [r[2] for r in while_away if r[1] == "$ptmon/monitor"]
    assert controls == ["up", "down", "down"]  # connect, the drops' gap, the disconnect: no up while away
    assert [(r[1], r[2]) for r in back] == [("$ptmon/monitor", "up")]
