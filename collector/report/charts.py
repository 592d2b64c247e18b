"""Daily trend charts (每日趋势) as inline SVG: vector in the PDF, crisp in a browser.

One chart per contract × street: each contract KPI's daily value as a line, its threshold as a
dashed line of the same colour, days below the threshold marked in red. A day without a value
(nothing expected, not observed) is a break in the line, never a zero. Hand-written SVG keeps
the output byte-stable and needs no plotting library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from fractions import Fraction
from html import escape

COLOURS = ("#1f5fa8", "#c8641e", "#2e8b57", "#7a4fa0")
BELOW = "#d62728"
FONT = "Noto Sans CJK SC, Source Han Sans SC, WenQuanYi Zen Hei, Microsoft YaHei, sans-serif"

WIDTH, HEIGHT = 360, 170
LEFT, RIGHT, TOP, BOTTOM = 40, 34, 8, 22


@dataclass(frozen=True, kw_only=True)
class Series:
    name: str
    threshold: Decimal
    values: Sequence[Fraction | None]  # one per day


def y_range(series: Sequence[Series]) -> tuple[float, float, float]:
    """(low, high, grid step) of the y axis in fractions: from a round value below the lowest
    value or threshold up to 100 %, with at most about 6 grid lines."""
    points = [float(v) for s in series for v in s.values if v is not None] + [float(s.threshold) for s in series]
    lowest = min(points, default=0.9)
    span = 1.0 - lowest
    step = next(st for st in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25) if span + 0.01 <= 5 * st)
    low = max(0.0, math.floor((lowest - step / 2) / step) * step)
    return low, 1.0, step


def trend_svg(days: Sequence[date], series: Sequence[Series], *, label: str) -> str:
    """An SVG document fragment (``<svg …>``) of the series over the days; ``label`` is its
    accessible title (escaped here)."""
    low, high, step = y_range(series)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = max(1, len(days) - 1)

    def x(i: int) -> float:
        return LEFT + plot_w * i / n

    def y(v: float) -> float:
        return TOP + plot_h * (high - v) / (high - low)

    head = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
            f'class="trend" role="img" font-family="{FONT}" font-size="9"><title>{escape(label)}</title>')
    out = [head]
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#999" stroke-width="0.6"/>')
    for j in range(round((high - low) / step) + 1):
        grid = low + j * step
        gy = y(grid)
        out.append(f'<line x1="{LEFT}" y1="{gy:.1f}" x2="{LEFT + plot_w}" y2="{gy:.1f}" stroke="#ddd" stroke-width="0.5"/>')
        out.append(f'<text x="{LEFT - 3}" y="{gy + 3:.1f}" text-anchor="end" fill="#444">{grid * 100:.0f}%</text>')
    for i in _ticks(days):
        out.append(f'<text x="{x(i):.1f}" y="{HEIGHT - 8}" text-anchor="middle" fill="#444">{days[i].day}</text>')
    out.append(f'<text x="{LEFT + plot_w + 10}" y="{HEIGHT - 8}" fill="#666" font-size="8">日</text>')
    if all(v is None for s in series for v in s.values):
        out.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2 + 10:.1f}" text-anchor="middle" fill="#999" '
                   'font-size="11">本月无数据</text>')
    for k, s in enumerate(series):
        colour = COLOURS[k % len(COLOURS)]
        ty = y(float(s.threshold))
        out.append(f'<line x1="{LEFT}" y1="{ty:.1f}" x2="{LEFT + plot_w}" y2="{ty:.1f}" stroke="{colour}" '
                   'stroke-width="0.9" stroke-dasharray="4 2.5"/>')
        out.append(f'<text x="{LEFT + plot_w + 3}" y="{ty + 3 + 9 * k * _clash(series, k):.1f}" fill="{colour}" font-size="8">'
                   f'{_pct(s.threshold)}</text>')
        out.extend(_line(s.values, x, y, colour))
        for i, v in enumerate(s.values):
            if v is not None and v < Fraction(s.threshold):
                out.append(f'<circle cx="{x(i):.1f}" cy="{y(float(v)):.1f}" r="2" fill="{BELOW}"/>')
    out.append("</svg>")
    return "".join(out)


def _line(values: Sequence[Fraction | None], x, y, colour: str) -> list[str]:
    """Polylines over runs of days with a value; a lone day is a dot."""
    out, run = [], []
    for i, v in enumerate([*values, None]):
        if v is not None:
            run.append(f"{x(i):.1f},{y(float(v)):.1f}")
            continue
        if len(run) > 1:
            out.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" stroke-width="1.4" '
                       'stroke-linejoin="round"/>')
        elif run:
            cx, cy = run[0].split(",")
            out.append(f'<circle cx="{cx}" cy="{cy}" r="1.6" fill="{colour}"/>')
        run = []
    return out


def _ticks(days: Sequence[date]) -> list[int]:
    """The 1st, every 5th and the last day are labelled."""
    if not days:
        return []
    return sorted({0, len(days) - 1, *[i for i, d in enumerate(days) if d.day % 5 == 0 and d.day < days[-1].day - 1]})


def _clash(series: Sequence[Series], k: int) -> int:
    """1 when an earlier series has the same threshold (its label would overprint this one)."""
    return int(any(s.threshold == series[k].threshold for s in series[:k]))


def _pct(value: Decimal) -> str:
    return f"{format((value * 100).normalize(), 'f')}%"


def legend_html(names: Sequence[str]) -> str:
    """The legend of a contract's charts, as HTML: line = daily value, dashes = threshold."""
    items = []
    for k, name in enumerate(names):
        colour = COLOURS[k % len(COLOURS)]
        items.append(f'<span class="key"><span class="swatch" style="border-top: 2px solid {colour}"></span>{escape(name)}</span>'
                     f'<span class="key"><span class="swatch" style="border-top: 2px dashed {colour}"></span>阈值</span>')
    items.append(f'<span class="key"><span class="dot" style="background: {BELOW}"></span>低于阈值的日</span>')
    return '<div class="legend">' + "".join(items) + "</div>"
