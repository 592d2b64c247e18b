"""rules/anomaly.yaml: pydantic models on the config's Section base, validated once (errors name the file,
the key and the value), turned into :class:`AnomalyRules`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, Field, TypeAdapter
from pydantic.dataclasses import dataclass as section

from ..config.base import SECTION, Section
from ..config.fields import flag, invalid, refused
from ..rule_fields import duration, number, read_rule_file, time_of_day, validate_rule_file

ANOMALY_FILE = "anomaly.yaml"
KINDS = ("blind", "degraded", "stuck")

Flag = Annotated[bool, flag()]
Evidence = Annotated[float, number(2, 100)]  # nats of CUSUM evidence that raise the fault


@section(frozen=True, kw_only=True, config=SECTION)
class Blind(Section):
    enabled: Flag = True
    ratio: Annotated[float, number(0.001, 0.5)] = 0.1  # the fault: attempts at this share of the baseline or below
    evidence: Evidence = 12.0
    min_rate: Annotated[float, number(0, 1e6)] = 2.0  # attempts per hour: hours normally quieter are not judged
    max_spread: Annotated[float, number(0.01, 10)] = 0.5  # MAD / median of the daily levels: above, too erratic
    dispersion: Annotated[float, number(1, 20)] = 2.0  # capture counts are this much noisier than Poisson


@section(frozen=True, kw_only=True, config=SECTION)
class Degraded(Section):
    enabled: Flag = True
    drop: Annotated[float, number(0.01, 0.9)] = 0.15  # the fault: success this far (a fraction) below the baseline
    evidence: Evidence = 16.0  # a success rate wanders more than an attempt count: 12 gave precision 0.92-0.94


@section(frozen=True, kw_only=True, config=SECTION)
class Stuck(Section):
    enabled: Flag = True
    evidence: Evidence = 12.0


@section(frozen=True, kw_only=True, config=SECTION)
class Learning(Section):
    """How long the baselines learn: ``window`` whole days, judged from ``min_days`` of them."""

    window: Annotated[int, duration()] = 28 * 86_400
    min_days: Any = 7  # a whole number in [1, window's days], checked with the window

    def check(self, given: dict[str, Any]) -> None:
        if self.window % 86_400 or not 7 * 86_400 <= self.window <= 90 * 86_400:
            raise refused("must be whole days from 7d to 90d", key="window", shown=repr(given.get("window")))
        days, value = self.window // 86_400, self.min_days
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= days
                or not float(value).is_integer()):
            raise invalid(f"a whole number in [1, {days}]", value, key="min_days")


@section(frozen=True, kw_only=True, config=ConfigDict(**SECTION, validate_by_name=True, validate_by_alias=True))
class Night(Section):
    """The Shanghai night, in whole hours (``from`` in the file, ``from_`` in code)."""

    file_only = ("from",)
    code_only = ("from_",)
    from_: Annotated[int, time_of_day(), Field(alias="from")] = 20 * 3600
    to: Annotated[int, time_of_day()] = 6 * 3600

    def check(self, given: dict[str, Any]) -> None:
        if self.from_ % 3600 or self.to % 3600 or self.from_ == self.to:
            raise refused("must be a whole hour other than night.from (baselines are kept per hour)", key="to",
                          shown=repr(given.get("to", "06:00")))


@section(frozen=True, kw_only=True, config=SECTION)
class Rollup(Section):
    interval: Annotated[int, duration()] = 300

    def check(self, given: dict[str, Any]) -> None:
        if self.interval % 60 or 3600 % self.interval:
            raise refused("must be whole minutes dividing an hour (1m, 5m, 15m, 1h)", key="interval",
                          shown=repr(given.get("interval")))


@section(frozen=True, kw_only=True, config=SECTION)
class AnomalyFile(Section):
    """The top level of anomaly.yaml."""

    learning: Learning = field(default_factory=Learning)
    night: Night = field(default_factory=Night)
    rollup: Rollup = field(default_factory=Rollup)
    blind: Blind = field(default_factory=Blind)
    degraded: Degraded = field(default_factory=Degraded)
    stuck: Stuck = field(default_factory=Stuck)


_ANOMALY_FILE = TypeAdapter(AnomalyFile)


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
    doc, raw = read_rule_file(file, "anomaly rules")
    read: AnomalyFile = validate_rule_file(_ANOMALY_FILE, doc or {}, str(file))
    return AnomalyRules(window_days=read.learning.window // 86_400, min_days=int(read.learning.min_days),
                        night_from=read.night.from_, night_to=read.night.to, blind=read.blind,
                        degraded=read.degraded, stuck=read.stuck, rollup_interval=read.rollup.interval,
                        version=hashlib.sha256(raw).hexdigest()[:16])


def rules_in(directory: Path) -> AnomalyRules | None:
    """The rules directory's anomaly.yaml; None (device health off) when it has none."""
    path = Path(directory) / ANOMALY_FILE
    return load_anomaly_rules(path) if path.is_file() else None

