"""The MQTT source: paho-mqtt in a thread of its own, messages handed over in batches.

Why paho and not aiomqtt's ``async for``: measured here, an aiomqtt loop reads about 13,000
messages/s against paho's 23,000–33,000, and aiomqtt acknowledges a QoS 1 message as soon as
it is queued in memory. paho's manual acknowledgement lets the collector acknowledge a
message only once it is in the archive, so a crash loses nothing the broker will not
redeliver.

The paho callback does the least it can: stamp the receive time, decode the payload to text
and append to a list. The collector takes the list whole (:meth:`MqttSource.take`) and
later acknowledges it (:meth:`MqttSource.ack`); acknowledgements are sent from this
module's thread, the only one that touches the connection.

Connecting and reconnecting is the loop in :meth:`MqttSource._run`: capped exponential
backoff with jitter, re-subscribe on every connect. Each connect and disconnect is handed
over in the message stream as a ``$ptmon/monitor`` control record (``up`` / ``down``), so the
engine and the archive see exactly when the monitor could observe.

A message delivered with the retain flag is the broker's stored copy, sent again on every
subscribe: it is handed over as a ``$ptmon/retained`` record (archive.py), which the decoder
counts as ``retained`` and never as a heartbeat — except a gateway status, which is retained
by design. A payload longer than the largest ``max_payload`` allowed (1 MiB) is cut to one byte
past it: it is ``oversize`` for every configuration either way, and no publisher can put a line
of hundreds of MB into the archive, which every later replay of the month would have to hold
in memory (~40 bytes per byte of its longest line). The broker's ``$SYS`` statistics
(brokerstats.py) go to :attr:`MqttSource.broker_stats`, not into the stream.
"""

from __future__ import annotations

import logging
import random
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .archive import MONITOR_TOPIC, Record, retained_record
from .brokerstats import SYS_FILTER, SYS_PREFIX, BrokerStats
from .config import PAYLOAD_CEILING, MqttConfig
from .metrics import Metrics
from .paho_private import packet_queue, raw_topic

log = logging.getLogger(__name__)

# QoS 0 has no flow control: past either bound the source drops them, counted, as a monitoring gap
QOS0_BACKLOG_LIMIT = 2_000_000  # records waiting to be taken
QOS0_BACKLOG_BYTES = 512 * 2**20  # memory of their payload strings (a flood of 1 MiB payloads reaches it first)
LOOP_TIMEOUT = 0.05  # seconds paho waits for the socket; also how late a queued acknowledgement may go out


class MqttSource:
    """Subscribes to the configured topics and hands over what arrives, in arrival order."""

    def __init__(self, config: MqttConfig, metrics: Metrics | None = None, *, wakeup: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.wakeup = wakeup or (lambda: None)
        self.connected = False
        self.connects = 0
        self.dropped = 0  # QoS 0 messages dropped: the backlog was full
        self.received = 0  # messages handed over since start (control records not counted)
        self.subscribed = threading.Event()  # set once the broker granted the subscription
        self.last_error: str | None = None
        self.broker_stats = BrokerStats() if config.broker_stats else None
        self._records: list[Record] = []
        self._backlog_bytes = 0  # of the payload strings in ``_records``
        self._shedding = False  # dropping QoS 0 messages: a monitoring gap is open (a "down" handed over)
        self._dropped_told = 0
        self._mids: list[int] = []
        self._generation = 0  # bumped on every connect: acknowledgements belong to one connection
        self._acks: list[tuple[int, list[int]]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.client = self._client()

    # --- the collector's side -----------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt-source", daemon=True)
        self._thread.start()

    def take(self) -> tuple[list[Record], tuple[int, list[int]]]:
        """Everything received since the last call, and the (connection, message ids) to acknowledge."""
        with self._lock:
            records, self._records = self._records, []
            mids, self._mids = self._mids, []
            self._backlog_bytes = 0
            if self._shedding:  # room again: observation resumes now
                self._end_gap(self.clock())
            dropped = self.dropped
        if dropped > self._dropped_told:
            log.warning("mqtt: %d QoS 0 messages dropped, %d in all: the collector's backlog was full (%d messages or "
                        "%d MiB of payloads); the time they were dropped is a monitoring gap", dropped - self._dropped_told,
                        dropped, QOS0_BACKLOG_LIMIT, QOS0_BACKLOG_BYTES >> 20)
            self._dropped_told = dropped
        return records, (self._generation, mids)

    def pending(self) -> int:
        return len(self._records)

    def ack(self, acks: tuple[int, list[int]]) -> None:
        """Acknowledge messages once they are safe; sent by the source's thread within ``LOOP_TIMEOUT``."""
        if acks[1]:
            with self._lock:
                self._acks.append(acks)

    def stop(self, timeout: float = 5.0) -> None:
        """Send the outstanding acknowledgements, disconnect cleanly and end the thread."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # --- the connection ----------------------------------------------------------------

    def _client(self) -> mqtt.Client:
        c = self.config
        v5 = c.protocol == "5"
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=c.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else not c.persistent_session,
            manual_ack=c.qos > 0,
            reconnect_on_failure=False,  # reconnecting is our loop's job
        )
        if c.username is not None:
            client.username_pw_set(c.username, c.password)
        if c.tls is not None:
            context = ssl.create_default_context(cafile=str(c.tls.ca_file) if c.tls.ca_file else None)
            if c.tls.cert_file is not None:
                context.load_cert_chain(str(c.tls.cert_file), str(c.tls.key_file) if c.tls.key_file else None)
            if c.tls.insecure:
                context.check_hostname = False
            client.tls_set_context(context)
        client.max_inflight_messages_set(c.receive_maximum)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _connect_properties(self) -> Properties | None:
        if self.config.protocol != "5":
            return None
        props = Properties(PacketTypes.CONNECT)
        if self.config.persistent_session:
            # Without an expiry an MQTT 5 broker drops the session as soon as we disconnect.
            props.SessionExpiryInterval = self.config.session_expiry
        props.ReceiveMaximum = self.config.receive_maximum
        return props

    def _run(self) -> None:
        delay = self.config.reconnect_min
        first = True
        while not self._stopping.is_set():
            try:
                if first:
                    clean_start: Any = (not self.config.persistent_session if self.config.protocol == "5"
                                        else mqtt.MQTT_CLEAN_START_FIRST_ONLY)
                    self.client.connect(self.config.host, self.config.port, self.config.keepalive,
                                        clean_start=clean_start, properties=self._connect_properties())
                    first = False
                else:
                    self.client.reconnect()
            except (OSError, ssl.SSLError, ValueError) as exc:
                self._note_error(f"cannot connect to {self.config.host}:{self.config.port}: {exc}")
            else:
                connects = self.connects
                self._serve()
                if self.connects > connects:
                    delay = self.config.reconnect_min  # it was up: start the backoff over
                self._set_disconnected()
            if self._stopping.is_set():
                break
            pause = delay * random.uniform(0.5, 1.0)  # jitter: a district of collectors must not reconnect in step
            log.info("reconnecting to the broker in %.1f s", pause)
            self._stopping.wait(pause)
            delay = min(self.config.reconnect_max, delay * 2)
        self._shutdown()

    def _serve(self) -> None:
        """Run the connection until it drops or we are asked to stop."""
        while not self._stopping.is_set():
            rc = self.client.loop(timeout=LOOP_TIMEOUT)
            self._send_acks()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                if rc != mqtt.MQTT_ERR_NO_CONN or self.connected:
                    self._note_error(f"connection lost: {mqtt.error_string(rc)}")
                return

    def _shutdown(self) -> None:
        if self.connected:
            self._send_acks()
            self.client.loop(timeout=LOOP_TIMEOUT)
            self.client.disconnect()
            self.client.loop(timeout=LOOP_TIMEOUT)
        self._set_disconnected()

    def _send_acks(self) -> None:
        with self._lock:
            acks, self._acks = self._acks, []
        for generation, mids in acks:
            if generation != self._generation or not self.connected:
                continue  # from an earlier connection: the broker redelivers those
            self._puback(mids)

    def _puback(self, mids: list[int]) -> None:
        """Acknowledge a batch in one write. ``client.ack`` sends each PUBACK with a syscall of its
        own (bench/ingest.py: 17,600 → 21,500 msg/s with one write per batch); the bytes are the
        same: 0x40, length 2, packet id (a success PUBACK in MQTT 3.1.1 and 5 alike)."""
        queue = packet_queue(self.client)
        if queue is None:  # a paho without it: one by one
            for mid in mids:
                self.client.ack(mid, 1)
            return
        queue(mqtt.PUBACK, b"".join([b"\x40\x02" + mid.to_bytes(2, "big") for mid in mids]), 0, 0)

    def _note_error(self, message: str) -> None:
        if message != self.last_error:
            log.warning("mqtt: %s", message)
        self.last_error = message

    # --- paho callbacks (run in the source's thread) -----------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._note_error(f"broker refused the connection: {reason}")
            client.disconnect()
            return
        with self._lock:
            self._generation += 1
            self._records.append((self.clock(), MONITOR_TOPIC, "up"))
        self.connected = True
        self.connects += 1
        self.last_error = None
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(1)
            if self.connects > 1:
                self.metrics.mqtt_reconnects.inc()
        log.info("connected to %s:%d (session present: %s)", self.config.host, self.config.port, flags.session_present)
        topics = [(topic, self.config.qos) for topic in self.config.topics]
        if self.broker_stats is not None:
            topics.append((SYS_FILTER, 0))  # published at QoS 0 anyway: nothing to acknowledge
        client.subscribe(topics)
        self.wakeup()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            self._note_error(f"subscription refused: {', '.join(refused)} (topics {', '.join(self.config.topics)})")
        else:
            log.info("subscribed to %s", ", ".join(self.config.topics))
            self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._set_disconnected()

    def _set_disconnected(self) -> None:
        if not self.connected:
            return
        self.connected = False
        with self._lock:
            self._shedding = False  # this down holds for the drops' gap too: the next connect's up ends it
            self._records.append((self.clock(), MONITOR_TOPIC, "down"))
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(0)
        self.wakeup()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received = self.clock()
        payload = message.payload[: PAYLOAD_CEILING + 1]  # oversize under every max_payload either way
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            # Archived as text; the replacement is what both the live decoder and a replay see.
            text = payload.decode("utf-8", "replace")
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = raw_topic(message)
        if topic.startswith(SYS_PREFIX) and message.qos == 0:
            if self.broker_stats is not None:
                self.broker_stats.update(topic, text, received)
            return
        record = (retained_record(received, topic, text) if message.retain and not _gateway_status(topic)
                  else (received, topic, text))
        size = sys.getsizeof(record[2])
        with self._lock:
            if message.qos:
                self._mids.append(message.mid)
            elif len(self._records) >= QOS0_BACKLOG_LIMIT or self._backlog_bytes + size > QOS0_BACKLOG_BYTES:
                self._drop(received)
                return
            if self._shedding:  # a QoS 1 message is never dropped: observing it ends the gap
                self._end_gap(received)
            self._records.append(record)
            self._backlog_bytes += size
            self.received += 1
            first = len(self._records) == 1
        if first:
            self.wakeup()

    def _drop(self, received: float) -> None:
        """Drop a QoS 0 message (the lock held): a gap opens, so the devices whose heartbeats are lost
        here are not counted offline for the monitor's own overload."""
        if not self._shedding:
            self._records.append((received, MONITOR_TOPIC, "down"))
            self._shedding = True
        self.dropped += 1
        if self.metrics is not None:
            self.metrics.mqtt_dropped.inc()

    def _end_gap(self, t: float) -> None:
        self._records.append((t, MONITOR_TOPIC, "up"))
        self._shedding = False


def _gateway_status(topic: str) -> bool:
    """``putuo/gw/{gateway}/status``: retained by design (the gateway's Last Will), a status all the same."""
    return topic.startswith("putuo/gw/") and topic.endswith("/status") and topic.count("/") == 3
