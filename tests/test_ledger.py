"""The SLA ledger: hours written as they close equal a replay, exemptions leave the
denominator, episodes record offline spells, and nothing counts twice."""

from __future__ import annotations

import sqlite3
from fractions import Fraction

import pytest

from ptmon.errors import LedgerError
from ptmon.ledger.read import ledger_daily, ledger_results, ledger_warnings
from ptmon.ledger.rebuild import rebuild_ledger
from ptmon.ledger.store import Ledger
from ptmon.replay import replay
from ptmon.simulators.synthetic import Outage, Scenario, write_archive

from .conftest import T0, make_registry

US = 1_000_000
HOUR = 3600
STREETS = ("changzheng", "taopu")


@pytest.fixture(scope="module")
def registry(rules):
    rows = [f"s-{street}-{t}-{n},iot,{t},{street}" for street in STREETS for t in ("elevator", "noise") for n in range(3)]
    rows += [f"c-{street}-{t},cam,{t},{street}" for street in STREETS for t in ("face_cam", "plate_cam")]
    return make_registry(rules, *rows)


@pytest.fixture(scope="module")
def archive(registry, tmp_path_factory):
    """Ten hours with a 3-hour outage of changzheng's sensors."""
    start, end = T0 * US, (T0 + 10 * HOUR) * US
    scenario = Scenario(seed=3, outages=(Outage(street="changzheng", contract="iot",
                                                 from_us=start + 2 * HOUR * US, to_us=start + 5 * HOUR * US),))
    path = tmp_path_factory.mktemp("archive") / "archive.jsonl.gz"
    write_archive(path, registry, registry.rules, start, end, scenario)
    return path


def month(t0: int = T0) -> tuple[int, int]:
    from ptmon.timebase import month_bounds

    return month_bounds("2026-11")


def test_ledger_rebuilt_from_the_archive_equals_the_replay(registry, archive, tmp_path):
    """Test that the ledger's month KPIs are byte-equal to a replay's, hour by hour sums and all."""
    start, end = month()
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        rebuild_ledger([str(archive)], registry, ledger)
        from_ledger = ledger_results(ledger, registry, start, end)
        assert ledger.integrity_check() == "ok"
        hours = {h.hour for h in ledger.hours(start, end)}
        assert len(hours) == 11  # ten hours, and the sample at the instant the archive ends
    from_replay = replay([str(archive)], registry, start, end)
    assert from_ledger.csv_text() == from_replay.csv_text()
    assert from_ledger.gaps == from_replay.gaps


def test_writing_the_same_hours_again_replaces_them(registry, archive, tmp_path):
    """Test that rebuilding into a ledger that already holds the hours leaves every sum unchanged."""
    start, end = month()
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        rebuild_ledger([str(archive)], registry, ledger)
        once = ledger_results(ledger, registry, start, end).csv_text()
        episodes = ledger.episodes(start, end)
        rebuild_ledger([str(archive)], registry, ledger)
        assert ledger_results(ledger, registry, start, end).csv_text() == once
        assert ledger.episodes(start, end) == episodes


def test_outage_shows_as_episodes_restored_when_heartbeats_return(registry, archive, tmp_path):
    """Test that each changzheng sensor has one restored episode spanning the outage, and no other street has one."""
    start, end = month()
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        rebuild_ledger([str(archive)], registry, ledger)
        episodes = ledger.episodes(start, end)
    outage = [e for e in episodes if e.street == "changzheng" and e.contract == "iot"]
    assert {e.device for e in outage} == {d for d in registry.ids if d.startswith("s-changzheng")}
    for e in outage:
        assert e.restored and e.end is not None
        assert (T0 + 2 * HOUR) * US < e.start < (T0 + 3 * HOUR) * US  # timed out after the outage began
        assert (T0 + 5 * HOUR) * US <= e.end < (T0 + 6 * HOUR) * US
    assert not [e for e in episodes if e.street == "taopu"]


def test_exemption_takes_devices_out_of_the_denominator(registry, archive, tmp_path):
    """Test that a street-wide exemption over the outage lifts changzheng's online rate to what
    it is without those hours, in the ledger and in a replay alike."""
    start, end = month()
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        exemption = ledger.add_exemption(scope="street", target="changzheng", start=(T0 + 2 * HOUR) * US,
                                         end=(T0 + 5 * HOUR) * US, reason="区级停电", approver="王主任",
                                         created_at=T0 * US)
        rebuild_ledger([str(archive)], registry, ledger, exemptions=[exemption])
        exempted = ledger_results(ledger, registry, start, end)
        assert ledger_warnings(ledger, registry, start, end) == []
    replayed = replay([str(archive)], registry, start, end, exemptions=[exemption])
    assert exempted.csv_text() == replayed.csv_text()
    plain = replay([str(archive)], registry, start, end)
    row, plain_row = exempted.row("iot", "changzheng", "online"), plain.row("iot", "changzheng", "online")
    assert row.value > plain_row.value
    assert row.denominator == plain_row.denominator - 6 * 3 * 60  # six sensors × 3 h of minutes
    assert exempted.row("iot", "taopu", "online") == plain.row("iot", "taopu", "online")


def test_an_exemption_from_before_1970_is_applied_as_a_replay_applies_it(registry, archive, tmp_path):
    """Test that an exemption whose window starts before 1970 (a typed year that older ptmon took) is applied
    over the month as a replay applies it, not refused as time before the ledger kept device status (which stopped
    the collector and every report of the ledger)."""
    start, end = month()
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        exemption = ledger.add_exemption(scope="street", target="changzheng", start=-30_000 * 86_400 * US,
                                         end=(T0 + 5 * HOUR) * US, reason="r", approver="a", created_at=T0 * US)
        rebuild_ledger([str(archive)], registry, ledger, exemptions=[exemption])
        exempted = ledger_results(ledger, registry, start, end)
    assert exempted.csv_text() == replay([str(archive)], registry, start, end, exemptions=[exemption]).csv_text()
    assert exempted.row("iot", "changzheng", "online").denominator < replay([str(archive)], registry, start,
                                                                              end).row("iot", "changzheng", "online").denominator


def test_late_and_revoked_exemptions_count_as_in_a_replay(registry, archive, tmp_path):
    """Test that an exemption recorded after the hours it covers were written, and a revoked one,
    give the ledger exactly the KPIs of a replay with the exemptions in force: the late one counts
    over its whole window, the revoked one nowhere."""
    start, end = month()
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        rebuild_ledger([str(archive)], registry, ledger)
        late = ledger.add_exemption(scope="device", target="s-changzheng-noise-0", start=(T0 + 1 * HOUR + 90) * US,
                                    end=(T0 + 4 * HOUR) * US, reason="维修", approver="李工")
        street = ledger.add_exemption(scope="gateway", target="gw-changzheng", start=(T0 + 3 * HOUR) * US,
                                      end=(T0 + 6 * HOUR + 30) * US, reason="停电", approver="王主任")
        revoked = ledger.add_exemption(scope="street", target="taopu", start=T0 * US, end=(T0 + 9 * HOUR) * US,
                                       reason="误报", approver="王主任")
        ledger.revoke_exemption(revoked.id, by="王主任", reason="登记有误")
        from_ledger = ledger_results(ledger, registry, start, end)
        assert ledger_warnings(ledger, registry, start, end) == []
        in_force = [e for e in ledger.exemptions() if e.active]
    assert [e.id for e in in_force] == [late.id, street.id]
    replayed = replay([str(archive)], registry, start, end, exemptions=in_force)
    assert from_ledger.csv_text() == replayed.csv_text()
    plain = replay([str(archive)], registry, start, end)
    assert from_ledger.row("iot", "changzheng", "online").denominator < plain.row("iot", "changzheng", "online").denominator
    assert from_ledger.row("iot", "taopu", "online") == plain.row("iot", "taopu", "online")


def test_daily_kpis_sum_to_the_month(registry, archive, tmp_path):
    """Test that the day rows' numerators and denominators add up to the month's."""
    start, end = month()
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        rebuild_ledger([str(archive)], registry, ledger)
        daily = ledger_daily(ledger, registry, start, end)
        results = ledger_results(ledger, registry, start, end)
    for row in results.rows:
        days = [d for d in daily if (d.contract, d.street, d.kpi) == (row.contract, row.street, row.kpi)]
        assert sum(d.numerator for d in days) == row.numerator
        assert sum(d.denominator for d in days) == row.denominator


def test_exemption_commands_validate_and_revoke(tmp_path):
    """Test that bad exemptions are refused with a reason and a revoked one says by whom."""
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        with pytest.raises(LedgerError, match="end after"):
            ledger.add_exemption(scope="street", target="taopu", start=5, end=5, reason="x", approver="y")
        with pytest.raises(LedgerError, match="scope"):
            ledger.add_exemption(scope="city", target="taopu", start=1, end=5, reason="x", approver="y")
        with pytest.raises(LedgerError, match="reason"):
            ledger.add_exemption(scope="street", target="taopu", start=1, end=5, reason=" ", approver="y")
        e = ledger.add_exemption(scope="street", target="taopu", start=1, end=5, reason="x", approver="y")
        revoked = ledger.revoke_exemption(e.id, by="张三", reason="误登")
        assert not revoked.active and revoked.revoked_by == "张三"
        with pytest.raises(LedgerError, match="already revoked"):
            ledger.revoke_exemption(e.id, by="张三", reason="again")


def test_a_file_that_is_not_a_ledger_is_refused(tmp_path):
    """Test that opening another SQLite database or garbage is a clear LedgerError."""
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(LedgerError, match="not a ptmon ledger"):
        Ledger(other, readonly=True)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(LedgerError, match="not a usable ledger"):
        Ledger(garbage)
    with pytest.raises(LedgerError, match="no ledger"):
        Ledger(tmp_path / "missing.sqlite", readonly=True)


def test_report_inputs_from_the_ledger_and_from_the_archive_agree(registry, archive, tmp_path):
    """Test that the report's inputs read from the ledger equal those recomputed from the archive,
    exemptions (taken from the ledger in both cases) included, and that the inputs are fingerprinted."""
    from ptmon.report.build import build_inputs

    registry_file = tmp_path / "registry.csv"
    registry_file.write_text("")  # the digest reads the registry file; its content is not re-parsed here
    reg = type(registry)(**{**vars(registry), "path": str(registry_file)})
    ledger_path = tmp_path / "ledger.sqlite"
    with Ledger(ledger_path) as ledger:
        e = ledger.add_exemption(scope="device", target="s-taopu-noise-1", start=T0 * US, end=(T0 + HOUR) * US,
                                 reason="维修", approver="李工", created_at=T0 * US)
        rebuild_ledger([str(archive)], reg, ledger, exemptions=[e])
    said: list[str] = []
    from_ledger = build_inputs(month="2026-11", registry=reg, rules=reg.rules, ledger_path=ledger_path,
                               archive_dirs=None, progress=said.append)
    from_archive = build_inputs(month="2026-11", registry=reg, rules=reg.rules, ledger_path=ledger_path,
                                archive_dirs=[archive], progress=said.append)
    assert from_ledger.source == "ledger" and from_archive.source == "archive"
    assert from_ledger.results.csv_text() == from_archive.results.csv_text()
    assert from_ledger.daily == from_archive.daily and from_ledger.episodes == from_archive.episodes
    assert [x.id for x in from_ledger.exemptions] == [x.id for x in from_archive.exemptions] == [e.id]
    assert not from_ledger.warnings
    assert len(from_ledger.digest) == 64 and from_ledger.digest != from_archive.digest
    assert {f.role for f in from_archive.files} == {"registry", "rules", "archive"}
    assert any("recomputing 2026-11" in line for line in said)


def test_report_from_the_ledger_pays_what_the_contract_rule_gives(registry, archive, tmp_path):
    """Test that the report made from a ledger of the outage scenario fails changzheng's sensor
    online rate, deducts exactly what the payment rule gives to the fen, passes taopu, and that
    its CSV carries the replay's KPI columns unchanged."""
    import csv
    from decimal import ROUND_HALF_UP, Decimal

    from ptmon.report.build import build_inputs
    from ptmon.report.render import render

    registry_file = tmp_path / "registry.csv"
    registry_file.write_text("")
    reg = type(registry)(**{**vars(registry), "path": str(registry_file)})
    ledger_path = tmp_path / "ledger.sqlite"
    with Ledger(ledger_path) as ledger:
        rebuild_ledger([str(archive)], reg, ledger)
    inputs = build_inputs(month="2026-11", registry=reg, rules=reg.rules, ledger_path=ledger_path, archive_dirs=None)
    render(inputs, tmp_path / "out", ["csv"])
    (path,) = (tmp_path / "out").glob("*.csv")
    rows = list(csv.reader(path.open(encoding="utf-8")))
    replayed = replay([str(archive)], reg, *month())
    assert [r[:10] for r in rows] == list(csv.reader(replayed.csv_text().splitlines()))
    header = rows[0]
    by_key = {(r[0], r[1], r[2]): dict(zip(header, r)) for r in rows[1:]}

    online = replayed.row("iot", "changzheng", "online")
    assert online.passed is False and Fraction(7, 10) < online.value < Fraction(9, 10)
    fee = Decimal("238958.33")  # rules/contracts.yaml: iot, every street
    shortfall = Fraction(9, 10) - online.value  # in fraction = percentage points × 0.01 per point
    sensing = replayed.row("iot", "changzheng", "sensing")
    if sensing.value is not None and sensing.value < Fraction(95, 100):
        shortfall += Fraction(95, 100) - sensing.value
    deduction = min(Fraction(3, 10), shortfall) * Fraction(fee)
    expected = (Decimal(deduction.numerator) / Decimal(deduction.denominator)).quantize(Decimal("0.01"), ROUND_HALF_UP)
    line = by_key["iot", "changzheng", "online"]
    assert (Decimal(line["fee"]), Decimal(line["deduction"]), Decimal(line["payable"])) == (fee, expected, fee - expected)
    taopu = by_key["iot", "taopu", "online"]
    assert replayed.row("iot", "taopu", "online").passed and Decimal(taopu["deduction"]) == 0
    assert Decimal(taopu["payable"]) == fee
