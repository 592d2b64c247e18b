"""Hour-of-week shapes of capture traffic and failure, pooled per camera type × street.

A camera's own history gives its level (attempts per hour) for day and for night; how that level
moves across the 168 hours of a week (rush hours, quiet Sunday mornings, dusk when the failure rate
climbs before the night baseline applies) is the same for the cameras of a street's communities,
and far better estimated from all of them pooled than from four samples of one camera's own hour.
So the expected attempts of camera ``c`` in hour-of-week ``h`` are ``level[c, regime(h)] ×
shape[g, h]``, and its expected failure rate ``fail[c, regime(h)] × fshape[g, h]``, with ``g``
its type × street.

Pooled sums are integers while an hour is open (attempts, failures, covered µs: exact whatever the
batching), and folded at the hour's end into exponentially forgotten per-bin sums (one update a
week per bin, weight ``decay`` on the old: about ``window`` of memory). Shapes are normalised so
that their mean over each regime's hours of the week is 1; a bin with too little data is 1.
"""

from __future__ import annotations

import numpy as np

HOURS_PER_WEEK = 168
US_PER_HOUR = 3_600_000_000
MIN_COVERED_HOURS = 2.0  # device-hours in a bin before its traffic shape counts
MIN_ATTEMPTS = 50.0  # attempts in a bin before its failure shape counts
SHAPE_RANGE = (0.02, 20.0)
FSHAPE_RANGE = (0.25, 4.0)


def hour_of_week(hour_index: int) -> int:
    """0 = Monday 00:00 Shanghai; ``hour_index`` counts Shanghai hours since 1970-01-01 (a Thursday)."""
    return ((hour_index // 24 + 3) % 7) * 24 + hour_index % 24


class Shapes:
    def __init__(self, n_groups: int, night_hours: list[bool], window_days: int) -> None:
        self.night_of_week = np.array([night_hours[h % 24] for h in range(HOURS_PER_WEEK)])
        self.decay = 1.0 - 7.0 / window_days
        self.open = np.zeros((n_groups, 3), dtype=np.int64)  # attempts, failures, covered µs of the open hour
        self.bins = np.zeros((n_groups, HOURS_PER_WEEK, 3))  # forgotten sums: attempts, failures, covered hours
        self.shape = np.ones((n_groups, HOURS_PER_WEEK))
        self.fshape = np.ones((n_groups, HOURS_PER_WEEK))

    def add(self, groups: np.ndarray, attempts: np.ndarray, failures: np.ndarray, covered_us: np.ndarray) -> None:
        n = len(self.open)
        for i, values in enumerate((attempts, failures, covered_us)):
            self.open[:, i] += np.bincount(groups, weights=values, minlength=n).astype(np.int64)

    def close_hour(self, hour_index: int) -> None:
        """Fold the open hour into its hour-of-week bin and renormalise."""
        if not self.open.any():
            return
        how = hour_of_week(hour_index)
        seen = self.open[:, 2] > 0
        fresh = self.open[seen].astype(np.float64)
        fresh[:, 2] /= US_PER_HOUR
        self.bins[seen, how] = self.bins[seen, how] * self.decay + fresh
        self.open[:] = 0
        self.normalise()

    def normalise(self) -> None:
        attempts, failures, covered = self.bins[..., 0], self.bins[..., 1], self.bins[..., 2]
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(covered >= MIN_COVERED_HOURS, attempts / covered, np.nan)
            frate = np.where(attempts >= MIN_ATTEMPTS, failures / attempts, np.nan)
            shape = np.ones_like(rate)
            fshape = np.ones_like(rate)
            for regime in (False, True):
                cols = self.night_of_week == regime
                a, f, c = attempts[:, cols].sum(1), failures[:, cols].sum(1), covered[:, cols].sum(1)
                mean_rate = np.where(c > 0, a / c, np.nan)[:, None]
                mean_frate = np.where(a > 0, f / a, np.nan)[:, None]
                shape[:, cols] = rate[:, cols] / mean_rate
                fshape[:, cols] = frate[:, cols] / mean_frate
        self.shape = np.clip(np.nan_to_num(shape, nan=1.0), *SHAPE_RANGE)
        self.fshape = np.clip(np.nan_to_num(fshape, nan=1.0, posinf=FSHAPE_RANGE[1]), *FSHAPE_RANGE)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"shapes.open": self.open, "shapes.bins": self.bins}

    def restore(self, open_sums: np.ndarray, bins: np.ndarray, rows: np.ndarray, saved_rows: np.ndarray) -> None:
        """Saved group rows ``saved_rows`` are this object's ``rows``."""
        self.open[rows] = open_sums[saved_rows]
        self.bins[rows] = bins[saved_rows]
        self.normalise()
