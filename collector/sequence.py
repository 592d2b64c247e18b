"""A device's ``seq``: copies, late messages, restarts without a boot id, and loss in transit.

Pure logic over arrays the engine gathered for one round of heartbeats (rules/README.md
"Duplicates and reordering", "Sequences restarted without a boot id", "Loss in transit"):

* :func:`restarted` — which messages 0–64 behind the last seq start a new sequence: with a
  ``ts`` on both, a later whole second; without, at least 2 behind and below the distance;
* :func:`advance` — the gaps accepted messages open (``lost``, or a ``seq_jump``) and each
  device's bitmap of seqs still missing, moved along;
* :func:`fill` — stale messages that fill a gap counted lost (``recovered``).

The bitmap: bit ``j`` of a device's word is seq ``last − 1 − j``, set while it is counted
lost and has not arrived; 64 bits cover every seq a stale message can have.
"""

from __future__ import annotations

import numpy as np

REORDER_WINDOW = 64  # how far behind the last seq a message is taken as reordered, not restarted
RESTART_MIN_BEHIND = 2  # a seq this far behind or more, and smaller than the distance, restarts the sequence
MAX_LOSS_GAP = 2**16  # a seq gap larger than this is a seq_jump, not lost messages (45 days of 1-minute heartbeats)
MAX_TS_KEY = 2**32 - 1  # ts_key of a ts at or after 2106-02-07 (⌊ts⌋ capped at 2^32 − 2)
ALL_MISSING = np.uint64(2**64 - 1)


def ts_key(ts: np.ndarray) -> np.ndarray:
    """A heartbeat's ``ts`` as the engine keeps it: ⌊ts⌋ + 1 (whole seconds; at most 2^32 − 1), 0 when absent."""
    key = np.minimum(ts + 1.0, MAX_TS_KEY)  # ts ≥ 0 (decode.py), so truncating ts + 1 is ⌊ts⌋ + 1
    return np.nan_to_num(key, copy=False, nan=0.0).astype(np.uint32)


def restarted(seq: np.ndarray, behind: np.ndarray, ts: np.ndarray, last_ts: np.ndarray) -> np.ndarray:
    """Which messages 0–64 behind the last seq (of the same boot) restart the sequence: the device rebooted
    without a ``boot`` id. With a ``ts`` on both, the device's clock decides (a copy or a late message
    carries the ts it was sent with, never a later one); otherwise the seq must be at least two behind and
    smaller than the distance (nearer the start of a sequence than the last seq)."""
    by_clock = (ts > 0) & (last_ts > 0)
    return np.where(by_clock, ts > last_ts, (behind >= RESTART_MIN_BEHIND) & (seq < behind))


def advance(missing: np.ndarray, comparable: np.ndarray, behind: np.ndarray, has_seq: np.ndarray,
            boot_changed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(missing afterwards, gap, lost rows, seq_jump rows) for accepted messages. ``behind`` is the last
    seq minus the message's; a new sequence (no comparable seq before, a restart, a new boot, a jump) starts
    with nothing missing and counts nothing lost before its first message."""
    ahead = comparable & (behind < 0)
    step = np.where(ahead, -behind, 0)  # how far the last seq moves on
    gap = np.maximum(step - 1, 0)
    jump = gap > MAX_LOSS_GAP
    lost = ahead & (gap > 0) & ~jump
    moved = np.where(step >= 64, np.uint64(0), missing << np.minimum(step, 63).astype(np.uint64))
    gap_bits = np.where(gap >= 64, ALL_MISSING, (np.uint64(1) << np.minimum(gap, 63).astype(np.uint64)) - np.uint64(1))
    new_sequence = (has_seq & ~ahead) | boot_changed | jump
    return np.where(new_sequence, np.uint64(0), np.where(ahead, moved | gap_bits, missing)), gap, lost, jump


def fill(missing: np.ndarray, behind: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(missing afterwards, filled rows) for stale messages ``behind`` (1–64) the last seq: those whose seq
    was counted lost arrive after all (recovered) and are no longer missing."""
    bit = np.uint64(1) << (behind - 1).astype(np.uint64)
    filled = (missing & bit) != 0
    return np.where(filled, missing & ~bit, missing), filled
