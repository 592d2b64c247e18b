"""Decode: (receive time, topic, payload) messages to validated numpy columns.

The per-message Python work is kept to a topic lookup, one ``orjson.loads`` and a type
check; every field is then pulled out and validated per batch, column by column (fields.py,
boot ids in boot_ids.py). A message that fails any check is rejected whole, counted by kind
(``rejects``) and never reaches the engine, so it counts toward no KPI. The result is a
:class:`~ptmon.batch.DecodedBatch` (batch.py); the rate windows are rate_limit.py's.

Reject kinds, checked in this order (a message counts under the first that fails):
  retained           a ``$ptmon/retained`` record: the broker's stored copy of a message, redelivered
                     on a subscribe (the source wraps every retained message but a gateway status
                     so); never a heartbeat, counted for the device its topic names
  bad_topic          topic is not ``putuo/{contract}/{street}/{device}/hb`` nor a gateway status
  unknown_device     device id not in the registry (also tracked by topic, bounded)
  contract_mismatch  topic contract differs from the registry's
  street_mismatch    topic street differs from the registry's
  unknown_gateway    gateway status from a gateway not in the registry (in a partition: see below)
  rate_limited       more than ``device_rate`` messages from one device (or gateway) in a window
  oversize           payload larger than ``max_payload`` bytes
  bad_json           not JSON (or not UTF-8, NaN, Infinity, a number beyond a double, or nested
                     deeper than ``MAX_JSON_DEPTH``, orjson's own limit)
  not_object         JSON, but not an object
  bad_value          a known key of the wrong type or out of range (``bad_fields`` says which)
  counter_mismatch   a success counter above its attempts counter (read_ok > reads, ...)
  bad_gateway_status gateway status payload not ``online`` / ``offline``

In a partition (``Registry.partition``), the status of a gateway serving no device of its streets
is no reject: it is counted as ``other_partition_gateway`` and changes nothing, since the
partition owning the gateway's devices takes it. A gateway the registry does not know is
``unknown_gateway`` only in the partition holding the rules' first street (partition.py).

Types are compared exactly: JSON ``true`` is no number (Python's bool is an int, so a plain
``isinstance`` would take it as 1), and ``1.0`` is no integer.

Limits (the collector's ``[limits]`` config; README "Limits"), all counted when they bite:

* ``max_payload`` bytes per payload.
* ``device_rate`` messages per registry device, and per gateway, in each fixed ``window`` of
  receive time (rate_limit.py). The collector writes its limits to the archive as a
  ``$ptmon/limits`` record (:meth:`Decoder.limits_record`), which replay applies
  (:meth:`apply_limits_record`), so a replay rejects exactly what the live collector did.
* ``unknown_limit`` distinct unknown topics tracked for the report (each cut to
  ``TRACKED_TOPIC_CHARS`` characters, control characters escaped); beyond it they are only
  counted (``unknown_overflow``), so a million invented ids cost no memory.
* JSON nested deeper than ``MAX_JSON_DEPTH`` (1,024 levels) is ``bad_json``: orjson 3.9.15 and
  later refuse it with a ``JSONDecodeError`` like any unparsable payload (orjson 3.8 had no
  limit and crashed at about 53,000 levels, which ``orjson>=3.9.15`` rules out;
  docs/measurements.md).
"""

from __future__ import annotations

import gc
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from .archive import RETAINED_TOPIC
from .batch import DECODER_KIND_CODE, CountedEvents, DecodedBatch, NotedEvents
from .boot_ids import boot_key
from .fields import Column, decode_columns, decode_groups, object_groups
from .lines import ArchiveLines
from .payloads import Parsed, parse_payloads
from .rate_limit import RateState, WindowLimit
from .registry import Registry
from .timebase import DAY_US, US_PER_S, times_to_us
from .topics import TopicMap

if TYPE_CHECKING:
    from .config import LimitsConfig

log = logging.getLogger(__name__)

LOGGED_PER_KIND = 5  # first rejects of each kind are logged with detail; the rest only counted
LIMITS_TOPIC = "$ptmon/limits"  # archive control record: the limits the collector decoded with
LIMIT_KEYS = ("max_payload", "device_rate", "window", "unknown_limit")
MAX_JSON_DEPTH = 1024  # orjson's limit (3.9.15+): deeper is a JSONDecodeError, so bad_json; tests check it
TRACKED_TOPIC_CHARS = 128  # an unknown topic is kept for the report cut to this length

Message = tuple[float, str, "bytes | str"]

# DecodedBatch and RateState are what the decoder returns; boot_key is imported from here by
# the simulators' pre-decoded batches.
__all__ = ["LIMITS_TOPIC", "MAX_JSON_DEPTH", "TRACKED_TOPIC_CHARS", "DecodedBatch", "Decoder", "Message",
           "RateState", "boot_key"]


def _size(payload: bytes | str) -> int:
    """Payload size in bytes (archives hold payloads as text)."""
    return len(payload) if isinstance(payload, bytes) else len(payload.encode("utf-8", "surrogatepass"))


def _gateways_served(registry: Registry) -> tuple[dict[str, int], frozenset[str]]:
    """The gateways that serve a device of the registry (id → code), and the others of its code table:
    in a partition's registry, the gateways of other partitions' streets."""
    served = set(np.unique(registry.gateway).tolist())
    index = {g: i for i, g in enumerate(registry.gateways) if g and i in served}
    return index, frozenset(g for g in registry.gateways if g and g not in index)


def _received(messages: list[Message] | ArchiveLines) -> Sequence[float] | np.ndarray:
    return messages.t if isinstance(messages, ArchiveLines) else [m[0] for m in messages]


class Decoder:
    """Turns raw messages into :class:`DecodedBatch` and keeps the reject counts."""

    def __init__(self, registry: Registry, *, max_payload: int = 4096, unknown_limit: int = 10_000,
                 device_rate: int = 600, window: int = 60) -> None:
        self.registry = registry
        self.rejects: Counter[str] = Counter()
        self.bad_fields: Counter[str] = Counter()
        self.unknown_topics: dict[str, int] = {}  # bounded by unknown_limit
        self.unknown_overflow = 0  # messages from unknown topics not tracked (the limit was reached)
        self.accepted = 0
        self.topics = TopicMap(registry)  # heartbeat topic → registry row, verified byte for byte
        self._gateway_index, self._gateways_elsewhere = _gateways_served(registry)
        # A gateway the registry does not know: the whole district's, or one partition's, to count.
        self._counts_unknown_gateways = registry.partition is None or \
            registry.rules.street_codes()[0] in registry.partition
        self._contracts = {c.code: i for i, c in enumerate(registry.rules.contracts)}
        self._streets = {s.code: i for i, s in enumerate(registry.rules.streets)}
        self._device_limit: WindowLimit | None = None
        self._gateway_limit: WindowLimit | None = None
        self._clock: int | None = None  # latest receive time seen (µs): rate windows only move forward
        self.set_limits(max_payload=max_payload, unknown_limit=unknown_limit, device_rate=device_rate, window=window)

    @classmethod
    def from_config(cls, registry: Registry, limits: LimitsConfig) -> Decoder:
        """A decoder with the ``[limits]`` of the collector's config."""
        return cls(registry, max_payload=limits.max_payload, unknown_limit=limits.unknown_limit,
                   device_rate=limits.device_rate, window=limits.window)

    # --- limits --------------------------------------------------------------------------

    def set_limits(self, *, max_payload: int, unknown_limit: int, device_rate: int, window: int) -> None:
        """Set the limits (``device_rate`` 0: no rate limit); counts carry over while the window is kept."""
        if window <= 0 or DAY_US % (window * US_PER_S):
            raise ValueError(f"window must be a whole number of seconds dividing a day: {window!r}")
        self.max_payload = max_payload
        self.unknown_limit = unknown_limit
        self.device_rate = device_rate
        self.window = window
        # Payloads no longer than this cannot be oversize (UTF-8 takes at most 4 bytes a character).
        self._clean_length = max_payload // 4
        if device_rate <= 0:
            self._device_limit = self._gateway_limit = None
        elif self._device_limit is None or self._device_limit.window_us != window * US_PER_S:
            self._device_limit = WindowLimit(len(self.registry), device_rate, window * US_PER_S)
            self._gateway_limit = WindowLimit(len(self.registry.gateways), device_rate, window * US_PER_S)
        else:
            assert self._gateway_limit is not None
            self._device_limit.rate = self._gateway_limit.rate = device_rate

    @property
    def limits(self) -> dict[str, int]:
        return {"max_payload": self.max_payload, "device_rate": self.device_rate, "window": self.window,
                "unknown_limit": self.unknown_limit}

    def limits_record(self, t: float) -> tuple[float, str, str]:
        """The archive control record of these limits at ``t``, for replay to decode alike."""
        return (t, LIMITS_TOPIC, orjson.dumps(self.limits).decode())

    def apply_limits_record(self, payload: str) -> bool:
        """Take the limits of a ``$ptmon/limits`` record; False (limits kept, logged) when malformed."""
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            doc = None
        valid = (type(doc) is dict and set(doc) <= set(LIMIT_KEYS)
                 and all(type(v) is int and v >= 0 for v in doc.values())
                 and doc.get("max_payload", 1) > 0 and doc.get("window", 1) > 0 and 86_400 % doc.get("window", 1) == 0)
        if not valid:
            log.warning("malformed %s record %r; limits kept", LIMITS_TOPIC, payload[:200])
            return False
        self.set_limits(**{**self.limits, **doc})
        return True

    def nbytes(self) -> int:
        """Bytes of the per-device lookups: the topic map and the rate windows."""
        limits = [x for x in (self._device_limit, self._gateway_limit) if x is not None]
        return self.topics.nbytes() + sum(x.window.nbytes + x.count.nbytes for x in limits)

    def rate_state(self) -> RateState | None:
        """The rate windows so far, for a checkpoint; None without a rate limit."""
        if self._device_limit is None or self._gateway_limit is None:
            return None
        (device_window, device_count), (gateway_window, gateway_count) = \
            self._device_limit.saved(), self._gateway_limit.saved()
        return RateState(window=self.window, clock=self._clock,
                         device_window=device_window, device_count=device_count,
                         gateway_window=gateway_window, gateway_count=gateway_count)

    def restore_rate_state(self, state: RateState) -> bool:
        """Continue the saved windows (rows in this registry's order); False when the window
        length differs, which starts fresh windows as a changed ``$ptmon/limits`` record does."""
        if self._device_limit is None or self._gateway_limit is None or state.window != self.window:
            return False
        self._clock = state.clock
        self._device_limit.restore(state.device_window, state.device_count)
        self._gateway_limit.restore(state.gateway_window, state.gateway_count)
        return True

    # --- decoding ------------------------------------------------------------------------

    def decode(self, messages: Iterable[Message] | ArchiveLines, times: np.ndarray | None = None,
               late: np.ndarray | None = None) -> DecodedBatch:
        """Decode a batch; rejected messages are counted and left out.

        ``times`` are the receive times as the monitor's clock saw them (µs, made
        non-decreasing by the caller), ``late`` marks the messages whose own time was earlier;
        without them the messages' times are used as they are.
        """
        if not isinstance(messages, (list, ArchiveLines)):
            messages = list(messages)
        # A batch allocates a dict per message, which would trigger several cyclic-GC passes
        # over the batch's own live objects; JSON objects cannot form cycles and refcounting
        # frees them, so the collector pauses for the batch (about +20 % decode rate).
        paused = gc.isenabled()
        gc.disable()
        try:
            batch = self._decode(messages, times)
        finally:
            if paused:
                gc.enable()
        if late is not None and late.any():
            batch.counted = CountedEvents.join([batch.counted, self._late(messages, times, late)])
        self.accepted += len(batch)
        return batch

    def _late(self, messages: list[Message] | ArchiveLines, times: np.ndarray | None, late: np.ndarray) -> CountedEvents:
        rows = np.flatnonzero(late)
        t = times if times is not None else times_to_us(_received(messages))
        topics = ([messages.topic(i) for i in rows.tolist()] if isinstance(messages, ArchiveLines)
                  else [messages[i][1] for i in rows.tolist()])
        device = self.topics.rows(topics)
        return CountedEvents(t[rows], device, np.full(len(rows), DECODER_KIND_CODE["late"], dtype=np.int16))

    def _decode(self, messages: list[Message] | ArchiveLines, times: np.ndarray | None) -> DecodedBatch:
        """The common batch (known devices' small JSON objects, none over its rate) with C-level
        maps only; anything else message by message in :meth:`_decode_each`. Plain archive lines
        (lines.py) are looked at where they lie in their block until then."""
        if not len(messages):
            return decode_columns(np.zeros(0, np.int64), np.zeros(0, np.int64), [], self)
        t = times if times is not None else times_to_us(_received(messages))
        if isinstance(messages, ArchiveLines):
            device = messages.topic_rows(self.topics)
            longest = int(messages.payload_chars.max())
        else:
            _, topics, payloads = zip(*messages)
            device = self.topics.rows(list(topics))
            longest = max(map(len, payloads))
        known = bool(device.min() >= 0)
        rate_t = self._rate_times(t)
        over = self._device_limit.over(device, rate_t) if self._device_limit is not None else None
        if known and over is None and longest <= self._clean_length:
            if isinstance(messages, ArchiveLines):
                batch = self._decode_bulk(t, device, messages.parse_payloads(), messages.payload)
            else:
                batch = self._decode_bulk(t, device, parse_payloads(list(payloads)), payloads.__getitem__)
            if batch is not None:
                return batch
        each: Sequence[Message] = messages.records() if isinstance(messages, ArchiveLines) else messages
        devices: list[int | None] = device.tolist() if known else [None if d < 0 else d for d in device.tolist()]
        return self._decode_each(each, t, devices, over, rate_t)

    def _decode_bulk(self, t: np.ndarray, device: np.ndarray, parsed: Parsed | None,
                     payload: Callable[[int], bytes | str]) -> DecodedBatch | None:
        """Flat integer payloads parsed in bulk (payloads.py), the others by orjson; None when one
        is no JSON object (then every message is looked at alone)."""
        slow = np.arange(len(t)) if parsed is None else parsed.slow
        groups: list[tuple[Any, Column]] = [] if parsed is None else [(s.rows, s.column) for s in parsed.shapes]
        if len(slow):
            try:
                objects = [orjson.loads(payload(i)) for i in slow.tolist()]
            except orjson.JSONDecodeError:
                return None
            if set(map(type, objects)) != {dict}:
                return None
            groups += [(slow if isinstance(rows, slice) else slow[rows], column) for rows, column in object_groups(objects)]
        return decode_groups(t, device, len(t), groups, self)

    def _rate_times(self, t: np.ndarray) -> np.ndarray:
        """Receive times made non-decreasing (a late message counts in the current window)."""
        if self._device_limit is None:
            return t
        clocked = np.maximum.accumulate(t if self._clock is None else np.maximum(t, self._clock))
        self._clock = int(clocked[-1])
        return clocked

    def _decode_each(self, messages: Sequence[Message], t: np.ndarray, devices: list[int | None],
                     over: np.ndarray | None, rate_t: np.ndarray) -> DecodedBatch:
        """Message by message, rejecting and counting what is wrong."""
        rows: list[int] = []
        objects: list[dict[str, Any]] = []
        gateways: list[tuple[int, int]] = []  # (row, gateway index) of gateway status messages
        limited = over.tolist() if over is not None else [False] * len(messages)
        loads, clean_length = orjson.loads, self._clean_length
        self._noted = noted = NotedEvents()
        for i, ((_, topic, payload), device) in enumerate(zip(messages, devices)):
            if device is None:
                devices[i] = self._other_topic(i, topic, payload, gateways)
                continue
            if limited[i]:
                continue  # counted below, with the batch's other rate_limited messages
            if len(payload) > clean_length and self._oversize(i, topic, payload):
                continue
            try:
                obj = loads(payload)
            except orjson.JSONDecodeError as exc:
                self._reject(i, "bad_json", topic, str(exc))
                continue
            if type(obj) is not dict:
                self._reject(i, "not_object", topic, type(obj).__name__)
                continue
            rows.append(i)
            objects.append(obj)
        if over is not None:
            self._reject_count("rate_limited", int(over.sum()), messages[int(np.argmax(over))][1])
            noted.add_mask(np.flatnonzero(over), "rate_limited")
        index = np.array(rows, dtype=np.int64)
        batch = decode_columns(t[index], np.array([devices[i] for i in rows], dtype=np.int64), objects, self)
        batch.gateway_events = self._gateway_events(messages, gateways, t, rate_t)
        all_devices = np.array([-1 if d is None else d for d in devices], dtype=np.int64)
        batch.counted = CountedEvents.join([batch.counted, noted.events(t, all_devices)])
        return batch

    def _oversize(self, row: int, topic: str, payload: bytes | str) -> bool:
        """Reject (and count) a payload larger than max_payload bytes."""
        if len(payload) > self.max_payload // 4 and (size := _size(payload)) > self.max_payload:
            self._reject(row, "oversize", topic, f"{size} bytes")
            return True
        return False

    def _other_topic(self, row: int, topic: str, payload: bytes | str, gateways: list[tuple[int, int]]) -> int | None:
        """A topic that is no registry device's heartbeat topic: a gateway status, or a reject by kind.
        Returns the registry device a ``retained`` record names (its count goes to the device's street)."""
        if topic == RETAINED_TOPIC:
            return self._retained(row, payload)
        parts = topic.split("/")
        if len(parts) == 4 and parts[0] == "putuo" and parts[1] == "gw" and parts[3] == "status":
            gateway = self._gateway_index.get(parts[2])
            if gateway is not None:
                gateways.append((row, gateway))
            elif parts[2] in self._gateways_elsewhere or not self._counts_unknown_gateways:
                self._noted.add(row, "other_partition_gateway")  # another partition takes and counts it
            else:
                self._reject(row, "unknown_gateway", topic, "")
            return None
        if len(parts) != 5 or parts[0] != "putuo" or parts[4] != "hb" or parts[1] not in self._contracts:
            self._reject(row, "bad_topic", topic, "")
            return None
        device = self.registry.index.get(parts[3])
        if device is None:
            self._reject(row, "unknown_device", topic, "")
            tracked = self._track_unknown(topic)
            if tracked is not None:
                self._noted.unknown.append((row, tracked))
            return None
        if self.registry.contract[device] != self._contracts[parts[1]]:
            self._reject(row, "contract_mismatch", topic,
                         f"registry says {self.registry.rules.contracts[self.registry.contract[device]].code}")
        else:  # the id and contract match, so the street is what differs from the registry topic
            self._reject(row, "street_mismatch", topic,
                         f"registry says {self.registry.rules.streets[self.registry.street[device]].code}")
        return None

    def _retained(self, row: int, payload: bytes | str) -> int | None:
        """A retained message as the source archived it (``{"topic": ..., "payload": ...}``): the
        broker's stored copy, never a heartbeat. Counted as ``retained`` for the registry device
        its topic names (None: no registry heartbeat topic, or a record this decoder cannot read)."""
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            doc = None
        inner = doc.get("topic") if type(doc) is dict else None
        inner = inner if type(inner) is str else ""
        self._reject(row, "retained", RETAINED_TOPIC, _shown(inner))
        return self.topics.row(inner)

    def _gateway_events(self, messages: Sequence[Message], gateways: list[tuple[int, int]], t: np.ndarray,
                        rate_t: np.ndarray) -> list[tuple[int, int, bool]]:
        """(t µs, gateway, online) of the batch's valid gateway statuses, rate-limited per gateway."""
        if not gateways:
            return []
        rows = np.array([row for row, _ in gateways], dtype=np.int64)
        index = np.array([gateway for _, gateway in gateways], dtype=np.int64)
        over = self._gateway_limit.over(index, rate_t[rows]) if self._gateway_limit is not None else None
        limited = over.tolist() if over is not None else [False] * len(gateways)
        events = []
        for (row, gateway), is_limited in zip(gateways, limited):
            topic, payload = messages[row][1], messages[row][2]
            if is_limited or self._oversize(row, topic, payload):
                continue
            state = (payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload).strip()
            if state not in ("online", "offline"):
                self._reject(row, "bad_gateway_status", topic, repr(state[:40]))
                continue
            events.append((int(t[row]), gateway, state == "online"))
        if over is not None:
            self._reject_count("rate_limited", int(over.sum()), messages[int(rows[np.argmax(over)])][1])
            self._noted.add_mask(rows[over], "rate_limited")
        return events

    def _track_unknown(self, topic: str) -> str | None:
        """Count an unknown device's topic; the topic as tracked, or None past ``unknown_limit``."""
        topic = _shown(topic)
        if topic in self.unknown_topics:
            self.unknown_topics[topic] += 1
        elif len(self.unknown_topics) < self.unknown_limit:
            self.unknown_topics[topic] = 1
        else:
            self.unknown_overflow += 1
            return None
        return topic

    def _reject(self, row: int, kind: str, topic: str, detail: str) -> None:
        self._noted.add(row, kind)
        self.rejects[kind] += 1
        if self.rejects[kind] <= LOGGED_PER_KIND:
            log.warning("rejected message (%s) on %r%s%s", kind, topic[:200], ": " if detail else "", detail[:200])

    def _reject_count(self, kind: str, count: int, topic: str) -> None:
        """``count`` rejects of one kind found together; ``topic`` is the first one's."""
        if count:
            self.rejects[kind] += count
            if self.rejects[kind] - count < LOGGED_PER_KIND:
                log.warning("rejected %d message(s) (%s), the first on %r", count, kind, topic[:200])

    def count_bad_values(self, bad_by_field: dict[str, int], bad: np.ndarray, mismatched: np.ndarray,
                         device: np.ndarray) -> None:
        """Count the rows refused for a bad value or a success counter above its attempts; the first
        few of each kind are logged with the device they came from."""
        for name, count in bad_by_field.items():
            self.bad_fields[name] += count
        for kind, rows in (("bad_value", bad), ("counter_mismatch", mismatched)):
            count = int(rows.sum())
            if count:
                self.rejects[kind] += count
                if self.rejects[kind] - count < LOGGED_PER_KIND:
                    first = self.registry.ids[int(device[int(np.argmax(rows))])]
                    fields = f"; fields: {dict(bad_by_field)}" if kind == "bad_value" else ""
                    log.warning("rejected %d message(s) (%s), the first from device %s%s", count, kind, first, fields)


_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {0x2028: "\\u2028", 0x2029: "\\u2029"}


def _shown(topic: str) -> str:
    """An unknown topic as kept for logs, terminals and reports: cut short, control characters
    and lone surrogates escaped (a device cannot write escape sequences into a terminal)."""
    if len(topic) > TRACKED_TOPIC_CHARS:
        topic = topic[:TRACKED_TOPIC_CHARS] + "…"
    if not topic.isprintable():
        topic = topic.translate(_CONTROL_ESCAPES).encode("utf-8", "backslashreplace").decode("utf-8")
    return topic
