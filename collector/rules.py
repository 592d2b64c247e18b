"""The declarative rule files of ``rules/``: streets, device types and contracts.

Each file is read once, validated once, and turned into frozen dataclasses. A bad file
fails at load with ``ConfigError`` naming the file, the key and what was expected, e.g.
``rules/contracts.yaml: cam.kpis.online.threshold must be a fraction in (0, 1]: 95``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

# The shipped rules, as package data: rules/ of a checkout, ptmon/rules of an installed wheel.
DEFAULT_RULES_DIR = Path(str(importlib.resources.files("ptmon.default_rules")))
RULE_FILES = ("streets.yaml", "types.yaml", "contracts.yaml")

# Cumulative counters of the wire contract, in the column order the engine keeps them.
COUNTERS = ("reads", "read_ok", "face_try", "face_ok", "plate_try", "plate_ok")

# Success-rate KPIs: (counters summed for the numerator, counters summed for the denominator).
RATIO_KPIS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sensing": (("read_ok",), ("reads",)),
    "face": (("face_ok",), ("face_try",)),
    "plate": (("plate_ok",), ("plate_try",)),
    "capture": (("face_ok", "plate_ok"), ("face_try", "plate_try")),
}
KNOWN_KPIS = ("online", *RATIO_KPIS)
ONLINE_METHODS = ("time_weighted", "daily")
CODE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
DAY_S = 86_400
MAX_FEE = Decimal(10) ** 12  # yuan; a bound well above any lease fee, so quantize stays exact
DEFAULT_RESPONSE_TIME = 86_400  # 24 h: repair response time when a contract does not set one
# Plausibility limits of a type's counters (types.yaml); the bounds keep every month's sum of
# counter deltas far inside int64 (rules/README.md "Plausible counters").
DEFAULT_MAX_ATTEMPT_RATE = Decimal(1)
MAX_ATTEMPT_RATE_RANGE = (Decimal("0.001"), Decimal(1000))
DEFAULT_MAX_RESETS_PER_DAY = 24
MAX_RESETS_PER_DAY = 254


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


class _Section:
    """One mapping of a rule file, read key by key with errors that say where."""

    def __init__(self, file: str, path: str, value: Any) -> None:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{file}: {path or 'top level'} must be a mapping: {value!r}")
        self.file, self.path, self.data = file, path, value
        self._seen: set[str] = set()

    def _where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"{self.file}: {self._where(key)} {expected}: {value!r}")

    def get(self, key: str, default: Any = ...) -> Any:
        self._seen.add(key)
        if key in self.data:
            return self.data[key]
        if default is ...:
            raise ConfigError(f"{self.file}: {self._where(key)} is missing")
        return default

    def text(self, key: str, default: Any = ...) -> str:
        value = self.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "must be a non-empty string", value)
        return value.strip()

    def choice(self, key: str, options: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(key, default)
        if value not in options:
            raise self.fail(key, f"must be one of {', '.join(options)}", value)
        return str(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false", value)
        return value

    def duration(self, key: str, default: Any = ...) -> int:
        value = self.get(key, default)
        seconds = parse_duration(value)
        if seconds is None or seconds <= 0:
            raise self.fail(key, "must be a positive duration (seconds, or '90s', '15m', '6h', '1d')", value)
        return seconds

    def fraction(self, key: str) -> Decimal:
        value = self.get(key)
        try:
            number = Decimal(str(value)) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite() or not 0 < number <= 1:
            raise self.fail(key, "must be a fraction in (0, 1]", value)
        return number

    def decimal(self, key: str, low: Decimal, high: Decimal | None, default: Any = ...) -> Decimal:
        """A decimal number in ``[low, high]`` (``high`` None: unbounded), given as a number or a string."""
        value = self.get(key, default)
        number = _to_decimal(value)
        if number is None or number < low or (high is not None and number > high):
            bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
            raise self.fail(key, f"must be a decimal number {bounds}", value)
        return number

    def integer(self, key: str, low: int, high: int, default: Any = ...) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"must be a whole number in [{low}, {high}]", value)
        return value

    def money(self, key: str) -> Decimal:
        """An amount in yuan: a non-negative decimal with at most two places (fen)."""
        value = self.get(key)
        number = _to_decimal(value)
        if number is None or number < 0 or number > MAX_FEE or number != number.quantize(Decimal("0.01")):
            raise self.fail(key, "must be an amount in yuan >= 0 with at most 2 decimals (write it as a string)", value)
        return number

    def section(self, key: str) -> _Section:
        return _Section(self.file, self._where(key), self.get(key))

    def codes(self) -> list[str]:
        """The keys, each checked to be a code (a street, a KPI, a contract...)."""
        for key in self.data:
            if not isinstance(key, str) or not CODE_RE.fullmatch(key):
                raise ConfigError(
                    f"{self.file}: {self._where(str(key))} is not a valid code "
                    "(lower-case letters, digits and _, starting with a letter)"
                )
        return list(self.data)

    def items(self) -> list[tuple[str, _Section]]:
        return [(key, self.section(key)) for key in self.codes()]

    def done(self) -> None:
        unknown = sorted(str(k) for k in self.data if k not in self._seen)
        if unknown:
            raise ConfigError(f"{self.file}: {self._where(unknown[0])} is not a known key")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def _to_decimal(value: Any) -> Decimal | None:
    """A finite Decimal from a YAML number or string; None when it is not one.

    A YAML float goes through ``str`` (its shortest repr), so ``0.3`` is ``Decimal("0.3")``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = Decimal(str(value).strip().replace(",", "").replace("_", ""))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def parse_duration(value: Any) -> int | None:
    """Seconds from ``90``, ``"90s"``, ``"15m"``, ``"6h"``, ``"1d"``; None when not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", value)
        if m:
            return int(m.group(1)) * _UNITS[m.group(2) or "s"]
    return None


def _read_yaml(path: Path) -> tuple[Any, bytes]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read rule file: {exc.strerror}") from exc
    try:
        return yaml.safe_load(raw), raw
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def _load_streets(file: str, doc: Any) -> tuple[Street, ...]:
    top = _Section(file, "", doc)
    streets = []
    for code, sec in top.items():
        streets.append(Street(code=code, name=sec.text("name"), supervisor=sec.get("supervisor", "") or ""))
        sec.done()
    if not streets:
        raise ConfigError(f"{file}: defines no street")
    return tuple(streets)


def _load_contracts(file: str, doc: Any) -> tuple[Contract, ...]:
    top = _Section(file, "", doc)
    contracts = []
    for code, sec in top.items():
        interval = sec.duration("sample_interval", 60)
        if DAY_S % interval:
            raise sec.fail("sample_interval", "must divide a day (86400 s)", sec.get("sample_interval"))
        kpis_sec = sec.section("kpis")
        kpis = []
        for kpi_code, ks in kpis_sec.items():
            if kpi_code not in KNOWN_KPIS:
                raise kpis_sec.fail(kpi_code, f"is not a known KPI (known: {', '.join(KNOWN_KPIS)})", kpi_code)
            kpis.append(
                Kpi(
                    code=kpi_code,
                    name=ks.text("name", kpi_code),
                    threshold=ks.fraction("threshold"),
                    informational=ks.flag("informational", False),
                )
            )
            ks.done()
        if not any(k.code == "online" for k in kpis):
            raise ConfigError(f"{file}: {code}.kpis must include online")
        contracts.append(
            Contract(
                code=code,
                name=sec.text("name"),
                online_method=sec.choice("online_method", ONLINE_METHODS, "time_weighted"),
                sample_interval=interval,
                kpis=tuple(kpis),
                response_time=sec.duration("response_time", DEFAULT_RESPONSE_TIME),
                payment=_load_payment(sec.section("payment")) if sec.get("payment", None) is not None else None,
                late_heartbeats=_load_late(sec),
            )
        )
        sec.done()
    if not contracts:
        raise ConfigError(f"{file}: defines no contract")
    return tuple(contracts)


def _load_payment(sec: _Section) -> Payment:
    """The ``payment`` section of a contract: deduction rate, cap and the fee of each street."""
    fees_sec = sec.section("fees")
    fees = tuple((street, fees_sec.money(street)) for street in fees_sec.codes())
    fees_sec.done()
    payment = Payment(
        rate_per_point=sec.decimal("rate_per_point", Decimal(0), Decimal(1), "0.01"),
        cap=sec.decimal("cap", Decimal(0), Decimal(1), "0.30"),
        fees=fees,
    )
    sec.done()
    return payment


def _load_late(contract: _Section) -> LateHeartbeats:
    """The optional ``late_heartbeats`` section; only the time-weighted online method can use it
    (a late heartbeat credits sample instants, and the daily method keeps no per-device days)."""
    if contract.get("late_heartbeats", None) is None:
        return LateHeartbeats()
    sec = contract.section("late_heartbeats")
    default = LateHeartbeats()
    late = LateHeartbeats(count=sec.flag("count", default.count),
                          max_delay=sec.duration("max_delay", default.max_delay),
                          received_within=sec.duration("received_within", default.received_within))
    sec.done()
    if late.count and contract.get("online_method", "time_weighted") != "time_weighted":
        raise sec.fail("count", "can be true only with online_method time_weighted", True)
    return late


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


def _load_types(file: str, doc: Any, contracts: tuple[Contract, ...]) -> tuple[DeviceType, ...]:
    top = _Section(file, "", doc)
    contract_codes = tuple(c.code for c in contracts)
    types = []
    for code, sec in top.items():
        period = sec.duration("heartbeat_period")
        timeout = sec.duration("online_timeout")
        if timeout < period:
            raise sec.fail("online_timeout", f"must be at least heartbeat_period ({period} s)", sec.get("online_timeout"))
        low, high = MAX_ATTEMPT_RATE_RANGE
        types.append(
            DeviceType(
                code=code,
                contract=sec.choice("contract", contract_codes),
                name=sec.text("name"),
                kind=sec.choice("kind", ("common", "custom"), "common"),
                heartbeat_period=period,
                online_timeout=timeout,
                max_attempt_rate=sec.decimal("max_attempt_rate", low, high, str(DEFAULT_MAX_ATTEMPT_RATE)),
                max_resets_per_day=sec.integer("max_resets_per_day", 0, MAX_RESETS_PER_DAY, DEFAULT_MAX_RESETS_PER_DAY),
            )
        )
        sec.done()
    if not types:
        raise ConfigError(f"{file}: defines no device type")
    return tuple(types)


def load_rules(directory: str | Path | None = None) -> Rules:
    """Load and validate ``streets.yaml``, ``types.yaml`` and ``contracts.yaml`` of a directory."""
    base = Path(directory) if directory is not None else DEFAULT_RULES_DIR
    if not base.is_dir():
        raise ConfigError(f"{base}: rules directory not found")
    docs, digest = {}, hashlib.sha256()
    for name in RULE_FILES:
        doc, raw = _read_yaml(base / name)
        docs[name] = doc
        digest.update(name.encode() + b"\0" + raw + b"\0")
    label = {name: str(base / name) for name in RULE_FILES}
    streets = _load_streets(label["streets.yaml"], docs["streets.yaml"])
    contracts = _load_contracts(label["contracts.yaml"], docs["contracts.yaml"])
    _check_fees(label["contracts.yaml"], contracts, streets)
    types = _load_types(label["types.yaml"], docs["types.yaml"], contracts)
    return Rules(
        directory=base,
        streets=streets,
        types=types,
        contracts=contracts,
        version=digest.hexdigest()[:16],
    )
