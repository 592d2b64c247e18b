"""The simulator's gateway link: against a real Mosquitto (restarted under it), and a scripted broker
that shows exactly what goes over the wire on a reconnect."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ptmon.simulators.link import BrokerAddress, Link, LinkError, as_duplicate, publish_packet
from ptmon.simulators.loopback import free_port

from .brokers import MosquittoServer, Subscriber, mosquitto


@pytest.fixture(scope="module")
def broker_port(tmp_path_factory):
    with mosquitto(tmp_path_factory.mktemp("mqtt")) as port:
        yield port


def address(port: int) -> BrokerAddress:
    return BrokerAddress.parse(f"mqtt://127.0.0.1:{port}")


@pytest.mark.parametrize("qos", [0, 1])
def test_link_publishes_every_message(broker_port, qos):
    """Test that a batch published over a link reaches a subscriber complete, QoS 0 and 1, and that a clean
    close waits for the broker's acknowledgements."""
    sub = Subscriber(broker_port, f"putuo/t{qos}/#")

    async def publish() -> Link:
        link = Link(address(broker_port), f"gw-q{qos}", qos=qos)
        await link.connect()
        for batch in range(10):
            link.publish([(f"putuo/t{qos}/d{i}/hb", b'{"seq":%d}' % batch) for i in range(500)])
            await link.drain()
        assert await link.close(settle_timeout=10) == 0
        return link

    link = asyncio.run(publish())
    got = sub.wait_for(5000)
    sub.close()
    assert len(got) == 5000 and link.sent == link.written == 5000
    assert link.acked == (5000 if qos else 0)


def test_killed_link_fires_last_will_and_closed_one_does_not(broker_port):
    """Test that kill() makes the broker publish the gateway's Will, and a clean close() does not."""
    sub = Subscriber(broker_port, "putuo/gw/+/status")

    async def run() -> None:
        links = {}
        for name in ("gw-dies", "gw-leaves"):
            links[name] = Link(address(broker_port), name, will=(f"putuo/gw/{name}/status", b"offline", 1, True))
            await links[name].connect()
            links[name].publish([(f"putuo/gw/{name}/status", b"online")], retain=True)
            await links[name].drain()
        await asyncio.sleep(0.2)
        links["gw-dies"].kill()
        await links["gw-leaves"].close()
        await asyncio.sleep(0.5)
        assert links["gw-dies"].state == "killed" and not links["gw-dies"].accepting  # no reconnect after a kill

    asyncio.run(run())
    got = sub.quiet(0.5)
    sub.close()
    assert ("putuo/gw/gw-dies/status", b"offline", False) in got
    assert [m for m in got if m[0] == "putuo/gw/gw-leaves/status"] == [("putuo/gw/gw-leaves/status", b"online", False)]


def test_refused_connection_says_why(tmp_path):
    """Test that a broker refusing the client gives a LinkError naming the reason."""
    with mosquitto(tmp_path, anonymous=False) as port:
        async def run() -> None:
            await Link(BrokerAddress.parse(f"mqtt://nobody:wrong@127.0.0.1:{port}"), "gw-x").connect()

        with pytest.raises(LinkError, match=r"not authorised|bad user name"):
            asyncio.run(run())


def test_broker_url_parsing():
    """Test that broker URLs parse, with TLS implied by mqtts and a clear error otherwise."""
    a = BrokerAddress.parse("mqtts://u:p@example:8884")
    assert (a.host, a.port, a.tls, a.username, a.password) == ("example", 8884, True, "u", "p")
    assert BrokerAddress.parse("localhost").port == 1883
    with pytest.raises(ValueError, match=r"mqtt://\[user\[:password\]@\]host:port"):
        BrokerAddress.parse("http://x")
    with pytest.raises(ValueError) as error:
        BrokerAddress.parse("http://u:hunter2@x")
    assert "hunter2" not in str(error.value) and "http://***@x" in str(error.value)
    assert "hunter2" not in repr(BrokerAddress.parse("mqtt://u:hunter2@x"))
    assert BrokerAddress.parse("mqtt://us%40er:p%3Aw@x").password == "p:w"  # percent-decoded


def test_duplicate_flag_is_the_only_difference():
    """Test that a resent PUBLISH differs from the original only in the DUP bit of its first byte."""
    packet = publish_packet("putuo/iot/taopu/d1/hb", b'{"seq":1}', qos=1, retain=True, packet_id=513)
    again = as_duplicate(packet)
    assert again[0] == packet[0] | 0x08 and again[1:] == packet[1:]
    assert again == publish_packet("putuo/iot/taopu/d1/hb", b'{"seq":1}', qos=1, retain=True, packet_id=513, dup=True)


# --- a scripted broker: what the link writes after the connection drops ---------------------------


class ScriptedBroker:
    """A TCP server speaking just enough MQTT: CONNACK, then acknowledges ``ack_first`` PUBLISHes of each
    connection before closing it (``None``: acknowledge everything, stay open). Records every packet."""

    def __init__(self, port: int, ack_plan: list[int | None]) -> None:
        self.port, self.ack_plan = port, ack_plan
        self.connects: list[int] = []  # CONNECT flags per connection
        self.publishes: list[list[tuple[int, int, bytes]]] = []  # per connection: (flags nibble, packet id, payload)
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _packet(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        first = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return first, await reader.readexactly(length)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = len(self.connects)
        ack_first = self.ack_plan[number] if number < len(self.ack_plan) else None
        got: list[tuple[int, int, bytes]] = []
        self.publishes.append(got)
        try:
            _, body = await self._packet(reader)
            self.connects.append(body[7])
            writer.write(b"\x20\x02\x00\x00")
            while True:
                idle = 0.3 if ack_first is not None and got else None  # the plan done: drop the connection
                try:
                    first, body = await asyncio.wait_for(self._packet(reader), idle)
                except TimeoutError:
                    break
                if first & 0xF0 != 0x30:
                    continue
                topic_len = int.from_bytes(body[:2], "big")
                packet_id = int.from_bytes(body[2 + topic_len: 4 + topic_len], "big")
                got.append((first & 0x0F, packet_id, body[4 + topic_len:]))
                if ack_first is None or len(got) <= ack_first:
                    writer.write(b"\x40\x02" + packet_id.to_bytes(2, "big"))
        except asyncio.IncompleteReadError:
            pass
        writer.transport.abort()


def test_unacknowledged_messages_are_resent_with_dup_and_their_ids_after_reconnect():
    """Test that after the broker drops the connection the link reconnects by itself, writes the unacknowledged
    QoS 1 messages again first, with DUP set and their original packet ids, then what came while it was down,
    and reports as delivered exactly what was acknowledged."""
    port = free_port()
    broker = ScriptedBroker(port, ack_plan=[3, None])
    delivered: list[int] = []

    async def run() -> Link:
        await broker.start()
        link = Link(address(port), "gw-resend", qos=1, on_delivered=lambda tags: delivered.extend(tags))
        await link.connect()
        link.publish([(f"putuo/t/d{i}/hb", b'{"seq":%d}' % i) for i in range(10)], tags=list(range(10)))
        await link.drain()
        deadline = time.monotonic() + 10
        while link.state == "up" and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert link.state == "reconnecting" and delivered == [0, 1, 2]
        link.publish([(f"putuo/t/d{i}/hb", b'{"seq":%d}' % i) for i in range(10, 12)], tags=[10, 11])  # while down
        assert await link.settle(10)
        await link.close()
        await broker.stop()
        return link

    link = asyncio.run(run())
    assert broker.connects == [0x00, 0x00]  # CleanSession 0 both times: the standard's case for resending
    first, second = broker.publishes[0], broker.publishes[1]
    assert [flags for flags, _, _ in first] == [0x02] * len(first)  # QoS 1, no DUP on a first attempt
    unacked = [(pid, payload) for _, pid, payload in first[3:10]]
    resent = [(pid, payload) for flags, pid, payload in second if flags & 0x08]
    assert resent == unacked and all(flags == 0x0A for flags, _, _ in second[:7])
    assert [payload for flags, _, payload in second[7:]] == [b'{"seq":10}', b'{"seq":11}']
    assert all(not flags & 0x08 for flags, _, _ in second[7:])
    assert delivered == list(range(12)) and link.acked == 12
    assert (link.resent, link.reconnects, link.abandoned, link.dropped) == (7, 1, 0, 0)


def test_backlog_is_bounded_and_what_does_not_fit_is_counted():
    """Test that while the broker is away a link keeps at most ``max_backlog`` messages, counts the rest as
    dropped, and delivers the kept ones in order once the broker is back."""
    port = free_port()
    broker = ScriptedBroker(port, ack_plan=[0, None])
    delivered: list[int] = []

    async def run() -> Link:
        await broker.start()
        link = Link(address(port), "gw-backlog", qos=1, max_backlog=5, on_delivered=lambda tags: delivered.extend(tags))
        await link.connect()
        await broker.stop()  # no one listens: reconnect attempts fail until it is back
        link.publish([("putuo/t/d0/hb", b"{}")], tags=[0])  # the scripted broker drops the connection on it
        deadline = time.monotonic() + 10
        while link.state == "up" and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        taken = link.publish([(f"putuo/t/d{i}/hb", b"{}") for i in range(1, 9)], tags=list(range(1, 9)))
        await asyncio.sleep(0.5)
        await broker.start()
        assert await link.settle(10)
        await link.close()
        await broker.stop()
        assert taken == 5
        return link

    link = asyncio.run(run())
    assert delivered == [0, 1, 2, 3, 4, 5]
    assert (link.dropped, link.resent) == (3, 1)


# --- a real Mosquitto, restarted under a publishing link -------------------------------------------


class PersistentSubscriber:
    """paho, QoS 1 on a persistent session (clean_session False), reconnecting by itself."""

    def __init__(self, port: int, topic: str) -> None:
        self.payloads: list[bytes] = []
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{time.monotonic_ns()}",
                                  clean_session=False)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rc, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            self.payloads.append(msg.payload)

    def received(self) -> set[bytes]:
        with self._lock:
            return set(self.payloads)

    def wait_for(self, wanted: set[bytes], timeout: float = 30.0) -> set[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not wanted <= self.received():
            time.sleep(0.05)
        return self.received()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def persistent_mosquitto(tmp_path: Path) -> MosquittoServer:
    """Mosquitto keeping sessions and queued messages across restarts (saved at a clean shutdown)."""
    store = tmp_path / "mosquitto-store"
    store.mkdir()
    # Started as root, Mosquitto drops to its own user, which cannot reach a 0700 pytest tmp dir:
    # the save fails (logged only) and a restart loses every session. Stay root there.
    user = "user root\n" if os.geteuid() == 0 else ""
    return MosquittoServer(tmp_path, f"persistence true\npersistence_location {store}/\nautosave_interval 3600\n{user}")


def test_every_acknowledged_message_survives_broker_restarts(tmp_path):
    """Test that with the real Mosquitto stopped and restarted on the same port under a publishing link, once
    cleanly (SIGTERM) and once abruptly with a batch written but not yet read (SIGSTOP, then SIGKILL), the link
    reconnects by itself, resends that batch, and every message it reports as acknowledged reaches a persistent
    subscriber."""
    broker = persistent_mosquitto(tmp_path)
    broker.start()
    sub = PersistentSubscriber(broker.port, "putuo/rs/#")
    delivered: list[bytes] = []

    def payloads(start: int, count: int) -> list[tuple[str, bytes]]:
        return [(f"putuo/rs/d{i % 50}/hb", b'{"seq":%d}' % i) for i in range(start, start + count)]

    async def publish_for(link: Link, first: int, seconds: float) -> int:
        """Batches of 100 every 20 ms, whatever the broker's state; returns the next sequence number."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = payloads(first, 100)
            link.publish(batch, tags=[p for _, p in batch])
            first += 100
            await link.drain()
            await asyncio.sleep(0.02)
        return first

    async def run() -> Link:
        link = Link(address(broker.port), "gw-restarts", qos=1, on_delivered=lambda tags: delivered.extend(tags))
        await link.connect()
        seq = await publish_for(link, 0, 1.0)
        stopping = asyncio.create_task(asyncio.to_thread(broker.stop))  # SIGTERM: Mosquitto saves its store
        seq = await publish_for(link, seq, 1.0)
        await stopping
        seq = await publish_for(link, seq, 0.5)  # into the backlog
        await asyncio.to_thread(broker.start)
        seq = await publish_for(link, seq, 1.0)
        assert await link.settle(30)
        got = await asyncio.to_thread(sub.wait_for, set(delivered))
        missing = set(delivered) - got
        assert not missing, f"after a clean restart {len(missing)} acknowledged messages never arrived: {sorted(missing)[:20]}"
        resent_before = link.resent

        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGSTOP)  # alive, but reading nothing: a batch is written, never acknowledged
        link.publish(payloads(seq, 500), tags=[p for _, p in payloads(seq, 500)])
        await link.drain()
        await asyncio.sleep(0.3)
        assert link.pending == 500
        broker.proc.kill()
        broker.proc.wait(5)
        broker.proc = None
        await asyncio.to_thread(broker.start)
        assert await link.settle(30)
        assert link.resent - resent_before == 500
        await link.close()
        return link

    try:
        link = asyncio.run(run())
        got = sub.wait_for(set(delivered))
    finally:
        sub.close()
        broker.stop()
    assert link.reconnects == 2 and link.dropped == 0 and link.abandoned == 0
    assert len(delivered) == len(set(delivered)) == link.acked  # each message acknowledged once
    assert set(delivered) <= got, f"{len(set(delivered) - got)} acknowledged messages never arrived"
