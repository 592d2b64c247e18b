"""The MQTT 3.1.1 packets a publishing gateway sends, encoded by hand: CONNECT (will,
credentials, keepalive, clean or persistent session), PUBLISH QoS 0/1 (and its duplicate),
PINGREQ and DISCONNECT. Pre-built bytes let a link write a whole batch at once."""

from __future__ import annotations

import struct

DUP = 0x08  # the PUBLISH header's re-delivery flag


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(raw)) + raw


def connect_packet(
    client_id: str,
    *,
    keepalive: int = 60,
    clean_session: bool = True,
    will: tuple[str, bytes, int, bool] | None = None,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    flags = 0x02 if clean_session else 0
    payload = _string(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _string(topic) + _string(message)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    variable = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body = variable + payload
    return b"\x10" + _remaining_length(len(body)) + body


def publish_packet(topic: str, payload: bytes, qos: int = 0, retain: bool = False, packet_id: int = 0,
                   dup: bool = False) -> bytes:
    body = _string(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    header = 0x30 | (DUP if dup else 0) | (qos << 1) | (1 if retain else 0)
    return bytes([header]) + _remaining_length(len(body)) + body


def as_duplicate(packet: bytes) -> bytes:
    """The same PUBLISH packet with the DUP flag set (a re-delivery attempt)."""
    return bytes((packet[0] | DUP,)) + packet[1:]


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
