"""Shanghai calendar arithmetic against zoneinfo."""

from __future__ import annotations

import random
from datetime import datetime

import pytest

from ptmon.errors import UsageError
from ptmon.timebase import SHANGHAI, US_PER_S, date_to_day, day_of, day_start, format_instant, month_bounds, parse_instant


def test_day_of_agrees_with_zoneinfo():
    """Test that the fixed-offset day arithmetic equals zoneinfo's Shanghai date from 1992 to 2100."""
    rng = random.Random(7)
    for _ in range(20_000):
        t = rng.randrange(694_224_000, 4_102_444_800)
        assert day_of(t * US_PER_S) == date_to_day(datetime.fromtimestamp(t, SHANGHAI).date())
    assert day_start(date_to_day(datetime(2026, 11, 1).date())) == 1_793_462_400 * US_PER_S


@pytest.mark.parametrize(
    ("month", "start", "end"),
    [("2026-11", "2026-11-01T00:00:00+08:00", "2026-12-01T00:00:00+08:00"),
     ("2026-12", "2026-12-01T00:00:00+08:00", "2027-01-01T00:00:00+08:00"),
     ("2028-02", "2028-02-01T00:00:00+08:00", "2028-03-01T00:00:00+08:00")],
    ids=["nov", "year-end", "leap-feb"],
)
def test_month_bounds_are_shanghai_midnights(month, start, end):
    """Test that a month is [first day 00:00, next month's first day 00:00) in Shanghai."""
    a, b = month_bounds(month)
    assert (format_instant(a), format_instant(b)) == (start, end)


def test_parse_instant_forms():
    """Test that instants parse as Shanghai time unless an offset is given, to the microsecond."""
    t = 1_793_462_400 * US_PER_S
    assert parse_instant("2026-11-01") == t
    assert parse_instant("2026-10-31T16:00:00Z") == t
    assert parse_instant("2026-11-01T00:00:00.000001+08:00") == t + 1
    assert parse_instant("1793462400") == t
    with pytest.raises(UsageError, match="not a time"):
        parse_instant("yesterday")
    with pytest.raises(UsageError, match="YYYY-MM"):
        month_bounds("2026-13")
