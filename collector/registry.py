"""The device registry (the contract inventory): the denominator of every KPI.

The CSV (columns ``device_id,contract,type,street,scenario,community,gateway,accepted_on,
retired_on``) is read whole and checked row by row; any bad row fails the load with every
problem listed as ``file:line: what``. A registry is never half-loaded. Device and gateway
ids name an MQTT topic level and an InfluxDB tag, so they may not hold ``/ + #``, control
characters, edge spaces or a final backslash.

In memory it is columnar: one numpy array per attribute, indexed by device, with contract,
street and type as small ints. Devices are ordered by contract, then street (file order
within), so that every contract × street group is one contiguous slice: the engine counts a
sample with a compare over the contract's slice and one ``count_nonzero`` per street.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from .errors import RegistryError
from .rules import Rules
from .timebase import date_to_day

COLUMNS = (
    "device_id",
    "contract",
    "type",
    "street",
    "scenario",
    "community",
    "gateway",
    "accepted_on",
    "retired_on",
)
NEVER = np.iinfo(np.int32).max  # retired_day of a device with no retired_on
MAX_PROBLEMS_SHOWN = 20
_FORBIDDEN_ID_CHARS = set("/+#") | {chr(c) for c in range(32)} | {"\x7f"}


@dataclass(frozen=True, eq=False)
class Registry:
    """Columnar registry. Index ``i`` is a device; ``group[i]`` is its contract × street."""

    path: str
    version: str
    rules: Rules
    ids: list[str]
    index: dict[str, int]
    contract: np.ndarray  # int8, index into rules.contracts
    street: np.ndarray  # int16, index into rules.streets
    type: np.ndarray  # int16, index into rules.types
    accepted_day: np.ndarray  # int32, Shanghai day number of accepted_on
    retired_day: np.ndarray  # int32, day number of retired_on, NEVER when empty
    community: np.ndarray  # int32, index into communities
    gateway: np.ndarray  # int32, index into gateways ("" when none)
    scenario: np.ndarray  # int32, index into scenarios
    communities: list[str]
    gateways: list[str]
    scenarios: list[str]
    contract_slices: dict[str, slice] = field(default_factory=dict)
    group_bounds: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))  # [G + 1] slice starts

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_streets(self) -> int:
        return len(self.rules.streets)

    @property
    def group(self) -> np.ndarray:
        """Contract × street group of every device: ``contract * n_streets + street``."""
        return self.contract.astype(np.int32) * self.n_streets + self.street

    def group_slice(self, group: int) -> slice:
        return slice(int(self.group_bounds[group]), int(self.group_bounds[group + 1]))

    def expected_mask(self, day: int, where: slice = slice(None)) -> np.ndarray:
        """Devices (of ``where``) under lease on Shanghai day ``day``."""
        return (self.accepted_day[where] <= day) & (day < self.retired_day[where])


class _Codes:
    """Interns strings as small ints, in first-seen order."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._index: dict[str, int] = {}

    def code(self, value: str) -> int:
        found = self._index.get(value)
        if found is None:
            found = self._index[value] = len(self.values)
            self.values.append(value)
        return found


def _parse_date(text: str) -> int | None:
    try:
        return date_to_day(date.fromisoformat(text)) if len(text) == 10 else None
    except ValueError:
        return None


def _check_id(value: str, column: str = "device_id") -> str | None:
    """Why ``value`` cannot be an id that names a topic level and an InfluxDB tag, or None."""
    if not value:
        return f"{column} is empty"
    if value != value.strip():
        return f"{column} {value!r} has leading or trailing spaces"
    if _FORBIDDEN_ID_CHARS & set(value):
        return f"{column} {value!r} contains a character not allowed in an MQTT topic level (/ + # or a control character)"
    if value.endswith("\\"):
        # InfluxDB 1.x reads no escaping of a final backslash in a tag value: such an id
        # would share the heartbeat series of the id without it.
        return f"{column} {value!r} ends in a backslash, which an InfluxDB tag value cannot end with"
    return None


def load_registry(path: str | Path, rules: Rules) -> Registry:
    """Read and validate a registry CSV; raise :class:`RegistryError` listing every bad row."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise RegistryError(f"{p}: cannot read registry: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RegistryError(f"{p}: registry is not UTF-8 (byte {exc.start})") from exc
    return _parse(str(p), text, hashlib.sha256(raw).hexdigest()[:16], rules)


def parse_registry(text: str, rules: Rules, label: str = "<registry>") -> Registry:
    """A registry from CSV text (tests, tools); same checks as :func:`load_registry`."""
    return _parse(label, text, hashlib.sha256(text.encode()).hexdigest()[:16], rules)


def _parse(label: str, text: str, version: str, rules: Rules) -> Registry:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise RegistryError(f"{label}: registry is empty (expected a header: {','.join(COLUMNS)})")
    header = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise RegistryError(f"{label}:1: header lacks column(s) {', '.join(missing)} (expected {','.join(COLUMNS)})")
    col = [header.index(c) for c in COLUMNS]

    contract_ix = {c.code: i for i, c in enumerate(rules.contracts)}
    street_ix = {s.code: i for i, s in enumerate(rules.streets)}
    type_ix = {t.code: i for i, t in enumerate(rules.types)}
    communities, gateways, scenarios = _Codes(), _Codes(), _Codes()
    rows: list[tuple[str, int, int, int, int, int, int, int, int]] = []
    first_line: dict[str, int] = {}
    problems: list[str] = []

    for fields in reader:
        line = reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if len(fields) != len(header):
            problems.append(f"{label}:{line}: expected {len(header)} fields, found {len(fields)}")
            continue
        device_id, contract, type_code, street, scenario, community, gateway, accepted, retired = (
            fields[i] for i in col
        )
        bad = []
        if (why := _check_id(device_id)) is not None:
            bad.append(why)
        if gateway.strip() and (why := _check_id(gateway.strip(), "gateway")) is not None:
            bad.append(why)  # a gateway reports on putuo/gw/{gateway}/status
        elif device_id in first_line:
            bad.append(f"duplicate device_id {device_id!r} (first on line {first_line[device_id]})")
        if contract not in contract_ix:
            bad.append(f"unknown contract {contract!r} (known: {', '.join(contract_ix)})")
        if type_code not in type_ix:
            bad.append(f"unknown type {type_code!r}")
        elif contract in contract_ix and rules.types[type_ix[type_code]].contract != contract:
            bad.append(f"type {type_code!r} belongs to contract {rules.types[type_ix[type_code]].contract!r}, not {contract!r}")
        if street not in street_ix:
            bad.append(f"unknown street {street!r} (known: {', '.join(street_ix)})")
        accepted_day = _parse_date(accepted.strip())
        if accepted_day is None:
            bad.append(f"accepted_on {accepted!r} is not a date YYYY-MM-DD")
        retired_day = NEVER if not retired.strip() else _parse_date(retired.strip())
        if retired_day is None:
            bad.append(f"retired_on {retired!r} is not a date YYYY-MM-DD (or empty)")
        elif accepted_day is not None and retired_day <= accepted_day:
            bad.append(f"retired_on {retired} is not after accepted_on {accepted}")
        if bad:
            problems.extend(f"{label}:{line}: {why}" for why in bad)
            continue
        first_line[device_id] = line
        rows.append(
            (
                device_id,
                contract_ix[contract],
                street_ix[street],
                type_ix[type_code],
                accepted_day,  # type: ignore[arg-type]
                retired_day,  # type: ignore[arg-type]
                communities.code(community.strip()),
                gateways.code(gateway.strip()),
                scenarios.code(scenario.strip()),
            )
        )

    if problems:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        more = len(problems) - len(shown)
        raise RegistryError(
            f"{label}: {len(problems)} problem(s); nothing was loaded:\n  "
            + "\n  ".join(shown)
            + (f"\n  ... and {more} more" if more else ""),
            problems,
        )
    if not rows:
        raise RegistryError(f"{label}: registry has no devices")
    return _columnar(label, version, rules, rows, communities, gateways, scenarios)


def _columnar(label, version, rules, rows, communities, gateways, scenarios) -> Registry:  # type: ignore[no-untyped-def]
    rows.sort(key=lambda r: (r[1], r[2]))  # stable: contract, street, then file order
    ids = [r[0] for r in rows]
    columns = list(zip(*[r[1:] for r in rows]))
    contract = np.array(columns[0], dtype=np.int8)
    street = np.array(columns[1], dtype=np.int16)
    bounds = np.searchsorted(contract, np.arange(len(rules.contracts) + 1))
    group = contract.astype(np.int64) * len(rules.streets) + street
    group_bounds = np.searchsorted(group, np.arange(len(rules.contracts) * len(rules.streets) + 1))
    return Registry(
        path=label,
        version=version,
        rules=rules,
        ids=ids,
        index={device_id: i for i, device_id in enumerate(ids)},
        contract=contract,
        street=street,
        type=np.array(columns[2], dtype=np.int16),
        accepted_day=np.array(columns[3], dtype=np.int32),
        retired_day=np.array(columns[4], dtype=np.int32),
        community=np.array(columns[5], dtype=np.int32),
        gateway=np.array(columns[6], dtype=np.int32),
        scenario=np.array(columns[7], dtype=np.int32),
        communities=communities.values,
        gateways=gateways.values,
        scenarios=scenarios.values,
        contract_slices={
            c.code: slice(int(bounds[i]), int(bounds[i + 1])) for i, c in enumerate(rules.contracts)
        },
        group_bounds=group_bounds.astype(np.int64),
    )
