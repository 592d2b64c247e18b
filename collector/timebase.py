"""Time as ptmon counts it: integer microseconds since the Unix epoch, calendar in Asia/Shanghai.

Receive times arrive as float unix seconds; the engine keeps them as int64 microseconds so
that every boundary comparison (``t - timeout < h <= t``) is exact integer arithmetic.

Asia/Shanghai has kept UTC+08:00 without daylight saving since 1991-09-15, so a Shanghai
calendar day is a fixed 86,400 s block offset by 8 h. The vectorised helpers rely on that;
``tests/test_timebase.py`` checks them against ``zoneinfo`` over the years ptmon serves.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from .errors import UsageError

SHANGHAI = ZoneInfo("Asia/Shanghai")
US_PER_S = 1_000_000
DAY_US = 86_400 * US_PER_S
UTC_OFFSET_US = 8 * 3600 * US_PER_S
EPOCH_DAY0 = date(1970, 1, 1)
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST_FIXED_OFFSET_DAY = (date(1991, 9, 15) - EPOCH_DAY0).days + 1


def seconds_to_us(seconds: float) -> int:
    """Unix seconds (int or float) to integer microseconds, rounded to the nearest."""
    return int(round(seconds * US_PER_S))  # noqa: RUF046 - a numpy float64 rounds to float64 before numpy 2


def times_to_us(times: Sequence[float] | np.ndarray) -> np.ndarray:
    """Float unix seconds to int64 µs, rounded to nearest (as :func:`seconds_to_us`)."""
    return np.rint(np.asarray(times, dtype=np.float64) * 1e6).astype(np.int64)


def day_of(t_us: int) -> int:
    """Shanghai calendar day number (days since 1970-01-01) of an instant."""
    return (t_us + UTC_OFFSET_US) // DAY_US


def days_of(t_us: np.ndarray) -> np.ndarray:
    """Vectorised :func:`day_of`."""
    return (t_us + UTC_OFFSET_US) // DAY_US


def day_start(day: int) -> int:
    """The instant (µs) at which Shanghai day ``day`` begins."""
    return day * DAY_US - UTC_OFFSET_US


def date_to_day(d: date) -> int:
    return (d - EPOCH_DAY0).days


def day_to_date(day: int) -> date:
    return EPOCH_DAY0 + timedelta(days=day)


def month_bounds(month: str) -> tuple[int, int]:
    """``YYYY-MM`` to the half-open instant range [first day 00:00, next month 00:00) in Shanghai."""
    m = re.fullmatch(r"(\d{4})-(\d{2})", month.strip())
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise UsageError(f"month must be YYYY-MM, got {month!r}")
    year, mon = int(m.group(1)), int(m.group(2))
    if year < 1970 or (year, mon) > (9999, 11):
        raise UsageError(f"month {month!r} is out of range (1970-01 to 9999-11)")
    first = date(year, mon, 1)
    after = date(year + mon // 12, mon % 12 + 1, 1)
    return day_start(date_to_day(first)), day_start(date_to_day(after))


# The instants of the months ptmon serves (1970-01 to 9999-11, Shanghai), in seconds: an archive
# record received outside them is no record (a damaged line), as its calendar cannot hold it.
FIRST_SERVED_S, END_SERVED_S = month_bounds("1970-01")[0] // US_PER_S, month_bounds("9999-11")[1] // US_PER_S


def parse_instant(text: str) -> int:
    """An instant from the command line, as µs.

    Accepts ISO 8601 (``2026-11-01``, ``2026-11-01T08:00``, ``2026-11-01 08:00:00+08:00``,
    ``...Z``) or unix seconds (``1793462400``). Without an offset the time is Shanghai time.
    """
    s = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return seconds_to_us(float(s))
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"not a time: {text!r} (use ISO 8601 such as 2026-11-01T00:00, Shanghai time "
            "unless an offset is given, or unix seconds)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=SHANGHAI)
    delta = dt - UNIX_EPOCH
    return (delta.days * 86_400 + delta.seconds) * US_PER_S + delta.microseconds


def format_instant(t_us: int) -> str:
    """An instant as Shanghai ISO 8601 with offset, to the second (µs when not whole)."""
    dt = datetime.fromtimestamp(t_us // US_PER_S, SHANGHAI)
    frac = t_us % US_PER_S
    return (dt.replace(microsecond=frac) if frac else dt).isoformat()


class SimulatedClock:
    """Wall time mapped onto simulated unix seconds: ``start_s`` at wall time ``anchor``, ``speed``
    times faster. The demo, tests and ``ptmon collect --sim-*`` share one with ``ptmon simulate
    --start/--anchor/--speed``, so receive times are those of the simulation. With ``anchor`` None
    (not known yet) the clock stands at ``hold_s``; it never goes back."""

    def __init__(self, start_s: float, anchor: float | None, speed: float, hold_s: float | None = None) -> None:
        self.start_s, self.anchor, self.speed = start_s, anchor, speed
        self.hold_s = start_s if hold_s is None else hold_s

    def __call__(self) -> float:
        if self.anchor is None:
            return self.hold_s
        return max(self.hold_s, self.start_s + (time.time() - self.anchor) * self.speed)
