"""Closing the month of a partitioned deployment: `ptmon month` over every partition's ledger and
archive, sealed in the district's seal ledger.

The data is tests/partition_data.py's (the ``collected`` fixture): one Mosquitto, the simulator's
traffic for three streets, two partition collectors (two streets and one) and a collector that saw
everything. The partitions' closing must seal the KPI rows and money the whole collector's closing
seals; verify must name a partition's changed archive or ledger; partitions that overlap, miss a
street or ran with other rules are refused with the reason, and so is one partition alone."""

from __future__ import annotations

import json
import shlex
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ptmon.archive import PARTITION_TOPIC, ArchiveReader, write_archive
from ptmon.cli import main
from ptmon.ledger.closing import closings
from ptmon.ledger.store import Ledger
from ptmon.lock import LOCK_NAME, ProcessLock
from ptmon.partition import PARTITION_FILE, restrict_registry
from ptmon.registry import load_registry
from ptmon.rules import load_rules
from ptmon.simulators.synthetic import Scenario, iter_records
from ptmon.timebase import US_PER_S

from .conftest import T0

NOW = "2026-12-05T00:00"
MONTH = "2026-11"


def _copy(collected: dict[str, Any], target: Path, *names: str) -> dict[str, Path]:
    """Copies of the collectors' data directories (the fixture's are shared): name → directory."""
    out = {}
    for name in names:
        out[name] = target / name
        shutil.copytree(Path(collected["tmp"]) / name, out[name], ignore=shutil.ignore_patterns("*.lock", "lock*"))
    return out


def _where(collected: dict[str, Any], *dirs: Path) -> list[str]:
    return ["--registry", str(collected["registry"]), "--rules", str(collected["rules"]),
            "--ledger", *(str(d / "ledger.sqlite") for d in dirs), "--archive", *(str(d / "archive") for d in dirs)]


def _month(capsys, *args: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    code = main(["month", *args, "--now", NOW])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _sealed(ledger: Path) -> dict[str, dict[str, Any]]:
    with Ledger(ledger, readonly=True) as opened:
        return {c.contract: c.doc for c in closings(opened, MONTH)}


def _figures(doc: dict[str, Any]) -> dict[str, Any]:
    """What a closing seals as the month's figures and money (not when, where or by whom)."""
    report = doc["report"]
    return {"kpis": doc["kpis"], "money": doc["money"], "rows": report["results"]["rows"],
            "coverage": report["results"]["coverage"], "gaps": report["results"]["gaps"], "daily": report["daily"],
            "episodes": report["episodes"], "exemptions": doc["inputs"]["exemptions"],
            "late": doc["inputs"]["late"]["found"]}


@pytest.fixture
def closed(collected, tmp_path, capsys) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The month closed twice: by the whole collector's ledger, and by the two partitions into a seal ledger."""
    dirs = _copy(collected, tmp_path, "all", "a", "b")
    seal = tmp_path / "district" / "seals.sqlite"
    code, _, err = _month(capsys, "close", MONTH, "--by", "张三", "--accept-gaps", *_where(collected, dirs["all"]))
    assert code == 0, err
    code, out, err = _month(capsys, "close", MONTH, "--by", "张三", "--accept-gaps",
                            *_where(collected, dirs["b"], dirs["a"]), "--seal-ledger", str(seal))
    assert code == 0, err
    assert "of 2 partitions" in out
    return {"dirs": dirs, "seal": seal, "where": [*_where(collected, dirs["a"], dirs["b"]), "--seal-ledger", str(seal)]}


def test_partitions_close_the_month_the_whole_collector_closes(collected, closed, tmp_path, capsys) -> None:
    """Test that closing the month over two partitions seals the KPI rows, money lines, daily figures and episodes
    of the collector that saw every street, that it verifies, and that the report renders it from the seal ledger."""
    whole, parts = _sealed(closed["dirs"]["all"] / "ledger.sqlite"), _sealed(closed["seal"])
    assert set(parts) == set(whole) and whole
    for contract, doc in whole.items():
        assert _figures(parts[contract]) == _figures(doc), contract
    assert any(m["street"] == "district" for doc in parts.values() for m in doc["money"])  # money was sealed
    doc = next(iter(parts.values()))
    assert [(p["streets"], p["ledger"]) for p in doc["inputs"]["partitions"]] == [  # in the rules' street order
        (["wanli"], str(closed["dirs"]["b"] / "ledger.sqlite")),
        (["changzheng", "taopu"], str(closed["dirs"]["a"] / "ledger.sqlite"))]
    assert sorted(m["name"] for m in doc["inputs"]["archive"]) == [
        "changzheng+taopu/ptmon-2026-11-01.jsonl.gz", "wanli/ptmon-2026-11-01.jsonl.gz"]

    seal_bytes = closed["seal"].read_bytes()
    code, out, err = _month(capsys, "verify", MONTH, *closed["where"])
    assert code == 0, out + err
    assert "OK: every seal matches" in out and "partition wanli's ledger" in out
    code, out, _ = _month(capsys, "status", MONTH, *closed["where"])
    assert code == 0 and "nothing changed since 第 1 版" in out
    assert closed["seal"].read_bytes() == seal_bytes  # status and verify write nothing

    def report(out_dir: Path, ledger: Path) -> dict[str, bytes]:
        assert main(["report", "--month", MONTH, "--format", "csv", "--out", str(out_dir), "--registry",
                     str(collected["registry"]), "--rules", str(collected["rules"]), "--ledger", str(ledger)]) == 0
        capsys.readouterr()
        return {p.name: p.read_bytes() for p in sorted(out_dir.iterdir())}

    sealed = report(tmp_path / "sealed", closed["seal"])
    assert sealed and all("-v1" in name for name in sealed)
    whole_report = report(tmp_path / "whole", closed["dirs"]["all"] / "ledger.sqlite")
    assert set(sealed) == set(whole_report)
    for name, text in sealed.items():  # the same rows; each version's own seal in the last column
        rows = [line.rsplit(b",", 1) for line in text.splitlines()]
        assert rows[0][1] == b"seal" and len(rows) > 3
        assert [r[0] for r in rows] == [line.rsplit(b",", 1)[0] for line in whole_report[name].splitlines()], name


def test_verify_names_a_partitions_changed_archive_or_ledger(collected, closed, capsys) -> None:
    """Test that `month verify` of a partitioned month names a partition's archive file altered since the closing,
    and a partition's ledger whose rows of the month changed."""
    b = closed["dirs"]["b"]
    day = b / "archive" / "ptmon-2026-11-01.jsonl.gz"
    original = day.read_bytes()
    write_archive(day, list(ArchiveReader([day]))[:-1])  # the last record taken out
    code, out, _ = _month(capsys, "verify", MONTH, *closed["where"])
    assert code == 1
    assert "archive wanli/ptmon-2026-11-01.jsonl.gz：已被改动" in out and "DIFFERENT" in out
    day.write_bytes(original)

    a = closed["dirs"]["a"] / "ledger.sqlite"
    with sqlite3.connect(a) as db:
        db.execute("UPDATE hours SET online = online - 1 WHERE street = 'taopu' AND online > 0 "
                   "AND hour = (SELECT min(hour) FROM hours)")
    code, out, _ = _month(capsys, "verify", MONTH, *closed["where"])
    assert code == 1
    assert "partition changzheng+taopu's ledger" in out and "changed since the closing" in out
    hint = next(line for line in out.splitlines() if "partition changzheng+taopu's ledger" in line).split("`")[1]
    assert main(shlex.split(hint)[1:]) == 1  # as printed: the partition's ledger against its archive, DIFFERENT
    assert f"ledger verify {MONTH}: {a} against the archive" in capsys.readouterr().out
    assert "FAIL  partition wanli" not in out
    code, out, _ = _month(capsys, "status", MONTH, *closed["where"])
    assert code == 0 and "the ledger's rows of the month changed since the closing" in out


def test_a_restatement_of_partitions_seals_a_new_version_in_the_seal_ledger(collected, closed, capsys) -> None:
    """Test that an exemption recorded in one partition's ledger after the closing shows in `month status` and is
    sealed by `month restate` as 第 2 版 in the seal ledger, which then verifies."""
    b = closed["dirs"]["b"]
    assert main(["exempt", "add", "--ledger", str(b / "ledger.sqlite"), "--street", "wanli", "--from",
                 "2026-11-01T00:50", "--to", "2026-11-01T01:40", "--reason", "网关检修", "--approver", "王工"]) == 0
    capsys.readouterr()
    code, out, _ = _month(capsys, "status", MONTH, *closed["where"])
    assert code == 0 and "[豁免 exemptions]" in out
    hint = next(line for line in out.splitlines() if "to seal this as a new version" in line).split("`")[1].split()
    a = closed["dirs"]["a"]  # the command finds the partitioned month again, as the operator gave it
    assert sorted(hint[hint.index("--ledger") + 1 : hint.index("--archive")]) == [str(a / "ledger.sqlite"),
                                                                                 str(b / "ledger.sqlite")]
    assert sorted(hint[hint.index("--archive") + 1 : hint.index("--seal-ledger")]) == [str(a / "archive"), str(b / "archive")]
    assert hint[hint.index("--seal-ledger") + 1] == str(closed["seal"])
    code, out, err = _month(capsys, "restate", MONTH, "--reason", "网关检修豁免", "--by", "李四", *closed["where"])
    assert code == 0, err
    versions = _sealed(closed["seal"])
    assert all(doc["version"] == 2 and len(doc["inputs"]["exemptions"]) == 1 for doc in versions.values())
    code, out, err = _month(capsys, "verify", MONTH, *closed["where"])
    assert code == 0, out + err


def test_a_partitions_ledger_takes_exemptions_of_its_own_streets_only(collected, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that an exemption of another partition's street, or of a device there, is refused by a partition's
    ledger (it would count nowhere: those devices are not in its registry rows) and names the owner; its own
    street's is recorded."""
    b = _copy(collected, tmp_path, "b")["b"] / "ledger.sqlite"
    before = b.read_bytes()
    window = ["--from", "2026-11-01T00:50", "--to", "2026-11-01T01:40", "--reason", "检修", "--approver", "王工"]
    device = next(r.split(",")[0] for r in collected["registry"].read_text(encoding="utf-8").splitlines()
                  if ",taopu," in r)
    for target in (["--street", "taopu"], ["--device", device, "--registry", str(collected["registry"])]):
        code = main(["exempt", "add", "--ledger", str(b), *target, *window])
        err = capsys.readouterr().err
        assert code == 2 and f"{target[1]!r} is on street taopu, which the ledger {b} does not own" in err, err
        assert "record the exemption in the ledger of the partition that owns the street" in err
    assert b.read_bytes() == before
    assert main(["exempt", "add", "--ledger", str(b), "--street", "wanli", *window]) == 0


@pytest.mark.parametrize("case", ["overlap", "incomplete", "mixed-rules", "lone", "no-seal-ledger", "collector-ledger",
                                  "partition-collector-running", "district-ledger-with-seal-ledger"])
def test_partitions_that_do_not_make_the_district_are_refused(collected, tmp_path, capsys, case) -> None:
    """Test that `month close` refuses, with the reason, partitions that overlap, miss a street or ran with other
    rules, one partition's ledger alone, partitions without a seal ledger, a collector's ledger as the seal ledger,
    and a month a partition's collector is still writing; nothing is sealed."""
    dirs = _copy(collected, tmp_path, "all", "a", "b")
    retag = {"mixed-rules": ("b", {"rules_version": "0123456789abcdef"}), "incomplete": ("a", {"streets": ["changzheng"]})}
    if case in retag:
        name, change = retag[case]
        doc = {**json.loads((dirs[name] / "archive" / PARTITION_FILE).read_text()), **change}
        (dirs[name] / "archive" / PARTITION_FILE).write_text(json.dumps(doc))
        with sqlite3.connect(dirs[name] / "ledger.sqlite") as db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'partition'", (json.dumps(doc),))
        for day_file in (dirs[name] / "archive").glob("ptmon-*.jsonl.gz"):  # files written before they named their
            write_archive(day_file, [r for r in ArchiveReader([day_file]) if r[1] != PARTITION_TOPIC])  # partition
    seal = tmp_path / "seals.sqlite"
    sets = {"overlap": [dirs["a"], dirs["b"], dirs["all"]], "incomplete": [dirs["a"], dirs["b"]], "lone": [dirs["b"]],
            "mixed-rules": [dirs["a"], dirs["b"]], "no-seal-ledger": [dirs["a"], dirs["b"]],
            "collector-ledger": [dirs["a"], dirs["b"]], "partition-collector-running": [dirs["a"], dirs["b"]],
            "district-ledger-with-seal-ledger": [dirs["all"]]}[case]
    seal_args = {"no-seal-ledger": [], "lone": [], "collector-ledger": ["--seal-ledger", str(dirs["all"] / "ledger.sqlite")]
                 }.get(case, ["--seal-ledger", str(seal)])
    reason = {"overlap": "street changzheng is in two partitions", "incomplete": "street(s) taopu in no partition",
              "mixed-rules": "mixed rules versions", "lone": "is partition wanli's ledger",
              "no-seal-ledger": "give --seal-ledger FILE", "collector-ledger": "holds a collector's data",
              "partition-collector-running": f"a collector on {dirs['b']} is still writing 2026-11",
              "district-ledger-with-seal-ledger": "is a whole-district collector's ledger, not a partition's"}[case]
    lock = ProcessLock(dirs["b"] / LOCK_NAME, "test")  # b's collector runs (it has written nothing after the month)
    if case == "partition-collector-running":
        lock.acquire()
    try:
        code, _, err = _month(capsys, "close", MONTH, "--by", "张三", "--accept-gaps", *_where(collected, *sets),
                              *seal_args)
    finally:
        lock.release()
    assert code == 2, err
    assert reason in err, err
    if case == "lone":
        assert "changzheng, taopu are in other partitions" in err and "--seal-ledger" in err
    assert not seal.exists() or not _sealed(seal)
    with Ledger(dirs["all"] / "ledger.sqlite", readonly=True) as ledger:
        assert not closings(ledger) and ledger.has_hours()


def test_archive_records_added_to_a_partition_are_a_restatement_from_every_partitions_archive(collected, closed,
                                                                                              capsys) -> None:
    """Test that a day file of the month added to one partition's archive after the closing shows in `month status`
    as an archive change that moves the money, that `month restate` seals it (recomputed from both partitions'
    archives, each with its own registry rows) as 第 2 版 naming the new file, and that the month then verifies."""
    rules = load_rules(collected["rules"])
    wanli = restrict_registry(load_registry(collected["registry"], rules), ["wanli"])
    day = (T0 + 86_400) * US_PER_S  # 2 Nov: b's collector came back for ten minutes
    write_archive(closed["dirs"]["b"] / "archive" / "ptmon-2026-11-02.jsonl.gz",
                  list(iter_records(wanli, rules, day, day + 600 * US_PER_S, Scenario(seed=3))))
    code, out, _ = _month(capsys, "status", MONTH, *closed["where"])
    assert code == 0 and "[报文存档 archive]" in out and "wanli/ptmon-2026-11-02.jsonl.gz：结账后新增的文件" in out, out
    code, out, err = _month(capsys, "restate", MONTH, "--reason", "万里补传", "--by", "李四", "--accept-gaps",
                            *closed["where"])
    assert code == 0, err
    docs = _sealed(closed["seal"])
    assert {doc["version"] for doc in docs.values()} == {2}
    moved = [(c["what"], m["street"]) for doc in docs.values() for c in doc["changes"] for m in c["money"]]
    assert ("archive", "wanli") in moved and {street for _, street in moved} <= {"wanli", "district"}  # b's street only
    assert all("wanli/ptmon-2026-11-02.jsonl.gz" in [m["name"] for m in doc["inputs"]["archive"]] for doc in docs.values())
    code, out, err = _month(capsys, "verify", MONTH, *closed["where"])
    assert code == 0, out + err


def test_the_seal_ledger_takes_no_exemption_and_is_not_taken_for_a_collectors_ledger(collected, closed,
                                                                                   capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that an exemption recorded in the seal ledger (whose rows the next close or restatement replaces with the
    partitions', so it would vanish there) is refused and points to the partition's ledger; that verify without the
    seal ledger (deleted, or a directory given) is an error, not "nothing sealed, OK"; and that the seal ledger given
    as a plain --ledger is named as such."""
    seal = closed["seal"]
    before = seal.read_bytes()
    code = main(["exempt", "add", "--ledger", str(seal), "--street", "wanli", "--from", "2026-11-01",
                 "--to", "2026-11-02", "--reason", "r", "--approver", "a"])
    assert code == 2
    assert "seal ledger of a partitioned deployment" in capsys.readouterr().err
    assert seal.read_bytes() == before
    assert main(["exempt", "revoke", "1", "--ledger", str(seal), "--by", "b", "--reason", "r"]) == 2
    assert "record the revocation in the ledger of the partition" in capsys.readouterr().err

    for command in ("rebuild", "verify"):
        code = main(["ledger", command, "--month", MONTH, "--ledger", str(seal), "--archive",
                     str(closed["dirs"]["all"] / "archive"), "--registry", str(collected["registry"]), "--rules",
                     str(collected["rules"])])
        assert code == 2
        assert f"{command} each partition's ledger against its own archive" in capsys.readouterr().err
    assert seal.read_bytes() == before

    where = closed["where"][:-2]
    code, _, err = _month(capsys, "verify", MONTH, *where, "--seal-ledger", str(seal.parent))
    assert code == 2 and "is not a file" in err
    code, _, err = _month(capsys, "verify", MONTH, *where, "--seal-ledger", str(seal.parent / "typo.sqlite"))
    assert code == 2 and "seal ledger not found" in err

    plain = ["--registry", str(collected["registry"]), "--rules", str(collected["rules"]), "--ledger", str(seal),
             "--archive", str(closed["dirs"]["all"] / "archive")]
    code, _, err = _month(capsys, "verify", MONTH, *plain)
    assert code == 2 and f"{seal} is the seal ledger of a partitioned deployment: give every partition's" in err


def test_a_full_disk_while_sealing_into_the_seal_ledger_is_one_line(collected, tmp_path, monkeypatch,
                                                                    capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that SQLite's "database or disk is full" raised while the partitions' merged rows are written into the seal
    ledger with the seals (the test data is too small to fill a capped file, so the write's first statement raises
    it) is the one-line full-disk message with exit status 2, not a traceback, and leaves no seal ledger behind (a
    first close) or the seal ledger as it was (a later one)."""
    import ptmon.month.parts as parts

    dirs = _copy(collected, tmp_path, "a", "b")
    seal = tmp_path / "seals.sqlite"
    where = [*_where(collected, dirs["a"], dirs["b"]), "--seal-ledger", str(seal)]

    def full(merged, db):  # type: ignore[no-untyped-def]
        db.execute("DELETE FROM hours")
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as patch:
        patch.setattr(parts, "write_merged", full)
        code, _, err = _month(capsys, "close", MONTH, "--by", "张三", "--accept-gaps", *where)
    assert code == 2
    assert "sealing the partitions' merged month into the seal ledger: database or disk is full" in err
    assert "Traceback" not in err
    assert sorted(tmp_path.iterdir()) == sorted(dirs.values())  # no seal ledger, nothing left beside it

    code, _, err = _month(capsys, "close", MONTH, "--by", "张三", "--accept-gaps", "--contract", "iot", *where)
    assert code == 0, err
    before = seal.read_bytes()
    monkeypatch.setattr(parts, "write_merged", full)
    code, _, err = _month(capsys, "close", MONTH, "--by", "张三", "--accept-gaps", "--contract", "cam", *where)
    assert code == 2 and "database or disk is full" in err
    assert seal.read_bytes() == before
    with Ledger(seal, readonly=True) as ledger:
        assert ledger.has_hours() and [c.contract for c in closings(ledger)] == ["iot"]
