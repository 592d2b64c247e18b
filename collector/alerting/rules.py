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
from ..rules import Rules, _Section

ALERTS_FILE = "alerts.yaml"
_ADDRESS = re.compile(r"[^@\s<>,;\"'\\\x00-\x1f\x7f]+@[^@\s<>,;\"'\\\x00-\x1f\x7f]+")


@dataclass(frozen=True, kw_only=True)
class AlertRule:
    contract: str
    kpi: str
    threshold: Decimal
    window: int  # seconds
    for_: int
    hysteresis: Decimal
    resolve_for: int
    repeat: int


@dataclass(frozen=True, kw_only=True)
class AlertRules:
    rules: tuple[AlertRule, ...]
    month_risk: bool = True
    month_risk_every: int = 3600
    month_risk_min_elapsed: int = 86_400
    gateway_for: int = 300
    silent_for: int = 600
    district: tuple[str, ...] = ()
    district_always: bool = False
    streets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dashboard_url: str = ""
    version: str = ""

    def recipients(self, street: str) -> tuple[str, ...]:
        own = self.streets.get(street, ())
        if not own:
            return self.district
        return tuple(dict.fromkeys(own + self.district)) if self.district_always else own

    def dashboard(self, street: str) -> str:
        return self.dashboard_url.replace("{street}", street) if self.dashboard_url else ""


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
    defaults = top.section("defaults") if "defaults" in top.data else _Section(label, "defaults", {})
    base = {
        "window": defaults.duration("window", "30m"),
        "for": defaults.duration("for", "10m"),
        "hysteresis": _fraction_or_zero(defaults, "hysteresis", "0.005"),
        "resolve_for": defaults.duration("resolve_for", "10m"),
        "repeat": defaults.duration("repeat", "4h"),
    }
    defaults.done()
    alert_rules = []
    seen = set()
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
        threshold = sec.fraction("threshold") if "threshold" in sec.data else kpi.threshold
        alert_rules.append(AlertRule(
            contract=code, kpi=kpi_code, threshold=threshold,
            window=sec.duration("window", base["window"]), for_=sec.duration("for", base["for"]),
            hysteresis=_fraction_or_zero(sec, "hysteresis", base["hysteresis"]),
            resolve_for=sec.duration("resolve_for", base["resolve_for"]),
            repeat=sec.duration("repeat", base["repeat"])))
        sec.done()
    risk = top.section("month_risk") if "month_risk" in top.data else _Section(label, "month_risk", {})
    gateway = top.section("gateway") if "gateway" in top.data else _Section(label, "gateway", {})
    silent = top.section("street_silent") if "street_silent" in top.data else _Section(label, "street_silent", {})
    recipients = top.section("recipients") if "recipients" in top.data else _Section(label, "recipients", {})
    streets_sec = recipients.section("streets") if "streets" in recipients.data else _Section(label, "recipients.streets", {})
    codes = set(rules.street_codes())
    streets = {}
    for street in list(streets_sec.data):
        if street not in codes:
            raise streets_sec.fail(str(street), "is not a street of streets.yaml", street)
        streets[street] = _addresses(streets_sec, street)
    streets_sec._seen.update(streets)
    result = AlertRules(
        rules=tuple(alert_rules),
        month_risk=risk.flag("enabled", True), month_risk_every=risk.duration("every", "1h"),
        month_risk_min_elapsed=risk.duration("min_elapsed", "1d"),
        gateway_for=gateway.duration("for", "5m"), silent_for=silent.duration("for", "10m"),
        district=_addresses(recipients, "district") if "district" in recipients.data else (),
        district_always=recipients.flag("district_always", False),
        streets=streets,
        dashboard_url=str(top.get("dashboard_url", "")),
        version=hashlib.sha256(raw).hexdigest()[:16],
    )
    for sec in (risk, gateway, silent, recipients, top):
        sec.done()
    return result


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
