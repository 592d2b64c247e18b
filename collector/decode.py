"""Decode: (receive time, topic, payload) messages to validated numpy columns.

The per-message Python work is kept to a topic lookup, one ``orjson.loads`` and a type
check; every field is then pulled out and validated per batch, column by column. A message
that fails any check is rejected whole, counted by kind (``rejects``) and never reaches the
engine, so it counts toward no KPI.

Reject kinds, checked in this order (a message counts under the first that fails):
  retained           a ``$ptmon/retained`` record: the broker's stored copy of a message, redelivered
                     on a subscribe (the source wraps every retained message but a gateway status
                     so); never a heartbeat, counted for the device its topic names
  bad_topic          topic is not ``putuo/{contract}/{street}/{device}/hb`` nor a gateway status
  unknown_device     device id not in the registry (also tracked by topic, bounded)
  contract_mismatch  topic contract differs from the registry's
  street_mismatch    topic street differs from the registry's
  unknown_gateway    gateway status from a gateway not in the registry
  rate_limited       more than ``device_rate`` messages from one device (or gateway) in a window
  oversize           payload larger than ``max_payload`` bytes
  bad_json           not JSON (or not UTF-8, NaN, Infinity, a number beyond a double, or nested
                     deeper than ``MAX_JSON_DEPTH``, orjson's own limit)
  not_object         JSON, but not an object
  bad_value          a known key of the wrong type or out of range (``bad_fields`` says which)
  counter_mismatch   a success counter above its attempts counter (read_ok > reads, ...)
  bad_gateway_status gateway status payload not ``online`` / ``offline``

Types are compared exactly: JSON ``true`` is no number (Python's bool is an int, so a plain
``isinstance`` would take it as 1), and ``1.0`` is no integer.

Limits (the collector's ``[limits]`` config; README "Limits"), all counted when they bite:

* ``max_payload`` bytes per payload.
* ``device_rate`` messages per registry device, and per gateway, in each fixed ``window`` of
  receive time (a divisor of a day, windows aligned to Shanghai midnight); every message on
  the topic counts, rejected or not. Decided per batch with numpy from receive times and
  arrival order only, which the archive keeps, and alike for any batching: a replay rejects
  exactly what the live collector did, also of one day's archive file alone (a day starts
  fresh windows). The collector writes its limits to the archive as a ``$ptmon/limits``
  record (:meth:`Decoder.limits_record`), which replay applies (:meth:`apply_limits_record`).
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
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from .archive import RETAINED_TOPIC
from .lines import ArchiveLines
from .payloads import Parsed, parse_payloads
from .registry import Registry
from .rules import COUNTERS
from .timebase import DAY_US, US_PER_S, UTC_OFFSET_US
from .topics import TopicMap

if TYPE_CHECKING:
    from .config import LimitsConfig

log = logging.getLogger(__name__)

REJECT_KINDS = (
    "retained",
    "bad_topic",
    "unknown_device",
    "contract_mismatch",
    "street_mismatch",
    "rate_limited",
    "oversize",
    "bad_json",
    "not_object",
    "bad_value",
    "counter_mismatch",
    "unknown_gateway",
    "bad_gateway_status",
)
# Besides rejects, the decoder counts messages whose receive time is before one already
# received (the collector's clock stepped back): they are applied at the clock's time.
DECODER_COUNTED = (*REJECT_KINDS, "late")
MAX_COUNTER = 2**40  # a trillion attempts since boot; larger is a broken device, and int64 sums stay exact
MAX_SEQ = 2**53
MAX_BOOT_LEN = 64
FLOAT_RANGES = {"ts": (0.0, 2.0**33), "bat": (0.0, 100.0), "rssi": (-200.0, 50.0)}
COUNTER_PAIRS = ((0, 1), (2, 3), (4, 5))  # (attempts, successes) columns of COUNTERS
LOGGED_PER_KIND = 5  # first rejects of each kind are logged with detail; the rest only counted
LIMITS_TOPIC = "$ptmon/limits"  # archive control record: the limits the collector decoded with
LIMIT_KEYS = ("max_payload", "device_rate", "window", "unknown_limit")
MAX_JSON_DEPTH = 1024  # orjson's limit (3.9.15+): deeper is a JSONDecodeError, so bad_json; tests check it
TRACKED_TOPIC_CHARS = 128  # an unknown topic is kept for the report cut to this length

Message = tuple[float, str, "bytes | str"]


@dataclass(eq=False)
class DecodedBatch:
    """Accepted heartbeats of one batch, in arrival order; absent keys have ``has_*`` False."""

    t: np.ndarray  # int64 µs receive time
    device: np.ndarray  # int64 registry index
    seq: np.ndarray  # int64
    has_seq: np.ndarray  # bool
    boot: np.ndarray  # int64, boot_key() of the boot id
    has_boot: np.ndarray  # bool
    counters: np.ndarray  # int64 [n, 6] in COUNTERS order
    has_counter: np.ndarray  # bool [n, 6]
    ts: np.ndarray  # float64 device clock, NaN when absent
    bat: np.ndarray  # float64, NaN when absent
    rssi: np.ndarray  # float64, NaN when absent
    gateway_events: list[tuple[int, int, bool]] = field(default_factory=list)  # (t µs, gateway, online)
    accepted: np.ndarray | None = None  # bool, set by the engine: rows that were not duplicates or stale
    counted: CountedEvents = field(default_factory=lambda: CountedEvents.empty())  # the batch's rejects and late arrivals
    engine_columns: Any = None  # what the engine derives per row once a batch (engine.RowColumns)

    def __len__(self) -> int:
        return len(self.t)

    def take(self, rows: Any) -> DecodedBatch:
        """The rows selected by an index array or mask (gateway events stay with the batch)."""
        return DecodedBatch(
            **{name: getattr(self, name)[rows] for name in _ARRAY_FIELDS}, gateway_events=[]
        )


@dataclass(eq=False)
class CountedEvents:
    """Messages of a batch counted by kind (rejects, late arrivals), for per-period data quality.

    ``t`` is the receive time (µs, as the monitor's clock saw it), ``device`` the registry index
    or -1 (unknown device, bad topic, gateway status), ``kind`` an index into
    :data:`DECODER_COUNTED`. ``unknown`` holds (t, topic) of unknown-device messages whose topic
    the decoder tracks for the report. ``n``, when given, is how many each event counts (the
    engine's ``lost``: the messages a gap in ``seq`` says were lost); None: one each.
    """

    t: np.ndarray
    device: np.ndarray
    kind: np.ndarray
    unknown: list[tuple[int, str]] = field(default_factory=list)
    n: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.t)

    @classmethod
    def empty(cls) -> CountedEvents:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int16))

    def counts(self) -> np.ndarray:
        """How many each event counts (int64)."""
        return self.n if self.n is not None else np.ones(len(self.t), dtype=np.int64)

    def take(self, rows: Any, unknown: list[tuple[int, str]]) -> CountedEvents:
        """The events at ``rows`` (a slice or an index array), with the unknown topics given."""
        return CountedEvents(self.t[rows], self.device[rows], self.kind[rows], unknown,
                             None if self.n is None else self.n[rows])

    @classmethod
    def join(cls, parts: list[CountedEvents]) -> CountedEvents:
        """One set in time order (stable: equal times keep the order given)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        t = np.concatenate([p.t for p in parts])
        order = np.argsort(t, kind="stable")
        weighted = any(p.n is not None for p in parts)
        return cls(t[order], np.concatenate([p.device for p in parts])[order],
                   np.concatenate([p.kind for p in parts])[order],
                   sorted((u for p in parts for u in p.unknown), key=lambda u: u[0]),
                   np.concatenate([p.counts() for p in parts])[order] if weighted else None)


_KIND_CODE = {kind: i for i, kind in enumerate(DECODER_COUNTED)}


class _Noted:
    """Rejects noted message by message while a batch is decoded, by row of the batch."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.kinds: list[int] = []
        self.unknown: list[tuple[int, str]] = []  # (row, topic as tracked)

    def add(self, row: int, kind: str) -> None:
        self.rows.append(row)
        self.kinds.append(_KIND_CODE[kind])

    def add_mask(self, rows: np.ndarray, kind: str) -> None:
        self.rows.extend(rows.tolist())
        self.kinds.extend([_KIND_CODE[kind]] * len(rows))

    def events(self, t: np.ndarray, device: np.ndarray) -> CountedEvents:
        rows = np.array(self.rows, dtype=np.int64)
        return CountedEvents(t[rows], device[rows], np.array(self.kinds, dtype=np.int16),
                             [(int(t[row]), topic) for row, topic in self.unknown])


_ARRAY_FIELDS = ("t", "device", "seq", "has_seq", "boot", "has_boot", "counters", "has_counter", "ts", "bat", "rssi")


def _size(payload: bytes | str) -> int:
    """Payload size in bytes (archives hold payloads as text)."""
    return len(payload) if isinstance(payload, bytes) else len(payload.encode("utf-8", "surrogatepass"))


def _received(messages: list[Message] | ArchiveLines) -> Sequence[float]:
    return messages.t if isinstance(messages, ArchiveLines) else [m[0] for m in messages]


def times_to_us(times: Sequence[float]) -> np.ndarray:
    """Float unix seconds to int64 µs, rounded to nearest (as :func:`timebase.seconds_to_us`)."""
    return np.rint(np.asarray(times, dtype=np.float64) * 1e6).astype(np.int64)


@dataclass
class RateState:
    """Where each device's and gateway's rate window stands: the window (in windows since the
    epoch, Shanghai-aligned) it last sent in and its messages there; ``clock`` the latest
    receive time (µs) the limits saw."""

    window: int  # seconds
    clock: int | None
    device_window: np.ndarray
    device_count: np.ndarray
    gateway_window: np.ndarray
    gateway_count: np.ndarray


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
        self._gateway_index = {g: i for i, g in enumerate(registry.gateways) if g}
        self._contracts = {c.code: i for i, c in enumerate(registry.rules.contracts)}
        self._streets = {s.code: i for i, s in enumerate(registry.rules.streets)}
        self._device_limit: _WindowLimit | None = None
        self._gateway_limit: _WindowLimit | None = None
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
            self._device_limit = _WindowLimit(len(self.registry), device_rate, window * US_PER_S)
            self._gateway_limit = _WindowLimit(len(self.registry.gateways), device_rate, window * US_PER_S)
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

    def rate_state(self) -> RateState | None:
        """The rate windows so far, for a checkpoint; None without a rate limit."""
        if self._device_limit is None or self._gateway_limit is None:
            return None
        return RateState(window=self.window, clock=self._clock,
                         device_window=self._device_limit.window, device_count=self._device_limit.count,
                         gateway_window=self._gateway_limit.window, gateway_count=self._gateway_limit.count)

    def restore_rate_state(self, state: RateState) -> bool:
        """Continue the saved windows (rows in this registry's order); False when the window
        length differs, which starts fresh windows as a changed ``$ptmon/limits`` record does."""
        if self._device_limit is None or self._gateway_limit is None or state.window != self.window:
            return False
        self._clock = state.clock
        self._device_limit.window[:], self._device_limit.count[:] = state.device_window, state.device_count
        self._gateway_limit.window[:], self._gateway_limit.count[:] = state.gateway_window, state.gateway_count
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
        topics = [messages.topic(i) for i in rows.tolist()] if isinstance(messages, ArchiveLines) else [messages[i][1] for i in rows.tolist()]
        device = self.topics.rows(topics)
        return CountedEvents(t[rows], device, np.full(len(rows), _KIND_CODE["late"], dtype=np.int16))

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
        if isinstance(messages, ArchiveLines):
            messages = messages.records()
        devices: list[int | None] = device.tolist() if known else [None if d < 0 else d for d in device.tolist()]
        return self._decode_each(messages, t, devices, over, rate_t)

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
            groups += [(slow if isinstance(rows, slice) else slow[rows], column) for rows, column in _groups(objects)]
        return decode_groups(t, device, len(t), groups, self)

    def _rate_times(self, t: np.ndarray) -> np.ndarray:
        """Receive times made non-decreasing (a late message counts in the current window)."""
        if self._device_limit is None:
            return t
        clocked = np.maximum.accumulate(t if self._clock is None else np.maximum(t, self._clock))
        self._clock = int(clocked[-1])
        return clocked

    def _decode_each(self, messages: list[Message], t: np.ndarray, devices: list[int | None],
                     over: np.ndarray | None, rate_t: np.ndarray) -> DecodedBatch:
        """Message by message, rejecting and counting what is wrong."""
        rows: list[int] = []
        objects: list[dict[str, Any]] = []
        gateways: list[tuple[int, int]] = []  # (row, gateway index) of gateway status messages
        limited = over.tolist() if over is not None else [False] * len(messages)
        loads, clean_length = orjson.loads, self._clean_length
        self._noted = noted = _Noted()
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
            if gateway is None:
                self._reject(row, "unknown_gateway", topic, "")
            else:
                gateways.append((row, gateway))
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
            self._reject(row, "contract_mismatch", topic, f"registry says {self.registry.rules.contracts[self.registry.contract[device]].code}")
        else:  # the id and contract match, so the street is what differs from the registry topic
            self._reject(row, "street_mismatch", topic, f"registry says {self.registry.rules.streets[self.registry.street[device]].code}")
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

    def _gateway_events(self, messages: list[Message], gateways: list[tuple[int, int]], t: np.ndarray,
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


MAX_BULK_WINDOWS = 8  # a batch spanning more windows is counted by sorting, not window by window


class _WindowLimit:
    """At most ``rate`` messages per key (a device or gateway index) in each fixed window of time.

    Windows are ``[midnight + k·window, midnight + (k+1)·window)`` in Shanghai time.

    Times must not go back across calls (the decoder hands in a monotone clock), so a key's
    windows only move forward and its state is one (window, count) pair. Every message counts,
    the refused ones too: a device flooding stays refused until its window ends.
    """

    def __init__(self, keys: int, rate: int, window_us: int) -> None:
        self.rate = rate
        self.window_us = window_us
        self.window = np.full(keys, -1, dtype=np.int64)  # the window each key last sent in
        self.count = np.zeros(keys, dtype=np.int64)  # messages the key sent in that window

    def over(self, key: np.ndarray, t: np.ndarray) -> np.ndarray | None:
        """Mask of the messages over the limit (a key < 0 is never limited); None when none is."""
        rows = np.flatnonzero(key >= 0)
        if not len(rows):
            return None
        k, w = key[rows], (t[rows] + UTC_OFFSET_US) // self.window_us
        # Windows never go back, so the batch is a run per window (a replay batch spans a few):
        # each is counted in bulk, in order, until one has a key over the limit.
        ends = [*(np.flatnonzero(w[1:] != w[:-1]) + 1).tolist(), len(k)]
        start = 0
        if len(ends) <= MAX_BULK_WINDOWS:
            for end in ends:
                if not self._count_within(k[start:end], int(w[start])):
                    break
                start = end
        return None if start == len(k) else self._count_ranked(rows[start:], k[start:], w[start:], len(key))

    def _count_within(self, k: np.ndarray, w: int) -> bool:
        """The common batch, all in one window and nobody over: counted in bulk (False: changed nothing)."""
        total = np.where(self.window[k] == w, self.count[k], 0) + np.bincount(k)[k]
        if int(total.max()) > self.rate:
            return False
        self.window[k] = w  # repeated keys write equal values
        self.count[k] = total
        return True

    def _count_ranked(self, rows: np.ndarray, k: np.ndarray, w: np.ndarray, n: int) -> np.ndarray | None:
        """Each message's number within its key's window, in arrival order (a stable sort by key)."""
        order = np.argsort(k, kind="stable")
        k, w = k[order], w[order]
        position = np.arange(len(k))
        run_start = np.ones(len(k), dtype=bool)
        run_start[1:] = (k[1:] != k[:-1]) | (w[1:] != w[:-1])
        rank = position - np.maximum.accumulate(np.where(run_start, position, 0))
        # only a key's first run in the batch can be in the window it last sent in
        number = np.where(self.window[k] == w, self.count[k], 0) + rank + 1
        last = np.ones(len(k), dtype=bool)
        last[:-1] = k[1:] != k[:-1]
        self.window[k[last]] = w[last]
        self.count[k[last]] = number[last]
        over = np.zeros(n, dtype=bool)
        over[rows[order]] = number > self.rate
        return over if over.any() else None


_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {0x2028: "\\u2028", 0x2029: "\\u2029"}


def _shown(topic: str) -> str:
    """An unknown topic as kept for logs, terminals and reports: cut short, control characters
    and lone surrogates escaped (a device cannot write escape sequences into a terminal)."""
    if len(topic) > TRACKED_TOPIC_CHARS:
        topic = topic[:TRACKED_TOPIC_CHARS] + "…"
    if not topic.isprintable():
        topic = topic.translate(_CONTROL_ESCAPES).encode("utf-8", "backslashreplace").decode("utf-8")
    return topic


MAX_SHAPES = 32  # distinct key sets per batch decoded shape by shape; more (hostile traffic) go key by key


def decode_columns(t: np.ndarray, device: np.ndarray, objects: list[dict[str, Any]], decoder: Decoder | None = None) -> DecodedBatch:
    """Pull every wire-contract key out of decoded payload objects, column by column.

    Payloads of one firmware share a key set, so objects are grouped by their keys and each
    group's columns come out of ``zip(*values)`` in C, with no gaps to fill.
    """
    return decode_groups(t, device, len(objects), _groups(objects), decoder)


def decode_groups(t: np.ndarray, device: np.ndarray, n: int, groups: Iterable[tuple[Any, Column]],
                  decoder: Decoder | None = None) -> DecodedBatch:
    """:func:`decode_columns` from payloads already split into groups of rows with a column
    getter each (a key's values as a list, or an int64 array from payloads.py; None: absent)."""
    out = _Columns(n)
    for rows, column in groups:
        out.fill(rows, column)
    mismatch = np.zeros(n, dtype=bool)
    for attempts, successes in COUNTER_PAIRS:
        both = out.has_counter[:, attempts] & out.has_counter[:, successes]
        mismatch |= both & (out.counters[:, successes] > out.counters[:, attempts])
    mismatch &= ~out.bad
    if decoder is not None:  # fields in one order, however the rows were grouped
        by_field = {name: out.bad_by_field[name] for name in _FIELD_ORDER if name in out.bad_by_field}
        decoder.count_bad_values(by_field, out.bad, mismatch, device)
    keep = ~(out.bad | mismatch)
    batch = DecodedBatch(
        t=t, device=device, seq=out.seq, has_seq=out.has_seq, boot=out.boot, has_boot=out.has_boot,
        counters=out.counters, has_counter=out.has_counter, ts=out.floats["ts"], bat=out.floats["bat"], rssi=out.floats["rssi"],
    )
    if keep.all():
        return batch
    kept = batch.take(keep)
    bad, mismatched = np.flatnonzero(out.bad), np.flatnonzero(mismatch)
    kept.counted = CountedEvents.join([
        CountedEvents(t[rows], device[rows], np.full(len(rows), _KIND_CODE[kind], dtype=np.int16))
        for rows, kind in ((bad, "bad_value"), (mismatched, "counter_mismatch"))])
    return kept


Column = Callable[[str], "Sequence[Any] | None"]


class _ShapeIds(dict):  # type: ignore[type-arg]
    """Key set -> small int, assigning the next id on first sight (lookups stay in C)."""

    def __missing__(self, shape: tuple[str, ...]) -> int:
        self[shape] = found = len(self)
        return found


def _groups(objects: list[dict[str, Any]]) -> Iterator[tuple[Any, Column]]:
    """(rows, column getter) per group of objects; a getter gives a key's values or None."""
    n = len(objects)
    shape_ids = _ShapeIds()
    ids = np.fromiter(map(shape_ids.__getitem__, map(tuple, objects)), dtype=np.int64, count=n)
    if len(shape_ids) > MAX_SHAPES:
        keys = set().union(*objects)
        yield slice(None), lambda name: [o.get(name) for o in objects] if name in keys else None
        return
    for shape, k in shape_ids.items():
        rows: Any
        if len(shape_ids) == 1:
            rows, group = slice(None), objects
        else:
            rows = np.flatnonzero(ids == k)
            group = [objects[i] for i in rows.tolist()]
        columns = dict(zip(shape, zip(*map(dict.values, group)))) if shape else {}
        yield rows, columns.get


_FIELD_ORDER = ("seq", *COUNTERS, *FLOAT_RANGES, "boot")  # the order _Columns.fill reads them in


class _Columns:
    """The batch's arrays, filled group by group, with every bad value noted."""

    def __init__(self, n: int) -> None:
        self.seq = np.zeros(n, dtype=np.int64)
        self.has_seq = np.zeros(n, dtype=bool)
        self.boot = np.zeros(n, dtype=np.int64)
        self.has_boot = np.zeros(n, dtype=bool)
        self.counters = np.zeros((n, len(COUNTERS)), dtype=np.int64)
        self.has_counter = np.zeros((n, len(COUNTERS)), dtype=bool)
        self.floats = {name: np.full(n, np.nan) for name in FLOAT_RANGES}
        self.bad = np.zeros(n, dtype=bool)
        self.bad_by_field: dict[str, int] = {}

    def _note(self, name: str, rows: Any, bad: np.ndarray) -> None:
        count = int(bad.sum())
        if count:
            self.bad_by_field[name] = self.bad_by_field.get(name, 0) + count
            self.bad[rows] |= bad

    def fill(self, rows: Any, column: Column) -> None:
        values = column("seq")
        if values is not None:
            self.seq[rows], self.has_seq[rows], bad = _int_column(values, 0, MAX_SEQ)
            self._note("seq", rows, bad)
        for j, name in enumerate(COUNTERS):
            values = column(name)
            if values is not None:
                self.counters[rows, j], self.has_counter[rows, j], bad = _int_column(values, 0, MAX_COUNTER)
                self._note(name, rows, bad)
        for name, (lo, hi) in FLOAT_RANGES.items():
            values = column(name)
            if values is not None:
                self.floats[name][rows], bad = _float_column(values, lo, hi)
                self._note(name, rows, bad)
        values = column("boot")
        if values is not None:
            self.boot[rows], self.has_boot[rows], bad = _boot_column(values)
            self._note("boot", rows, bad)


def _int_column(values: Sequence[Any], lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, present, bad) for a key that must be an integer in [lo, hi]; absent or null is 0."""
    n = len(values)
    if isinstance(values, np.ndarray):  # integers parsed in bulk
        return values, np.ones(n, dtype=bool), (values < lo) | (values > hi)
    kinds = set(map(type, values))
    if kinds <= {int, type(None)}:
        present = np.ones(n, dtype=bool) if type(None) not in kinds else np.array([v is not None for v in values], dtype=bool)
        try:
            array = np.array(values if present.all() else [0 if v is None else v for v in values], dtype=np.int64)
        except OverflowError:
            pass  # an integer beyond int64: find it on the slow path below
        else:
            return array, present, present & ((array < lo) | (array > hi))
    array = np.zeros(n, dtype=np.int64)
    present = np.zeros(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    for i, v in enumerate(values):
        if v is None:
            continue
        if type(v) is int and lo <= v <= hi:
            array[i], present[i] = v, True
        else:
            bad[i] = True
    return array, present, bad


def _float_column(values: Sequence[Any], lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """(values with NaN for absent or null, bad) for a key that must be a finite number in [lo, hi]."""
    if isinstance(values, np.ndarray):  # integers parsed in bulk: rounded to a double as Python's int → float is
        array = values.astype(np.float64)
        return array, ~((array >= lo) & (array <= hi))
    kinds = set(map(type, values))
    if kinds <= {int, float, type(None)}:
        try:
            filled = values if type(None) not in kinds else [np.nan if v is None else v for v in values]
            array = np.array(filled, dtype=np.float64)
        except OverflowError:
            pass  # an integer too large for a double: reject it on the slow path
        else:
            present = ~np.isnan(array)
            bad = present & ~((array >= lo) & (array <= hi))
            return array, bad
    array = np.full(len(values), np.nan)
    bad = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if v is None:
            continue
        if type(v) in (int, float) and lo <= v <= hi:
            array[i] = v
        else:
            bad[i] = True
    return array, bad


_boot_keys: dict[Any, int] = {}  # boot id -> boot_key: a device keeps its boot id for months
# Cleared when full: the district's ~114k boot ids fit twice, and devices inventing a new
# 64-character id per message hold it at ~47 MB (2**20 entries measured 187 MB).
_BOOT_CACHE_LIMIT = 1 << 18


def boot_key(boot: str | int) -> int:
    """A boot id as a signed 64-bit key: BLAKE2b of its text, so 7 and "7" are one boot and two
    different ids collide with odds of 2⁻⁶⁴ (a 32-bit checksum collides for real ids)."""
    digest = hashlib.blake2b(str(boot).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


class _IntBootKeys:
    """:func:`boot_key` of integer boot ids parsed in bulk (|id| < 10**18), cached in sorted
    arrays and looked up with numpy; cleared when full like the dict of the other ids."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, dtype=np.int64)
        self.keys = np.zeros(0, dtype=np.int64)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(self.ids, values), max(len(self.ids) - 1, 0))
        keys = self.keys[at] if len(self.ids) else np.zeros(len(values), dtype=np.int64)
        miss = np.flatnonzero(self.ids[at] != values) if len(self.ids) else np.arange(len(values))
        if len(miss):
            new = np.unique(values[miss])
            new_keys = np.array([boot_key(v) for v in new.tolist()], dtype=np.int64)
            keys[miss] = new_keys[np.searchsorted(new, values[miss])]
            if len(self.ids) + len(new) > _BOOT_CACHE_LIMIT:
                self.ids, self.keys = new, new_keys
            else:
                ids, merged = np.concatenate([self.ids, new]), np.concatenate([self.keys, new_keys])
                order = np.argsort(ids, kind="stable")
                self.ids, self.keys = ids[order], merged[order]
        return keys


_int_boot_keys = _IntBootKeys()


def _boot_column(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boot ids (strings or integers) as :func:`boot_key`, stable across processes unlike ``hash()``."""
    if isinstance(values, np.ndarray):  # integers parsed in bulk, all within int64
        return _int_boot_keys(values), np.ones(len(values), dtype=bool), np.zeros(len(values), dtype=bool)
    n = len(values)
    if len(_boot_keys) > _BOOT_CACHE_LIMIT:
        _boot_keys.clear()
    present = np.ones(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    if set(map(type, values)) <= {str, int}:  # bool and float would hash equal to cached ints
        keys = list(map(_boot_keys.get, values))
    else:
        keys = [None] * n
    for i in [i for i, key in enumerate(keys) if key is None]:
        v = values[i]
        if v is None:
            present[i], keys[i] = False, 0
        elif (type(v) is str and len(v) <= MAX_BOOT_LEN) or (type(v) is int and abs(v) < 2**63):
            keys[i] = _boot_keys.setdefault(v, boot_key(v))
        else:
            present[i], bad[i], keys[i] = False, True, 0
    return np.array(keys, dtype=np.int64), present, bad
