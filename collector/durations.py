"""Durations as the rule files and ptmon.toml write them: ``90``, ``"90s"``, ``"15m"``, ``"6h"``, ``"1d"``."""

from __future__ import annotations

import re
from typing import Any

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION = re.compile(r"\s*(\d+)\s*([smhd]?)\s*")


def parse_duration(value: Any) -> int | None:
    """Seconds from ``90``, ``"90s"``, ``"15m"``, ``"6h"``, ``"1d"``; None when not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if m:
            return int(m.group(1)) * _UNITS[m.group(2) or "s"]
    return None
