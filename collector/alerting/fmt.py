"""How alert emails write text, instants, rates and durations."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from ..timebase import SHANGHAI, US_PER_S


def header_safe(text: str, limit: int = 200) -> str:
    """One line of printable text: control, format and line/paragraph separators become spaces."""
    cleaned = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in str(text))
    return " ".join(cleaned.split())[:limit]


def body_line(text: str, limit: int = 600) -> str:
    """One line of a body: control and line-separator characters become spaces (indentation kept)."""
    cleaned = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in str(text))
    return cleaned.rstrip()[:limit]


def when(t: int | None) -> str:
    """An instant as Shanghai time to the second: 2026-11-01 08:03:17."""
    if t is None or t < 0:
        return "—"  # never (the engine's NEVER is far before 1970)
    return datetime.fromtimestamp(t // US_PER_S, SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def percent(value: Fraction | Decimal | None, places: int = 2) -> str:
    """A rate in per cent, half-up: 95.00%; — when there is none."""
    if value is None:
        return "—"
    q = Decimal(value.numerator) / Decimal(value.denominator) if isinstance(value, Fraction) else Decimal(value)
    return f"{(q * 100).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)}%"


def duration_text(seconds: float) -> str:
    minutes = int(seconds // 60)
    days, rest = divmod(minutes, 1440)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days} 天" if days else "", f"{hours} 小时" if hours else "", f"{minutes} 分钟"]
    return " ".join(p for p in parts if p)
