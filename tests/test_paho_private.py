"""The paho-mqtt private attributes the collector's source relies on, against the installed paho.

``collector/paho_private.py`` names the two: the source writes a batch of PUBACKs in one go
through ``Client._packet_queue`` and reads a topic that is not UTF-8 from ``MQTTMessage._topic``. Neither is public API, so
pyproject bounds paho-mqtt below its next major version and these tests say at once when an
update changes either (as aiomqtt tests the paho internals it uses).
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ptmon.config import MqttConfig
from ptmon.paho_private import packet_queue, raw_topic
from ptmon.source import MqttSource

from .brokers import MosquittoServer

TIMEOUT = 30.0


def test_packet_queue_takes_command_packet_mid_qos():
    """Test that Client._packet_queue exists with the (command, packet, mid, qos) parameters the source passes."""
    params = list(inspect.signature(mqtt.Client._packet_queue).parameters)
    assert params[:5] == ["self", "command", "packet", "mid", "qos"]
    assert mqtt.PUBACK == 0x40


def test_installed_paho_still_has_the_packet_queue():
    """Test that the installed paho still offers _packet_queue, so the source does not silently fall
    back to one PUBACK per syscall after an upgrade."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    queue = packet_queue(client)
    assert queue is not None and queue.__func__ is mqtt.Client._packet_queue


def test_raw_topic_decodes_a_topic_that_is_not_utf8():
    """Test that raw_topic reads the topic's bytes from the installed paho, replacing the bad byte."""
    message = mqtt.MQTTMessage(mid=1, topic=b"putuo/cam/taopu/\xff/hb")
    assert raw_topic(message) == "putuo/cam/taopu/\ufffd/hb"


def test_message_keeps_the_raw_topic_bytes():
    """Test that MQTTMessage._topic holds the topic's bytes, which the source decodes itself when .topic,
    being strict UTF-8, refuses them."""
    message = mqtt.MQTTMessage(mid=1, topic=b"putuo/cam/taopu/\xff/hb")
    assert message._topic == b"putuo/cam/taopu/\xff/hb"
    with pytest.raises(UnicodeDecodeError):
        _ = message.topic


def _receive(source: MqttSource, count: int) -> tuple[list, tuple[int, list[int]]]:
    """Records taken from the source until ``count`` messages arrived (control records dropped), with the acks."""
    records: list = []
    generation, mids = 0, []
    deadline = time.monotonic() + TIMEOUT
    while sum(1 for r in records if not r[1].startswith("$ptmon/")) < count and time.monotonic() < deadline:
        taken, (generation, new) = source.take()
        records += taken
        mids += new
        time.sleep(0.02)
    return [r for r in records if not r[1].startswith("$ptmon/")], (generation, mids)


def test_acknowledged_through_the_packet_queue_is_not_redelivered(tmp_path: Path, monkeypatch):
    """Test that the source's batch PUBACK (written through _packet_queue, never through client.ack) really
    acknowledges: after a reconnect of the persistent session the broker redelivers only what was not acked."""
    broker = MosquittoServer(tmp_path)
    broker.start()
    config = MqttConfig(port=broker.port, client_id=f"paho-private-{time.monotonic_ns()}", qos=1,
                        topics=("putuo/+/+/+/hb",))
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    try:
        first = MqttSource(config)
        monkeypatch.setattr(first.client, "ack", lambda *a: pytest.fail("fell back to client.ack"))
        first.start()
        assert first.subscribed.wait(TIMEOUT)
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        for n in range(6):
            publisher.publish(f"putuo/cam/taopu/cam{n}/hb", f'{{"seq":{n}}}', qos=1).wait_for_publish(TIMEOUT)
        got, (generation, mids) = _receive(first, 6)
        assert len(got) == 6 and len(mids) == 6
        first.ack((generation, mids[:4]))  # the first four acknowledged, the last two not
        time.sleep(0.5)  # the source's thread writes queued acknowledgements within its loop timeout
        first.stop()

        second = MqttSource(config)
        second.start()
        again, _ = _receive(second, 2)
        time.sleep(0.5)
        again += [r for r in second.take()[0] if not r[1].startswith("$ptmon/")]
        second.stop()
        assert sorted(r[1] for r in again) == ["putuo/cam/taopu/cam4/hb", "putuo/cam/taopu/cam5/hb"]
    finally:
        publisher.loop_stop()
        broker.stop()
