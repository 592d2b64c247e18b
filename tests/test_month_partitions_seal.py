"""The seal ledger of a partitioned month is written only when a close or restatement seals: a
refusal, a command killed before it sealed, or one that fails while sealing leaves it exactly as it
was (or absent), and seals another command committed meanwhile stay.

The data is tests/partition_data.py's (the ``collected`` fixture); the helpers are
tests/test_month_partitions.py's."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from ptmon.archive import ArchiveReader, write_archive
from ptmon.cli import main
from ptmon.ledger.closing import closings
from ptmon.ledger.store import Ledger

from .test_month_partitions import MONTH, _copy, _month, _sealed, _where

EXEMPT = ["--street", "wanli", "--from", "2026-11-01T00:50", "--to", "2026-11-01T01:40", "--reason", "网关检修",
          "--approver", "王工"]


@pytest.fixture
def district(collected, tmp_path) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Copies of the two partitions, and where their seal ledger goes (a directory not made yet)."""
    dirs = _copy(collected, tmp_path, "a", "b")
    seal = tmp_path / "district" / "seals.sqlite"
    return {"dirs": dirs, "seal": seal, "where": [*_where(collected, dirs["a"], dirs["b"]), "--seal-ledger", str(seal)]}


def _close(capsys, district, *args: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    return _month(capsys, "close", MONTH, "--by", "张三", *args, *district["where"])


def _files(seal: Path) -> dict[str, bytes]:
    """The seal ledger's directory, file by file: its content (a WAL with frames, a temporary file left over show
    too; not the shared-memory index, nor the empty WAL, that a reader of a WAL ledger leaves)."""
    if not seal.parent.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(seal.parent.iterdir()) if p.is_file()
            and not p.name.endswith("-shm") and not (p.name.endswith("-wal") and p.stat().st_size == 0)}


@pytest.mark.parametrize("case", ["first-close-gaps", "close-differs-from-archive", "restate-tampered-archive"])
def test_a_refused_close_or_restatement_leaves_the_seal_ledger_as_it_was(district, capsys, case) -> None:
    """Test that a partitioned `month close` refused for monitoring gaps without --accept-gaps creates no seal ledger
    (nor its directory); that a close refused because a partition's ledger differs from its archive, after another
    contract was closed and an exemption recorded in a partition, leaves the seal ledger byte for byte as it was, its
    rows still those the first contract's seal covers; and so does a restatement refused for an altered archive."""
    seal, dirs = district["seal"], district["dirs"]
    if case == "first-close-gaps":
        code, _, err = _close(capsys, district)
        assert code == 2 and "close with --accept-gaps once they have" in err, err
        assert not seal.parent.exists()
        return
    contract = ["--contract", "iot"] if case == "close-differs-from-archive" else []
    code, _, err = _close(capsys, district, "--accept-gaps", *contract)
    assert code == 0, err
    before = _files(seal)
    assert main(["exempt", "add", "--ledger", str(dirs["b"] / "ledger.sqlite"), *EXEMPT]) == 0
    capsys.readouterr()
    if case == "close-differs-from-archive":
        with closing(sqlite3.connect(dirs["a"] / "ledger.sqlite")) as db, db:
            db.execute("UPDATE hours SET online = online - 1 WHERE street = 'taopu' AND contract = 'cam' AND online > 0 "
                       "AND hour = (SELECT min(hour) FROM hours)")
        code, _, err = _close(capsys, district, "--accept-gaps", "--contract", "cam")
        assert code == 2 and "differs from its recomputation from the archive" in err, err
    else:
        day = dirs["a"] / "archive" / "ptmon-2026-11-01.jsonl.gz"
        write_archive(day, list(ArchiveReader([day]))[:-1])
        code, _, err = _month(capsys, "restate", MONTH, "--reason", "网关检修豁免", "--by", "李四", *district["where"])
        assert code == 2 and "sealed archive files of 2026-11 were altered" in err, err
    assert _files(seal) == before
    with Ledger(seal, readonly=True) as ledger:
        assert ledger.exemptions() == []  # the partition's new exemption is in no seal, so not in the seal ledger
        assert {(c.contract, c.version) for c in closings(ledger)} == (
            {("iot", 1)} if contract else {("iot", 1), ("cam", 1)})


def test_a_close_sealed_meanwhile_by_another_command_stays(district, monkeypatch, capsys) -> None:
    """Test that a contract's close committed by another command while this one ran stays in the seal ledger whether
    this command is then refused or seals: refused (the other close ran from inside this one's checks, after its
    merge), it leaves the seal ledger as the other command left it; at its first close, finding the seal ledger that
    the other command made between this one's check for it and its linking the new file into place, it seals into
    that one, never over it, and leaves no temporary file."""
    import ptmon.month.close as close
    import ptmon.month.parts as parts

    seal = district["seal"]
    left: list[dict[str, bytes]] = []
    started: list[bool] = []

    def other_close() -> None:
        started.append(True)
        assert main(["month", "close", MONTH, "--by", "王五", "--accept-gaps", "--contract", "iot",
                     "--now", "2026-12-05T00:00", *district["where"]]) == 0
        left.append(_files(seal))

    figures = close.month_figures

    def meanwhile(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not started:
            other_close()
        return figures(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(close, "month_figures", meanwhile)
        code, _, err = _close(capsys, district, "--contract", "cam")  # refused: gaps not accepted
    assert code == 2 and "--accept-gaps" in err and left
    assert _files(seal) == left[0]
    assert {c: doc["closed_by"] for c, doc in _sealed(seal).items()} == {"iot": "王五"}

    for path in seal.parent.iterdir():
        path.unlink()
    left.clear()
    started.clear()
    seal_new = parts._seal_new

    def raced(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not started:  # this command's first close; the other one's goes straight on
            other_close()
        return seal_new(*args, **kwargs)

    monkeypatch.setattr(parts, "_seal_new", raced)
    code, _, err = _close(capsys, district, "--contract", "cam", "--accept-gaps")
    assert code == 0, err
    assert {c: doc["closed_by"] for c, doc in _sealed(seal).items()} == {"iot": "王五", "cam": "张三"}
    assert [p.name for p in seal.parent.iterdir() if not p.name.startswith("seals.sqlite")] == []  # nothing left


KILLED = """
import os, signal, sys
import ptmon.month.close as close
import ptmon.month.context as context
from ptmon.cli import main

context.wall_clock = lambda: {clock}
def killed(*args, **kwargs):  # the last check before the sealing: the partitions are merged, nothing sealed
    os.kill(os.getpid(), signal.SIGKILL)
close._check_against_archive = killed
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("first", [True, False])
def test_a_close_killed_before_it_sealed_leaves_the_seal_ledger_as_it_was(district, tmp_path, capsys,
                                                                          first) -> None:
    """Test that a partitioned `month close` killed (SIGKILL, in a process of its own) after the partitions were merged
    and every check but the last passed leaves no seal ledger at a first close, and the seal ledger byte for byte as
    it was at a later one; and that the month then closes."""
    from .conftest import T0

    seal = district["seal"]
    if not first:
        code, _, err = _close(capsys, district, "--accept-gaps", "--contract", "iot")
        assert code == 0, err
        assert main(["exempt", "add", "--ledger", str(district["dirs"]["b"] / "ledger.sqlite"), *EXEMPT]) == 0
        capsys.readouterr()
    before = _files(seal)
    script = KILLED.format(clock=T0 * 1_000_000 + 10 * 365 * 86_400 * 1_000_000)
    run = subprocess.run([sys.executable, "-c", script, "month", "close", MONTH, "--by", "张三", "--accept-gaps",
                          "--contract", "cam", "--now", "2026-12-05T00:00", *district["where"]],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert _files(seal) == before
    if first:
        assert not seal.parent.exists()
    code, _, err = _close(capsys, district, "--accept-gaps", "--contract", "cam")
    assert code == 0, err
    assert set(_sealed(seal)) == ({"cam"} if first else {"iot", "cam"})


def _exempt(capsys, ledger: Path, *args: str) -> None:  # type: ignore[no-untyped-def]
    assert main(["exempt", *args, "--ledger", str(ledger)]) == 0
    capsys.readouterr()


def test_a_partitions_exemption_is_shown_with_its_own_number_and_ledger(district, capsys) -> None:
    """Test that `month status` and `month restate` of a partitioned month show beside a merged exemption's number
    (豁免 2) the number it has in its partition's ledger and that ledger (the restatement's seal records the changes in
    the words it always did), and that revoking it by that number there shows as the merged exemption's revocation."""
    a, b = (district["dirs"][n] / "ledger.sqlite" for n in ("a", "b"))
    assert _close(capsys, district, "--accept-gaps")[0] == 0
    _exempt(capsys, a, "add", "--street", "taopu", "--from", "2026-11-01T00:20", "--to", "2026-11-01T00:40",
            "--reason", "停电", "--approver", "王工")
    _exempt(capsys, b, "add", *EXEMPT)
    code, out, _ = _month(capsys, "status", MONTH, "--contract", "cam", *district["where"])
    assert code == 0
    assert f"豁免 1 [partition changzheng+taopu: exemption 1 in {a}] 补登 (recorded)" in out, out
    assert f"豁免 2 [partition wanli: exemption 1 in {b}] 补登 (recorded)" in out, out
    code, out, err = _month(capsys, "restate", MONTH, "--reason", "豁免", "--by", "李四", *district["where"])
    assert code == 0, err
    assert f"changed: 豁免 exemptions: 豁免 1 [partition changzheng+taopu: exemption 1 in {a}]" in out
    sealed = [d for doc in _sealed(district["seal"]).values() for c in doc["changes"] for d in c["details"]]
    assert any(d.startswith("豁免 2 补登 (recorded)") for d in sealed)  # the seal's words as before: no paths
    assert not any("[partition" in d for d in sealed)
    _exempt(capsys, b, "revoke", "1", "--by", "王工", "--reason", "误报")
    code, out, _ = _month(capsys, "status", MONTH, "--contract", "cam", *district["where"])
    assert f"豁免 2 [partition wanli: exemption 1 in {b}] 撤销 (revoked)" in out, out
    assert "豁免 1 [" not in out  # unchanged since 第 2 版


def test_one_exemption_recorded_in_two_partitions_is_listed_once(district, capsys) -> None:
    """Test that one street exemption recorded in two partitions' ledgers (the same street, window, reason and
    approver) is sealed once in a restatement's inputs, with the money of one record, that `month status` names both
    copies, and that revoking one copy lists it apart as revoked and moves no money (the other is still in force).
    `ptmon exempt add` now refuses another partition's street; the copy is written as ledgers from before hold it."""
    a, b = (district["dirs"][n] / "ledger.sqlite" for n in ("a", "b"))
    assert _close(capsys, district, "--accept-gaps")[0] == 0
    _exempt(capsys, b, "add", *EXEMPT)
    code, out, _ = _month(capsys, "status", MONTH, "--contract", "cam", *district["where"])
    once = next(line for line in out.splitlines() if "money:" in line)
    (recorded,) = Ledger(b, readonly=True).exemptions()
    with Ledger(a) as ledger:
        ledger.add_exemption(scope=recorded.scope, target=recorded.target, start=recorded.start, end=recorded.end,
                             reason=recorded.reason, approver=recorded.approver)
    code, out, _ = _month(capsys, "status", MONTH, "--contract", "cam", *district["where"])
    assert code == 0
    assert f"豁免 1 [partition wanli: exemption 1 in {b}; partition changzheng+taopu: exemption 1 in {a}]" in out, out
    assert next(line for line in out.splitlines() if "money:" in line) == once
    code, _, err = _month(capsys, "restate", MONTH, "--reason", "网关检修豁免", "--by", "李四", *district["where"])
    assert code == 0, err
    docs = _sealed(district["seal"])
    assert all(doc["version"] == 2 and [(e["id"], e["target"]) for e in doc["inputs"]["exemptions"]] == [(1, "wanli")]
               for doc in docs.values())
    _exempt(capsys, a, "revoke", "1", "--by", "王工", "--reason", "重复登记")
    code, out, _ = _month(capsys, "status", MONTH, "--contract", "cam", *district["where"])
    assert f"[partition changzheng+taopu: exemption 1 in {a}] 补登 (recorded)" in out and "已撤销" in out, out
    assert "money: no change (0.00)" in out


def test_merged_exemptions_are_one_only_for_the_same_decision_in_other_partitions() -> None:
    """Test that the merge takes copies of one exemption in different partitions' ledgers as one (listed as first
    recorded, with every copy's place), but keeps apart two records of one ledger, copies with another reason, and a
    copy revoked in one ledger only, in the order they were recorded."""
    from ptmon.merge import merged_exemptions

    x, y = Ledger(":memory:"), Ledger(":memory:")
    window = {"scope": "street", "target": "wanli", "start": 10, "end": 20, "approver": "王工"}
    x.add_exemption(**window, reason="检修", created_at=5)  # x1 ─┐ one exemption
    y.add_exemption(**window, reason="检修", created_at=3)  # y1 ─┘ (y's recorded first)
    x.add_exemption(**window, reason="检修", created_at=6)  # x2: a second record in x: kept
    y.add_exemption(**window, reason="停电", created_at=7)  # y2: another reason: kept
    x.add_exemption(**{**window, "target": "taopu"}, reason="检修", created_at=8)  # x3 ─ revoked in x only
    y.add_exemption(**{**window, "target": "taopu"}, reason="检修", created_at=9)  # y3 ─ in force in y
    x.revoke_exemption(3, by="王工", reason="撤销")
    merged = merged_exemptions([x.db, y.db])
    assert [(row[0:2], row[4], row[6], places) for row, places in merged] == [
        (("street", "wanli"), "检修", 3, [(1, 1), (0, 1)]), (("street", "wanli"), "检修", 6, [(0, 2)]),
        (("street", "wanli"), "停电", 7, [(1, 2)]), (("street", "taopu"), "检修", 8, [(0, 3)]),
        (("street", "taopu"), "检修", 9, [(1, 3)])]


def test_an_archive_directory_without_its_partition_tag_is_named_as_such(collected, district, tmp_path,
                                                                         capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that a partition's archive directory without partition.json, given beside the other partitions', is
    refused by `month close`, `report --from-archive` and `replay` as a directory without its tag (not as "street …
    in two partitions"), the month close naming the partition whose ledger has no archive and how to put the tag back;
    and that the month closes once the tag is put back from the partition's ledger as the message says."""
    from ptmon.partition import PARTITION_FILE

    b = district["dirs"]["b"]
    (b / "archive" / PARTITION_FILE).unlink()
    code, _, err = _close(capsys, district, "--accept-gaps")
    assert code == 2
    # its day files say whose they are ($ptmon/partition), so the first one is named with the tag to write back
    assert f"{b / 'archive'} has no partition.json" in err and "in two partitions" not in err, err
    assert "partition wanli's" in err and f"{b / 'archive' / PARTITION_FILE}" in err, err
    assert not district["seal"].parent.exists()
    where = ["--registry", str(collected["registry"]), "--rules", str(collected["rules"])]
    archives = [str(district["dirs"]["a"] / "archive"), str(b / "archive")]
    for command in (["report", "--month", MONTH, "--format", "csv", "--out", str(tmp_path / "out"), *where,
                     "--ledger", str(district["dirs"]["a"] / "ledger.sqlite"), str(b / "ledger.sqlite"),
                     "--from-archive", *archives],
                    ["replay", "--month", MONTH, *where, *archives]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "has no partition.json" in err and "in two partitions" not in err, err

    with closing(sqlite3.connect(b / "ledger.sqlite")) as db:  # the tag put back as the message says
        (b / "archive" / PARTITION_FILE).write_text(
            db.execute("SELECT value FROM meta WHERE key = 'partition'").fetchone()[0] + "\n")
    code, _, err = _close(capsys, district, "--accept-gaps")
    assert code == 0, err
