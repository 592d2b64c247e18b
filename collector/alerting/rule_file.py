"""rules/alerts.yaml as pydantic models on the config's :class:`Section` base.

The sections whose keys are their attributes (``grouping``, ``pipeline``, ``month_risk``,
``digest``, ``devices``...) are the rule objects themselves, each key declared once;
:class:`AlertsFile` is the file's top level, which :func:`ptmon.alerting.rules.load_alert_rules`
turns into :class:`AlertRules`. ``for`` is a Python keyword: the attribute is ``for_``.
"""

from __future__ import annotations

import re
from dataclasses import field
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, ConfigDict, Field
from pydantic.dataclasses import dataclass

from ..config.base import SECTION, Section
from ..config.fields import FileContext, flag, invalid, refused
from ..rule_fields import RuleFileContext, duration, fraction, one_of, time_of_day

_ADDRESS = re.compile(r"[^@\s<>,;\"'\\\x00-\x1f\x7f]+@[^@\s<>,;\"'\\\x00-\x1f\x7f]+")
DEVICE_KINDS = ("blind", "degraded", "stuck")
# ``for`` in the file, ``for_`` in code.
WITH_FOR = ConfigDict(**SECTION, validate_by_name=True, validate_by_alias=True)

Flag = Annotated[bool, flag()]
Duration = Annotated[int, duration()]
Wait = Annotated[int, duration(zero=True)]


def _share(value: Any) -> Decimal:
    """A share in [0, 1], as a fraction (0.2) or a percentage ("20%")."""
    text = str(value).strip() if not isinstance(value, bool) else ""
    try:
        number = Decimal(text[:-1]) / 100 if text.endswith("%") else Decimal(text)
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or not 0 <= number <= 1:
        raise invalid('a share in [0, 1] (0.2 or "20%")', value)
    return number


def _fraction_or_zero(value: Any) -> Decimal:
    try:
        number = Decimal(str(value)) if not isinstance(value, bool) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or not 0 <= number < 1:
        raise invalid("a fraction in [0, 1)", value)
    return number


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid("a whole number ≥ 1", value)
    return value


def _url(value: Any) -> str:
    if not isinstance(value, str) or any(ch in value for ch in "\r\n\t ") or (value and "://" not in value):
        raise invalid("an http(s) URL", value)
    return value


def _addresses(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(a, str) and _ADDRESS.fullmatch(a.strip())
                                                       for a in value):
        raise invalid("a list of e-mail addresses", value)
    return tuple(a.strip() for a in value)


def _kinds(value: Any) -> tuple[str, ...]:
    if (not isinstance(value, (list, tuple)) or not value or any(k not in DEVICE_KINDS for k in value)
            or len(set(value)) != len(value)):
        raise invalid(f"a list of {', '.join(DEVICE_KINDS)} (each once)", value)
    return tuple(value)


Share = Annotated[Decimal, BeforeValidator(_share)]
Hysteresis = Annotated[Decimal, BeforeValidator(_fraction_or_zero)]
Count = Annotated[int, BeforeValidator(_count)]
Url = Annotated[str, BeforeValidator(_url)]
Addresses = Annotated[tuple[str, ...], BeforeValidator(_addresses)]


class _WithFor(Section):
    """A section with a ``for`` key (the attribute ``for_``)."""

    file_only: ClassVar[tuple[str, ...]] = ("for",)
    code_only: ClassVar[tuple[str, ...]] = ("for_",)


@dataclass(frozen=True, kw_only=True, config=SECTION)
class Grouping(Section):
    """Alertmanager's timers, in seconds of engine time."""

    group_wait: Wait = 60  # a new incident's first email waits this long for alerts of the same cause
    group_interval: Duration = 300  # an incident's next email (alerts joined or resolved) waits this long after the last
    repeat_interval: Duration = 14_400  # an unchanged firing incident is emailed again this often
    send_resolved: Flag = True  # an email when every alert of the incident has resolved


@dataclass(frozen=True, kw_only=True, config=WITH_FOR)
class Silence(_WithFor):
    """A cause read from silence: nothing heard for ``for_`` seconds though ``min_messages`` were due."""

    for_: Annotated[int, duration(), Field(alias="for")]
    min_messages: Count


@dataclass(frozen=True, kw_only=True, config=WITH_FOR)
class Lasting(_WithFor):
    """A cause that must last ``for_`` seconds (``gateway``, ``monitor_gap``)."""

    for_: Annotated[int, duration(), Field(alias="for")] = 300


@dataclass(frozen=True, kw_only=True, config=SECTION)
class MonthRiskRule(Section):
    enabled: Flag = True
    every: Duration = 3600  # seconds, a multiple of an hour: evaluated on the ledger's closed hours
    min_observed: Share = Decimal("0.2")  # share of the month's sample instants observed
    min_elapsed: Wait = 86_400  # and at least this many seconds observed

    def check(self, given: dict[str, Any]) -> None:
        if self.every % 3600:
            raise refused("must be whole hours (the projection reads the ledger's closed hours)", key="every",
                          shown=repr(given.get("every", self.every)))


@dataclass(frozen=True, kw_only=True, config=SECTION)
class DigestRule(Section):
    enabled: Flag = True
    at: Annotated[int, time_of_day()] = 8 * 3600 + 30 * 60  # seconds after Shanghai midnight
    streets: Flag = False  # street contacts get their street's digest too


@dataclass(frozen=True, kw_only=True, config=WITH_FOR)
class DeviceRule(_WithFor):
    """Device anomalies (rules/anomaly.yaml) as alerts: which kinds, once they have stood ``for_`` seconds."""

    enabled: Flag = True
    kinds: Annotated[tuple[str, ...], BeforeValidator(_kinds)] = DEVICE_KINDS
    for_: Annotated[int, duration(zero=True), Field(alias="for")] = 1800


@dataclass(frozen=True, kw_only=True, config=WITH_FOR)
class RuleDefaults(_WithFor):
    """``defaults``: what a rule of ``rules`` leaves out; ``repeat`` is an earlier version's
    ``grouping.repeat_interval``."""

    window: Duration = 1800
    for_: Annotated[int, duration(), Field(alias="for")] = 600
    hysteresis: Hysteresis = Decimal("0.005")
    resolve_for: Duration = 600
    repeat: Duration | None = None


@dataclass(frozen=True, kw_only=True, config=WITH_FOR)
class RuleEntry(_WithFor):
    """One alert rule of ``rules``: a contract's KPI; what it leaves out comes from ``defaults``."""

    file_only = ("for", "repeat")  # repeat: refused with where it went
    contract: Annotated[str, one_of(known="contracts")]
    kpi: str
    threshold: Annotated[Decimal | None, fraction()] = None
    window: Duration | None = None
    for_: Annotated[int | None, duration(), Field(alias="for")] = None
    hysteresis: Hysteresis | None = None
    resolve_for: Duration | None = None

    @classmethod
    def from_file(cls, data: dict[str, Any], context: FileContext) -> dict[str, Any]:
        if "repeat" in data:
            raise refused("is set once for all alerts now, as grouping.repeat_interval", key="repeat",
                          shown=repr(data["repeat"]))
        kpis = (context.known.get("kpis", {}) if isinstance(context, RuleFileContext) else {}).get(
            data.get("contract") if isinstance(data.get("contract"), str) else None)
        if kpis is not None and "kpi" in data and data["kpi"] not in kpis:  # a contract not known: its own fault
            raise invalid(f"one of {', '.join(kpis)}", data.get("kpi"), key="kpi")
        return data


@dataclass(frozen=True, kw_only=True, config=SECTION)
class Recipients(Section):
    district: Addresses = ()
    district_always: Flag = True
    streets: dict[str, Addresses] = field(default_factory=dict)

    @classmethod
    def from_file(cls, data: dict[str, Any], context: FileContext) -> dict[str, Any]:
        streets = data.get("streets")
        known = context.known.get("streets", ()) if isinstance(context, RuleFileContext) else ()
        for street in streets if isinstance(streets, dict) else ():
            if street not in known:
                raise refused("is not a street of streets.yaml", key=f"streets.{street}", shown=repr(street))
        return data


def _silence_defaults(data: dict[str, Any], key: str, for_: str, min_messages: int) -> None:
    """``pipeline`` and ``street_silent`` share a model but not their defaults."""
    given = data.get(key, {})
    if isinstance(given, dict):
        data[key] = {"for": for_, "min_messages": min_messages, **given}


@dataclass(frozen=True, kw_only=True, config=SECTION)
class AlertsFile(Section):
    """The top level of alerts.yaml."""

    defaults: RuleDefaults = field(default_factory=RuleDefaults)
    grouping: Grouping = field(default_factory=Grouping)
    pipeline: Silence = field(default_factory=lambda: Silence(for_=180, min_messages=20))
    street_silent: Silence = field(default_factory=lambda: Silence(for_=600, min_messages=10))
    gateway: Lasting = field(default_factory=Lasting)
    monitor_gap: Lasting = field(default_factory=Lasting)  # a monitoring gap this long is a pipeline incident
    rules: tuple[RuleEntry, ...] = ()
    min_coverage: Share = Decimal("0.5")
    month_risk: MonthRiskRule = field(default_factory=MonthRiskRule)
    digest: DigestRule = field(default_factory=DigestRule)
    devices: DeviceRule = field(default_factory=DeviceRule)
    recipients: Recipients = field(default_factory=Recipients)
    grafana_url: Url = ""
    dashboard_url: Url = ""  # an earlier version's link template ({street}); grafana_url is preferred

    @classmethod
    def from_file(cls, data: dict[str, Any], context: FileContext) -> dict[str, Any]:
        defaults, grouping = data.get("defaults"), data.get("grouping", {})
        if isinstance(defaults, dict) and "repeat" in defaults and isinstance(grouping, dict) \
                and "repeat_interval" not in grouping:
            data["grouping"] = {**grouping, "repeat_interval": defaults["repeat"]}
        _silence_defaults(data, "pipeline", "3m", 20)
        _silence_defaults(data, "street_silent", "10m", 10)
        return data

    def check(self, given: dict[str, Any]) -> None:
        if self.pipeline.for_ > min(self.street_silent.for_, self.gateway.for_):
            raise refused("must not exceed street_silent.for and gateway.for (the wider cause must be known "
                          "first, so it can hold back the alerts it explains)", key="pipeline.for",
                          shown=(f"{_span(self.pipeline.for_)} (street_silent.for {_span(self.street_silent.for_)}, "
                                 f"gateway.for {_span(self.gateway.for_)})"))
        seen: set[tuple[str, str]] = set()
        for i, rule in enumerate(self.rules):
            if (rule.contract, rule.kpi) in seen:
                raise refused(f"has a second rule for contract {rule.contract}", key=f"rules[{i}].kpi",
                              shown=repr(rule.kpi))
            seen.add((rule.contract, rule.kpi))


def _span(seconds: int) -> str:
    """Seconds as the rule files write them: 1200 → 20m, 5400 → 1h30m, 45 → 45s."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n) or "0s"
