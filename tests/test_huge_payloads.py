"""A publisher's huge payload, through a real Mosquitto: kept out of the archive, still counted.

Mosquitto relays payloads of up to 256 MB by default. Reading an archive line takes about 40
bytes of memory per byte of the longest line, so one such message would make every later replay
of its month need gigabytes. The source cuts a payload longer than the largest ``max_payload``
allowed to one byte past it: ``oversize`` for every configuration, live and in replay alike.
"""

from __future__ import annotations

import time
from pathlib import Path

import paho.mqtt.client as mqtt

from ptmon.archive import ArchiveReader, write_archive
from ptmon.config import PAYLOAD_CEILING, MqttConfig
from ptmon.decode import Decoder
from ptmon.replay import replay
from ptmon.source import MqttSource

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
