"""How numbers, money, times and free text are written in the report (PDF, HTML, XLSX alike)."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from ..results import KpiRow
from ..timebase import SHANGHAI, US_PER_S

PERCENT_DECIMALS = 3
PASS_MARK = {True: "达标", False: "未达标", None: "无数据"}

# C0/C1 controls except tab and line feed, and the code points XML 1.0 forbids.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffe\uffff]")


def percent(row: KpiRow | None, decimals: int = PERCENT_DECIMALS) -> str:
    """A KPI value in per cent, half-up (``93.412%``); ``—`` when it has no value."""
    if row is None or not row.denominator:
        return "—"
    return f"{row.percent_text(decimals)}%"


def fraction_percent(value: Fraction | None, decimals: int = PERCENT_DECIMALS) -> str:
    """An exact fraction in per cent, half-up; ``—`` for None."""
    if value is None:
        return "—"
    scale = 10**decimals
    scaled = (2 * value.numerator * 100 * scale + value.denominator) // (2 * value.denominator)
    return f"{scaled // scale}.{scaled % scale:0{decimals}d}%" if decimals else f"{scaled}%"


def threshold(value: Decimal) -> str:
    """A threshold as the contract writes it: ``≥ 95%``."""
    text = format((value * 100).normalize(), "f")
    return f"≥ {text}%"


def money(value: Decimal | None) -> str:
    """Yuan with thousands separators and two decimals: ``238,958.33``; ``—`` for None."""
    return "—" if value is None else f"{value:,.2f}"


def count(value: int) -> str:
    return f"{value:,}"


def instant(t_us: int) -> str:
    """Shanghai local time to the minute (seconds when not whole): ``2026-11-03 08:15``."""
    dt = datetime.fromtimestamp(t_us / US_PER_S, SHANGHAI)
    return dt.strftime("%Y-%m-%d %H:%M:%S" if dt.second or dt.microsecond else "%Y-%m-%d %H:%M")


def duration(seconds: float | None) -> str:
    """A length of time in Chinese: ``2 天 3 小时``, ``4 小时 12 分``, ``35 分``, ``40 秒``."""
    if seconds is None:
        return "—"
    s = round(seconds)
    days, rest = divmod(s, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} 天 {hours} 小时" if hours else f"{days} 天"
    if hours:
        return f"{hours} 小时 {minutes} 分" if minutes else f"{hours} 小时"
    if minutes:
        return f"{minutes} 分"
    return f"{secs} 秒"


def response(seconds: int) -> str:
    """A response time as contracts write it: ``24 小时``, ``90 分``."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600} 小时"
    return duration(seconds)


def hours(seconds: float) -> float:
    """Seconds as hours rounded to 0.01 (for tables and the workbook)."""
    return round(seconds / 3600, 2)


def clean(text: object) -> str:
    """Free text (reasons, names, ids) made safe to print: CR/LF and lone CR become LF, other
    control characters become visible ``\\xNN`` escapes (they are invalid in XML and PDF text).
    HTML escaping is the template's job; this only removes what no format can hold."""
    s = str(text).replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


def one_line(text: object) -> str:
    """:func:`clean`, with line breaks shown as ``⏎`` (for cells that must stay one line)."""
    return clean(text).replace("\n", " ⏎ ")
