"""Registry loading: every bad row reported with file and line; never half-loaded."""

from __future__ import annotations

import pytest

from ptmon.errors import RegistryError
from ptmon.registry import NEVER, load_registry

from .conftest import HEADER

GOOD = "c1,cam,face_cam,taopu,scn,taopu-c1,gw-1,2026-01-01,\ns1,iot,smoke,changshou,scn,changshou-c1,gw-2,2026-01-01,2026-12-01\n"


def write(tmp_path, body, header=HEADER):
    path = tmp_path / "registry.csv"
    path.write_text(header + "\n" + body, encoding="utf-8")
    return path


def test_loads_columnar_and_grouped_by_contract_and_street(tmp_path, rules):
    """Test that a good registry loads into arrays ordered by contract then street."""
    registry = load_registry(write(tmp_path, GOOD), rules)
    assert registry.ids == ["s1", "c1"]  # iot is the first contract in the rules
    assert registry.contract_slices == {"iot": slice(0, 1), "cam": slice(1, 2)}
    assert registry.retired_day[1] == NEVER and registry.retired_day[0] < NEVER
    assert registry.group_slice(0) == slice(0, 1)  # iot × changshou
    assert registry.group_slice(len(rules.streets) + 9) == slice(1, 2)  # cam × taopu


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("x1,cam,face_cam,nowhere,s,c,g,2026-01-01,", "x.csv:3: unknown street 'nowhere'"),
        ("x1,cam,face_cam,taopu,s,c,g,2026-13-01,", "x.csv:3: accepted_on '2026-13-01' is not a date"),
        ("x1,cam,face_cam,taopu,s,c,g,2026-01-01,01/02/2026", "x.csv:3: retired_on '01/02/2026' is not a date"),
        ("x1,cam,face_cam,taopu,s,c,g,2026-01-01,2025-01-01", "x.csv:3: retired_on 2025-01-01 is not after accepted_on"),
        ("c1,cam,face_cam,taopu,s,c,g,2026-01-01,", "x.csv:3: duplicate device_id 'c1' (first on line 2)"),
        ("x1,lease,face_cam,taopu,s,c,g,2026-01-01,", "x.csv:3: unknown contract 'lease'"),
        ("x1,iot,face_cam,taopu,s,c,g,2026-01-01,", "x.csv:3: type 'face_cam' belongs to contract 'cam', not 'iot'"),
        ("x1,cam,toaster,taopu,s,c,g,2026-01-01,", "x.csv:3: unknown type 'toaster'"),
        ("a/b,cam,face_cam,taopu,s,c,g,2026-01-01,", "x.csv:3: device_id 'a/b' contains a character not allowed"),
        ("x1,cam,face_cam,taopu", "x.csv:3: expected 9 fields, found 4"),
    ],
    ids=["street", "bad-date", "bad-retired", "retired-before", "duplicate", "contract", "type-contract", "type", "slash-id",
         "short-row"],
)
def test_bad_row_is_reported_with_line(tmp_path, rules, row, message):
    """Test that a bad row fails the whole load and names the file, line and problem."""
    path = tmp_path / "x.csv"
    path.write_text(HEADER + "\nc1,cam,face_cam,taopu,s,c,g,2026-01-01,\n" + row + "\n")
    with pytest.raises(RegistryError) as err:
        load_registry(path, rules)
    assert message.replace("x.csv", str(path)) in str(err.value)
    assert "nothing was loaded" in str(err.value)


def test_all_problems_are_listed(tmp_path, rules):
    """Test that every bad row is collected, not only the first."""
    rows = "".join(f"x{i},cam,face_cam,nowhere,s,c,g,2026-01-01,\n" for i in range(30))
    with pytest.raises(RegistryError) as err:
        load_registry(write(tmp_path, rows), rules)
    assert len(err.value.problems) == 30
    assert "... and 10 more" in str(err.value)


def test_missing_column_and_unreadable_files(tmp_path, rules):
    """Test that a header without a contract column, a missing file and non-UTF-8 fail clearly."""
    with pytest.raises(RegistryError, match=r":1: header lacks column\(s\) retired_on"):
        load_registry(write(tmp_path, GOOD, HEADER.replace(",retired_on", "")), rules)
    with pytest.raises(RegistryError, match="cannot read registry"):
        load_registry(tmp_path / "absent.csv", rules)
    bad = tmp_path / "latin1.csv"
    bad.write_bytes((HEADER + "\n").encode() + "c1,cam,face_cam,taopu,é,c,g,2026-01-01,\n".encode("latin-1"))
    with pytest.raises(RegistryError, match="not UTF-8"):
        load_registry(bad, rules)


def test_extra_columns_and_bom_are_accepted(tmp_path, rules):
    """Test that a UTF-8 BOM and extra columns (extensions) do not break loading."""
    path = tmp_path / "r.csv"
    path.write_text("\ufeff" + HEADER + ",note\n" + "c1,cam,face_cam,taopu,s,c,g,2026-01-01,,小区大门\n", encoding="utf-8")
    assert load_registry(path, rules).ids == ["c1"]
