"""A decoded batch: what the decoder hands the engine.

:class:`DecodedBatch` holds a batch's accepted heartbeats as numpy columns; :class:`CountedEvents`
the messages counted by kind on the way (the decoder's rejects and late arrivals, and the
engine's own kinds, counting.py), for the per-period data quality. The reject kinds are listed
here, in the order the decoder checks them; decode.py says what each one means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .heartbeats import RowColumns

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
# received (the collector's clock stepped back): they are applied at the clock's time; and, in a
# partition, gateway statuses another partition owns and counts (partition.py).
DECODER_COUNTED = (*REJECT_KINDS, "late", "other_partition_gateway")
DECODER_KIND_CODE = {kind: i for i, kind in enumerate(DECODER_COUNTED)}
_ARRAY_FIELDS = ("t", "device", "seq", "has_seq", "boot", "has_boot", "counters", "has_counter", "ts", "bat", "rssi")


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
    engine_columns: RowColumns | None = None  # what the engine derives per row once a batch

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
        if len(parts) == 1 and _in_time_order(parts[0]):  # a round's heartbeats alone: nothing to sort
            only = parts[0]
            return cls(only.t, only.device, only.kind, list(only.unknown), only.n)
        t = np.concatenate([p.t for p in parts])
        order = np.argsort(t, kind="stable")
        weighted = any(p.n is not None for p in parts)
        return cls(t[order], np.concatenate([p.device for p in parts])[order],
                   np.concatenate([p.kind for p in parts])[order],
                   sorted((u for p in parts for u in p.unknown), key=lambda u: u[0]),
                   np.concatenate([p.counts() for p in parts])[order] if weighted else None)


def _in_time_order(events: CountedEvents) -> bool:
    t = events.t
    return bool((t[1:] >= t[:-1]).all()) and all(a[0] <= b[0] for a, b in zip(events.unknown, events.unknown[1:]))


class NotedEvents:
    """Counted events noted message by message while a batch is decoded (the decoder's rejects), by row."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.kinds: list[int] = []
        self.unknown: list[tuple[int, str]] = []  # (row, topic as tracked)

    def add(self, row: int, kind: str) -> None:
        self.rows.append(row)
        self.kinds.append(DECODER_KIND_CODE[kind])

    def add_mask(self, rows: np.ndarray, kind: str) -> None:
        self.rows.extend(rows.tolist())
        self.kinds.extend([DECODER_KIND_CODE[kind]] * len(rows))

    def events(self, t: np.ndarray, device: np.ndarray) -> CountedEvents:
        rows = np.array(self.rows, dtype=np.int64)
        return CountedEvents(t[rows], device[rows], np.array(self.kinds, dtype=np.int16),
                             [(int(t[row]), topic) for row, topic in self.unknown])
