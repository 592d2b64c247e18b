"""The two places the MQTT source reaches into paho-mqtt's privates, named and in one module.

Neither is public API, so pyproject bounds paho-mqtt below its next major version and
tests/test_paho_private.py checks both against the installed paho (as aiomqtt tests the paho
internals it uses): an upgrade that renames or reshapes either fails those tests at once.
Checked on paho-mqtt 2.2.0, where ``Client._packet_queue(command, packet, mid, qos, info=None)``
queues raw packet bytes and ``MQTTMessage._topic`` holds the topic's bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

PacketQueue = Callable[[int, bytes, int, int], Any]


def packet_queue(client: mqtt.Client) -> PacketQueue | None:
    """paho's ``Client._packet_queue``: queues raw packet bytes for the network loop to write.

    The source writes a whole batch of PUBACKs through it in one write (``client.ack`` makes a
    syscall per message). None when the installed paho has no such method: the caller then
    acknowledges one by one through the public ``client.ack``, slower but the same bytes.
    """
    return getattr(client, "_packet_queue", None)


def raw_topic(message: mqtt.MQTTMessage) -> str:
    """The topic of a message whose topic is not UTF-8 (``message.topic`` raises then), with
    U+FFFD for the bad bytes, read from paho's ``MQTTMessage._topic``.

    When a paho has no ``_topic``, the topic is ``""``: the decoder counts such a message as
    ``bad_topic``, as it would the replaced one, so nothing is lost but the topic's text.
    """
    topic = getattr(message, "_topic", b"")
    return topic.decode("utf-8", "replace") if isinstance(topic, (bytes, bytearray)) else ""
