"""Devices that keep heartbeating but stop doing their job, for the traffic model.

* **blind** cameras: capture attempts fall to ``attempts`` × normal (0: none at all), at every hour
  or, with ``night_only``, at night only (the night illumination failed);
* **degraded** cameras: success probability ``points`` lower (0.30: thirty points);
* **stuck** sensors: ``read_ok`` stops moving; with ``reads_stop`` their ``reads`` stop too, else
  they go on reading and every read fails.

Heartbeats, ``seq`` and the cumulative counters carry on as on a real device, so only the counts
tell: what :mod:`ptmon.anomaly` must detect. :class:`DeviceWindows` finds each message's window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAULT_KINDS = ("blind", "degraded", "stuck")


class DeviceWindows:
    """Time windows of chosen devices, one row per (device, window), found per chunk by device."""

    def __init__(self, windows: list[tuple[np.ndarray, int, int, float]]) -> None:
        sizes = [len(np.atleast_1d(w[0])) for w in windows]
        self.device = (np.concatenate([np.atleast_1d(np.asarray(w[0], dtype=np.int64)) for w in windows]) if windows
                       else np.zeros(0, np.int64))
        self.from_us, self.to_us, self.value = (np.repeat([w[i] for w in windows], sizes) for i in (1, 2, 3))

    def hits(self, t: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(message rows inside a window of their device, the window's value) for device-major messages."""
        if not len(self.device) or not len(t):
            return np.zeros(0, np.int64), np.zeros(0)
        live = (self.to_us > t.min()) & (self.from_us <= t.max())
        device, from_us, to_us, value = self.device[live], self.from_us[live], self.to_us[live], self.value[live]
        first = (np.cumsum(counts) - counts)[device]  # each device's first message row
        n = counts[device]
        rows = np.repeat(first, n) + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        inside = (t[rows] >= np.repeat(from_us, n)) & (t[rows] < np.repeat(to_us, n))
        return rows[inside], np.repeat(value, n)[inside]


@dataclass(frozen=True, kw_only=True, eq=False)
class DeviceFault:
    """``devices`` (registry indices) have fault ``kind`` for heartbeats due in ``[from_us, to_us)``."""

    kind: str
    devices: np.ndarray
    from_us: int
    to_us: int
    attempts: float = 0.0  # blind: the share of normal capture attempts left
    night_only: bool = False  # blind: only at night
    points: float = 0.30  # degraded: success probability this much lower
    reads_stop: bool = False  # stuck: reads stop too

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"DeviceFault.kind must be one of {', '.join(FAULT_KINDS)}: {self.kind!r}")
        if self.to_us <= self.from_us:
            raise ValueError("DeviceFault: to_us must be after from_us")
        if not 0.0 <= self.attempts <= 1.0 or not 0.0 <= self.points <= 1.0:
            raise ValueError("DeviceFault: attempts and points must be in [0, 1]")


class FaultPlan:
    """The faults of a scenario, applied to a chunk's messages (device-major, as the generator makes them)."""

    def __init__(self, faults: tuple[DeviceFault, ...]) -> None:
        def windows(kind: str, value: object, **match: object) -> DeviceWindows:
            chosen = [f for f in faults if f.kind == kind and all(getattr(f, k) == v for k, v in match.items())]
            return DeviceWindows([(f.devices, f.from_us, f.to_us, float(getattr(f, value) if isinstance(value, str) else value))
                                  for f in chosen])

        self.blind_always = windows("blind", "attempts", night_only=False)
        self.blind_night = windows("blind", "attempts", night_only=True)
        self.minus = windows("degraded", "points")
        self.ok_stop = windows("stuck", 1.0, reads_stop=False)
        self.reads_stop = windows("stuck", 1.0, reads_stop=True)

    def capture_factor(self, due: np.ndarray, counts: np.ndarray, night: np.ndarray) -> np.ndarray:
        factor = np.ones(len(due))
        rows, share = self.blind_always.hits(due, counts)
        factor[rows] = share
        rows, share = self.blind_night.hits(due, counts)
        at_night = night[rows]
        factor[rows[at_night]] = share[at_night]
        return factor

    def success_minus(self, due: np.ndarray, counts: np.ndarray) -> np.ndarray:
        minus = np.zeros(len(due))
        rows, points = self.minus.hits(due, counts)
        minus[rows] = points
        return minus

    def stuck(self, due: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows whose successes stop, rows whose reads stop too)."""
        return self.ok_stop.hits(due, counts)[0], self.reads_stop.hits(due, counts)[0]
