"""rules/anomaly.yaml, validated into frozen dataclasses (errors name the file, key and value)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import ConfigError
from ..rule_section import RuleSection as _Section

ANOMALY_FILE = "anomaly.yaml"
KINDS = ("blind", "degraded", "stuck")
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True, kw_only=True)
class Blind:
    enabled: bool = True
    ratio: float = 0.1  # the fault: attempts at this share of the baseline or below
    evidence: float = 12.0  # nats of CUSUM evidence that raise it
    min_rate: float = 2.0  # attempts per hour: hours normally quieter are not judged
    max_spread: float = 0.5  # MAD / median of the daily levels: above, too erratic to judge
    dispersion: float = 2.0  # capture counts are this much noisier than Poisson


@dataclass(frozen=True, kw_only=True)
class Degraded:
    enabled: bool = True
    drop: float = 0.15  # the fault: success this far (a fraction) below the baseline
    evidence: float = 12.0


@dataclass(frozen=True, kw_only=True)
class Stuck:
    enabled: bool = True
    evidence: float = 12.0


@dataclass(frozen=True, kw_only=True)
class AnomalyRules:
    window_days: int = 28
    min_days: int = 7
    night_from: int = 20 * 3600  # seconds after Shanghai midnight
    night_to: int = 6 * 3600
    blind: Blind = field(default_factory=Blind)
    degraded: Degraded = field(default_factory=Degraded)
    stuck: Stuck = field(default_factory=Stuck)
    rollup_interval: int = 300  # seconds
    version: str = ""

    def night_hours(self) -> list[bool]:
        """Whether each hour of a Shanghai day (0..23) is night."""
        start, end = self.night_from // 3600, self.night_to // 3600
        return [(h >= start or h < end) if start > end else (start <= h < end) for h in range(24)]

    def describe(self) -> str:
        on = [k for k in KINDS if getattr(self, k).enabled]
        return (f"device health: {', '.join(on) or 'no detection'}; baselines over {self.window_days} d, judged from "
                f"{self.min_days} d; rollups every {self.rollup_interval // 60} min")


def load_anomaly_rules(path: str | Path) -> AnomalyRules:
    """Read and validate an anomaly rule file; :class:`ConfigError` naming the file, key and value."""
    file = Path(path)
    try:
        raw = file.read_bytes()
        doc = yaml.safe_load(raw)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read anomaly rules: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    top = _Section(str(file), "", doc or {})
    learning = _optional(top, "learning")
    window = learning.duration("window", "28d")
    if window % 86_400 or not 7 * 86_400 <= window <= 90 * 86_400:
        raise learning.fail("window", "must be whole days from 7d to 90d", learning.data.get("window"))
    min_days = _number(learning, "min_days", 7, 1, window // 86_400, whole=True)
    learning.done()
    night = _optional(top, "night")
    night_from, night_to = _clock(night, "from", "20:00"), _clock(night, "to", "06:00")
    if night_from % 3600 or night_to % 3600 or night_from == night_to:
        raise night.fail("to", "must be a whole hour other than night.from (baselines are kept per hour)",
                         night.data.get("to", "06:00"))
    night.done()
    rollup = _optional(top, "rollup")
    interval = rollup.duration("interval", "5m")
    if interval % 60 or 3600 % interval:
        raise rollup.fail("interval", "must be whole minutes dividing an hour (1m, 5m, 15m, 1h)", rollup.data.get("interval"))
    rollup.done()
    rules = AnomalyRules(window_days=window // 86_400, min_days=int(min_days), night_from=night_from, night_to=night_to,
                         blind=_blind(_optional(top, "blind")), degraded=_degraded(_optional(top, "degraded")),
                         stuck=_stuck(_optional(top, "stuck")), rollup_interval=interval,
                         version=hashlib.sha256(raw).hexdigest()[:16])
    top.done()
    return rules


def _blind(sec: _Section) -> Blind:
    rule = Blind(enabled=sec.flag("enabled", True), ratio=_number(sec, "ratio", 0.1, 0.001, 0.5),
                 evidence=_number(sec, "evidence", 12, 2, 100), min_rate=_number(sec, "min_rate", 2, 0, 1e6),
                 max_spread=_number(sec, "max_spread", 0.5, 0.01, 10), dispersion=_number(sec, "dispersion", 2, 1, 20))
    sec.done()
    return rule


def _degraded(sec: _Section) -> Degraded:
    rule = Degraded(enabled=sec.flag("enabled", True), drop=_number(sec, "drop", 0.15, 0.01, 0.9),
                    evidence=_number(sec, "evidence", 12, 2, 100))
    sec.done()
    return rule


def _stuck(sec: _Section) -> Stuck:
    rule = Stuck(enabled=sec.flag("enabled", True), evidence=_number(sec, "evidence", 12, 2, 100))
    sec.done()
    return rule


def _optional(top: _Section, key: str) -> _Section:
    return top.section(key) if key in top.data else _Section(top.file, key, {})


def _number(sec: _Section, key: str, default: float, low: float, high: float, *, whole: bool = False) -> float:
    value = sec.get(key, default)
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and low <= value <= high
    if not ok or (whole and not float(value).is_integer()):
        kind = "a whole number" if whole else "a number"
        raise sec.fail(key, f"must be {kind} in [{_plain(low)}, {_plain(high)}]", value)
    return float(value)


def _plain(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _clock(sec: _Section, key: str, default: str) -> int:
    value = sec.get(key, default)
    m = _CLOCK.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise sec.fail(key, 'must be a Shanghai time of day "HH:MM"', value)
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60


def rules_in(directory: Path) -> AnomalyRules | None:
    """The rules directory's anomaly.yaml; None (device health off) when it has none."""
    path = Path(directory) / ANOMALY_FILE
    return load_anomaly_rules(path) if path.is_file() else None

