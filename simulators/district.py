"""A deterministic device registry of the whole of Putuo: 110,325 sensors and the community cameras.

Same rules and seed give a byte-identical CSV; another seed gives another file. All randomness
comes from one ``numpy.random.Generator(PCG64(seed))`` drawn in a fixed order (never ``hash()``,
which is randomised per process). What comes from the seed (the 2022 budget) and what is an
**assumption**:

- Sizes. Contract ``iot``: 24 common types, 107,630 sensors; 9 custom types, 2,695 sensors;
  110,325 in all (seed, exact). The split per type (``COMMON_COUNTS``, ``CUSTOM_COUNTS``) is an
  assumption: smoke detectors and door contacts most numerous, rare custom types small.
  Contract ``cam``: the seed has no count. Assumption: every 小区 has 1, 2 or 3 entrances
  (p = 0.50 / 0.35 / 0.15), each with 2 face and 1 plate camera; an older community (share per
  street in ``STREETS``) also has 0–3 HD cameras (uniform) in blind spots: ~3,630 expected.
- Active and retired rows. The counts above are of *active* devices as of 2026-11-01
  (``retired_on`` empty). Of each contract, 0.5 % of the devices (rounded) replaced an older one:
  the older device is an extra row with the original ``accepted_on`` and ``retired_on`` = R, a
  day in 2026-01-01..2026-10-31; its replacement (same type, street, community, gateway,
  scenario) has ``accepted_on`` = R. So the expected inventory stays constant across a swap.
- Streets. Weights roughly proportional to resident population in thousands (assumption, order
  of magnitude of the 2020 census): changzheng 180, zhenru 160, taopu 150, changfeng 120,
  wanli 100, changshou 95, caoyang 90, shiquan 90, yichuan 85, ganquan 65. Each type's count is
  split over the streets by these weights (largest remainder, the same for every seed).
  A street missing from ``STREETS`` gets ``DEFAULT_STREET``.
- Communities. 42–86 小区 per street, 640 in all (``STREETS``), coded ``changshou-c012``. Within
  a street a sensor's community is drawn with probability proportional to a seeded community size
  (log-normal). A sensor whose scenario is ``…-街面``, or of a street-level type
  (``STREET_LEVEL_TYPES``: roads, rivers, building sites) outside a ``…-小区`` scenario, belongs
  to the street's pseudo-community ``changshou-street`` instead; it has no cameras.
- Gateways. Each 小区 has one iot and one cam gateway (``gw-changshou-c012-iot``,
  ``gw-changshou-c012-cam``); a pseudo-community has an iot gateway only.
- Scenarios (场景). The contract's 64 scenarios are modelled as 16 themes × 4 settings,
  ``消防安全-小区``; ``TYPE_SCENARIOS`` lists the plausible ones of each type and each device draws
  one uniformly. Five combinations no type plausibly serves (e.g. 独居老人关爱-街面) have no
  device: 59 of the 64 are used. Cameras are all ``智能安防-小区``.
- Device ids. Sensors: 15-digit IMEI-like ids: 8-digit model code (TAC, ``86`` + 6 seeded
  digits, one per type) + 6-digit serial (seeded sample without replacement) + Luhn digit. Cameras:
  GB/T 28181-style 20 digits: ``310107`` (Putuo) + street number 01..10 (rules order) + ``00``
  + type code (132 IP camera for face and plate, 131 camera for HD) + 7-digit serial (seeded
  sample without replacement per street and type code). All ids are unique.
- Dates. Sensors accepted uniformly over 2025-01-02..2025-06-30, cameras over
  2024-07-01..2024-12-31 (assumption: they make every device under lease in 2026).

Rows are ordered by contract (rules order: iot, cam), street (rules order), then device_id.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import NamedTuple, TextIO

import numpy as np

from ptmon.registry import COLUMNS
from ptmon.rules import Rules

from .district_plan import (
    CAM_ACCEPTED,
    CAMERA_SCENARIO,
    CAMERA_TYPE_CODES,
    COMMON_COUNTS,
    COMMON_TOTAL,
    CUSTOM_COUNTS,
    CUSTOM_TOTAL,
    DEFAULT_STREET,
    ENTRANCE_CHOICES,
    ENTRANCE_P,
    FACE_PER_ENTRANCE,
    HD_MAX,
    IOT_ACCEPTED,
    PLATE_PER_ENTRANCE,
    PUTUO_ADMIN_CODE,
    RETIRED_ON,
    RETIRED_SHARE,
    SCENARIOS,
    SENSOR_COUNTS,
    SENSOR_TOTAL,
    STREET_LEVEL_TYPES,
    STREETS,
    TYPE_SCENARIOS,
)

__all__ = ["COMMON_TOTAL", "CUSTOM_TOTAL", "SCENARIOS", "SENSOR_COUNTS", "SENSOR_TOTAL", "DistrictSummary",
           "RegistryRow", "generate_registry", "summarize", "write_registry", "write_rows"]


class RegistryRow(NamedTuple):
    """One registry row: the nine CSV columns, as strings (``retired_on`` may be empty)."""

    device_id: str
    contract: str
    type: str
    street: str
    scenario: str
    community: str
    gateway: str
    accepted_on: str
    retired_on: str


@dataclass(frozen=True)
class DistrictSummary:
    """Device counts of a generated registry: active devices (``retired_on`` empty) unless named."""

    seed: int
    rows: int
    per_contract: dict[str, int]
    per_type: dict[tuple[str, str], int]
    per_street: dict[tuple[str, str], int]
    per_kind: dict[str, int]  # iot: common / custom
    retired: dict[str, int]  # retired rows per contract (extra rows)
    communities: int  # 小区, not counting street pseudo-communities
    gateways: int
    contract_names: dict[str, str]
    street_names: dict[str, str]
    type_names: dict[str, str]

    def lines(self) -> list[str]:
        """Short human-readable lines (Chinese first) for a terminal."""
        active = sum(self.per_contract.values())
        out = [f"普陀区设备台账 (seed {self.seed}): {self.rows:,} 行 = 在册 {active:,} 台"
               f" + 已退役 {sum(self.retired.values()):,} 台; 小区 {self.communities:,} 个,"
               f" 网关 {self.gateways:,} 个"]
        for contract, n in self.per_contract.items():
            types = [f"{self.type_names[t]} {m:,}"
                     for (c, t), m in self.per_type.items() if c == contract]
            detail = ", ".join(types) if len(types) <= 4 else f"{len(types)} 类"
            if contract == "iot":
                kinds = self.per_kind
                detail = f"通用 {kinds.get('common', 0):,}, 定制 {kinds.get('custom', 0):,}; {detail}"
            out.append(f"{self.contract_names[contract]} ({contract}): 在册 {n:,} 台 ({detail}),"
                       f" 已退役 {self.retired.get(contract, 0):,} 台")
        for street, name in self.street_names.items():
            counts = "  ".join(f"{c} {self.per_street.get((c, street), 0):>6,}"
                               for c in self.per_contract)
            out.append(f"  {name:<7}({street:<10}) {counts}")
        return out


class _Street(NamedTuple):
    """A street as generated: its 小区 and their seeded attributes."""

    code: str
    number: int  # 1-based, rules order: the street digits of camera ids
    weight: int
    communities: list[str]
    p: np.ndarray  # probability that a community-level sensor is in each 小区
    older: np.ndarray  # bool per 小区
    entrances: np.ndarray  # int per 小区


def _apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` in proportion to ``weights``, exactly (largest remainder, ties by index)."""
    w = np.asarray(weights, dtype=np.float64)
    quotas = total * w / w.sum()
    counts = np.floor(quotas).astype(np.int64)
    order = sorted(range(len(w)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: total - int(counts.sum())]:
        counts[i] += 1
    return [int(c) for c in counts]


def _day_strings(first: date, last: date) -> list[str]:
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _streets(rng: np.random.Generator, rules: Rules) -> list[_Street]:
    out = []
    for number, street in enumerate(rules.streets, start=1):
        plan = STREETS.get(street.code, DEFAULT_STREET)
        n = plan.communities
        size = rng.lognormal(0.0, 0.6, n)
        out.append(_Street(
            code=street.code,
            number=number,
            weight=plan.weight,
            communities=[f"{street.code}-c{i:03d}" for i in range(1, n + 1)],
            p=size / size.sum(),
            older=rng.random(n) < plan.older_share,
            entrances=rng.choice(np.array(ENTRANCE_CHOICES), size=n, p=ENTRANCE_P),
        ))
    return out


def _on_street(type_code: str, scenario: str) -> bool:
    """Whether a sensor of this type and scenario is in the street's pseudo-community."""
    setting = scenario.rsplit("-", 1)[1]
    return setting == "街面" or (type_code in STREET_LEVEL_TYPES and setting != "小区")


def _sensor_rows(rng: np.random.Generator, streets: list[_Street]) -> list[RegistryRow]:
    """Active sensors, without ids yet (``device_id`` empty)."""
    days = _day_strings(*IOT_ACCEPTED)
    rows: list[RegistryRow] = []
    for type_code, total in SENSOR_COUNTS.items():
        scenarios = TYPE_SCENARIOS[type_code]
        on_street = [_on_street(type_code, s) for s in scenarios]
        for street, n in zip(streets, _apportion(total, [s.weight for s in streets])):
            scenario = rng.integers(len(scenarios), size=n).tolist()
            picks = rng.choice(len(street.communities), size=n, p=street.p).tolist()
            accepted = rng.integers(len(days), size=n).tolist()
            pseudo = f"{street.code}-street"
            for s, c, a in zip(scenario, picks, accepted):
                community = pseudo if on_street[s] else street.communities[c]
                rows.append(RegistryRow("", "iot", type_code, street.code, scenarios[s], community,
                                        f"gw-{community}-iot", days[a], ""))
    return rows


def _camera_rows(rng: np.random.Generator, streets: list[_Street]) -> list[RegistryRow]:
    """Active cameras, without ids yet: per 小区 its entrances' face and plate cameras, then HD."""
    days = _day_strings(*CAM_ACCEPTED)
    rows: list[RegistryRow] = []
    for street in streets:
        hd = np.where(street.older, rng.integers(0, HD_MAX + 1, size=len(street.communities)), 0)
        per_community = zip(street.communities, street.entrances.tolist(), hd.tolist())
        for community, entrances, n_hd in per_community:
            types = (["face_cam"] * (FACE_PER_ENTRANCE * entrances)
                     + ["plate_cam"] * (PLATE_PER_ENTRANCE * entrances) + ["hd_cam"] * n_hd)
            accepted = rng.integers(len(days), size=len(types)).tolist()
            rows.extend(
                RegistryRow("", "cam", t, street.code, CAMERA_SCENARIO, community,
                            f"gw-{community}-cam", days[a], "")
                for t, a in zip(types, accepted)
            )
    return rows


def _retire(rng: np.random.Generator, rows: list[RegistryRow]) -> list[RegistryRow]:
    """Swap RETIRED_SHARE of ``rows`` in place for replacements; return the retired originals."""
    days = _day_strings(*RETIRED_ON)
    k = round(len(rows) * RETIRED_SHARE)
    chosen = np.sort(rng.choice(len(rows), size=k, replace=False)).tolist()
    when = rng.integers(len(days), size=k).tolist()
    retired = []
    for i, w in zip(chosen, when):
        retired.append(rows[i]._replace(retired_on=days[w]))
        rows[i] = rows[i]._replace(accepted_on=days[w])
    return retired


def _luhn(body: np.ndarray, digits: int) -> np.ndarray:
    """Luhn check digit of each ``digits``-digit number (the rightmost digit is doubled)."""
    total = np.zeros_like(body)
    for k in range(digits):
        d = body // 10**k % 10
        if k % 2 == 0:
            d = d * 2
            d = np.where(d > 9, d - 9, d)
        total += d
    return (10 - total % 10) % 10


def _sensor_ids(rng: np.random.Generator, rows: list[RegistryRow]) -> list[str]:
    """IMEI-like ids: per-type TAC 86xxxxxx + 6-digit serial + Luhn digit; unique."""
    positions: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        positions.setdefault(row.type, []).append(i)
    tacs = rng.choice(10**6, size=len(positions), replace=False)
    ids = [""] * len(rows)
    for tac, where in zip(tacs.tolist(), positions.values()):
        serials = rng.choice(10**6, size=len(where), replace=False).astype(np.int64)
        body = (86 * 10**6 + tac) * 10**6 + serials
        full = body * 10 + _luhn(body, 14)
        for i, device_id in zip(where, full.tolist()):
            ids[i] = str(device_id)
    return ids


def _camera_ids(
    rng: np.random.Generator, rows: list[RegistryRow], streets: list[_Street]
) -> list[str]:
    """GB/T 28181-style ids: 310107 + street 01..10 + 00 + type code + 7-digit serial; unique."""
    number = {s.code: s.number for s in streets}
    positions: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        prefix = f"{PUTUO_ADMIN_CODE}{number[row.street]:02d}00{CAMERA_TYPE_CODES[row.type]}"
        positions.setdefault(prefix, []).append(i)
    ids = [""] * len(rows)
    for prefix, where in positions.items():
        serials = rng.choice(10**7, size=len(where), replace=False).tolist()
        for i, serial in zip(where, serials):
            ids[i] = f"{prefix}{serial:07d}"
    return ids


def _check_rules(rules: Rules) -> None:
    """The rules must know every type generated, with the contract and kind assumed here."""
    known = {t.code: t for t in rules.types}
    wanted = [(t, "iot", "common") for t in COMMON_COUNTS]
    wanted += [(t, "iot", "custom") for t in CUSTOM_COUNTS]
    wanted += [(t, "cam", None) for t in CAMERA_TYPE_CODES]
    bad = [code for code, contract, kind in wanted
           if code not in known or known[code].contract != contract
           or (kind is not None and known[code].kind != kind)]
    contracts = {c.code for c in rules.contracts}
    if bad or not {"iot", "cam"} <= contracts or len(rules.streets) > 99:
        raise ValueError(f"rules do not fit the district generator: needs contracts iot and cam"
                         f" (has {', '.join(sorted(contracts))}), types with the assumed contract"
                         f" and kind (wrong: {', '.join(bad) or '-'}), at most 99 streets"
                         f" (has {len(rules.streets)})")


def generate_registry(rules: Rules, seed: int) -> list[RegistryRow]:
    """Every registry row of the district, in file order (contract, street, device_id)."""
    _check_rules(rules)
    rng = np.random.Generator(np.random.PCG64(seed))
    streets = _streets(rng, rules)
    sensors = _sensor_rows(rng, streets)
    sensors += _retire(rng, sensors)
    cameras = _camera_rows(rng, streets)
    cameras += _retire(rng, cameras)
    ids = _sensor_ids(rng, sensors) + _camera_ids(rng, cameras, streets)
    rows = [row._replace(device_id=i) for row, i in zip(sensors + cameras, ids)]
    contract_ix = {c.code: i for i, c in enumerate(rules.contracts)}
    street_ix = {s.code: i for i, s in enumerate(rules.streets)}
    rows.sort(key=lambda r: (contract_ix[r.contract], street_ix[r.street], r.device_id))
    return rows


def summarize(rows: Sequence[RegistryRow], rules: Rules, seed: int) -> DistrictSummary:
    """Counts of a registry's rows; active counts are of rows with ``retired_on`` empty."""
    active = [r for r in rows if not r.retired_on]
    kinds = {t.code: t.kind for t in rules.types}
    per_type = Counter((r.contract, r.type) for r in active)
    per_contract = Counter(r.contract for r in active)
    return DistrictSummary(
        seed=seed,
        rows=len(rows),
        per_contract={c.code: per_contract[c.code]
                      for c in rules.contracts if c.code in per_contract},
        per_type={(t.contract, t.code): per_type[(t.contract, t.code)]
                  for c in rules.contracts for t in rules.types
                  if t.contract == c.code and (t.contract, t.code) in per_type},
        per_street=dict(Counter((r.contract, r.street) for r in active)),
        per_kind=dict(Counter(kinds[r.type] for r in active if r.contract == "iot")),
        retired=dict(Counter(r.contract for r in rows if r.retired_on)),
        communities=len({r.community for r in rows if not r.community.endswith("-street")}),
        gateways=len({r.gateway for r in rows}),
        contract_names={c.code: c.name for c in rules.contracts},
        street_names={s.code: s.name for s in rules.streets},
        type_names={t.code: t.name for t in rules.types},
    )


def write_rows(out: TextIO, rows: Sequence[RegistryRow]) -> None:
    """CSV with the registry header, ``\\n`` line ends."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)


def write_registry(out: Path | TextIO, rules: Rules, seed: int) -> DistrictSummary:
    """Write the district registry CSV (UTF-8) to a path or an open text stream."""
    rows = generate_registry(rules, seed)
    if isinstance(out, Path):
        buffer = io.StringIO()
        write_rows(buffer, rows)
        out.write_bytes(buffer.getvalue().encode("utf-8"))
    else:
        write_rows(out, rows)
    return summarize(rows, rules, seed)
