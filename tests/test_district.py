"""The district registry generator: exact contract sizes, unique ids, determinism."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from pathlib import Path

import pytest

from ptmon.registry import load_registry
from ptmon.rules import Rules
from ptmon.simulators.district import (
    COMMON_TOTAL,
    CUSTOM_TOTAL,
    SCENARIOS,
    SENSOR_COUNTS,
    SENSOR_TOTAL,
    DistrictSummary,
    RegistryRow,
    write_registry,
)

from .conftest import HEADER

SEED = 7
District = tuple[Path, DistrictSummary, list[RegistryRow]]


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory, rules: Rules) -> District:
    """The registry written once for the module: (path, summary, rows as read back)."""
    path = tmp_path_factory.mktemp("district") / "registry.csv"
    summary = write_registry(path, rules, SEED)
    with path.open(encoding="utf-8", newline="") as f:
        rows = [RegistryRow(**r) for r in csv.DictReader(f)]
    return path, summary, rows


def active(rows: list[RegistryRow]) -> list[RegistryRow]:
    return [r for r in rows if not r.retired_on]


def test_csv_loads_as_a_registry(district: District, rules: Rules) -> None:
    """Test that the generated CSV loads with load_registry and has the exact header."""
    path, _, rows = district
    registry = load_registry(path, rules)
    assert len(registry) == len(rows)
    assert path.read_text(encoding="utf-8").split("\n", 1)[0] == HEADER


def test_active_sensor_counts_are_the_contract_sizes(district: District, rules: Rules) -> None:
    """Test that active sensors are exactly 107,630 common and 2,695 custom: 110,325."""
    _, summary, rows = district
    kind = {t.code: t.kind for t in rules.types}
    per_kind = Counter(kind[r.type] for r in active(rows) if r.contract == "iot")
    assert per_kind == {"common": COMMON_TOTAL, "custom": CUSTOM_TOTAL}
    assert COMMON_TOTAL + CUSTOM_TOTAL == SENSOR_TOTAL == 110_325
    assert sum(SENSOR_COUNTS.values()) == SENSOR_TOTAL
    assert Counter(r.type for r in active(rows) if r.contract == "iot") == SENSOR_COUNTS
    assert summary.per_contract["iot"] == SENSOR_TOTAL and summary.per_kind == per_kind


def test_uses_24_common_and_9_custom_types(district: District, rules: Rules) -> None:
    """Test that the active sensors use 24 common and 9 custom types."""
    _, _, rows = district
    kind = {t.code: t.kind for t in rules.types}
    used = {r.type for r in active(rows) if r.contract == "iot"}
    assert Counter(kind[t] for t in used) == {"common": 24, "custom": 9}


def test_every_street_has_both_contracts(district: District, rules: Rules) -> None:
    """Test that every street has active devices of both contracts."""
    _, summary, rows = district
    pairs = {(r.contract, r.street) for r in active(rows)}
    for street in rules.street_codes():
        assert {("iot", street), ("cam", street)} <= pairs
        assert summary.per_street[("iot", street)] > 0 and summary.per_street[("cam", street)] > 0


def test_ids_are_unique_and_well_formed(district: District) -> None:
    """Test that ids are unique, IMEI-like (Luhn) for sensors and GB/T 28181-style for cameras."""
    _, _, rows = district
    assert len({r.device_id for r in rows}) == len(rows)
    for r in rows:
        if r.contract == "iot":
            assert re.fullmatch(r"86\d{13}", r.device_id) and luhn_ok(r.device_id)
        else:
            code = "131" if r.type == "hd_cam" else "132"
            assert re.fullmatch(rf"310107(0[1-9]|10)00{code}\d{{7}}", r.device_id)


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in reversed(number)]
    doubled = [d * 2 - 9 if d * 2 > 9 else d * 2 for d in digits[1::2]]
    return (sum(digits[0::2]) + sum(doubled)) % 10 == 0


def test_communities_gateways_and_scenarios(district: District) -> None:
    """Test that communities, gateways and scenarios follow the documented naming."""
    _, summary, rows = district
    for r in rows:
        assert re.fullmatch(rf"{r.street}-(c\d{{3}}|street)", r.community)
        assert r.gateway == f"gw-{r.community}-{r.contract}"
        assert r.scenario in SCENARIOS
        assert r.contract == "iot" or not r.community.endswith("-street")
    assert len(SCENARIOS) == len(set(SCENARIOS)) == 64
    assert 600 <= summary.communities <= 700
    assert summary.gateways == len({r.gateway for r in rows})


def test_rows_are_in_contract_street_id_order(district: District, rules: Rules) -> None:
    """Test that rows come by contract, then street in rules order, then device_id."""
    _, _, rows = district
    contract_ix = {c.code: i for i, c in enumerate(rules.contracts)}
    street_ix = {s: i for i, s in enumerate(rules.street_codes())}
    keys = [(contract_ix[r.contract], street_ix[r.street], r.device_id) for r in rows]
    assert keys == sorted(keys)


def test_every_retired_device_has_a_replacement(district: District) -> None:
    """Test that every retired device has an active replacement accepted on its retired date."""
    _, summary, rows = district
    retired = [r for r in rows if r.retired_on]
    assert retired and all(r.accepted_on < r.retired_on for r in retired)
    replacements = Counter(slot(r, r.accepted_on) for r in active(rows))
    needed = Counter(slot(r, r.retired_on) for r in retired)
    assert all(replacements[k] >= n for k, n in needed.items())
    assert summary.retired == dict(Counter(r.contract for r in retired))
    assert all("2026-01-01" <= r.retired_on <= "2026-10-31" for r in retired)


def slot(r: RegistryRow, day: str) -> tuple[str, ...]:
    return (r.contract, r.type, r.street, r.community, r.gateway, r.scenario, day)


def test_camera_count_is_a_few_thousand(district: District) -> None:
    """Test that the active cameras number between 3,000 and 4,000, of the three camera types."""
    _, summary, rows = district
    cams = [r for r in active(rows) if r.contract == "cam"]
    assert 3_000 <= len(cams) <= 4_000
    assert {r.type for r in cams} == {"face_cam", "plate_cam", "hd_cam"}
    assert summary.per_contract["cam"] == len(cams)


def test_same_seed_is_byte_identical(district: District, rules: Rules, tmp_path: Path) -> None:
    """Test that the same seed writes a byte-identical file, to a path or to a text stream."""
    path, _, _ = district
    again = tmp_path / "again.csv"
    write_registry(again, rules, SEED)
    assert again.read_bytes() == path.read_bytes()
    stream = io.StringIO()
    write_registry(stream, rules, SEED)
    assert stream.getvalue().encode("utf-8") == path.read_bytes()


def test_different_seed_differs(district: District, rules: Rules) -> None:
    """Test that another seed gives another registry of the same active sizes."""
    path, _, _ = district
    stream = io.StringIO()
    summary = write_registry(stream, rules, SEED + 1)
    assert stream.getvalue().encode("utf-8") != path.read_bytes()
    assert summary.per_contract["iot"] == SENSOR_TOTAL


def test_summary_lines_name_the_streets(district: District, rules: Rules) -> None:
    """Test that the summary lines are short and name every street in Chinese."""
    _, summary, _ = district
    text = "\n".join(summary.lines())
    assert "110,325" in text
    assert all(s.name in text for s in rules.streets)
