"""One-sided CUSUM evidence, vectorised over devices, and the anomalies it opens and closes.

Each detector adds, per device and evaluation slot, the log-likelihood ratio (in nats) of the
slot's counts under the fault against the device's own baseline: S ← clip(S + llr, 0, cap). Under
the baseline the expected llr is negative, so S keeps falling back to zero; under the fault it
climbs. The anomaly opens when S reaches the rule's ``evidence`` and closes when S is back at zero
(the cap, twice the evidence, bounds how long that takes once the device is well again). Poisson
and binomial log-likelihood ratios add up over messages, so a slot's llr is exactly the sum of its
messages'.

A *run* starts when S leaves zero: the start of that slot is the anomaly's "since" (and the end
of the slot that raised it, when it was detected), and the run's counts (attempts, successes, and
what the baseline expected of them) accumulate from there, so an anomaly's figures cover it from
its start, not from its detection.

Cameras keep one evidence per regime (day, night): a camera blind at night only stays blind
through the day, when its night evidence is not touched, instead of clearing every morning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEVER = np.iinfo(np.int64).min // 4
RUN_FIELDS = ("attempts", "successes", "expected_attempts", "expected_successes")


@dataclass(eq=False)
class Evidence:
    """Per-device CUSUM state of one detector (in one regime)."""

    s: np.ndarray  # evidence (nats)
    on: np.ndarray  # bool: this evidence holds the anomaly open
    since: np.ndarray  # int64 µs: the run's first message (NEVER: no run)
    run: np.ndarray  # [n, 4] RUN_FIELDS since the run began

    @classmethod
    def zeros(cls, n: int, dtype: type = np.float64) -> Evidence:
        """float32 halves what millions of sensors hold; sums of a few dozen terms lose nothing that matters."""
        return cls(np.zeros(n, dtype=dtype), np.zeros(n, dtype=bool), np.full(n, NEVER, dtype=np.int64),
                   np.zeros((n, len(RUN_FIELDS)), dtype=dtype))

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.s": self.s, f"{prefix}.on": self.on, f"{prefix}.since": self.since, f"{prefix}.run": self.run}

    def restore(self, prefix: str, take: dict[str, np.ndarray]) -> None:
        for name in ("s", "on", "since", "run"):
            setattr(self, name, take[f"{prefix}.{name}"])

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.s, self.on, self.since, self.run))

    def live_run(self, idx: np.ndarray) -> np.ndarray:
        """The run counts of ``idx`` where a run is going on (zeros elsewhere)."""
        live = (self.s[idx] > 0) | self.on[idx]
        return np.where(live[:, None], self.run[idx], 0.0)


@dataclass(frozen=True, eq=False)
class Steps:
    """What one slot did: devices whose anomaly opened, and whose anomaly closed, with the instants."""

    opened: np.ndarray  # indices (into the detector's devices)
    closed: np.ndarray
    opened_at: np.ndarray  # µs
    closed_at: np.ndarray


def no_steps() -> Steps:
    empty = np.zeros(0, dtype=np.int64)
    return Steps(empty, empty, empty, empty)


def step(ev: Evidence, idx: np.ndarray, llr: np.ndarray, start: np.ndarray, counts: np.ndarray, *,
         evidence: float, reset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Add the slot's ``llr`` to the devices ``idx`` (distinct); a run that begins is dated ``start``
    (the slot's); ``counts`` [n, 4] go to the runs. ``reset`` marks slots that clear the evidence outright (a
    sensor's successful read). Returns the masks (over ``idx``) of evidence turned on and off."""
    before = ev.s[idx]
    after = np.clip(before + llr, 0.0, 2.0 * evidence).astype(ev.s.dtype)
    if reset is not None:
        after[reset] = 0.0
    starts = (before == 0.0) & (after > 0.0)
    ev.since[idx[starts]] = start[starts]
    ev.run[idx[starts]] = 0.0
    live = (after > 0.0) | ev.on[idx]
    ev.run[idx[live]] += counts[live]
    ev.s[idx] = after
    was_on = ev.on[idx]
    turned_on = ~was_on & (after >= evidence)
    turned_off = was_on & (after == 0.0)
    ev.on[idx[turned_on]] = True
    ev.on[idx[turned_off]] = False
    return turned_on, turned_off


class Detector:
    """One anomaly kind over one kind of device, with one evidence per regime (one for sensors)."""

    def __init__(self, n: int, regimes: int, dtype: type = np.float64) -> None:
        self.regimes = [Evidence.zeros(n, dtype) for _ in range(regimes)]

    def on(self) -> np.ndarray:
        out = self.regimes[0].on.copy()
        for ev in self.regimes[1:]:
            out |= ev.on
        return out

    def update(self, regime: int, idx: np.ndarray, llr: np.ndarray, start: int | np.ndarray, end: int | np.ndarray,
               counts: np.ndarray, *, evidence: float, reset: np.ndarray | None = None) -> Steps:
        """One slot ``[start, end)`` of evidence (or one message each, ``start`` = ``end`` its time);
        anomalies open and close at ``end``."""
        ev = self.regimes[regime]
        starts = np.broadcast_to(np.asarray(start, dtype=np.int64), idx.shape)
        ends = np.broadcast_to(np.asarray(end, dtype=np.int64), idx.shape)
        # Most devices are well: evidence at zero that the slot would push below zero stays at zero.
        moving = (llr > 0) | (ev.s[idx] > 0)
        if not moving.all():
            if not moving.any():
                return no_steps()
            idx, llr, counts, starts, ends = idx[moving], llr[moving], counts[moving], starts[moving], ends[moving]
            reset = None if reset is None else reset[moving]
        others = [other for r, other in enumerate(self.regimes) if r != regime]
        held = np.zeros(len(idx), dtype=bool)
        for other in others:
            held |= other.on[idx]
        turned_on, turned_off = step(ev, idx, llr, starts, counts, evidence=evidence, reset=reset)
        opened, closed = turned_on & ~held, turned_off & ~held
        return Steps(idx[opened], idx[closed], ends[opened], ends[closed])

    def since(self, i: int) -> int:
        """When the anomaly of device ``i`` began: the earliest run among the evidence holding it."""
        return min(int(ev.since[i]) for ev in self.regimes if ev.on[i] or ev.s[i] > 0)

    def run(self, i: int) -> list[float]:
        idx = np.array([i])
        return np.sum([ev.live_run(idx)[0] for ev in self.regimes], axis=0).tolist()

    def clear_runs(self, i: int) -> None:
        for ev in self.regimes:
            ev.run[i] = 0.0

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for r, ev in enumerate(self.regimes):
            out |= ev.arrays(f"{prefix}.{r}")
        return out

    def restore(self, prefix: str, take: dict[str, np.ndarray]) -> None:
        for r, ev in enumerate(self.regimes):
            ev.restore(f"{prefix}.{r}", take)

    def nbytes(self) -> int:
        return sum(ev.nbytes() for ev in self.regimes)
