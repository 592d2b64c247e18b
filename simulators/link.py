"""A gateway's MQTT link: a minimal MQTT 3.1.1 publisher over asyncio streams.

Why not paho here: the simulator holds one connection per gateway (over a thousand for the
district), each with its own Last Will, and must be able to die abruptly so the broker fires
that Will. Pre-built PUBLISH packets written in one ``write`` per batch are several times
faster than paho's per-message path (docs/measurements.md: ~195k vs ~27k msg/s), which is what lets
one process play the district at ``--speed 60``. The collector, which must be a correct
subscriber in every respect, uses paho.

Only what a publishing device gateway needs: CONNECT (will, credentials, keepalive, clean or
persistent session), PUBLISH QoS 0/1, PUBACK accounting, PINGREQ, DISCONNECT, ``kill()``
(drop the TCP connection without DISCONNECT, as a gateway losing power does), and surviving
the broker going away:

* **Delivered** means, at QoS 1, that the broker acknowledged the message (PUBACK); at QoS 0,
  that it was written to the socket. Each message may carry a *tag*; ``on_delivered`` gets
  the tags of delivered messages, in batches, so the caller can record exactly what the
  broker has.
* **Reconnect**: when the broker drops the connection, the link reconnects by itself with
  capped, jittered exponential backoff (``kill()`` and ``close()`` are the only ways to stop
  it), and calls ``on_connect`` after every CONNACK (a gateway announces itself there).
* **Resend**: QoS 1 messages written but not acknowledged stay in flight and are written again
  after the reconnect, with the DUP flag and their original packet ids, before anything newer
  [MQTT-4.4.0-1, MQTT-3.3.1-1]; QoS 1 links use a persistent session (CleanSession 0), which
  is where the standard asks for exactly that. Messages published while disconnected, or
  beyond the in-flight window, wait in a bounded backlog and go out in order; past
  ``max_backlog`` they are dropped and counted (``dropped``), never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .mqtt_packets import DISCONNECT, PINGREQ, as_duplicate, connect_packet, publish_packet

__all__ = ["BrokerAddress", "Link", "LinkError", "as_duplicate", "connect_packet", "publish_packet"]

log = logging.getLogger(__name__)


class LinkError(Exception):
    """The broker refused or dropped the connection."""


CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}
WINDOW = 20_000  # QoS 1 messages in flight per link; packet ids are 16 bits, so well under 65,535
MAX_BACKLOG = 200_000  # messages a link holds while the broker is away, beyond the window
BACKOFF_MIN, BACKOFF_MAX = 0.1, 2.0  # seconds between reconnect attempts: doubling, jittered, capped

Tag = Any  # what the caller attaches to a message; handed back once the message is delivered



@dataclass(frozen=True, kw_only=True)
class BrokerAddress:
    """Where and how to reach the broker (``mqtt://host:port`` or ``mqtts://``)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never shown
    ca_file: str | None = None

    @classmethod
    def parse(cls, url: str, username: str | None = None, password: str | None = None,
              ca_file: str | None = None) -> BrokerAddress:
        """``mqtt://[user[:password]@]host[:port]``; ``username`` and ``password`` given apart take precedence."""
        from urllib.parse import urlsplit

        from ptmon.credentials import redact, split_credentials

        creds = split_credentials(url if "://" in url else f"mqtt://{url}")
        parts = urlsplit(creds.url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname or port == -1:
            raise ValueError(f"broker must look like mqtt://[user[:password]@]host:port or mqtts://..., got {redact(url)!r}")
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            tls=tls,
            username=username if username is not None else creds.username,
            password=password if password is not None else creds.password,
            ca_file=ca_file,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.ca_file)


class Link:
    """One MQTT connection publishing batches of pre-built packets, reconnecting and resending by itself.

    States: ``new`` → ``up`` ⇄ ``reconnecting`` (the broker went away); ``killed`` / ``closed``
    end it until :meth:`connect` is called again. :attr:`accepting` says whether
    :meth:`publish` takes messages (``up`` or ``reconnecting``).
    """

    def __init__(self, broker: BrokerAddress, client_id: str, *, qos: int = 0, keepalive: int = 30,
                 will: tuple[str, bytes, int, bool] | None = None, clean_session: bool | None = None,
                 window: int = WINDOW, max_backlog: int = MAX_BACKLOG,
                 on_connect: Callable[[Link], None] | None = None,
                 on_delivered: Callable[[list[Tag]], None] | None = None) -> None:
        if not 0 < window < 65_535:
            raise ValueError(f"window must be in (0, 65535): {window}")
        self.broker, self.client_id, self.qos, self.keepalive, self.will = broker, client_id, qos, keepalive, will
        self.clean_session = (qos == 0) if clean_session is None else clean_session
        self.window, self.max_backlog = window, max_backlog
        self.on_connect, self.on_delivered = on_connect, on_delivered
        self.state = "new"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.written = 0  # PUBLISH packets written for the first time
        self.resent = 0  # written again with DUP after a reconnect
        self.acked = 0  # PUBACKs matched to a message in flight
        self.dropped = 0  # refused: the backlog was full
        self.abandoned = 0  # still undelivered when the link was killed or closed: fate unknown
        self.connects = 0
        self.reconnects = 0  # connections the link made by itself after the broker went away
        self._inflight: dict[int, tuple[bytes, Tag]] = {}  # packet id → (packet, tag), in send order
        self._backlog: deque[tuple[str, bytes, bool, Tag]] = deque()  # (topic, payload, retain, tag), not yet written
        self._settled = asyncio.Event()
        self._settled.set()
        self._next_id = 0
        self._rx = b""
        self._tasks: list[asyncio.Task[None]] = []
        self._reconnector: asyncio.Task[None] | None = None

    # --- state ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.state == "up" and self.writer is not None and not self.writer.is_closing()

    @property
    def accepting(self) -> bool:
        """Whether :meth:`publish` takes messages: connected, or reconnecting after the broker left."""
        return self.state in ("up", "reconnecting")

    @property
    def sent(self) -> int:
        """Messages delivered: acknowledged by the broker at QoS 1, written at QoS 0."""
        return self.acked if self.qos else self.written

    @property
    def pending(self) -> int:
        """Messages not delivered yet: in flight (written, unacknowledged) and in the backlog."""
        return len(self._inflight) + len(self._backlog)

    def oldest_pending_tag(self) -> Tag | None:
        """The tag of the oldest undelivered message (in flight first, then the backlog), if any."""
        for _, tag in self._inflight.values():
            return tag
        return self._backlog[0][3] if self._backlog else None

    # --- connecting -------------------------------------------------------------------------

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect (or connect again after :meth:`kill`); raises ``LinkError``/``OSError`` on failure."""
        if self._reconnector is not None:
            self._reconnector.cancel()
            self._reconnector = None
        await self._open(timeout)

    async def _open(self, timeout: float) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.broker.host, self.broker.port, ssl=self.broker.ssl_context()), timeout
        )
        try:
            writer.write(connect_packet(self.client_id, keepalive=self.keepalive, clean_session=self.clean_session,
                                        will=self.will, username=self.broker.username, password=self.broker.password))
            header = await asyncio.wait_for(reader.readexactly(4), timeout)
        except BaseException:
            writer.transport.abort()
            raise
        if header[0] != 0x20 or header[3] != 0:
            writer.transport.abort()
            code = header[3] if header[0] == 0x20 else -1
            raise LinkError(f"{self.client_id}: broker refused the connection: {CONNACK_REASONS.get(code, code)}")
        self.reader, self.writer, self._rx = reader, writer, b""
        self.state = "up"
        self.connects += 1
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._ping())]
        self._resend()  # the unacknowledged first: a device's messages keep their order
        if self.on_connect is not None:
            self.on_connect(self)
        self._pump()

    def _lost(self) -> None:
        """The broker went away: keep everything undelivered and reconnect in the background."""
        if self.state != "up":
            return
        self.state = "reconnecting"
        self._close_transport()
        self._reconnector = asyncio.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = BACKOFF_MIN
        while self.state == "reconnecting":
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jitter: a district of gateways must not reconnect in step
            try:
                await self._open(timeout=5.0)
            except (TimeoutError, OSError, LinkError, asyncio.IncompleteReadError) as exc:
                log.debug("%s: reconnect failed: %s", self.client_id, exc)
                delay = min(BACKOFF_MAX, delay * 2)
                continue
            self.reconnects += 1
            log.info("%s: reconnected; resent %d unacknowledged messages so far", self.client_id, self.resent)
        self._reconnector = None

    # --- publishing -------------------------------------------------------------------------

    def publish(self, items: list[tuple[str, bytes]], retain: bool = False, tags: list[Tag] | None = None) -> int:
        """Send messages (one write), or keep them until the broker is back; QoS as the link's.

        Returns how many were taken; the rest (backlog full) are dropped and counted in ``dropped``.
        """
        if not self.accepting:
            raise LinkError(f"{self.client_id}: not connected")
        tags = tags if tags is not None else [None] * len(items)
        room = self.max_backlog - len(self._backlog)
        if room < len(items):
            self.dropped += len(items) - max(room, 0)
            items, tags = items[: max(room, 0)], tags[: max(room, 0)]
        self._backlog.extend((topic, payload, retain, tag) for (topic, payload), tag in zip(items, tags))
        if self._backlog:
            self._settled.clear()
        self._pump()
        return len(items)

    def _pump(self) -> None:
        """Write from the backlog as far as the connection and the in-flight window allow."""
        if not self.connected or not self._backlog:
            return
        assert self.writer is not None
        backlog, inflight, qos = self._backlog, self._inflight, self.qos
        count = min(len(backlog), self.window - len(inflight)) if qos else len(backlog)
        if count <= 0:
            return
        packets, delivered = [], []
        for _ in range(count):
            topic, payload, retain, tag = backlog.popleft()
            if qos:
                packet_id = self._new_id()
                packet = publish_packet(topic, payload, qos, retain, packet_id)
                inflight[packet_id] = (packet, tag)
            else:
                packet = publish_packet(topic, payload, 0, retain)
                delivered.append(tag)
            packets.append(packet)
        self.writer.write(b"".join(packets))
        self.written += count
        if delivered:
            self._deliver(delivered)
        self._check_settled()

    def _new_id(self) -> int:
        while True:
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._inflight:
                return self._next_id

    def _resend(self) -> None:
        """After a reconnect: every unacknowledged QoS 1 message again, DUP set, original ids, in order."""
        if not self._inflight or self.writer is None:
            return
        self.writer.write(b"".join(as_duplicate(packet) for packet, _ in self._inflight.values()))
        self.resent += len(self._inflight)

    def _deliver(self, tags: list[Tag]) -> None:
        if self.on_delivered is not None:
            self.on_delivered(tags)

    def _check_settled(self) -> None:
        if not self._inflight and not self._backlog:
            self._settled.set()

    async def settle(self, timeout: float) -> bool:
        """Wait until every message taken is delivered (or ``timeout`` s pass); True when it is."""
        if self.state not in ("up", "reconnecting"):
            return self.pending == 0
        try:
            await asyncio.wait_for(self._settled.wait(), timeout)
        except TimeoutError:
            return False
        if self.qos == 0:
            await self.drain()
        return True

    async def drain(self) -> None:
        if self.connected:
            assert self.writer is not None
            try:
                await self.writer.drain()
            except ConnectionError:
                self._lost()

    # --- ending -----------------------------------------------------------------------------

    def kill(self) -> int:
        """Drop the connection without DISCONNECT (the broker publishes the Last Will); forget
        what was undelivered, as a gateway losing power does. Returns how many were forgotten."""
        self.state = "killed"
        return self._end()

    async def close(self, settle_timeout: float = 5.0) -> int:
        """Wait up to ``settle_timeout`` s for outstanding deliveries, then a clean DISCONNECT (the
        broker discards the Will). Returns how many messages were still undelivered."""
        if settle_timeout > 0:
            await self.settle(settle_timeout)
        if self.connected:
            assert self.writer is not None
            writer = self.writer
            self.state = "closing"  # the broker closing its end now is no reason to reconnect
            writer.write(DISCONNECT)
            writer.close()  # unlike abort(), writes what is buffered first
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(writer.wait_closed(), 5)
        self.state = "closed"
        return self._end()

    def _end(self) -> int:
        if self._reconnector is not None:
            self._reconnector.cancel()
            self._reconnector = None
        self._close_transport()
        forgotten = self.pending
        self.abandoned += forgotten
        self._inflight.clear()
        self._backlog.clear()
        self._settled.set()
        return forgotten

    def _close_transport(self) -> None:
        try:
            current = asyncio.current_task()
        except RuntimeError:  # no running loop
            current = None
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._tasks = []
        if self.writer is not None:
            self.writer.transport.abort()
        self.writer = self.reader = None

    # --- the broker's side ------------------------------------------------------------------

    async def _read(self) -> None:
        reader = self.reader
        assert reader is not None
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                self._on_bytes(data)
        except (ConnectionError, OSError):
            pass
        if self.reader is reader:  # not replaced by a newer connection meanwhile
            self._lost()

    def _on_bytes(self, data: bytes) -> None:
        """Parse whole packets (PUBACK, PINGRESP); a packet cut by the read waits for the next."""
        buf = self._rx + data if self._rx else data
        pos, end, delivered = 0, len(buf), []
        inflight = self._inflight
        while end - pos >= 2:
            length, shift, i, whole = 0, 0, pos + 1, False
            while i < end and shift < 28:
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    whole = True
                    break
            if not whole or i + length > end:
                break  # the rest of this packet has not arrived yet
            if buf[pos] & 0xF0 == 0x40 and length >= 2:  # PUBACK
                entry = inflight.pop((buf[i] << 8) | buf[i + 1], None)
                if entry is not None:  # None: an id no longer in flight (nothing to account)
                    delivered.append(entry[1])
            pos = i + length
        self._rx = buf[pos:]
        if delivered:
            self.acked += len(delivered)
            self._deliver(delivered)
            self._pump()
            self._check_settled()

    async def _ping(self) -> None:
        while self.connected:
            await asyncio.sleep(self.keepalive / 2)
            if self.connected:
                assert self.writer is not None
                self.writer.write(PINGREQ)
