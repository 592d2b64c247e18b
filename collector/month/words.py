"""How the month commands write instants and durations: to the second, Shanghai time."""

from __future__ import annotations

from ..timebase import US_PER_S, format_instant


def when(t_us: int) -> str:
    """``2026-12-01T06:00:00+08:00``: an instant to the whole second."""
    return format_instant(t_us - t_us % US_PER_S)


def span(t_us: int) -> str:
    """A duration as the config writes it: ``3d``, ``6h``, ``90m``, ``45s``."""
    seconds = t_us // US_PER_S
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
