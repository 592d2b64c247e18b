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
        with sqlite3.connect(dirs["a"] / "ledger.sqlite") as db:
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
