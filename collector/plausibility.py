"""Plausible counters: whether a heartbeat's counter deltas are believed (rules/README.md).

Pure logic over arrays the engine gathered for one round of heartbeats (distinct devices):
the engine keeps each device's state in one :data:`PLAUSIBILITY` record, hands the round's
records to :func:`judge`, which updates them in place, and scatters them back.

Three rules, the first that fails rejecting all of a heartbeat's deltas:

1. ``too_many_resets`` — a reset beyond the type's ``max_resets_per_day`` that Shanghai day;
2. ``unmatched_success`` — a pair's success delta above its attempt delta plus the attempts the
   device's plausible heartbeats since its last reset left unmatched (at most 255 remembered);
3. ``too_many_attempts`` — attempts costing more than the allowance saved up: a day's worth at
   a device's first message, growing by the whole ms between heartbeats, capped at a day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rules import COUNTERS

ALLOWANCE_CAP_MS = 86_400_000  # attempt allowance saved up: at most a day of max_attempt_rate (a first message starts with it)
MAX_UNMATCHED = 255  # unmatched attempts remembered per counter pair (a byte, saturating): enough for late successes
ATTEMPTS, SUCCESSES = slice(0, None, 2), slice(1, None, 2)  # COUNTERS columns: reads, face_try, plate_try / the _ok
PLAUSIBILITY = np.dtype([  # one 8-byte record a device: one random access per heartbeat
    ("allowance", "<i4"),  # ms of max_attempt_rate saved up, ≤ ALLOWANCE_CAP_MS
    ("unmatched", "u1", (len(COUNTERS) // 2,)),  # attempts not yet matched by successes, per pair, ≤ MAX_UNMATCHED
    ("resets_today", "u1"),  # resets on the day of the device's last heartbeat, saturating at 255
])
KINDS = ("too_many_resets", "unmatched_success", "too_many_attempts")


@dataclass(frozen=True)
class Verdict:
    """The heartbeats rejected, by the first rule each broke."""

    too_many_resets: np.ndarray
    unmatched_success: np.ndarray
    too_many_attempts: np.ndarray

    @property
    def rejected(self) -> np.ndarray:
        return self.too_many_resets | self.unmatched_success | self.too_many_attempts

    def by_kind(self) -> list[tuple[str, np.ndarray]]:
        return [(kind, getattr(self, kind)) for kind in KINDS]


def judge(state: np.ndarray, deltas: np.ndarray, *, elapsed_us: np.ndarray, cost_ms: np.ndarray, first: np.ndarray,
          first_today: np.ndarray, reset: np.ndarray | None, max_resets: np.ndarray | None) -> Verdict | None:
    """Judge a round's heartbeats and update their ``state`` records in place; None when all are plausible.

    ``deltas`` [row, COUNTERS] as counted (a reset's full values), ``elapsed_us`` since each
    device's previous heartbeat (ignored on its ``first``), ``cost_ms`` of an attempt for its
    type, ``first_today`` its first heartbeat of the day, ``reset`` the rows that reset (None:
    none did) and then ``max_resets`` per row.
    """
    if first_today.any():
        state["resets_today"][first_today] = 0
    excess = deltas[:, SUCCESSES] - deltas[:, ATTEMPTS]
    unmatched = state["unmatched"]
    allowance = state["allowance"] + elapsed_us // 1000
    np.minimum(allowance, ALLOWANCE_CAP_MS, out=allowance)
    if first.any():
        allowance[first] = ALLOWANCE_CAP_MS
    need = (deltas[:, 0] + deltas[:, 2] + deltas[:, 4]) * cost_ms  # reads + face_try + plate_try
    if reset is None and excess.max(initial=0) <= 0 and not (need > allowance).any():
        state["allowance"] = allowance - need  # the common case: every heartbeat plausible
        state["unmatched"] = np.minimum(unmatched - excess, MAX_UNMATCHED)
        return None
    too_many_resets = np.zeros(len(deltas), dtype=bool)
    if reset is not None:
        assert max_resets is not None
        resets = state["resets_today"] + reset.astype(np.int16)
        state["resets_today"] = np.minimum(resets, 255)
        too_many_resets = reset & (resets > max_resets)
        unmatched = np.where(reset[:, None], 0, unmatched)  # a reset leaves nothing unmatched
    unmatched_success = (excess > unmatched).any(axis=1) & ~too_many_resets
    too_many_attempts = (need > allowance) & ~(too_many_resets | unmatched_success)
    verdict = Verdict(too_many_resets, unmatched_success, too_many_attempts)
    rejected = verdict.rejected
    state["allowance"] = allowance - np.where(rejected, 0, need)
    state["unmatched"] = np.where(rejected[:, None], unmatched, np.minimum(unmatched - excess, MAX_UNMATCHED))
    return verdict if rejected.any() else None
