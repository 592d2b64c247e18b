"""Closing the month: a sealed acceptance, its status, restatements when late data arrives, the seal.

The month is tests/month_data.py's synthetic November (archive day files and the ledger fed
from them), closed with `ptmon month` through the command line as the contract office would,
with the grace period set to 6 h in the config and ``--now`` standing for the clock.
"""

from __future__ import annotations

import csv
import io
import re
import shlex
import shutil
import sqlite3
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from ptmon.archive import ArchiveReader, write_archive
from ptmon.cli import main
from ptmon.ledger.closing import closing, closings
from ptmon.ledger.read import ledger_results
from ptmon.ledger.store import Ledger
from ptmon.payment import payment_for, total
from ptmon.registry import load_registry
from ptmon.replay import replay
from ptmon.rules import load_rules
from ptmon.sinks.archive import archive_files
from ptmon.timebase import month_bounds, parse_instant

from . import month_data as md

CLOSE = "2026-12-01T06:00"  # the grace period (6 h) is over
LATER = "2026-12-02T09:00"  # after the late records, the exemption and the registry correction


@dataclass
class Month:
    root: Path
    config: Path
    registry: Path
    rules: Path
    archive: Path
    ledger: Path

    def month(self, *args: str, now: str = CLOSE) -> list[str]:
        return ["month", *args, "--config", str(self.config), "--now", now]

    def registry_object(self):  # type: ignore[no-untyped-def]
        return load_registry(self.registry, load_rules(self.rules))


def _copy(pristine: Path, target: Path, *, rules_change: tuple[str, str] | None = None) -> Month:
    shutil.copytree(pristine, target)
    if rules_change is not None:
        contracts = target / "rules" / "contracts.yaml"
        contracts.write_text(contracts.read_text().replace(*rules_change))
    config = target / "ptmon.toml"
    config.write_text('registry = "registry.csv"\nrules = "rules"\ndata_dir = "data"\narchive_dir = "archive"\n'
                      'metrics_listen = ""\n[month]\nclose_grace = "6h"\n')
    return Month(root=target, config=config, registry=target / "registry.csv", rules=target / "rules",
                 archive=target / "archive", ledger=target / "data" / "ledger.sqlite")


@pytest.fixture
def month(pristine: Path, tmp_path: Path) -> Month:
    return _copy(pristine, tmp_path / "m")


def _money(doc: dict, street: str) -> dict:  # type: ignore[type-arg]
    return next(m for m in doc["money"] if m["street"] == street)


def _report(m: Month, out: Path, *args: str, formats: str = "html,csv,xlsx") -> dict[str, bytes]:
    assert main(["report", "--month", md.MONTH, "--config", str(m.config), "--out", str(out), "--format", formats, *args]) == 0
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


# --- closing ---------------------------------------------------------------------------------------

def test_closing_before_the_grace_period_or_while_a_collector_writes_the_month_is_refused(month: Month, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that a closing before the month's end plus the grace period, or while a collector on the data directory
    has not yet written past the month, is refused saying why, and that nothing is sealed."""
    from ptmon.ledger.rebuild import rebuild_ledger
    from ptmon.lock import LOCK_NAME, ProcessLock, ledger_lock_path

    assert main(month.month("close", md.MONTH, "--by", "张三", now="2026-12-01T05:59")) == 2
    err = capsys.readouterr().err
    assert "it can be closed from 2026-12-01T06:00:00+08:00, after the grace period" in err and "close_grace = 6h" in err
    assert main(month.month("status", md.MONTH, now="2026-12-01T05:59")) == 0
    out = capsys.readouterr().out
    assert "2026-11 iot “智联普陀”物联感知设施租赁服务项目: 未结账 open" in out and "not closable yet" in out
    assert main(month.month("status")) == 0
    assert capsys.readouterr().out.splitlines() == ["2026-11 iot: 未结账 open", "2026-11 cam: 未结账 open"]

    behind = month.root / "data" / "ledger.sqlite"
    behind.unlink()
    with Ledger(behind) as ledger:  # the collector has written up to 30 Nov 20:00 only
        rebuild_ledger(archive_files(month.archive), month.registry_object(), ledger, end=parse_instant("2026-11-30T20:00"))
    # a collector holds both locks; either one alone (a ledger_file outside the data directory) is enough to refuse
    for path in (month.root / "data" / LOCK_NAME, ledger_lock_path(behind)):
        lock = ProcessLock(path, "test")
        lock.acquire()
        try:
            assert main(month.month("close", md.MONTH, "--by", "张三")) == 2
            assert "is still writing 2026-11 into the ledger" in capsys.readouterr().err
        finally:
            lock.release()
    with Ledger(month.ledger, readonly=True) as ledger:
        assert closings(ledger) == []


def test_close_seals_the_ledgers_month_once_and_its_report_is_the_same_bytes_every_run(month: Month, tmp_path: Path,
                                                                                        capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that `month close` seals each contract's KPI rows and money as the ledger gives them with the SHA-256 of
    every input, who and when (第 1 版); that closing twice is refused; and that the closed month's report (HTML, CSV,
    XLSX, PDF) names its version and seal and is byte-identical on every run."""
    assert main(month.month("close", md.MONTH, "--by", "张三")) == 0
    out = capsys.readouterr().out
    assert "iot 2026-11: sealed 第 1 版 at 2026-12-01T06:00:00+08:00 by 张三" in out and "cam 2026-11: sealed 第 1 版" in out

    registry = month.registry_object()
    start, end = month_bounds(md.MONTH)
    with Ledger(month.ledger, readonly=True) as ledger:
        live = ledger_results(ledger, registry, start, end)
        for contract in ("iot", "cam"):
            c = closing(ledger, md.MONTH, contract)
            assert c is not None and c.version == 1 and c.closed_by == "张三" and c.sealed_ok()
            assert c.closed_at == parse_instant(CLOSE)
            rows = [r for r in live.rows if r.contract == contract]
            assert ([(x[1], x[2], x[3], x[4]) for x in c.doc["kpis"]]
                    == [(r.street, r.kpi, r.numerator, r.denominator) for r in rows])
            terms = registry.rules.contract(contract)
            lines = [payment_for(terms, s, live.rows) for s in registry.rules.street_codes()]
            assert Decimal(_money(c.doc, "district")["payable"]) == total(lines, contract=contract).payable
            inputs = c.doc["inputs"]
            assert [a["name"] for a in inputs["archive"]] == [p.name for p in archive_files(month.archive)
                                                              if p.name < "ptmon-2026-12"]  # 31 Oct (no snapshot) – 30 Nov
            assert inputs["registry"]["sha256"] == _sha(month.registry)
            assert set(inputs["rules"]["files"]) == {"streets.yaml", "types.yaml", "contracts.yaml"}
            assert inputs["config"]["sha256"] == _sha(month.config)
    assert Decimal(_money(c.doc, "district")["deduction"]) > 0  # cam: changzheng's and taopu's cameras below 95 %

    assert main(month.month("close", md.MONTH, "--by", "李四", now=LATER)) == 2
    assert "already closed (第 1 版, by 张三 at 2026-12-01T06:00:00+08:00)" in capsys.readouterr().err
    assert main(month.month("status", now=LATER)) == 0
    assert "2026-11 cam: 已结账 closed, 第 1 版 2026-12-01T06:00:00+08:00 by 张三" in capsys.readouterr().out

    first = _report(month, tmp_path / "r1")
    second = _report(month, tmp_path / "r2")
    assert sorted(first) == sorted(f"report-2026-11-{c}-v1.{x}" for c in ("iot", "cam") for x in ("html", "csv", "xlsx"))
    assert first == second  # byte for byte
    pdf = [_report(month, tmp_path / f"p{i}", "--contract", "cam", formats="pdf") for i in range(2)]
    assert pdf[0] == pdf[1] and list(pdf[0]) == ["report-2026-11-cam-v1.pdf"]  # WeasyPrint 70 writes no date
    html = first["report-2026-11-cam-v1.html"].decode()
    assert "<h1>月度租赁服务考核验收报告（第 1 版）</h1>" in html and c.seal in html and "class=\"prov\"" not in html
    table = list(csv.DictReader(io.StringIO(first["report-2026-11-cam-v1.csv"].decode())))
    assert {(r["version"], r["seal"]) for r in table} == {("1", c.seal)}
    assert all(r["contract"] == "cam" for r in table)


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- after the closing -----------------------------------------------------------------------------

def _late_data_arrives(m: Month) -> None:
    """After the closing: the gateway's flush (and the rest of 1 Dec) is archived; a part file for 12 Nov turns up
    (a restarted collector's, restored from another disk) with changzheng cam0's heartbeats of that day: read after
    the day's first part, as a collector writes them, they count at the day's end, where the clock had got to, and
    mostly rate limited; exemptions are approved for that camera (10-11 Nov) and for taopu's camera gateway over
    its uplink outage (29-30 Nov); the contract office corrects changzheng lift0's acceptance date."""
    md.write_after_close(m.archive, m.registry_object())
    day = parse_instant("2026-11-12T00:00") // 1_000_000
    write_archive(m.archive / "ptmon-2026-11-12.1.jsonl.gz",
                  [(day + 60 * i + 30.0, "putuo/cam/changzheng/changzheng-cam0/hb", f'{{"ts": {day + 60 * i + 29}}}')
                   for i in range(1440)])
    assert main(["exempt", "--config", str(m.config), "add", "--device", "changzheng-cam0", "--from", "2026-11-10",
                 "--to", "2026-11-12", "--reason", "小区改造断电", "--approver", "李四"]) == 0
    assert main(["exempt", "--config", str(m.config), "add", "--gateway", "gw-taopu-cam", "--from", "2026-11-29",
                 "--to", "2026-12-01", "--reason", "运营商光缆中断", "--approver", "李四"]) == 0
    old = "changzheng-lift0,iot,elevator,changzheng,scn,changzheng-c1,gw-changzheng-iot,2026-01-01,"
    text = m.registry.read_text()
    assert old in text
    m.registry.write_text(text.replace(old, old.replace("2026-01-01", "2026-11-09")))


def test_status_and_restatement_after_late_records_an_exemption_and_a_registry_correction(month: Month, tmp_path: Path,
                                                                                           capsys) -> None:  # type: ignore[no-untyped-def]
    """Test the acceptance path: after a closing, late archive records, a new exemption and a changed accepted_on
    each show in `month status` with their money effect; `month restate` seals 第 2 版, whose figures equal a fresh
    replay of the archive with the new registry and exemptions; the report of 第 2 版 shows both versions side by side
    with what changed and why, and 第 1 版 still renders as it did."""
    assert main(month.month("close", md.MONTH, "--by", "张三")) == 0
    v1_reports = _report(month, tmp_path / "v1")
    capsys.readouterr()
    assert main(month.month("status", md.MONTH)) == 0
    assert "nothing changed since 第 1 版" in capsys.readouterr().out

    _late_data_arrives(month)
    with Ledger(month.ledger, readonly=True) as ledger:
        v1 = {c: closing(ledger, md.MONTH, c) for c in ("iot", "cam")}
    assert main(month.month("status", md.MONTH, now=LATER)) == 0
    status = capsys.readouterr().out
    iot, cam = status.split("2026-11 cam ")
    # the registry correction: changzheng's iot deduction of 第 1 版 is paid after all (the archive part moves
    # nothing for iot)
    lift = Decimal(_money(v1["iot"].doc, "changzheng")["deduction"])
    assert lift > 0 and "[报文存档 archive]" in iot
    assert "changzheng-lift0：accepted_on 2026-01-01 → 2026-11-09" in iot
    assert f"payable +{lift:,.2f} (changzheng +{lift:,.2f})" in iot
    assert re.search(r"changzheng online: 0\.86\d+ \(FAIL\) → [01]\.\d+ \(pass\)", iot)
    assert "豁免" not in iot.split("total against")[0]  # the exemption covers a camera: nothing for iot
    # each change with its money, step by step: the 12 Nov part lifts changzheng's camera rate a little; the
    # exemptions pay the rest of changzheng's deduction (93.3 % → 96.6 %: 2 of its 4 silent days exempted) and
    # taopu's (its outage exempted) back; the late heartbeats are shown and count for nothing
    camera = Decimal(_money(v1["cam"].doc, "changzheng")["deduction"])
    outage = Decimal(_money(v1["cam"].doc, "taopu")["deduction"])
    assert camera > 0 and outage > 0
    archive, rest = cam.split("[报文存档 archive]")[1].split("[设备清单 registry]")
    assert "ptmon-2026-11-12.1.jsonl.gz：结账后新增的文件" in archive
    part = Decimal(re.search(r"payable \+([\d,.]+) \(changzheng \+\1\)", archive).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert 0 < part < camera
    exemption, late = rest.split("[豁免 exemptions]")[1].split("[迟到心跳 late heartbeats]")
    assert "豁免 1 补登" in exemption and "豁免 2 补登" in exemption and "运营商光缆中断" in exemption
    assert f"payable +{camera - part + outage:,.2f} (changzheng +{camera - part:,.2f}, taopu +{outage:,.2f})" in exemption
    assert "结账后新到 (new since the closing)：5,760 条（2 台设备）" in late and "对金额无影响" in late
    assert "money: no change (0.00)" in late.split("total against")[0]
    assert f"total against 第 1 版: payable +{camera + outage:,.2f}" in cam
    assert re.search(r"changzheng online: 0\.93\d+ \(FAIL\) → 0\.9\d+ \(pass\)", cam)
    assert "restate 2026-11 --contract cam" in cam

    assert main(month.month("restate", md.MONTH, "--reason", "设备验收日期更正；补登豁免", "--by", "王五", now=LATER)) == 0
    registry = month.registry_object()
    start, end = month_bounds(md.MONTH)
    with Ledger(month.ledger, readonly=True) as ledger:
        exemptions = ledger.exemptions(start=start, end=end)
        v2 = {c: closing(ledger, md.MONTH, c) for c in ("iot", "cam")}
        assert [c.version for c in closings(ledger, md.MONTH, "iot")] == [1, 2]  # 第 1 版 is kept
        assert closing(ledger, md.MONTH, "iot", 1).seal == v1["iot"].seal  # type: ignore[union-attr]
    files = [str(p) for p in archive_files(month.archive)]
    fresh = replay(files, registry, start, end, exemptions=[e for e in exemptions if e.active])
    for contract in ("iot", "cam"):
        doc = v2[contract].doc  # type: ignore[union-attr]
        assert doc["version"] == 2 and doc["previous_seal"] == v1[contract].seal and doc["reason"] == "设备验收日期更正；补登豁免"
        rows = [r for r in fresh.rows if r.contract == contract]
        assert [tuple(x[:5]) for x in doc["kpis"]] == [(r.contract, r.street, r.kpi, r.numerator, r.denominator) for r in rows]
        terms = registry.rules.contract(contract)
        paid = total([payment_for(terms, s, fresh.rows) for s in registry.rules.street_codes()], contract=contract)
        assert Decimal(_money(doc, "district")["payable"]) == paid.payable
    assert Decimal(_money(v2["iot"].doc, "district")["payable"]) - Decimal(_money(v1["iot"].doc, "district")["payable"]) == lift  # type: ignore[union-attr]

    reports = _report(month, tmp_path / "v2")
    html = reports["report-2026-11-cam-v2.html"].decode()
    assert "月度租赁服务考核验收报告（第 2 版）" in html and "第 2 版与第 1 版对照" in html
    assert "设备验收日期更正；补登豁免" in html
    assert f"+{camera:,.2f}" in html and f"+{outage:,.2f}" in html and f"+{camera + outage:,.2f}" in html
    assert v1["cam"].seal in html and "ptmon-2026-11-12.1.jsonl.gz" in html and "运营商光缆中断" in html
    changes = list(csv.DictReader(io.StringIO(reports["report-2026-11-iot-v2-changes.csv"].decode())))
    row = next(r for r in changes if (r["street"], r["kpi"]) == ("changzheng", "online"))
    assert (row["previous_pass"], row["pass"], row["payable_delta"]) == ("false", "true", str(lift))
    assert _report(month, tmp_path / "again", "--version", "1") == v1_reports  # 第 1 版, byte for byte

    capsys.readouterr()
    assert main(month.month("restate", md.MONTH, "--reason", "again", "--by", "王五", now=LATER)) == 2
    assert "nothing changed since the last version" in capsys.readouterr().err


def test_late_heartbeats_count_for_their_month_within_the_contracts_limits(pristine: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that with cam.late_heartbeats.count the gateway's flush counts its devices online for November within
    max_delay (24 h) only, exactly as a replay with those heartbeats received at their ts, and that the status shows
    the money it moves."""
    m = _copy(pristine, tmp_path / "m", rules_change=("cam:\n  name: 普陀区智能安防建设项目\n",
                                                      "cam:\n  name: 普陀区智能安防建设项目\n  late_heartbeats: {count: true}\n"))
    registry = m.registry_object()
    with Ledger(m.ledger) as ledger:  # the ledger of these rules (the rules' version is in every hour row)
        ledger.db.execute("DELETE FROM hours")
        from ptmon.ledger.rebuild import rebuild_ledger

        rebuild_ledger(archive_files(m.archive), registry, ledger)
    assert main(m.month("close", md.MONTH, "--contract", "cam", "--by", "张三")) == 0
    md.write_after_close(m.archive, registry)
    capsys.readouterr()
    assert main(m.month("status", md.MONTH, "--contract", "cam", now=LATER)) == 0
    status = capsys.readouterr().out
    assert "按合同规则计入 (counted" in status and "新到的 1,662 条" in status  # stamped within 24 h of their receipt
    assert "其中 1,662 条在合同规则的限度内计入" in status and "4,098 条超出限度不计入" in status
    assert main(m.month("restate", md.MONTH, "--contract", "cam", "--reason", "网关补传", "--by", "王五", now=LATER)) == 0

    start, end = month_bounds(md.MONTH)
    flush = [(float(p.split(":")[1].rstrip("}")), t, topic) for t, topic, p in md.flush_records(registry)]
    retimed = [(ts, topic, f'{{"ts": {ts}}}') for ts, t, topic in flush if start <= ts * 1e6 < end and t - ts <= 86_400]
    assert len(retimed) == 1662
    november = [r for r in ArchiveReader(archive_files(m.archive)) if r[0] * 1e6 < end]
    write_archive(tmp_path / "reference.jsonl.gz", sorted(november + retimed, key=lambda r: r[0]))
    reference = replay([str(tmp_path / "reference.jsonl.gz")], registry, start, end)
    with Ledger(m.ledger, readonly=True) as ledger:
        v1, v2 = closings(ledger, md.MONTH, "cam")
    online = [tuple(x[:5]) for x in v2.doc["kpis"] if x[2] == "online"]
    assert online == [(r.contract, r.street, r.kpi, r.numerator, r.denominator) for r in reference.rows
                      if r.contract == "cam" and r.kpi == "online"]
    assert [tuple(x[:5]) for x in v1.doc["kpis"] if x[2] == "online"] != online
    taopu = (Decimal(_money(v1.doc, "taopu")["payable"]), Decimal(_money(v2.doc, "taopu")["payable"]))
    assert taopu[0] < taopu[1] == Decimal("358299.76")  # 93.3 % → above 95 %: nothing deducted
    assert f"payable +{taopu[1] - taopu[0]:,.2f} (taopu +{taopu[1] - taopu[0]:,.2f})" in status


# --- the seal --------------------------------------------------------------------------------------

def test_verify_detects_tampered_archive_registry_rules_and_closing(month: Month, pristine: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that `month verify` passes on an untouched closing and names, with exit 1, an archive file altered or
    appended, a changed registry or rule file, and a closing document altered in the ledger; and that a restatement
    is refused while sealed evidence is altered."""
    assert main(month.month("close", md.MONTH, "--by", "张三")) == 0
    capsys.readouterr()
    assert main(month.month("verify", md.MONTH)) == 0
    assert "OK: every seal matches the ledger and the files" in capsys.readouterr().out

    day = month.archive / "ptmon-2026-11-15.jsonl.gz"
    records = list(ArchiveReader([day]))
    write_archive(day, [records[0], (records[1][0], records[1][1], records[1][2].replace('"seq"', '"sEq"')), *records[2:]])
    assert main(month.month("verify", md.MONTH)) == 1
    out = capsys.readouterr().out
    assert "ptmon-2026-11-15.jsonl.gz：已被改动" in out and "DIFFERENT" in out
    assert main(month.month("restate", md.MONTH, "--reason", "x", "--by", "y", now=LATER)) == 2
    assert "sealed archive files of 2026-11 were altered" in capsys.readouterr().err

    shutil.copy(pristine / "archive" / day.name, day)
    other = month.archive / "ptmon-2026-11-16.jsonl.gz"
    with other.open("ab") as f:  # a gzip member appended: the sealed bytes are still its prefix
        import gzip

        f.write(gzip.compress(b'{"t": 1795017600.5, "topic": "$ptmon/tick", "payload": ""}\n'))
    month.registry.write_text(month.registry.read_text()
                              + "taopu-cam9,cam,face_cam,taopu,scn,taopu-c1,gw-taopu-cam,2026-01-01,\n")
    types = month.rules / "types.yaml"
    types.write_text(types.read_text() + "\n# edited\n")
    assert main(month.month("verify", md.MONTH)) == 1
    out = capsys.readouterr().out
    assert "ptmon-2026-11-16.jsonl.gz：结账后追加了记录" in out
    assert "registry" in out and "differs from the one sealed in 第 1 版" in out and "types.yaml differs" in out

    with Ledger(month.ledger) as ledger:
        with pytest.raises(sqlite3.DatabaseError, match="a sealed closing is never changed"):
            ledger.db.execute("UPDATE closings SET closed_by = 'x'")
        with pytest.raises(sqlite3.DatabaseError, match="never deleted"):
            ledger.db.execute("DELETE FROM closings")
        ledger.db.execute("DROP TRIGGER closings_never_updated")  # someone with the file and sqlite3
        import zlib

        doc = zlib.decompress(ledger.db.execute("SELECT doc FROM closings WHERE contract = 'iot'").fetchone()[0])
        ledger.db.execute("UPDATE closings SET doc = ? WHERE contract = 'iot'",
                          (zlib.compress(doc.replace(b'"closed_by":"\xe5\xbc\xa0\xe4\xb8\x89"', b'"closed_by":"X"')),))
    assert main(month.month("verify", md.MONTH, "--contract", "iot")) == 1
    assert "no longer hashes to its seal" in capsys.readouterr().out
    assert main(["report", "--month", md.MONTH, "--config", str(month.config), "--contract", "iot", "--format", "csv",
                 "--out", str(month.root / "r")]) == 2
    assert "no longer matches its seal" in capsys.readouterr().err


def month_with_a_gap(pristine: Path, target: Path) -> Month:
    """A copy of the month whose collector was stopped for 15 Nov (monitor down and up recorded around
    it), its ledger rebuilt from that archive."""
    from ptmon.ledger.rebuild import rebuild_ledger

    m = _copy(pristine, target)
    (m.archive / "ptmon-2026-11-15.jsonl.gz").unlink()
    for day, record in (("14", (parse_instant("2026-11-14T23:59:59") / 1e6, "$ptmon/monitor", "down")),
                        ("16", (parse_instant("2026-11-16T00:00") / 1e6 - 0.5, "$ptmon/monitor", "up"))):
        path = m.archive / f"ptmon-2026-11-{day}.jsonl.gz"
        write_archive(path, sorted([*ArchiveReader([path]), record], key=lambda r: r[0]))
    m.ledger.unlink()
    with Ledger(m.ledger) as ledger:
        rebuild_ledger(archive_files(m.archive), m.registry_object(), ledger)
    return m


# --- refusals that protect the figures --------------------------------------------------------------

def test_a_month_with_monitoring_gaps_closes_only_with_accept_gaps(pristine: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that a month not wholly observed is refused without --accept-gaps, naming its coverage and gaps, and that
    with it the sealed report is final and says the gaps were accepted."""
    m = month_with_a_gap(pristine, tmp_path / "m")
    assert main(m.month("close", md.MONTH, "--contract", "iot", "--by", "张三")) == 2
    err = capsys.readouterr().err
    assert "iot 2026-11 was observed 96.6" in err and "2026-11-15T00:0" in err and "--accept-gaps" in err
    assert main(m.month("close", md.MONTH, "--contract", "iot", "--by", "张三", "--accept-gaps")) == 0
    html = _report(m, tmp_path / "r", "--contract", "iot", formats="html")["report-2026-11-iot-v1.html"].decode()
    assert "<h1>月度租赁服务考核验收报告（第 1 版）</h1>" in html and "class=\"prov\"" not in html
    assert "监测缺口已由 张三 于封存时审核认定" in html


def test_a_ledger_that_differs_from_the_archive_is_not_closed(month: Month, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that a closing is refused, listing the differing rows, when the ledger's month differs from its
    recomputation from the archive."""
    with Ledger(month.ledger) as ledger:
        ledger.db.execute("UPDATE hours SET online = online - 3 WHERE contract = 'cam' AND street = 'taopu' "
                          "AND hour = (SELECT min(hour) FROM hours WHERE hour >= ?)", (month_bounds(md.MONTH)[0],))
    assert main(month.month("close", md.MONTH, "--contract", "cam", "--by", "张三")) == 2
    err = capsys.readouterr().err
    assert "differs from its recomputation from the archive" in err
    refusal = [line for line in err.splitlines() if not line.startswith("ptmon month: ")]  # the rest is progress
    assert len(refusal) == 1 and "row(s), the first: ledger: cam,taopu,online," in refusal[0]
    with Ledger(month.ledger, readonly=True) as ledger:
        assert closings(ledger) == []
    # the commands the refusal suggests run as printed: verify finds the difference, rebuild repairs it
    verify, rebuild = (shlex.split(c) for c in refusal[0].split("`")[1::2] if c.startswith("ptmon ledger "))
    assert verify[:3] == ["ptmon", "ledger", "verify"] and rebuild[:3] == ["ptmon", "ledger", "rebuild"]
    assert main(verify[1:]) == 1
    assert main(rebuild[1:]) == 0
    assert main(verify[1:]) == 0
    assert main(month.month("close", md.MONTH, "--contract", "cam", "--by", "张三", "--accept-gaps")) == 0
