"""The declarative rule files of ``rules/``: streets, device types and contracts.

Each file is read once, validated once by its pydantic model (:mod:`ptmon.rule_files`, on the
same base as ptmon.toml's tables) and turned into the frozen rule objects below. A bad file
fails at load with ``ConfigError`` naming the file, the key and what was expected, e.g.
``rules/contracts.yaml: cam.kpis.online.threshold must be a fraction in (0, 1]: 95``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from .durations import parse_duration
from .errors import ConfigError, reason
from .rule_fields import CODE_RE, MAX_FEE, NOT_A_CODE, read_rule_file, validate_rule_file
from .rule_files import (
    CONTRACTS_FILE,
    DAY_S,
    DEFAULT_MAX_ATTEMPT_RATE,
    DEFAULT_MAX_RESETS_PER_DAY,
    DEFAULT_RESPONSE_TIME,
    KNOWN_KPIS,
    MAX_ATTEMPT_RATE_RANGE,
    MAX_RESETS_PER_DAY,
    ONLINE_METHODS,
    STREETS_FILE,
    TYPES_FILE,
    ContractEntry,
    DeviceTypeEntry,
    StreetEntry,
)

# The shipped rules, as package data: rules/ of a checkout, ptmon/rules of an installed wheel.
DEFAULT_RULES_DIR = Path(str(importlib.resources.files("ptmon.default_rules")))
RULE_FILES = ("streets.yaml", "types.yaml", "contracts.yaml")

# Cumulative counters of the wire contract, in the column order the engine keeps them.
COUNTERS = ("reads", "read_ok", "face_try", "face_ok", "plate_try", "plate_ok")

# Success-rate KPIs (KNOWN_KPIS but online): (counters summed for the numerator, counters summed for the denominator).
RATIO_KPIS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sensing": (("read_ok",), ("reads",)),
    "face": (("face_ok",), ("face_try",)),
    "plate": (("plate_ok",), ("plate_try",)),
    "capture": (("face_ok", "plate_ok"), ("face_try", "plate_try")),
}
__all__ = [  # names other modules import from here, some now declared in rule_files / rule_fields
    "CODE_RE", "COUNTERS", "DAY_S", "DEFAULT_MAX_ATTEMPT_RATE", "DEFAULT_MAX_RESETS_PER_DAY",
    "DEFAULT_RESPONSE_TIME", "DEFAULT_RULES_DIR", "KNOWN_KPIS", "MAX_ATTEMPT_RATE_RANGE", "MAX_FEE",
    "MAX_RESETS_PER_DAY", "ONLINE_METHODS", "RATIO_KPIS", "RULE_FILES", "Contract", "DeviceType", "Kpi",
    "LateHeartbeats", "Payment", "Rules", "Street", "load_rules", "parse_duration",
]


@dataclass(frozen=True, kw_only=True)
class Street:
    """A 街镇 of Putuo."""

    code: str
    name: str
    supervisor: str = ""


@dataclass(frozen=True, kw_only=True)
class DeviceType:
    """A device type with its heartbeat period and online timeout (seconds), and the plausibility
    limits its counters are held to (rules/README.md "Plausible counters")."""

    code: str
    contract: str
    name: str
    kind: str
    heartbeat_period: int
    online_timeout: int
    max_attempt_rate: Decimal = DEFAULT_MAX_ATTEMPT_RATE  # attempts per second of receive time
    max_resets_per_day: int = DEFAULT_MAX_RESETS_PER_DAY  # counter resets per Shanghai day

    @property
    def attempt_cost_ms(self) -> int:
        """Milliseconds of allowance one attempt uses: 1000 / max_attempt_rate, rounded down."""
        return max(1, int(Decimal(1000) / self.max_attempt_rate))


@dataclass(frozen=True, kw_only=True)
class Kpi:
    """One KPI of a contract: ``value >= threshold`` passes."""

    code: str
    name: str
    threshold: Decimal
    informational: bool = False


@dataclass(frozen=True, kw_only=True)
class Payment:
    """A contract's payment rule (付款与扣款规则), see :mod:`ptmon.payment`.

    ``fees`` is the monthly lease fee of every street in yuan, as ``(street, fee)`` pairs in
    the file's order (a tuple, so the rules stay hashable).
    """

    rate_per_point: Decimal  # deduction fraction per percentage point below a threshold
    cap: Decimal  # the largest deduction fraction of a month
    fees: tuple[tuple[str, Decimal], ...]

    def fee(self, street: str) -> Decimal | None:
        return next((fee for code, fee in self.fees if code == street), None)


@dataclass(frozen=True, kw_only=True)
class LateHeartbeats:
    """迟到心跳: heartbeats received after the month's end but stamped (``ts``) inside it.

    ``count`` False (the default) keeps receive time deciding everything; True lets such a
    heartbeat count its device online for the month it describes, within the limits, when the
    month is closed or restated (rules/README.md "Late heartbeats"; :mod:`ptmon.month.late`).
    """

    count: bool = False
    max_delay: int = 86_400  # s: received at most this long after its ts
    received_within: int = 3 * 86_400  # s: received at most this long after the month's end


@dataclass(frozen=True, kw_only=True)
class Contract:
    """A lease contract and how its KPIs are measured."""

    code: str
    name: str
    online_method: str
    sample_interval: int
    kpis: tuple[Kpi, ...]
    response_time: int = DEFAULT_RESPONSE_TIME  # s: repair response time (运维及维修响应速度)
    payment: Payment | None = None  # None: the contract file gives no payment rule
    late_heartbeats: LateHeartbeats = LateHeartbeats()

    def kpi(self, code: str) -> Kpi | None:
        return next((k for k in self.kpis if k.code == code), None)


@dataclass(frozen=True, kw_only=True)
class Rules:
    """Everything in ``rules/``, validated, with a version hash of the files it came from."""

    directory: Path
    streets: tuple[Street, ...]
    types: tuple[DeviceType, ...]
    contracts: tuple[Contract, ...]
    version: str

    def street_codes(self) -> list[str]:
        return [s.code for s in self.streets]

    def contract(self, code: str) -> Contract:
        return next(c for c in self.contracts if c.code == code)

    def device_type(self, code: str) -> DeviceType:
        return next(t for t in self.types if t.code == code)


def _entries(adapter: TypeAdapter[Any], path: Path, doc: Any, what: str, **context: Any) -> dict[str, Any]:
    """The validated entries of a rule file whose keys are codes; at least one."""
    label = str(path)
    if not isinstance(doc, dict):
        raise ConfigError(f"{label}: top level must be a mapping: {doc!r}")
    for key in doc:
        if not isinstance(key, str) or not CODE_RE.fullmatch(key):
            raise ConfigError(f"{label}: {key} {NOT_A_CODE}")
    if not doc:
        raise ConfigError(f"{label}: defines no {what}")
    entries: dict[str, Any] = validate_rule_file(adapter, doc, label, **context)
    return entries


def _street(code: str, entry: StreetEntry) -> Street:
    return Street(code=code, name=entry.name, supervisor=entry.supervisor)


def _device_type(code: str, entry: DeviceTypeEntry) -> DeviceType:
    return DeviceType(code=code, contract=entry.contract, name=entry.name, kind=entry.kind,
                      heartbeat_period=entry.heartbeat_period, online_timeout=entry.online_timeout,
                      max_attempt_rate=entry.max_attempt_rate, max_resets_per_day=entry.max_resets_per_day)


def _contract(code: str, entry: ContractEntry) -> Contract:
    kpis = tuple(Kpi(code=kpi, name=k.name or kpi, threshold=k.threshold, informational=k.informational)
                 for kpi, k in entry.kpis.items())
    pay = entry.payment
    payment = None if pay is None else Payment(rate_per_point=pay.rate_per_point, cap=pay.cap,
                                                fees=tuple(pay.fees.items()))
    late = entry.late_heartbeats
    return Contract(code=code, name=entry.name, online_method=entry.online_method,
                    sample_interval=entry.sample_interval, kpis=kpis, response_time=entry.response_time,
                    payment=payment,
                    late_heartbeats=LateHeartbeats() if late is None else LateHeartbeats(
                        count=late.count, max_delay=late.max_delay, received_within=late.received_within))


def _check_fees(file: str, contracts: tuple[Contract, ...], streets: tuple[Street, ...]) -> None:
    """Every street has a fee under every contract with a payment rule, and no other street does."""
    codes = [s.code for s in streets]
    for contract in contracts:
        if contract.payment is None:
            continue
        named = [street for street, _ in contract.payment.fees]
        unknown = [street for street in named if street not in codes]
        if unknown:
            raise ConfigError(f"{file}: {contract.code}.payment.fees.{unknown[0]} is not a street of streets.yaml "
                              f"(known: {', '.join(codes)})")
        missing = [street for street in codes if street not in named]
        if missing:
            raise ConfigError(f"{file}: {contract.code}.payment.fees.{missing[0]} is missing "
                              "(every street needs its monthly fee; write 0 where the contract pays none)")


def load_rules(directory: str | Path | None = None) -> Rules:
    """Load and validate ``streets.yaml``, ``types.yaml`` and ``contracts.yaml`` of a directory."""
    base = Path(directory) if directory is not None else DEFAULT_RULES_DIR
    try:
        found = base.is_dir()
    except OSError as exc:  # a directory on the way ptmon may not search
        raise ConfigError(f"{base}: cannot reach the rules directory: {reason(exc)}") from exc
    if not found:
        raise ConfigError(f"{base}: rules directory not found")
    docs, digest = {}, hashlib.sha256()
    for name in RULE_FILES:
        doc, raw = read_rule_file(base / name)
        docs[name] = doc
        digest.update(name.encode() + b"\0" + raw + b"\0")
    streets = tuple(_street(code, entry) for code, entry in
                    _entries(STREETS_FILE, base / "streets.yaml", docs["streets.yaml"], "street").items())
    contracts = tuple(_contract(code, entry) for code, entry in
                      _entries(CONTRACTS_FILE, base / "contracts.yaml", docs["contracts.yaml"], "contract").items())
    _check_fees(str(base / "contracts.yaml"), contracts, streets)
    types = tuple(_device_type(code, entry) for code, entry in
                  _entries(TYPES_FILE, base / "types.yaml", docs["types.yaml"], "device type",
                           contracts=[c.code for c in contracts]).items())
    return Rules(
        directory=base,
        streets=streets,
        types=types,
        contracts=contracts,
        version=digest.hexdigest()[:16],
    )
