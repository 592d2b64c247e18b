"""Exact values: rounding half-up for display, exact comparison for pass/fail."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ptmon.results import KpiRow


def row(numerator, denominator, threshold="0.95"):
    return KpiRow(contract="iot", street="x", kpi="online", numerator=numerator, denominator=denominator,
                  threshold=Decimal(threshold), expected_device_samples=denominator, observed_seconds=0)


@pytest.mark.parametrize(
    ("numerator", "denominator", "text", "passed"),
    [
        (19, 20, "0.950000000", True),
        (1_899_999_999, 2_000_000_000, "0.950000000", False),  # 0.9499999995 rounds up for display, fails
        (2, 3, "0.666666667", False),
        (1, 3, "0.333333333", False),
        (0, 5, "0.000000000", False),
        (0, 0, "", None),
    ],
    ids=["exact", "just-below", "two-thirds", "third", "zero", "undefined"],
)
def test_value_text_and_pass(numerator, denominator, text, passed):
    """Test that values print half-up with 9 decimals and pass compares exactly."""
    r = row(numerator, denominator)
    assert (r.value_text(), r.passed) == (text, passed)
