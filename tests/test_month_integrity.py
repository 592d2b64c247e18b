"""Integrity of sealed months against someone with SQL access to the ledger, and the closings that
must not happen: nothing observed, two closes at once, a full disk, months out of range.

The month is tests/month_data.py's synthetic November, closed through the command line.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import zlib
from decimal import Decimal
from pathlib import Path

from ptmon.cli import main
from ptmon.ledger.closing import canonical, closing, closings, seal_of
from ptmon.ledger.store import Ledger
from ptmon.month.figures import money_lines
from ptmon.month.sealdoc import money_to_doc, row_from_doc
from ptmon.rules import load_rules

from . import month_data as md
from .test_month_close import CLOSE, Month, _copy


def _verify(m: Month, capsys) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    code = main(m.month("verify", md.MONTH))
    return code, capsys.readouterr().out


def _forge(m: Month, contract: str, change) -> None:  # type: ignore[no-untyped-def]
    """INSERT a 第 2 版 made from 第 1 版 by ``change(doc)``, with its correct seal and naming 第 1 版's:
    no trigger is dropped for this."""
    with Ledger(m.ledger) as ledger:
        v1 = closing(ledger, md.MONTH, contract)
        assert v1 is not None
        doc = json.loads(json.dumps(v1.doc))
        doc.update(version=2, previous_seal=v1.seal, reason="更正", closed_by="王五")
        change(doc)
        ledger.db.execute("INSERT INTO closings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          (md.MONTH, contract, 2, doc["closed_at"], doc["closed_by"], doc["reason"],
                           zlib.compress(canonical(doc)), seal_of(doc)))


def test_signer_date_and_reason_are_the_sealed_ones_and_edited_columns_fail_verify(closed: Month, tmp_path: Path,
                                                                                   capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that editing the closings table's signer and date (triggers dropped) escapes neither `month verify`, which
    names the edited columns, nor the report, which refuses in one line to render a version whose table row is not its
    sealed document (before the edit it showed the sealed signer)."""
    assert _verify(closed, capsys)[0] == 0
    report = ["report", "--month", md.MONTH, "--config", str(closed.config), "--contract", "cam", "--format", "html"]
    assert main([*report, "--out", str(tmp_path / "r")]) == 0
    html = (tmp_path / "r" / "report-2026-11-cam-v1.html").read_text()
    assert "由 张三 封存" in html and "2026-12-01 06:00" in html
    with Ledger(closed.ledger) as ledger:
        ledger.db.execute("DROP TRIGGER closings_never_updated")
        ledger.db.execute("UPDATE closings SET closed_by = '王五（冒名）', closed_at = closed_at + 86400000000")
    code, out = _verify(closed, capsys)
    assert code == 1 and "the closings table says closed_by '王五（冒名）' (sealed: '张三')" in out and "closed_at" in out
    assert main([*report, "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cam 2026-11: not rendered, 第 1 版: the closings table says closed_at" in err
    assert not (tmp_path / "r2").exists() or not list((tmp_path / "r2").iterdir())


def test_a_report_of_every_contract_writes_nothing_when_one_seal_is_edited(closed: Month, tmp_path: Path,
                                                                          capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that `ptmon report` of the month (every contract) checks every seal before writing: with only cam's
    closing edited, it refuses and leaves no iot report behind, which a reviewer could take for the month's."""
    with Ledger(closed.ledger) as ledger:
        ledger.db.execute("DROP TRIGGER closings_never_updated")
        ledger.db.execute("UPDATE closings SET closed_by = '王五（冒名）' WHERE contract = 'cam'")
    out = tmp_path / "r"
    assert main(["report", "--month", md.MONTH, "--config", str(closed.config), "--format", "html", "--out", str(out)]) == 2
    assert "cam 2026-11: not rendered" in capsys.readouterr().err
    assert not out.exists() or not list(out.iterdir())


def test_a_forged_version_inserted_with_sql_fails_verify(closed: Month, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that a 第 2 版 INSERTed by hand, naming 第 1 版's seal with its own correct seal, is caught: with a
    street's deduction set to 0.00 (the money does not follow from the KPI rows), and with KPI rows and money made
    consistent (they are not what the ledger's rows give)."""
    backup = closed.ledger.with_suffix(".bak")
    shutil.copy(closed.ledger, backup)

    def no_deduction(doc: dict) -> None:  # type: ignore[type-arg]
        for line in doc["money"]:
            if line["street"] in ("changzheng", "district"):
                line["payable"] = str(Decimal(line["payable"]) + Decimal(line["deduction"]) -
                                      (Decimal(0) if line["street"] == "changzheng" else
                                       next(Decimal(x["deduction"]) for x in doc["money"] if x["street"] == "taopu")))
        changzheng = next(x for x in doc["money"] if x["street"] == "changzheng")
        district = next(x for x in doc["money"] if x["street"] == "district")
        district["deduction"] = str(Decimal(district["deduction"]) - Decimal(changzheng["deduction"]))
        changzheng["deduction"] = "0.00"

    _forge(closed, "cam", no_deduction)
    code, out = _verify(closed, capsys)
    assert code == 1 and "第 2 版: its money does not follow from its KPI rows under the payment rule (changzheng" in out

    shutil.copy(backup, closed.ledger)
    rules = load_rules(closed.rules)

    def all_online(doc: dict) -> None:  # type: ignore[type-arg]
        for rows in (doc["kpis"], doc["report"]["results"]["rows"]):
            for x in rows:
                if x[0] == "cam" and x[1] == "changzheng" and x[2] == "online":
                    x[3] = x[4]
        rows = [row_from_doc(x) for x in doc["kpis"]]
        doc["money"] = money_to_doc(money_lines(rules.contract("cam"), rows, rules.street_codes()))

    _forge(closed, "cam", all_online)
    code, out = _verify(closed, capsys)
    assert code == 1 and "第 2 版: its KPI rows are not those of the ledger's rows it was sealed from" in out
    assert "第 2 版: its money does not follow" not in out


def test_ledger_rows_edited_after_the_closing_fail_verify(closed: Month, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that an hour row of the closed month edited in the ledger is named by `month verify`."""
    with Ledger(closed.ledger) as ledger:
        ledger.db.execute("UPDATE hours SET online = online + 1 WHERE rowid = (SELECT min(rowid) FROM hours "
                          "WHERE hour >= ? AND contract = 'cam')", (md.START,))
    code, out = _verify(closed, capsys)
    assert code == 1 and "the ledger's rows of 2026-11 (hours, days, counts, device status, spans) changed since 第 1 版" in out


def test_a_month_with_nothing_observed_is_not_closed_even_with_accept_gaps(pristine: Path, tmp_path: Path,
                                                                           capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that a month of which the ledger holds nothing (September; a January not yet run) is refused with
    --accept-gaps, and that a [month] min_coverage that is no fraction is refused."""
    m = _copy(pristine, tmp_path / "m")
    for month, now in (("2026-09", CLOSE), ("2027-01", "2027-03-01")):
        assert main(m.month("close", month, "--by", "A", "--accept-gaps", now=now)) == 2
        assert "cannot be closed, not even with --accept-gaps: no time of it was observed" in capsys.readouterr().err
    m.config.write_text(m.config.read_text() + "min_coverage = 1.5\n")
    assert main(m.month("close", md.MONTH, "--by", "A")) == 2
    assert "min_coverage" in capsys.readouterr().err
    with Ledger(m.ledger, readonly=True) as ledger:
        assert closings(ledger) == []


def test_two_closes_at_once_seal_all_contracts_or_none(pristine: Path, tmp_path: Path, monkeypatch,
                                                       capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that when another `month close --contract cam` seals cam while a close of every contract is checking,
    the latter seals nothing (not iot either) and says why."""
    import ptmon.month.close as close

    m = _copy(pristine, tmp_path / "m")
    check = close._check_against_archive
    raced: list[int] = []

    def check_then_race(ctx, contracts, exemptions):  # type: ignore[no-untyped-def]
        check(ctx, contracts, exemptions)
        if not raced:  # the other close runs its own check through here: only once
            raced.append(-1)
            raced[0] = main(m.month("close", md.MONTH, "--contract", "cam", "--by", "B"))

    monkeypatch.setattr(close, "_check_against_archive", check_then_race)
    assert main(m.month("close", md.MONTH, "--by", "A")) == 2
    assert raced == [0]
    err = capsys.readouterr().err
    assert "cam 2026-11: 第 1 版 was sealed by B while this command ran" in err and "nothing was sealed by this one" in err
    with Ledger(m.ledger, readonly=True) as ledger:
        assert [(c.contract, c.closed_by) for c in closings(ledger)] == [("cam", "B")]


def test_a_full_disk_during_the_close_is_a_clear_error_and_seals_nothing(pristine: Path, tmp_path: Path,
                                                                         monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that SQLite's "database or disk is full" while the closing is written (the ledger may not grow: a real
    SQLITE_FULL, from max_page_count) gives one line, exit status 2, and no closing."""
    m = _copy(pristine, tmp_path / "m")
    opened = Ledger.__init__

    def no_room(self, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened(self, path, *args, **kwargs)
        if Path(path) == m.ledger and not kwargs.get("readonly"):
            pages = self.db.execute("PRAGMA page_count").fetchone()[0]
            self.db.execute(f"PRAGMA max_page_count = {pages}")

    monkeypatch.setattr(Ledger, "__init__", no_room)
    assert main(m.month("close", md.MONTH, "--by", "张三")) == 2
    err = capsys.readouterr().err
    assert "database or disk is full: nothing was sealed" in err
    assert "Traceback" not in err and "cannot rollback" not in err
    monkeypatch.undo()
    with Ledger(m.ledger, readonly=True) as ledger:
        assert closings(ledger) == []


def test_months_out_of_range_are_refused_clearly(pristine: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that month 9999-12 (whose end is in year 10000) is refused with a clear error by close, status and
    report."""
    m = _copy(pristine, tmp_path / "m")
    for argv in (m.month("close", "9999-12", "--by", "A"), m.month("status", "9999-12"),
                 ["report", "--month", "9999-12", "--config", str(m.config), "--out", str(tmp_path / "r")]):
        assert main(argv) == 2
        assert "month '9999-12' is out of range" in capsys.readouterr().err


def test_closing_columns_unused_by_dataclasses() -> None:
    """Test that a Closing's columns tuple is compared field by field (pure logic)."""
    from ptmon.ledger.closing import Closing

    doc = {"month": "2026-11", "contract": "cam", "version": 1, "closed_at": 5, "closed_by": "张三", "reason": ""}
    c = Closing(month="2026-11", contract="cam", version=1, closed_at=5, closed_by="张三", reason="", seal=seal_of(doc),
                doc=doc, columns=("2026-11", "cam", 1, 5, "张三", ""))
    assert c.column_mismatches() == []
    assert dataclasses.replace(c, columns=("2026-11", "cam", 1, 6, "李四", "")).column_mismatches() == [
        "closed_at 6 (sealed: 5)", "closed_by '李四' (sealed: '张三')"]
