"""rules/alerts.yaml, validated into frozen dataclasses (errors name the file, key and value)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from pydantic import TypeAdapter

from ..rule_fields import read_rule_file, validate_rule_file
from ..rules import Rules
from .model import AlertKey
from .rule_file import (
    AlertsFile,
    DeviceRule,
    DigestRule,
    Grouping,
    MonthRiskRule,
    RuleDefaults,
    RuleEntry,
    Silence,
)

ALERTS_FILE = "alerts.yaml"
_ALERTS_FILE = TypeAdapter(AlertsFile)
__all__ = ["ALERTS_FILE", "AlertRule", "AlertRules", "DeviceRule", "DigestRule", "Grouping", "MonthRiskRule",
           "Silence", "load_alert_rules"]


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

    def warnings(self) -> list[str]:
        """What is allowed but almost surely a mistake; said by --check-config and at start-up."""
        if self.district:
            return []
        return ["recipients.district is empty: district silences, monitoring gaps, the broker's drops and "
                "the daily digest reach nobody, and streets without their own list get no email"]

    def digest_recipients(self) -> list[tuple[str, str]]:
        """(recipient, street or "" for the whole district) of each daily digest."""
        out = [(r, "") for r in self.district]
        if self.digest.streets:
            out += [(r, street) for street, rs in self.streets.items() for r in rs if r not in self.district]
        return out


def load_alert_rules(path: str | Path, rules: Rules) -> AlertRules:
    """Read and validate an alerts.yaml against ``rules`` (its contracts, KPIs and streets)."""
    file = Path(path)
    doc, raw = read_rule_file(file, "alert rules")
    known = {"contracts": [c.code for c in rules.contracts], "streets": rules.street_codes(),
             "kpis": {c.code: [k.code for k in c.kpis] for c in rules.contracts}}
    alerts: AlertsFile = validate_rule_file(_ALERTS_FILE, doc or {}, str(file), **known)
    recipients = alerts.recipients
    return AlertRules(
        rules=tuple(_alert_rule(entry, alerts.defaults, rules) for entry in alerts.rules),
        grouping=alerts.grouping, pipeline=alerts.pipeline, street_silent=alerts.street_silent,
        gateway_for=alerts.gateway.for_, monitor_gap_for=alerts.monitor_gap.for_, min_coverage=alerts.min_coverage,
        month_risk=alerts.month_risk, digest=alerts.digest, devices=alerts.devices,
        district=recipients.district, district_always=recipients.district_always, streets=dict(recipients.streets),
        grafana_url=alerts.grafana_url.rstrip("/"), dashboard_url=alerts.dashboard_url,
        version=hashlib.sha256(raw).hexdigest()[:16],
    )


def _alert_rule(entry: RuleEntry, defaults: RuleDefaults, rules: Rules) -> AlertRule:
    """A rule of ``rules``, with what it leaves out from ``defaults`` and its KPI's threshold."""
    kpi = rules.contract(entry.contract).kpi(entry.kpi)
    assert kpi is not None  # the model checked the KPI against the contract
    return AlertRule(
        contract=entry.contract, kpi=entry.kpi, threshold=kpi.threshold if entry.threshold is None else entry.threshold,
        window=defaults.window if entry.window is None else entry.window,
        for_=defaults.for_ if entry.for_ is None else entry.for_,
        hysteresis=defaults.hysteresis if entry.hysteresis is None else entry.hysteresis,
        resolve_for=defaults.resolve_for if entry.resolve_for is None else entry.resolve_for)
