"""Sensors: the baseline of reads and failures per heartbeat, and the stuck detector.

**Baseline.** Per sensor, exponentially forgotten sums (about ``window`` of memory, one step a
day) of its reads, failed reads, heartbeats and heartbeats that carried no read. Sensing has no
day and night pattern worth a second baseline (a smoke detector reads as often at noon as at
midnight), so one suffices. From them, with a half-count prior so that "never seen" is not
"impossible": ``f0`` the chance a read fails, ``z0`` the chance a heartbeat carries no read. A
day's sums join the baseline at the day's end unless the sensor was stuck that day.

**Stuck** (卡死): heartbeats continue but ``read_ok`` does not move. Every heartbeat whose
``read_ok`` did not increase adds ``reads × ln(1/f0)`` (its reads all failed) or, with no read at
all, ``ln(1/z0)``: the log of how unlikely that run is for this sensor. A successful read clears
the evidence. A sensor that succeeds 98 % of the time is stuck after about four failed reads in a
row (evidence 12 ≈ e^12 to one); one that fails a third of its reads needs about thirty.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .cusum import Detector, Steps
from .rules import AnomalyRules

SUMS = ("reads", "failures", "heartbeats", "empty_heartbeats")
P_RANGE = (0.001, 0.9)
MIN_HEARTBEATS = 10.0  # in the baseline before a sensor is judged
JUDGED, RUNNING, HEARD = np.uint8(1), np.uint8(2), np.uint8(4)  # gate bits: judged; collecting evidence (or
# stuck); heard from before (only HEARD is state: the others are derived)
MAX_BUFFERED = 1_000_000  # heartbeats kept for the hour's fold before it happens anyway


class Sensors:
    def __init__(self, rules: AnomalyRules, n: int) -> None:
        self.rules = rules
        self.decay = np.float32(1.0 - 1.0 / rules.window_days)
        # [SUMS, n]: one contiguous row per figure (bincount folds add a whole row at a time)
        self.sums = np.zeros((len(SUMS), n), dtype=np.float32)  # the forgotten baseline sums
        self.day = np.zeros((len(SUMS), n), dtype=np.float32)  # the open day's
        self.days = np.zeros(n, dtype=np.uint16)  # days of history in the baseline
        self.disturbed = np.zeros(n, dtype=bool)
        self.stuck = Detector(n, 1, np.float32)
        self.gate = np.zeros(n, dtype=np.uint8)
        self._mark = np.zeros(n, dtype=bool)  # scratch
        self.buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # heartbeats not yet in the day's sums
        self.buffered = 0
        self.candidates: list[tuple[np.ndarray, ...]] = []  # heartbeats to judge at the slot's end
        self.derive()

    def add(self, s: np.ndarray, t: np.ndarray, reads: np.ndarray, successes: np.ndarray) -> None:
        """Heartbeats (``s`` may repeat: a sensor's heartbeats in arrival order), judged one by one at
        the slot's end (:meth:`take_slot`). A sensor's first heartbeat ever is left out: the engine
        takes it as its counters' baselines.

        Per heartbeat only one byte of the sensor's state is read (``gate``): its counts wait in a buffer
        for the hour's end, when they join the day's sums in one pass (touching four arrays at random
        for every one of a hundred thousand sensors' heartbeats costs more than the engine itself), and
        only the heartbeats that can change a sensor's evidence wait for the slot's end."""
        gate = self.gate[s]
        new = (gate & HEARD) == 0
        if new.any():  # a sensor's first heartbeat ever: its zero counts are no heartbeat without reads
            self.gate[s[new]] |= HEARD
            s, t, reads, successes, gate = s[~new], t[~new], reads[~new], successes[~new], gate[~new]
        self.buffer.append((s, reads, successes))
        self.buffered += len(s)
        if self.buffered >= MAX_BUFFERED:
            self.fold()
        rule = self.rules.stuck
        # Only a heartbeat without a successful read, or a sensor already collecting evidence, can change it.
        moving = ((gate & JUDGED) > 0) & ((successes == 0) | ((gate & RUNNING) > 0))
        if not rule.enabled or not moving.any():
            return
        chosen = s[moving]
        self._mark[chosen] = True  # every heartbeat of those sensors, in arrival order
        rows = np.flatnonzero(self._mark[s])
        self._mark[chosen] = False
        self.gate[chosen] |= RUNNING  # until judged at the slot's end, their next heartbeats wait too
        self.candidates.append((s[rows], t[rows], reads[rows], successes[rows]))

    def take_slot(self) -> Iterator[Steps]:
        """Judge the heartbeats kept since the last slot, each sensor's in arrival order: a sensor's
        first heartbeats of the slot, then its second ones, ... Each turn's steps are yielded before
        the next turn is judged, so that a sensor cleared, raised and cleared again within the slot
        is told so in that order, each with the detector's state of its own instant."""
        if not self.candidates:
            return
        s, t, reads, successes = (np.concatenate(p) for p in zip(*self.candidates))
        self.candidates = []
        for r in in_turn(s):
            yield self._step(s[r], t[r], reads[r], successes[r])

    def _step(self, s: np.ndarray, t: np.ndarray, r: np.ndarray, ok: np.ndarray) -> Steps:
        """Distinct sensors' heartbeats into their evidence."""
        judged = (self.gate[s] & JUDGED) > 0
        s, t, r, ok = s[judged], t[judged], r[judged], ok[judged]
        llr = np.where(r == 0, self.w_empty[s], r * self.w_read[s])
        expected = self.reads_per_heartbeat[s].astype(np.float64)
        counts = np.stack([r, ok, expected, expected * (1.0 - self.f0[s])], axis=1)
        steps = self.stuck.update(0, s, llr, t, t, counts, evidence=self.rules.stuck.evidence, reset=ok > 0)
        ev = self.stuck.regimes[0]
        running = (ev.s[s] > 0) | ev.on[s]
        self.gate[s] = (self.gate[s] & ~RUNNING) | np.where(running, RUNNING, 0).astype(np.uint8)
        self.disturbed[s] |= ev.on[s]
        return steps

    def fold(self) -> None:
        """The buffered heartbeats into the day's sums (the monitor calls it as each hour closes)."""
        if not self.buffer:
            return
        s = np.concatenate([b[0] for b in self.buffer])
        reads = np.concatenate([b[1] for b in self.buffer]).astype(np.float64)
        successes = np.concatenate([b[2] for b in self.buffer])
        self.buffer, self.buffered = [], 0
        n = self.day.shape[1]
        self.day[0] += np.bincount(s, weights=reads, minlength=n).astype(np.float32)
        self.day[1] += np.bincount(s, weights=reads - successes, minlength=n).astype(np.float32)
        self.day[2] += np.bincount(s, minlength=n).astype(np.float32)
        self.day[3] += np.bincount(s[reads == 0], minlength=n).astype(np.float32)

    def close_day(self) -> None:
        self.fold()
        keep = ~self.disturbed
        self.sums[:, keep] = self.sums[:, keep] * self.decay + self.day[:, keep]
        self.days[keep & (self.day[2] > 0)] += 1
        self.day[:] = 0.0
        self.disturbed[:] = self.stuck.regimes[0].on
        self.derive()

    def derive(self) -> None:
        reads, failures, heartbeats, empty = self.sums.astype(np.float64)
        f0 = np.clip((failures + 0.5) / (reads + 1.0), *P_RANGE)
        z0 = np.clip((empty + 0.5) / (heartbeats + 1.0), *P_RANGE)
        self.f0 = f0.astype(np.float32)
        self.w_read = (-np.log(f0)).astype(np.float32)
        self.w_empty = (-np.log(z0)).astype(np.float32)
        self.reads_per_heartbeat = (reads / np.maximum(heartbeats, 1.0)).astype(np.float32)
        self.judged = (self.days >= self.rules.min_days) & (heartbeats >= MIN_HEARTBEATS) & (reads > 0)
        ev = self.stuck.regimes[0]
        self.gate = ((self.gate & HEARD) | np.where(self.judged, JUDGED, 0).astype(np.uint8)
                     | np.where((ev.s > 0) | ev.on, RUNNING, 0).astype(np.uint8))

    def learning(self) -> np.ndarray:
        return ~self.judged

    def arrays(self) -> dict[str, np.ndarray]:
        return {"gate": self.gate, "sums": self.sums.T, "day": self.day.T, "days": self.days, "disturbed": self.disturbed,
                **self.stuck.arrays("stuck")}

    def restore(self, take: dict[str, np.ndarray]) -> None:
        for name in ("gate", "days", "disturbed"):
            setattr(self, name, take[name])
        self.sums, self.day = (np.ascontiguousarray(take[name].T) for name in ("sums", "day"))
        self.stuck.restore("stuck", take)
        self.derive()

    def nbytes(self) -> int:
        derived = sum(a.nbytes for a in (self.f0, self.w_read, self.w_empty, self.reads_per_heartbeat, self.judged))
        return sum(a.nbytes for a in self.arrays().values()) + derived


def in_turn(devices: np.ndarray) -> list[slice | np.ndarray]:
    """Row groups in which no device repeats: first occurrences, then second ones, ... (in arrival
    order within each); one group, the usual case, when every device appears once."""
    order = np.argsort(devices, kind="stable")
    ordered = devices[order]
    new = np.empty(len(ordered), dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    if new.all():
        return [slice(None)]
    run_start = np.maximum.accumulate(np.where(new, np.arange(len(ordered)), 0))
    occurrence = np.arange(len(ordered)) - run_start
    return [np.sort(order[occurrence == k]) for k in range(int(occurrence.max()) + 1)]
