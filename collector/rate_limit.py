"""Rate limits: at most ``device_rate`` messages per registry device, and per gateway, in each
fixed ``window`` of receive time (a divisor of a day, windows aligned to Shanghai midnight).

Every message on the topic counts, rejected or not. Decided per batch with numpy from receive
times and arrival order only, which the archive keeps, and alike for any batching: a replay
rejects exactly what the live collector did, also of one day's archive file alone (a day
starts fresh windows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .timebase import DAY_US, UTC_OFFSET_US

MAX_BULK_WINDOWS = 8  # a batch spanning more windows is counted by sorting, not window by window
# Windows are kept as int32 counted from this Shanghai midnight (2020-01-01), which holds
# one-second windows from 1952 to 2088 (the table widens to int64 for a window outside that);
# saved state (RateState) counts them from the epoch, as int64.
BASE_DAY = 18_262
NEVER = np.iinfo(np.int32).min  # the window of a key that has not sent yet (its count is 0)
INT32_MAX = np.iinfo(np.int32).max
COUNT_MAX = np.iinfo(np.uint32).max  # a count stays there (the limit is far below it)


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


class WindowLimit:
    """At most ``rate`` messages per key (a device or gateway index) in each fixed window of time.

    Windows are ``[midnight + k·window, midnight + (k+1)·window)`` in Shanghai time.

    Times must not go back across calls (the decoder hands in a monotone clock), so a key's
    windows only move forward and its state is one (window, count) pair. Every message counts,
    the refused ones too: a device flooding stays refused until its window ends.
    """

    def __init__(self, keys: int, rate: int, window_us: int) -> None:
        self.rate = rate
        self.window_us = window_us
        self._base = BASE_DAY * (DAY_US // window_us)  # windows from the epoch to BASE_DAY
        # 4 + 4 bytes a key, 16 MB at two million devices
        self.window = np.full(keys, NEVER, dtype=np.int32)  # the window each key last sent in, from _base
        self.count = np.zeros(keys, dtype=np.uint32)  # messages the key sent in that window (saturating)

    def saved(self) -> tuple[np.ndarray, np.ndarray]:
        """(window from the epoch, −1 for none; count), both int64: RateState's arrays."""
        sent = self.count > 0  # every message counts, so a key that has sent has a count
        return np.where(sent, self.window.astype(np.int64) + self._base, -1), self.count.astype(np.int64)

    def restore(self, window: np.ndarray, count: np.ndarray) -> None:
        """Continue from :meth:`saved`'s arrays."""
        sent = window >= 0
        relative = np.where(sent, window - self._base, NEVER)
        if len(kept := relative[sent]):
            self._fit(int(kept.min()), int(kept.max()))
        self.window[:] = relative
        self.count[:] = np.where(sent, np.clip(count, 0, COUNT_MAX), 0)

    def _fit(self, low: int, high: int) -> None:
        """Widen the window table to int64 when windows ``low``..``high`` do not fit int32 (NEVER
        is kept for keys that have not sent): one-second windows past 2088, a clock gone astray."""
        if self.window.dtype == np.int32 and (high > INT32_MAX or low <= NEVER):
            self.window = self.window.astype(np.int64)

    def over(self, key: np.ndarray, t: np.ndarray) -> np.ndarray | None:
        """Mask of the messages over the limit (a key < 0 is never limited); None when none is."""
        rows = np.flatnonzero(key >= 0)
        if not len(rows):
            return None
        k, w = key[rows], (t[rows] + UTC_OFFSET_US) // self.window_us - self._base
        self._fit(int(w[0]), int(w[-1]))  # times never go back: the first and last are the extremes
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
        self.count[k] = np.minimum(total, COUNT_MAX)
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
        self.count[k[last]] = np.minimum(number[last], COUNT_MAX)
        over = np.zeros(n, dtype=bool)
        over[rows[order]] = number > self.rate
        return over if over.any() else None
