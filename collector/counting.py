"""Counted messages: every message received counts somewhere, per tick slot and street.

An accepted heartbeat counts as ``heartbeats``; a message refused by the decoder counts under
its reject kind (a retained message as ``retained``); one the engine ignores (``duplicate``,
``stale``) or applies with a caveat (``late``, ``outside_lease``, ``resets``) under that kind,
and one whose counter deltas the engine finds implausible and rejects under the reason
(``too_many_resets``, ``unmatched_success``, ``too_many_attempts``). Besides messages received,
the engine counts messages lost in transit from gaps in a device's ``seq``: ``lost`` counts
the gap's messages when it opens, ``recovered`` a late message that fills one of them, so
lost − recovered is what never arrived; ``seq_jump`` is a gap too large to be a loss;
``seq_suspect`` a jump ahead that the device's own later messages contradicted; ``future_ts`` a
heartbeat whose ``ts`` was too far ahead of its receive time to be believed (ignored). The engine hands these counts to
count listeners per tick slot, in time order with its samples and counter deltas, so a
period's data-quality figures (the report's 数据质量) are sums over the period exactly like
its KPIs: the ledger's hours and a replay of the archive give the same ones.

Counts are per group (contract × street, in the registry's group order) with one more entry
at the end for messages of no registry device (unknown ids, bad topics, gateway statuses,
the monitor's own restarts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .batch import DECODER_COUNTED, CountedEvents
from .timebase import UTC_OFFSET_US

ENGINE_COUNTED = ("heartbeats", "duplicate", "stale", "outside_lease", "resets", "restarts",
                  "too_many_resets", "unmatched_success", "too_many_attempts", "lost", "recovered", "seq_jump",
                  "future_ts", "seq_suspect",
                  "lost_across_gap")  # a subset of lost: seq gaps spanning a monitoring gap
# Engine kinds that reject a heartbeat's counter deltas (the heartbeat itself still counts).
IMPLAUSIBLE_KINDS = ("too_many_resets", "unmatched_success", "too_many_attempts")
COUNT_KINDS = (*DECODER_COUNTED, *ENGINE_COUNTED)
KIND_CODE = {kind: code for code, kind in enumerate(COUNT_KINDS)}


class CountListener(Protocol):
    def on_counts(self, slot_start: int, counts: dict[str, np.ndarray], unknown: dict[str, int]) -> None:
        """Messages counted by kind in the tick slot starting at ``slot_start`` (per group, the
        last entry for no registry device), and the unknown-device topics with their counts."""


@dataclass(frozen=True)
class SlotCounts:
    slot_start: int
    counts: dict[str, np.ndarray]
    unknown: dict[str, int]


def engine_events(t: np.ndarray, device: np.ndarray, kind: str, n: np.ndarray | None = None) -> CountedEvents:
    """Events the engine counts itself, all of one kind (each counting ``n``, or one)."""
    return CountedEvents(t, device, np.full(len(t), KIND_CODE[kind], dtype=np.int16), n=n)


def by_slot(events: CountedEvents, group_of: np.ndarray, n_groups: int, tick: int) -> list[SlotCounts]:
    """Events summed per tick slot (ascending), kind and group."""
    if not len(events):
        return []
    slot = (events.t + UTC_OFFSET_US) // tick
    group = np.where(events.device >= 0, group_of[np.maximum(events.device, 0)], n_groups)
    cell = events.kind.astype(np.int64) * (n_groups + 1) + group  # (kind, group) as one index
    unknown: dict[int, dict[str, int]] = {}
    for t, topic in events.unknown:
        by_topic = unknown.setdefault((t + UTC_OFFSET_US) // tick, {})
        by_topic[topic] = by_topic.get(topic, 0) + 1
    out = []
    first, last = int(slot.min()), int(slot.max())
    for s in [first] if first == last else np.unique(slot).tolist():  # a batch's events mostly lie in one slot
        in_slot = slice(None) if first == last else slot == s
        kinds = np.flatnonzero(np.bincount(events.kind[in_slot], minlength=len(COUNT_KINDS)))
        table = _per_kind_and_group(cell[in_slot], None if events.n is None else events.n[in_slot], n_groups)
        counts = {COUNT_KINDS[code]: table[code] for code in kinds.tolist()}
        out.append(SlotCounts(s * tick - UTC_OFFSET_US, counts, unknown.get(s, {})))
    return out


def _per_kind_and_group(cell: np.ndarray, weights: np.ndarray | None, n_groups: int) -> np.ndarray:
    """Events (each counting its weight, or one) summed per kind and group: int64 [kind, group]."""
    size = len(COUNT_KINDS) * (n_groups + 1)
    if weights is None:
        sums = np.bincount(cell, minlength=size).astype(np.int64, copy=False)
    else:  # summed exactly: bincount's weights would go through float64
        sums = np.zeros(size, dtype=np.int64)
        np.add.at(sums, cell, weights)
    return sums.reshape(len(COUNT_KINDS), n_groups + 1)


def add_counts(into: dict[str, np.ndarray], counts: dict[str, np.ndarray]) -> None:
    for kind, per_group in counts.items():
        if kind in into:
            into[kind] += per_group
        else:
            into[kind] = per_group.copy()
