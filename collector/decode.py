"""Decode: (receive time, topic, payload) messages to validated numpy columns.

The per-message Python work is kept to a topic lookup, one ``orjson.loads`` and a type
check; every field is then pulled out and validated per batch, column by column. A message
that fails any check is rejected whole, counted by kind (``rejects``) and never reaches the
engine, so it counts toward no KPI.

Reject kinds:
  bad_topic          topic is not ``putuo/{contract}/{street}/{device}/hb`` nor a gateway status
  unknown_device     device id not in the registry (also tracked by topic, bounded)
  contract_mismatch  topic contract differs from the registry's
  street_mismatch    topic street differs from the registry's
  oversize           payload larger than ``max_payload`` bytes
  bad_json           not JSON (or not UTF-8, NaN, Infinity)
  not_object         JSON, but not an object
  bad_value          a known key of the wrong type or out of range (``bad_fields`` says which)
  counter_mismatch   a success counter above its attempts counter (read_ok > reads, ...)
  unknown_gateway    gateway status from a gateway not in the registry
  bad_gateway_status gateway status payload not ``online`` / ``offline``
"""

from __future__ import annotations

import gc
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from .registry import Registry
from .rules import COUNTERS

log = logging.getLogger(__name__)

REJECT_KINDS = (
    "bad_topic",
    "unknown_device",
    "contract_mismatch",
    "street_mismatch",
    "oversize",
    "bad_json",
    "not_object",
    "bad_value",
    "counter_mismatch",
    "unknown_gateway",
    "bad_gateway_status",
)
MAX_COUNTER = 2**40  # a trillion attempts since boot; larger is a broken device, and int64 sums stay exact
MAX_SEQ = 2**53
MAX_BOOT_LEN = 64
FLOAT_RANGES = {"ts": (0.0, 2.0**33), "bat": (0.0, 100.0), "rssi": (-200.0, 50.0)}
COUNTER_PAIRS = ((0, 1), (2, 3), (4, 5))  # (attempts, successes) columns of COUNTERS
LOGGED_PER_KIND = 5  # first rejects of each kind are logged with detail; the rest only counted

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

    def __len__(self) -> int:
        return len(self.t)

    def take(self, rows: Any) -> DecodedBatch:
        """The rows selected by an index array or mask (gateway events stay with the batch)."""
        return DecodedBatch(
            **{name: getattr(self, name)[rows] for name in _ARRAY_FIELDS}, gateway_events=[]
        )


_ARRAY_FIELDS = ("t", "device", "seq", "has_seq", "boot", "has_boot", "counters", "has_counter", "ts", "bat", "rssi")


def _size(payload: bytes | str) -> int:
    """Payload size in bytes (archives hold payloads as text)."""
    return len(payload) if isinstance(payload, bytes) else len(payload.encode("utf-8", "surrogatepass"))


def times_to_us(times: Sequence[float]) -> np.ndarray:
    """Float unix seconds to int64 µs, rounded to nearest (as :func:`timebase.seconds_to_us`)."""
    return np.rint(np.asarray(times, dtype=np.float64) * 1e6).astype(np.int64)


class Decoder:
    """Turns raw messages into :class:`DecodedBatch` and keeps the reject counts."""

    def __init__(self, registry: Registry, *, max_payload: int = 4096, unknown_limit: int = 10_000) -> None:
        self.registry = registry
        self.max_payload = max_payload
        self.unknown_limit = unknown_limit
        self.rejects: Counter[str] = Counter()
        self.bad_fields: Counter[str] = Counter()
        self.unknown_topics: dict[str, int] = {}  # bounded by unknown_limit
        self.unknown_overflow = 0
        self.accepted = 0
        self._topic_device = self._registry_topics(registry)
        self._gateway_index = {g: i for i, g in enumerate(registry.gateways) if g}
        self._contracts = {c.code: i for i, c in enumerate(registry.rules.contracts)}
        self._streets = {s.code: i for i, s in enumerate(registry.rules.streets)}

    @staticmethod
    def _registry_topics(registry: Registry) -> dict[str, int]:
        """Every registry device's heartbeat topic: the hot path is then one dict lookup."""
        contracts = [c.code for c in registry.rules.contracts]
        streets = registry.rules.street_codes()
        return {
            f"putuo/{contracts[c]}/{streets[s]}/{device_id}/hb": i
            for i, (c, s, device_id) in enumerate(zip(registry.contract.tolist(), registry.street.tolist(), registry.ids))
        }

    def decode(self, messages: Iterable[Message]) -> DecodedBatch:
        """Decode a batch; rejected messages are counted and left out."""
        messages = messages if isinstance(messages, list) else list(messages)
        # A batch allocates a dict per message, which would trigger several cyclic-GC passes
        # over the batch's own live objects; JSON objects cannot form cycles and refcounting
        # frees them, so the collector pauses for the batch (about +20 % decode rate).
        paused = gc.isenabled()
        gc.disable()
        try:
            batch = self._decode_clean(messages)
            if batch is None:
                batch = self._decode_each(messages)
        finally:
            if paused:
                gc.enable()
        self.accepted += len(batch)
        return batch

    def _decode_clean(self, messages: list[Message]) -> DecodedBatch | None:
        """The common batch, where every message is a known device's JSON object: C-level maps
        only. None when anything needs a closer look, which :meth:`_decode_each` gives."""
        if not messages:
            return None
        times, topics, payloads = zip(*messages)
        devices = list(map(self._topic_device.get, topics))
        # UTF-8 takes at most 4 bytes a character: shorter text cannot be oversize
        if None in devices or max(map(len, payloads)) > self.max_payload // 4:
            return None
        try:
            objects = list(map(orjson.loads, payloads))
        except orjson.JSONDecodeError:
            return None
        if set(map(type, objects)) != {dict}:
            return None
        return decode_columns(times_to_us(times), np.array(devices, dtype=np.int64), objects, self)

    def _decode_each(self, messages: list[Message]) -> DecodedBatch:
        """Message by message, rejecting and counting what is wrong."""
        times: list[float] = []
        devices: list[int] = []
        objects: list[dict[str, Any]] = []
        gateway_events: list[tuple[float, int, bool]] = []
        topic_device, loads, max_payload = self._topic_device, orjson.loads, self.max_payload
        for t, topic, payload in messages:
            device = topic_device.get(topic)
            if device is None:
                self._other_topic(t, topic, payload, gateway_events)
                continue
            if len(payload) > max_payload // 4 and _size(payload) > max_payload:
                self._reject("oversize", topic, f"{_size(payload)} bytes")
                continue
            try:
                obj = loads(payload)
            except orjson.JSONDecodeError as exc:
                self._reject("bad_json", topic, str(exc))
                continue
            if type(obj) is not dict:
                self._reject("not_object", topic, type(obj).__name__)
                continue
            times.append(t)
            devices.append(device)
            objects.append(obj)
        batch = decode_columns(times_to_us(times), np.array(devices, dtype=np.int64), objects, self)
        batch.gateway_events = [(int(round(t * 1e6)), g, online) for t, g, online in gateway_events]
        return batch

    def _other_topic(self, t: float, topic: str, payload: bytes | str, gateway_events: list[tuple[float, int, bool]]) -> None:
        """A topic that is no registry device's heartbeat topic: a gateway status, or a reject by kind."""
        parts = topic.split("/")
        if len(parts) == 4 and parts[0] == "putuo" and parts[1] == "gw" and parts[3] == "status":
            self._gateway_status(t, topic, parts[2], payload, gateway_events)
            return
        if len(parts) != 5 or parts[0] != "putuo" or parts[4] != "hb" or parts[1] not in self._contracts:
            self._reject("bad_topic", topic, "")
            return
        device = self.registry.index.get(parts[3])
        if device is None:
            self._reject("unknown_device", topic, "")
            self._track_unknown(topic)
        elif self.registry.contract[device] != self._contracts[parts[1]]:
            self._reject("contract_mismatch", topic, f"registry says {self.registry.rules.contracts[self.registry.contract[device]].code}")
        else:  # the id and contract match, so the street is what differs from the registry topic
            self._reject("street_mismatch", topic, f"registry says {self.registry.rules.streets[self.registry.street[device]].code}")

    def _gateway_status(self, t: float, topic: str, gateway: str, payload: bytes | str, events: list[tuple[float, int, bool]]) -> None:
        index = self._gateway_index.get(gateway)
        if index is None:
            self._reject("unknown_gateway", topic, "")
            return
        state = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
        if state.strip() not in ("online", "offline"):
            self._reject("bad_gateway_status", topic, state[:40])
            return
        events.append((t, index, state.strip() == "online"))

    def _track_unknown(self, topic: str) -> None:
        if topic in self.unknown_topics:
            self.unknown_topics[topic] += 1
        elif len(self.unknown_topics) < self.unknown_limit:
            self.unknown_topics[topic] = 1
        else:
            self.unknown_overflow += 1

    def _reject(self, kind: str, topic: str, detail: str) -> None:
        self.rejects[kind] += 1
        if self.rejects[kind] <= LOGGED_PER_KIND:
            log.warning("rejected message (%s) on %r%s%s", kind, topic[:200], ": " if detail else "", detail[:200])

    def count_bad_values(self, bad_by_field: dict[str, int], bad_rows: int, mismatched_rows: int) -> None:
        for name, count in bad_by_field.items():
            self.bad_fields[name] += count
        for kind, count in (("bad_value", bad_rows), ("counter_mismatch", mismatched_rows)):
            if count:
                self.rejects[kind] += count
                if self.rejects[kind] - count < LOGGED_PER_KIND:
                    log.warning("rejected %d message(s) (%s); fields: %s", count, kind, dict(bad_by_field))


MAX_SHAPES = 32  # distinct key sets per batch decoded shape by shape; more (hostile traffic) go key by key


def decode_columns(t: np.ndarray, device: np.ndarray, objects: list[dict[str, Any]], decoder: Decoder | None = None) -> DecodedBatch:
    """Pull every wire-contract key out of decoded payload objects, column by column.

    Payloads of one firmware share a key set, so objects are grouped by their keys and each
    group's columns come out of ``zip(*values)`` in C, with no gaps to fill.
    """
    n = len(objects)
    out = _Columns(n)
    for rows, column in _groups(objects):
        out.fill(rows, column)
    mismatch = np.zeros(n, dtype=bool)
    for attempts, successes in COUNTER_PAIRS:
        both = out.has_counter[:, attempts] & out.has_counter[:, successes]
        mismatch |= both & (out.counters[:, successes] > out.counters[:, attempts])
    mismatch &= ~out.bad
    if decoder is not None:
        decoder.count_bad_values(out.bad_by_field, int(out.bad.sum()), int(mismatch.sum()))
    keep = ~(out.bad | mismatch)
    batch = DecodedBatch(
        t=t, device=device, seq=out.seq, has_seq=out.has_seq, boot=out.boot, has_boot=out.has_boot,
        counters=out.counters, has_counter=out.has_counter, ts=out.floats["ts"], bat=out.floats["bat"], rssi=out.floats["rssi"],
    )
    return batch if keep.all() else batch.take(keep)


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
        if len(shape_ids) == 1:
            rows, group = slice(None), objects
        else:
            rows = np.flatnonzero(ids == k)
            group = [objects[i] for i in rows.tolist()]
        columns = dict(zip(shape, zip(*map(dict.values, group)))) if shape else {}
        yield rows, columns.get


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
_BOOT_CACHE_LIMIT = 1 << 20


def boot_key(boot: str | int) -> int:
    """A boot id as a signed 64-bit key: BLAKE2b of its text, so 7 and "7" are one boot and two
    different ids collide with odds of 2⁻⁶⁴ (a 32-bit checksum collides for real ids)."""
    digest = hashlib.blake2b(str(boot).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _boot_column(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boot ids (strings or integers) as :func:`boot_key`, stable across processes unlike ``hash()``."""
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
