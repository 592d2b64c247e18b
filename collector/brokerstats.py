"""The broker's own statistics (``$SYS``): does the pipe between devices and collector drop?

Mosquitto publishes its counters under ``$SYS/broker/`` every ``sys_interval`` seconds
(default 10), retained, at QoS 0. The collector subscribes to :data:`SYS_FILTER` when
``[mqtt] broker_stats`` is on (the default) and keeps the latest value of the ones below.
They are the operator's view of the broker, not KPI input: they are not archived, and a
replay neither needs nor sees them.

The one that matters most is ``$SYS/broker/publish/messages/dropped``: messages Mosquitto
threw away because a client's queue was full — ``max_queued_messages`` (default 1,000 per
client) or ``max_queued_bytes``. Those are heartbeats the collector never gets; the engine
sees them as gaps in ``seq`` (``lost``) and this says where they went.

Broker counters restart at zero when the broker restarts; ``dropped_seen`` adds up what this
collector has seen dropped: the first value received (drops since the broker started, which
may be the collector's own queue while it was away) and every increase after it, across
broker restarts.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

SYS_PREFIX = "$SYS/"
SYS_FILTER = "$SYS/broker/#"
# $SYS topic → stat name. Mosquitto 2.0 names; "messages/stored" is the older name of the store count.
SYS_TOPICS = {
    "$SYS/broker/publish/messages/dropped": "dropped_messages",
    "$SYS/broker/store/messages/count": "stored_messages",
    "$SYS/broker/messages/stored": "stored_messages",
    "$SYS/broker/store/messages/bytes": "stored_bytes",
    "$SYS/broker/publish/messages/received": "received_messages",
    "$SYS/broker/publish/messages/sent": "sent_messages",
    "$SYS/broker/clients/connected": "connected_clients",
    "$SYS/broker/uptime": "uptime_seconds",
}
STAT_NAMES = tuple(dict.fromkeys(SYS_TOPICS.values()))
QUEUE_SETTINGS = "max_queued_messages / max_queued_bytes"  # what to raise in mosquitto.conf


@dataclass(frozen=True)
class BrokerSnapshot:
    """The broker's stats as last received (absent: never received), and when (unix s; 0: never)."""

    values: dict[str, int] = field(default_factory=dict)
    updated: float = 0.0
    dropped_seen: int = 0  # messages the broker reported dropped since we first heard it, across its restarts


class BrokerStats:
    """Latest ``$SYS`` values; written by the MQTT source's thread, read by anyone."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = {}
        self._updated = 0.0
        self._dropped_seen = 0
        self.malformed = 0

    def update(self, topic: str, payload: str, received: float) -> bool:
        """Take one ``$SYS`` message; False when it is not a stat kept here or not a number."""
        name = SYS_TOPICS.get(topic)
        if name is None:
            return False
        value = _number(payload)
        if value is None:
            self.malformed += 1
            return False
        with self._lock:
            if name == "dropped_messages":
                before = self._values.get(name, 0)
                # a lower value: the broker restarted and counts from zero again
                self._dropped_seen += value - before if value >= before else value
            self._values[name] = value
            self._updated = received
        return True

    def snapshot(self) -> BrokerSnapshot:
        with self._lock:
            return BrokerSnapshot(dict(self._values), self._updated, self._dropped_seen)


def _number(payload: str) -> int | None:
    """A ``$SYS`` value as an integer: ``"42"``, ``"42.00"`` or ``"123 seconds"`` (the uptime)."""
    text = payload.strip().removesuffix(" seconds")
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and abs(value) < 2**62 else None
