"""A device's ``seq``: copies, late messages, restarts without a boot id, and loss in transit.

Pure logic over arrays the engine gathered for one round of heartbeats (rules/README.md
"Duplicates and reordering", "Sequences restarted without a boot id", "Loss in transit"):

* :func:`future_ts` — a ``ts`` too far ahead of the receive time is no clock: ignored;
* :func:`restarted` — which messages 0–64 behind the last seq start a new sequence: with a
  ``ts`` on both, a later whole second, a clock set back by more than a month, or a seq back at
  its start (0 or 1) with a clock counting from boot; without, at least 2 behind and below the
  distance;
* :func:`advance` — the gaps accepted messages open (``lost``, or a ``seq_jump``) and each
  device's bitmap of seqs still missing, moved along; a gap of at most 64 is also remembered as
  the device's ``jump`` (the step that opened it) until a message continues from it;
* :func:`fill` — late messages of a gap: heard (heartbeats, no counts) and ``recovered``;
* :func:`head_met` — a jump whose whole gap then arrived, met by the device's own sequence: a
  jump it never made (``seq_suspect``).

The bitmap: bit ``j`` of a device's word is seq ``last − 1 − j``, set while it is missing
(skipped by a gap) and has not arrived; 64 bits cover every seq a stale message can have.
"""

from __future__ import annotations

import numpy as np

REORDER_WINDOW = 64  # how far behind the last seq a message is taken as reordered, not restarted
RESTART_MIN_BEHIND = 2  # a seq this far behind or more, and smaller than the distance, restarts the sequence
MAX_LOSS_GAP = 2**16  # a seq gap larger than this is a seq_jump, not lost messages (45 days of 1-minute heartbeats)
MAX_TS_KEY = 2**32 - 1  # ts_key of a ts at or after 2106-02-07 (⌊ts⌋ capped at 2^32 − 2)
ALL_MISSING = np.uint64(2**64 - 1)
FUTURE_TS_TOLERANCE_S = 3_600  # a ts more than this after the receive time (whole seconds) is ignored: future_ts
CLOCK_RESET_S = 30 * 86_400  # a ts this much before the last one's is a clock set back at a reboot (64 × 6 h < 17 days)
SEQ_START = 1  # a seq at or below this, two or more behind, with a clock counting from boot: a sequence started again
BOOT_CLOCK_KEY = 1_000_000_000 + 1  # ts_key below this (a ts before 2001-09-09) is no wall clock: time since boot


def future_ts(key: np.ndarray, t_us: np.ndarray) -> np.ndarray:
    """Which ts_key()s are more than FUTURE_TS_TOLERANCE_S whole seconds after the receive time: a clock
    that far ahead (or a forged ts) would make the device's real messages look older than it."""
    return key.astype(np.int64) > t_us // 1_000_000 + 1 + FUTURE_TS_TOLERANCE_S


def gap_mask(jump: np.ndarray) -> np.ndarray:
    """Bits of the gap a jump of ``jump`` (0: none, else 2–65) opened: seqs last − 1 … last − jump + 1."""
    width = np.maximum(jump.astype(np.int64) - 1, 0)
    return np.where(width >= 64, ALL_MISSING, (np.uint64(1) << np.minimum(width, 63).astype(np.uint64)) - np.uint64(1))


def ts_key(ts: np.ndarray) -> np.ndarray:
    """A heartbeat's ``ts`` as the engine keeps it: ⌊ts⌋ + 1 (whole seconds; at most 2^32 − 1), 0 when absent."""
    key = np.minimum(ts + 1.0, MAX_TS_KEY)  # ts ≥ 0 (decode.py), so truncating ts + 1 is ⌊ts⌋ + 1
    return np.nan_to_num(key, copy=False, nan=0.0).astype(np.uint32)


def restarted(seq: np.ndarray, behind: np.ndarray, ts: np.ndarray, last_ts: np.ndarray) -> np.ndarray:
    """Which messages 0–64 behind the last seq (of the same boot) restart the sequence: the device rebooted
    without a ``boot`` id. With a ``ts`` on both: a later ts (a copy or a late message carries the ts it
    was sent with, never a later one), a ts more than CLOCK_RESET_S earlier (a clock that restarts from
    2000-01-01 or from 0 at boot), or a seq back at its start (0 or 1) at least two behind with a ts that
    counts from boot (before 2001); otherwise the seq must be at least two behind and smaller than the
    distance (nearer the start than the last seq)."""
    by_clock = (ts > 0) & (last_ts > 0)
    return np.where(by_clock, clock_restarted(seq, behind, ts, last_ts), (behind >= RESTART_MIN_BEHIND) & (seq < behind))


def clock_restarted(seq: np.ndarray, behind: np.ndarray, ts: np.ndarray, last_ts: np.ndarray) -> np.ndarray:
    """Which messages the device's clock says started again (meaningful only where both ``ts`` are known)."""
    clock_says = (ts > last_ts) | (last_ts.astype(np.int64) - ts.astype(np.int64) > CLOCK_RESET_S)
    at_start = (behind >= RESTART_MIN_BEHIND) & (seq <= SEQ_START) & (ts < BOOT_CLOCK_KEY)
    return clock_says | at_start


def advance(missing: np.ndarray, jump: np.ndarray, comparable: np.ndarray, behind: np.ndarray, has_seq: np.ndarray,
            boot_changed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(missing afterwards, jump afterwards, lost per row, seq_jump rows) for accepted messages. ``behind`` is
    the last seq minus the message's; a gap of at most 64 becomes the device's jump, any other message ahead
    ends it. A new sequence (no comparable seq before, a restart, a new boot, a seq_jump) starts with nothing
    missing and counts nothing lost before its first message."""
    ahead = comparable & (behind < 0)
    step = np.where(ahead, -behind, 0)  # how far the last seq moves on
    gap = np.maximum(step - 1, 0)
    big = gap > MAX_LOSS_GAP
    lost = np.where(ahead & ~big, gap, 0)
    moved = np.where(step >= 64, np.uint64(0), missing << np.minimum(step, 63).astype(np.uint64))
    gap_bits = np.where(gap >= 64, ALL_MISSING, (np.uint64(1) << np.minimum(gap, 63).astype(np.uint64)) - np.uint64(1))
    new_sequence = (has_seq & ~ahead) | boot_changed | big
    missing_after = np.where(new_sequence, np.uint64(0), np.where(ahead, moved | gap_bits, missing))
    opened = ahead & (gap >= 1) & (gap <= REORDER_WINDOW)
    jump_after = np.where(new_sequence, 0, np.where(ahead, np.where(opened, step, 0), jump)).astype(np.uint8)
    return missing_after, jump_after, lost, big


def fill(missing: np.ndarray, behind: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(missing afterwards, filled rows) for messages ``behind`` (1–64) the last seq: those whose seq was
    counted lost arrive after all (heard, recovered) and are no longer missing."""
    bit = np.uint64(1) << (behind - 1).astype(np.uint64)
    filled = (missing & bit) != 0
    return np.where(filled, missing & ~bit, missing), filled


def head_met(missing: np.ndarray, jump: np.ndarray) -> np.ndarray:
    """For messages equal to the last seq: the last seq was a jump whose whole gap has since arrived, and no
    message continued from it — the device's own sequence caught up with a jump it never made (``seq_suspect``)."""
    return (jump > 0) & ((missing & gap_mask(jump)) == 0)
