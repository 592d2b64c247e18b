"""streets.yaml, types.yaml and contracts.yaml as pydantic models, one per mapping of a file.

The field names are the files' keys; each is declared once with its kind of value
(:mod:`ptmon.rule_fields`) and default. Validation only: :func:`ptmon.rules.load_rules` turns
the validated files into the frozen rule objects the engine and the reports use.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, TypeAdapter
from pydantic.dataclasses import dataclass

from .config.base import SECTION, Section
from .config.fields import FileContext, flag, invalid, refused
from .rule_fields import (
    check_codes,
    decimal_in,
    duration,
    fraction,
    money,
    one_of,
    rule_text,
    whole_in,
)

DAY_S = 86_400
KNOWN_KPIS = ("online", "sensing", "face", "plate", "capture")
ONLINE_METHODS = ("time_weighted", "daily")
DEFAULT_RESPONSE_TIME = 86_400  # 24 h: repair response time when a contract does not set one
# Plausibility limits of a type's counters (types.yaml); the bounds keep every month's sum of
# counter deltas far inside int64 (rules/README.md "Plausible counters").
DEFAULT_MAX_ATTEMPT_RATE = Decimal(1)
MAX_ATTEMPT_RATE_RANGE = (Decimal("0.001"), Decimal(1000))
DEFAULT_MAX_RESETS_PER_DAY = 24
MAX_RESETS_PER_DAY = 254
DEFAULT_MAX_DELAY = 86_400  # s: a late heartbeat received at most this long after its ts
DEFAULT_RECEIVED_WITHIN = 3 * 86_400  # s: and at most this long after the month's end

Text = Annotated[str, rule_text()]
Flag = Annotated[bool, flag()]
Duration = Annotated[int, duration()]


def _optional_text(value: Any) -> str:
    """A string; empty or absent is ""."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid("a string", value)
    return value


@dataclass(frozen=True, kw_only=True, config=SECTION)
class StreetEntry(Section):
    """One 街镇 of streets.yaml (its code is the key)."""

    name: Text
    supervisor: Annotated[str, BeforeValidator(_optional_text)] = ""


@dataclass(frozen=True, kw_only=True, config=SECTION)
class DeviceTypeEntry(Section):
    """One device type of types.yaml (its code is the key)."""

    contract: Annotated[str, one_of(known="contracts")]
    name: Text
    heartbeat_period: Duration
    online_timeout: Duration
    kind: Annotated[str, one_of(("common", "custom"))] = "common"
    max_attempt_rate: Annotated[Decimal, decimal_in(*MAX_ATTEMPT_RATE_RANGE)] = DEFAULT_MAX_ATTEMPT_RATE
    max_resets_per_day: Annotated[int, whole_in(0, MAX_RESETS_PER_DAY)] = DEFAULT_MAX_RESETS_PER_DAY

    def check(self, given: dict[str, Any]) -> None:
        if self.online_timeout < self.heartbeat_period:
            raise self.fail("online_timeout", f"at least heartbeat_period ({self.heartbeat_period} s)", given)


@dataclass(frozen=True, kw_only=True, config=SECTION)
class KpiEntry(Section):
    """One KPI of a contract: ``value >= threshold`` passes."""

    threshold: Annotated[Decimal, fraction()]
    name: Annotated[str | None, rule_text()] = None  # None: the KPI's code
    informational: Flag = False


@dataclass(frozen=True, kw_only=True, config=SECTION)
class PaymentEntry(Section):
    """A contract's payment rule: deduction per percentage point, its cap, each street's fee."""

    fees: dict[str, Annotated[Decimal, money()]]
    rate_per_point: Annotated[Decimal, decimal_in(Decimal(0), Decimal(1))] = Decimal("0.01")
    cap: Annotated[Decimal, decimal_in(Decimal(0), Decimal(1))] = Decimal("0.30")

    @classmethod
    def from_file(cls, data: dict[str, Any], context: FileContext) -> dict[str, Any]:
        check_codes(data.get("fees"), "fees")
        return data


@dataclass(frozen=True, kw_only=True, config=SECTION)
class LateEntry(Section):
    """迟到心跳: whether and within what limits late heartbeats count (rules/README.md)."""

    count: Flag = False
    max_delay: Duration = DEFAULT_MAX_DELAY
    received_within: Duration = DEFAULT_RECEIVED_WITHIN


@dataclass(frozen=True, kw_only=True, config=SECTION)
class ContractEntry(Section):
    """One lease contract of contracts.yaml (its code is the key) and how its KPIs are measured."""

    name: Text
    kpis: dict[str, KpiEntry]
    online_method: Annotated[str, one_of(ONLINE_METHODS)] = "time_weighted"
    sample_interval: Duration = 60
    response_time: Duration = DEFAULT_RESPONSE_TIME
    payment: PaymentEntry | None = None
    late_heartbeats: LateEntry | None = None

    @classmethod
    def from_file(cls, data: dict[str, Any], context: FileContext) -> dict[str, Any]:
        kpis = data.get("kpis")
        check_codes(kpis, "kpis")
        for code in kpis if isinstance(kpis, dict) else ():
            if code not in KNOWN_KPIS:
                raise refused(f"is not a known KPI (known: {', '.join(KNOWN_KPIS)})", key=f"kpis.{code}",
                              shown=repr(code))
        return data

    def check(self, given: dict[str, Any]) -> None:
        if DAY_S % self.sample_interval:
            raise refused("must divide a day (86400 s)", key="sample_interval",
                          shown=repr(given.get("sample_interval")))
        if "online" not in self.kpis:
            raise refused("must include online", key="kpis")
        late = self.late_heartbeats
        if late is not None and late.count and self.online_method != "time_weighted":
            raise refused("can be true only with online_method time_weighted", key="late_heartbeats.count",
                          shown="True")


STREETS_FILE = TypeAdapter(dict[str, StreetEntry])
TYPES_FILE = TypeAdapter(dict[str, DeviceTypeEntry])
CONTRACTS_FILE = TypeAdapter(dict[str, ContractEntry])
