"""rules/alerts.yaml, validated into frozen dataclasses (errors name the file, key and value)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..durations import parse_duration
from ..rule_section import RuleSection as _Section
from ..rules import Rules
from .model import AlertKey

ALERTS_FILE = "alerts.yaml"
_ADDRESS = re.compile(r"[^@\s<>,;\"'\\\x00-\x1f\x7f]+@[^@\s<>,;\"'\\\x00-\x1f\x7f]+")
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True, kw_only=True)
class AlertRule:
    contract: str
    kpi: str
    threshold: Decimal
    window: int  # seconds
    for_: int
    hysteresis: Decimal
    resolve_for: int


@dataclass(frozen=True, kw_only=True)
class Grouping:
    """Alertmanager's timers, in seconds of engine time."""

    group_wait: int = 60  # a new incident's first email waits this long for alerts of the same cause
    group_interval: int = 300  # an incident's next email (alerts joined or resolved) waits this long after the last
    repeat_interval: int = 14_400  # an unchanged firing incident is emailed again this often
    send_resolved: bool = True  # an email when every alert of the incident has resolved


@dataclass(frozen=True, kw_only=True)
class Silence:
    """A cause read from silence: nothing heard for ``for_`` seconds though ``min_messages`` were due."""

    for_: int
    min_messages: int


@dataclass(frozen=True, kw_only=True)
class MonthRiskRule:
    enabled: bool = True
    every: int = 3600  # seconds, a multiple of an hour: evaluated on the ledger's closed hours
    min_observed: Decimal = Decimal("0.2")  # share of the month's sample instants observed
    min_elapsed: int = 86_400  # and at least this many seconds observed


@dataclass(frozen=True, kw_only=True)
class DigestRule:
    enabled: bool = True
    at: int = 8 * 3600 + 30 * 60  # seconds after Shanghai midnight
    streets: bool = False  # street contacts get their street's digest too


@dataclass(frozen=True, kw_only=True)
class DeviceRule:
    """Device anomalies (rules/anomaly.yaml) as alerts: which kinds, once they have stood ``for_`` seconds."""

    enabled: bool = True
    kinds: tuple[str, ...] = ("blind", "degraded", "stuck")
    for_: int = 1800


@dataclass(frozen=True, kw_only=True)
class AlertRules:
    rules: tuple[AlertRule, ...]
    grouping: Grouping = field(default_factory=Grouping)
    pipeline: Silence = field(default_factory=lambda: Silence(for_=180, min_messages=20))
    street_silent: Silence = field(default_factory=lambda: Silence(for_=600, min_messages=10))
    gateway_for: int = 300
    monitor_gap_for: int = 300  # a monitoring gap this long is a pipeline incident (monitor_gap)
    min_coverage: Decimal = Decimal("0.5")
    month_risk: MonthRiskRule = field(default_factory=MonthRiskRule)
    digest: DigestRule = field(default_factory=DigestRule)
    devices: DeviceRule = field(default_factory=DeviceRule)
    district: tuple[str, ...] = ()
    district_always: bool = True
    streets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    grafana_url: str = ""
    dashboard_url: str = ""  # an earlier version's link template ({street}); grafana_url is preferred
    version: str = ""

    def recipients(self, street: str) -> tuple[str, ...]:
        """Who hears about a street (or, for "", about the district)."""
        own = self.streets.get(street, ()) if street else ()
        if not own:
            return self.district
        return tuple(dict.fromkeys(own + self.district)) if self.district_always else own

    def recipients_of(self, key: AlertKey) -> tuple[str, ...]:
        return self.district if key.cause.district_only else self.recipients(key.street)

    def describe(self) -> list[str]:
        """What `ptmon collect --check-config` shows of these rules."""
        g, m, d = self.grouping, self.month_risk, self.digest
        risk = f"every {m.every // 3600} h, from {m.min_observed:%} of the month observed" if m.enabled else "off"
        hour, minute = divmod(d.at // 60, 60)
        digest = f"at {hour:02d}:{minute:02d}{', to street contacts too' if d.streets else ''}" if d.enabled else "off"
        resolved = "on" if g.send_resolved else "off"
        return [
            (f"grouping: wait {g.group_wait} s, interval {g.group_interval} s, repeat {g.repeat_interval} s, "
            f"resolved emails {resolved}"),
            (f"causes: district silent {self.pipeline.for_} s, street silent {self.street_silent.for_} s, gateway "
            f"{self.gateway_for} s, monitoring gap {self.monitor_gap_for} s; windows judged from {self.min_coverage:%} observed"),
            f"month at risk: {risk}",
            (f"device anomalies: {', '.join(self.devices.kinds)} after {self.devices.for_} s" if self.devices.enabled
             else "device anomalies: off"),
            f"digest: {digest}",
            (f"recipients: {len(self.district)} district, {len(self.streets)} streets with their own; district "
            f"copied on every incident: {'yes' if self.district_always else 'no'}"),
            f"dashboards: {self.grafana_url or self.dashboard_url or 'none (no links in emails)'}",
        ]

    def digest_recipients(self) -> list[tuple[str, str]]:
        """(recipient, street or "" for the whole district) of each daily digest."""
        out = [(r, "") for r in self.district]
        if self.digest.streets:
            out += [(r, street) for street, rs in self.streets.items() for r in rs if r not in self.district]
        return out


def load_alert_rules(path: str | Path, rules: Rules) -> AlertRules:
    file = Path(path)
    try:
        raw = file.read_bytes()
        doc = yaml.safe_load(raw)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read alert rules: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    label = str(file)
    top = _Section(label, "", doc or {})
    defaults = _optional(top, "defaults")
    base = {"window": defaults.duration("window", "30m"), "for": defaults.duration("for", "10m"),
            "hysteresis": _fraction_or_zero(defaults, "hysteresis", "0.005"),
            "resolve_for": defaults.duration("resolve_for", "10m")}
    legacy_repeat = defaults.duration("repeat", "4h") if "repeat" in defaults.data else None
    defaults.done()
    grouping = _grouping(_optional(top, "grouping"), legacy_repeat)
    pipeline = _silence(_optional(top, "pipeline"), "3m", 20)
    silent = _silence(_optional(top, "street_silent"), "10m", 10)
    gateway = _optional(top, "gateway")
    gateway_for = gateway.duration("for", "5m")
    gateway.done()
    gap = _optional(top, "monitor_gap")
    monitor_gap_for = gap.duration("for", "5m")
    gap.done()
    if pipeline.for_ > min(silent.for_, gateway_for):
        raise top.fail("pipeline.for", "must not exceed street_silent.for and gateway.for (the wider cause must be "
                       "known first, so it can hold back the alerts it explains)", pipeline.for_)
    recipients = _optional(top, "recipients")
    result = AlertRules(
        rules=_rules(top, rules, label, base), grouping=grouping, pipeline=pipeline, street_silent=silent,
        gateway_for=gateway_for, monitor_gap_for=monitor_gap_for, min_coverage=_share(top, "min_coverage", "0.5"),
        month_risk=_month_risk(_optional(top, "month_risk")), digest=_digest(_optional(top, "digest")),
        devices=_devices(_optional(top, "devices")),
        district=_addresses(recipients, "district") if "district" in recipients.data else (),
        district_always=recipients.flag("district_always", True), streets=_street_addresses(recipients, rules, label),
        grafana_url=_url(top, "grafana_url"), dashboard_url=_url(top, "dashboard_url"),
        version=hashlib.sha256(raw).hexdigest()[:16],
    )
    recipients.done()
    top.done()
    return result


def _optional(top: _Section, key: str) -> _Section:
    return top.section(key) if key in top.data else _Section(top.file, key, {})


def _rules(top: _Section, rules: Rules, label: str, base: dict[str, Any]) -> tuple[AlertRule, ...]:
    out, seen = [], set()
    entries = top.get("rules", [])
    if not isinstance(entries, list):
        raise top.fail("rules", "must be a list", entries)
    for i, entry in enumerate(entries):
        sec = _Section(label, f"rules[{i}]", entry)
        code = sec.choice("contract", tuple(c.code for c in rules.contracts))
        contract = rules.contract(code)
        kpi_code = sec.choice("kpi", tuple(k.code for k in contract.kpis))
        kpi = contract.kpi(kpi_code)
        assert kpi is not None
        if (code, kpi_code) in seen:
            raise sec.fail("kpi", f"has a second rule for contract {code}", kpi_code)
        seen.add((code, kpi_code))
        if "repeat" in sec.data:
            raise sec.fail("repeat", "is set once for all alerts now, as grouping.repeat_interval", sec.data["repeat"])
        threshold = sec.fraction("threshold") if "threshold" in sec.data else kpi.threshold
        out.append(AlertRule(
            contract=code, kpi=kpi_code, threshold=threshold,
            window=sec.duration("window", base["window"]), for_=sec.duration("for", base["for"]),
            hysteresis=_fraction_or_zero(sec, "hysteresis", base["hysteresis"]),
            resolve_for=sec.duration("resolve_for", base["resolve_for"])))
        sec.done()
    return tuple(out)


def _grouping(sec: _Section, legacy_repeat: int | None) -> Grouping:
    default = Grouping()
    grouping = Grouping(
        group_wait=_seconds(sec, "group_wait", default.group_wait),
        group_interval=_seconds(sec, "group_interval", default.group_interval, positive=True),
        repeat_interval=_seconds(sec, "repeat_interval", legacy_repeat or default.repeat_interval, positive=True),
        send_resolved=sec.flag("send_resolved", True))
    sec.done()
    return grouping


def _silence(sec: _Section, default_for: str, default_messages: int) -> Silence:
    silence = Silence(for_=sec.duration("for", default_for), min_messages=_count(sec, "min_messages", default_messages))
    sec.done()
    return silence


def _month_risk(sec: _Section) -> MonthRiskRule:
    every = sec.duration("every", "1h")
    if every % 3600:
        raise sec.fail("every", "must be whole hours (the projection reads the ledger's closed hours)", sec.data["every"])
    rule = MonthRiskRule(enabled=sec.flag("enabled", True), every=every, min_observed=_share(sec, "min_observed", "0.2"),
                         min_elapsed=_seconds(sec, "min_elapsed", 86_400))
    sec.done()
    return rule


def _devices(sec: _Section) -> DeviceRule:
    kinds = sec.get("kinds", list(DeviceRule().kinds))
    known = DeviceRule().kinds
    if not isinstance(kinds, list) or not kinds or any(k not in known for k in kinds) or len(set(kinds)) != len(kinds):
        raise sec.fail("kinds", f"must be a list of {', '.join(known)} (each once)", kinds)
    rule = DeviceRule(enabled=sec.flag("enabled", True), kinds=tuple(kinds), for_=_seconds(sec, "for", "30m"))
    sec.done()
    return rule


def _digest(sec: _Section) -> DigestRule:
    at = sec.get("at", "08:30")
    m = _CLOCK.fullmatch(str(at).strip()) if isinstance(at, str) else None
    if m is None:
        raise sec.fail("at", 'must be a Shanghai time of day "HH:MM"', at)
    rule = DigestRule(enabled=sec.flag("enabled", True), at=int(m.group(1)) * 3600 + int(m.group(2)) * 60,
                      streets=sec.flag("streets", False))
    sec.done()
    return rule


def _street_addresses(recipients: _Section, rules: Rules, label: str) -> dict[str, tuple[str, ...]]:
    streets_sec = recipients.section("streets") if "streets" in recipients.data else _Section(label, "recipients.streets", {})
    codes = set(rules.street_codes())
    streets = {}
    for street in list(streets_sec.data):
        if street not in codes:
            raise streets_sec.fail(str(street), "is not a street of streets.yaml", street)
        streets[street] = _addresses(streets_sec, street)
    streets_sec.done()
    return streets


def _seconds(sec: _Section, key: str, default: int, *, positive: bool = False) -> int:
    value = sec.get(key, default)
    seconds = parse_duration(value)
    if seconds is None or seconds < 0 or (positive and seconds == 0):
        raise sec.fail(key, f"must be a {'positive' if positive else 'non-negative'} duration "
                       "(seconds, or '90s', '15m', '6h', '1d')", value)
    return seconds


def _count(sec: _Section, key: str, default: int) -> int:
    value = sec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise sec.fail(key, "must be a whole number ≥ 1", value)
    return value


def _share(sec: _Section, key: str, default: str) -> Decimal:
    """A share in [0, 1], as a fraction (0.2) or a percentage ("20%")."""
    value = sec.get(key, default)
    text = str(value).strip() if not isinstance(value, bool) else ""
    try:
        number = Decimal(text[:-1]) / 100 if text.endswith("%") else Decimal(text)
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or not 0 <= number <= 1:
        raise sec.fail(key, 'must be a share in [0, 1] (0.2 or "20%")', value)
    return number


def _url(sec: _Section, key: str) -> str:
    value = sec.get(key, "")
    if not isinstance(value, str) or any(ch in value for ch in "\r\n\t ") or (value and "://" not in value):
        raise sec.fail(key, "must be an http(s) URL", value)
    return value.rstrip("/") if key == "grafana_url" else value


def _fraction_or_zero(sec: _Section, key: str, default: Any) -> Decimal:
    value = sec.get(key, default)
    try:
        number = Decimal(str(value)) if not isinstance(value, bool) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or not 0 <= number < 1:
        raise sec.fail(key, "must be a fraction in [0, 1)", value)
    return number


def _addresses(sec: _Section, key: str) -> tuple[str, ...]:
    value = sec.get(key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(a, str) and _ADDRESS.fullmatch(a.strip()) for a in value):
        raise sec.fail(key, "must be a list of e-mail addresses", value)
    return tuple(a.strip() for a in value)
