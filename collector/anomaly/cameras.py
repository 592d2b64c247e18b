"""Cameras: baselines of capture attempts and failure rate, and the blind and degraded detectors.

**Baseline.** Per camera and regime (day, night), one figure per baseline day (a day runs from
the night's end to the next night's end, so a night is never cut): its *level*, attempts divided
by the hours it was heard weighted by the pooled hour-of-week shape (:mod:`.shapes`), and its
*failure level*, failures divided by attempts weighted by the failure shape. The last ``window``
days' figures are kept (float16: three significant digits are plenty for a baseline), and the
baseline is their median, the spread their median absolute deviation: a few bad days move
neither. A day counts only when the camera was heard for half of the regime's hours (level) or
made 20 attempts (failure), and never while one of its anomalies was open.

A camera's *exposure* in a slot is the time it was online at the contract's sample instants
(samples × Δ): the attempts a camera should have made while it was offline are no evidence of
blindness. Counts that arrive after an offline spell carry what the camera captured meanwhile,
which only weighs against blindness. Exemptions do not enter: they excuse a street's figures, not
the device, and one recorded late or revoked would make the live run and a recomputation from the
archive judge the camera differently.

**Blind** (失明): Poisson CUSUM on attempts. Over the hours ``h`` a camera was heard in a slot,
the baseline expects ``μ = level × shape × h`` attempts; the fault is a rate of ``ratio × μ``.
The evidence of ``a`` attempts is ``(μ (1 − ratio) + a ln ratio) / dispersion``. Hours in which
the baseline expects fewer than ``min_rate`` attempts per hour are not judged, nor erratic
cameras (spread above ``max_spread`` × level).

**Degraded** (劣化): Bernoulli CUSUM on the slot's attempts: baseline failure ``f0 = fail ×
fshape``, fault ``f1 = f0 + drop``; ``m`` failures and ``k`` successes give ``m ln(f1/f0) + k
ln((1 − f1)/(1 − f0))``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .cusum import Detector, Steps, no_steps
from .rules import AnomalyRules
from .shapes import Shapes, hour_of_week

US_PER_HOUR = 3_600_000_000
MIN_COVER = 0.5  # share of a regime's hours a camera must be heard for its day to count
MIN_DAY_ATTEMPTS = 20.0  # attempts in a regime's day before its failure level counts
F0_RANGE = (0.002, 0.9)
ACC = ("attempts", "failures", "expected_weight", "failure_weight", "hours")


@dataclass(frozen=True, eq=False)
class SlotCounts:
    """One slot summed per camera seen in it (``idx`` distinct, ascending)."""

    idx: np.ndarray
    attempts: np.ndarray
    successes: np.ndarray
    heard_us: np.ndarray  # µs online at the sample instants


class Cameras:
    def __init__(self, rules: AnomalyRules, groups: np.ndarray, n_groups: int) -> None:
        n = len(groups)
        self.rules = rules
        self.group = groups
        self.night = rules.night_hours()
        self.regime_hours = np.array([24 - sum(self.night), sum(self.night)], dtype=np.float64)
        self.shapes = Shapes(n_groups, self.night, rules.window_days)
        self.slot_attempts = np.zeros(n)  # the open slot's sums
        self.slot_successes = np.zeros(n)
        self.slot_heard_us = np.zeros(n, dtype=np.int64)
        self.acc = np.zeros((n, 2, len(ACC)))  # the open baseline day, per regime
        self.disturbed = np.zeros((n, 2), dtype=bool)  # an anomaly was open in the day's regime
        self.ring_level = np.full((n, rules.window_days, 2), np.nan, dtype=np.float16)
        self.ring_fail = np.full((n, rules.window_days, 2), np.nan, dtype=np.float16)
        self.blind = Detector(n, 2)
        self.degraded = Detector(n, 2)
        self.derive()

    # --- one slot ----------------------------------------------------------------------

    def add(self, c: np.ndarray, attempts: np.ndarray, successes: np.ndarray) -> None:
        """Counts of cameras (``c`` may repeat), summed over the slot."""
        n = len(self.slot_attempts)
        self.slot_attempts += np.bincount(c, weights=attempts, minlength=n)
        self.slot_successes += np.bincount(c, weights=successes, minlength=n)

    def add_sample(self, cameras: np.ndarray | None, online: np.ndarray, interval_us: int) -> None:
        """A sample instant: the ``cameras`` (None: all, in order) ``online`` were heard for ``interval_us``."""
        if cameras is None:
            np.add(self.slot_heard_us, interval_us, out=self.slot_heard_us, where=online)
        else:
            self.slot_heard_us[cameras[online]] += interval_us

    def take_slot(self) -> SlotCounts | None:
        """The slot's sums per camera (float64 sums of integer counts: exact, in any order)."""
        idx = np.flatnonzero((self.slot_heard_us > 0) | (self.slot_attempts > 0))
        if not len(idx):
            return None
        counts = SlotCounts(idx, self.slot_attempts[idx], self.slot_successes[idx], self.slot_heard_us[idx])
        self.slot_attempts[idx] = 0.0
        self.slot_successes[idx] = 0.0
        self.slot_heard_us[idx] = 0
        return counts

    def update(self, s: SlotCounts, hour_index: int, start: int, end: int) -> tuple[Steps, Steps]:
        how, regime = hour_of_week(hour_index), int(self.night[hour_index % 24])
        c, g = s.idx, self.group[s.idx]
        shape, fshape = self.shapes.shape[g, how], self.shapes.fshape[g, how]
        hours = s.heard_us / US_PER_HOUR
        a, f = s.attempts, s.attempts - s.successes
        quiet = ~(self.blind.regimes[regime].on[c] | self.degraded.regimes[regime].on[c])
        self.shapes.add(g[quiet], a[quiet], f[quiet], s.heard_us[quiet])
        self.acc[c, regime] += np.stack([a, f, shape * hours, a * fshape, hours], axis=1)
        f0 = np.minimum(np.maximum(self.fail[c, regime] * fshape, F0_RANGE[0]), F0_RANGE[1])
        blind = self._blind(s, regime, hours, shape, f0, start, end)
        degraded = self._degraded(s, regime, f0, start, end)
        self.disturbed[c, regime] |= self.blind.regimes[regime].on[c] | self.degraded.regimes[regime].on[c]
        return blind, degraded

    def _blind(self, s: SlotCounts, regime: int, hours: np.ndarray, shape: np.ndarray, f0: np.ndarray, start: int,
               end: int) -> Steps:
        rule = self.rules.blind
        rate = self.level[s.idx, regime] * shape  # attempts per hour the baseline expects now
        judged = (hours > 0) & self.judged_blind[s.idx, regime] & (rate >= rule.min_rate)
        if not rule.enabled or not judged.any():
            return no_steps()
        mu, a = (rate * hours)[judged], s.attempts[judged]
        llr = (mu * (1.0 - rule.ratio) + a * np.log(rule.ratio)) / rule.dispersion
        counts = np.stack([a, s.successes[judged], mu, mu * (1.0 - f0[judged])], axis=1)
        return self.blind.update(regime, s.idx[judged], llr, start, end, counts, evidence=rule.evidence)

    def _degraded(self, s: SlotCounts, regime: int, f0: np.ndarray, start: int, end: int) -> Steps:
        rule = self.rules.degraded
        judged = (s.attempts > 0) & self.judged_degraded[s.idx, regime]
        if not rule.enabled or not judged.any():
            return no_steps()
        a, k, f0 = s.attempts[judged], s.successes[judged], f0[judged]
        f1 = np.minimum(f0 + rule.drop, 0.99)
        llr = (a - k) * np.log(f1 / f0) + k * np.log((1.0 - f1) / (1.0 - f0))
        counts = np.stack([a, k, a, a * (1.0 - f0)], axis=1)
        return self.degraded.update(regime, s.idx[judged], llr, start, end, counts, evidence=rule.evidence)

    # --- baseline days -------------------------------------------------------------------

    def close_day(self) -> None:
        """The baseline day ended: its figures join the ring (oldest out), the baselines are recomputed."""
        a, f, w, fw, hours = (self.acc[..., i] for i in range(len(ACC)))
        with np.errstate(invalid="ignore", divide="ignore"):
            level = np.where((hours >= MIN_COVER * self.regime_hours) & (w > 0) & ~self.disturbed, a / w, np.nan)
            fail = np.where((a >= MIN_DAY_ATTEMPTS) & (fw > 0) & ~self.disturbed, f / fw, np.nan)
        self.ring_level = np.roll(self.ring_level, 1, axis=1)
        self.ring_fail = np.roll(self.ring_fail, 1, axis=1)
        self.ring_level[:, 0] = level.astype(np.float16)
        self.ring_fail[:, 0] = fail.astype(np.float16)
        self.acc[:] = 0.0
        self.disturbed[:] = np.stack([self.blind.regimes[r].on | self.degraded.regimes[r].on for r in (0, 1)], axis=1)
        self.derive()

    def derive(self) -> None:
        """Baselines (median) and spreads (MAD) of the ring, and which cameras are judged."""
        rule, min_days = self.rules.blind, self.rules.min_days
        level, spread, level_days = _median_mad(self.ring_level)
        fail, _, fail_days = _median_mad(self.ring_fail)
        with np.errstate(invalid="ignore"):
            steady = spread <= rule.max_spread * level
        self.judged_blind = (level_days >= min_days) & steady & (level > 0)
        self.judged_degraded = fail_days >= min_days
        self.level = np.nan_to_num(level)
        self.fail = np.nan_to_num(fail)

    def learning(self) -> np.ndarray:
        """Cameras judged in neither regime by either detector (not enough history yet)."""
        return np.asarray(~(self.judged_blind | self.judged_degraded).any(axis=1))

    # --- state -------------------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        return {"slot_attempts": self.slot_attempts, "slot_successes": self.slot_successes,
                "slot_heard_us": self.slot_heard_us, "acc": self.acc, "disturbed": self.disturbed, "ring_level": self.ring_level,
                "ring_fail": self.ring_fail, **self.blind.arrays("blind"), **self.degraded.arrays("degraded")}

    def restore(self, take: dict[str, np.ndarray]) -> None:
        for name in ("slot_attempts", "slot_successes", "slot_heard_us", "acc", "disturbed", "ring_level", "ring_fail"):
            setattr(self, name, take[name])
        self.blind.restore("blind", take)
        self.degraded.restore("degraded", take)
        self.derive()

    def nbytes(self) -> int:
        derived = sum(a.nbytes for a in (self.level, self.fail, self.judged_blind, self.judged_degraded))
        return sum(a.nbytes for a in self.arrays().values()) + derived + self.group.nbytes


def _median_mad(ring: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per camera and regime: median over the ring's days, median absolute deviation, days present."""
    values = ring.astype(np.float64)
    days = np.count_nonzero(~np.isnan(values), axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: no baseline yet
        median = np.nanmedian(values, axis=1)
        mad = np.nanmedian(np.abs(values - median[:, None, :]), axis=1)
    return median, mad, days
