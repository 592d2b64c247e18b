"""Ledgers on read-only media: a reviewer who signs the acceptance report works from a copy of the
month (an archived, signed month; a mounted backup) in a directory they cannot write.

Every test runs ptmon as a separate process that really cannot write there (tests/readonly.py:
``chmod a-w`` without root's override, or a read-only bind mount), against real SQLite files in WAL
mode: the read-only commands read the ledger where it is, creating and changing nothing beside it;
the commands that write refuse in one line naming the ledger.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ptmon.cli import main
from ptmon.ledger.store import Ledger
from ptmon.timebase import parse_instant

from . import month_data as md
from .conftest import write_two_street_registry
from .readonly import HOWS, files_under, make_read_only, make_writable, require, run, unprivileged
from .test_month_close import CLOSE, LATER, Month, _copy, _late_data_arrives

every_way = pytest.mark.parametrize("how", HOWS)


@pytest.fixture
def read_only(tmp_path: Path):  # type: ignore[no-untyped-def]
    """make(dirs) makes them read-only for the ptmon processes run(args) starts; both undone at the end."""
    made: list[Path] = []
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()

    class ReadOnly:
        def make(self, how: str, *dirs: Path) -> None:
            require(how)
            self.how, self.dirs = how, list(dirs)
            made.extend(dirs)
            self.before = files_under(dirs)
            make_read_only(how, dirs)

        def run(self, *args: str) -> Any:
            return run(self.how, self.dirs, args, tmpdir)

        def unchanged(self) -> bool:
            """Nothing created, changed or left behind: not beside the ledger, not in the temporary directory."""
            return files_under(self.dirs) == self.before and not list(tmpdir.iterdir())

    yield ReadOnly()
    make_writable(made)


def _refused(done: Any, ledger: Path, reason: str) -> None:
    """Exit status 2 and one line naming the ledger and saying it is read-only: never a traceback."""
    assert done.code == 2, done.out + done.err
    assert "Traceback" not in done.err
    assert done.errors() == [done.errors()[0]] and done.errors()[0].startswith(
        f"ptmon: error: {ledger}: the ledger is read-only ({reason}"), done.err


def _reason(how: str, directory: Path) -> str:
    return f"{directory} is on a read-only file system" if how == "mount" else "the file cannot be written"


def _without_timing(text: str) -> list[str]:
    return [line for line in text.splitlines() if "analysed in" not in line]


@every_way
def test_a_closed_month_on_read_only_media_is_read_where_it_is(closed: Month, tmp_path: Path, read_only, how,
                                                               capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that the report, month status and verify, ledger verify and the exemptions list of a closed month read
    its ledger in a directory that cannot be written, giving the report's very bytes, and that they create and
    change nothing there (no -wal, no -shm, no scratch ledger) nor leave anything in the temporary directory."""
    def report(out: Path, run: Any) -> dict[str, bytes]:
        out.mkdir()
        assert run(["report", "--month", md.MONTH, "--config", str(closed.config), "--out", str(out), "--format",
                    "csv,html,xlsx"]) == 0
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}

    expected = report(tmp_path / "writable", main)
    capsys.readouterr()
    read_only.make(how, closed.root)
    assert report(tmp_path / "read-only", lambda args: read_only.run(*args).code) == expected

    status = read_only.run("month", "status", md.MONTH, "--config", str(closed.config), "--now", LATER)
    assert status.code == 0 and "nothing changed since 第 1 版" in status.out, status.err
    verify = read_only.run("month", "verify", md.MONTH, "--config", str(closed.config))
    assert verify.code == 0 and "OK: every seal matches the ledger and the files" in verify.out, verify.out + verify.err
    ledger = read_only.run("ledger", "verify", "--month", md.MONTH, "--config", str(closed.config))
    assert ledger.code == 0 and "OK: the ledger's month equals the archive's" in ledger.out, ledger.out + ledger.err
    listed = read_only.run("exempt", "--config", str(closed.config), "list")
    assert listed.code == 0 and listed.out == "no exemptions\n", listed.err
    assert read_only.unchanged()


@every_way
def test_commands_that_write_refuse_a_read_only_ledger_in_one_line(pristine: Path, tmp_path: Path, read_only,
                                                                  how) -> None:  # type: ignore[no-untyped-def]
    """Test that month close and restate, exempt add and revoke, ledger rebuild and the collector (and its
    --check-config) refuse a ledger in a directory that cannot be written with exit status 2 and one line naming
    it and saying it is read-only (no traceback), and write nothing."""
    month = _copy(pristine, tmp_path / "m")
    config = str(month.config)
    read_only.make(how, month.root)
    for args in (["month", "close", md.MONTH, "--by", "王五", "--config", config, "--now", CLOSE],
                 ["month", "restate", md.MONTH, "--by", "王五", "--reason", "更正", "--config", config, "--now", LATER],
                 ["exempt", "--config", config, "add", "--device", "changzheng-cam0", "--from", "2026-11-10", "--to",
                  "2026-11-12", "--reason", "小区改造断电", "--approver", "李四"],
                 ["exempt", "--config", config, "revoke", "1", "--by", "王五", "--reason", "撤销"],
                 ["ledger", "rebuild", "--month", md.MONTH, "--config", config],
                 ["collect", "--config", config],
                 ["collect", "--config", config, "--check-config"]):
        _refused(read_only.run(*args), month.ledger, _reason(how, month.ledger.parent))
    assert read_only.unchanged()


@pytest.mark.parametrize("how", ["permissions"])  # a month's recomputation, twice: one way is enough
def test_a_changed_month_is_recomputed_outside_its_read_only_directory(closed: Month, tmp_path: Path, read_only, how,
                                                                       capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that `month status` of a closed month whose archive, exemptions and registry changed since, which
    recomputes the month from the archive into a scratch ledger, says on read-only media exactly what it says where
    it can write (the scratch ledger goes to the temporary directory and is deleted)."""
    _late_data_arrives(closed)
    capsys.readouterr()
    assert main(closed.month("status", md.MONTH, now=LATER)) == 0
    expected = capsys.readouterr().out
    assert "[报文存档 archive]" in expected  # the month was recomputed
    read_only.make(how, closed.root)
    done = read_only.run(*closed.month("status", md.MONTH, now=LATER))
    assert done.code == 0, done.err
    assert _without_timing(done.out) == _without_timing(expected)
    assert read_only.unchanged()


# --- a ledger whose last writes are still in its -wal -------------------------------------------------

def _ledger_with_writes_in_its_wal(path: Path) -> None:
    """One exemption checkpointed into the file, a second one only in the -wal: the collector (here a child
    process) killed before SQLite moved it into the file."""
    with Ledger(path) as ledger:
        ledger.add_exemption(scope="device", target="changzheng-cam0", start=parse_instant("2026-11-10T00:00"),
                             end=parse_instant("2026-11-11T00:00"), reason="检修一", approver="李四")
    child = ("import os, sys\nfrom ptmon.ledger.store import Ledger\nledger = Ledger(sys.argv[1])\n"
             "ledger.db.execute('PRAGMA wal_autocheckpoint = 0')\n"
             "ledger.add_exemption(scope='street', target='taopu', start=1, end=2, reason='检修二', approver='李四')\n"
             "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", child, str(path)], check=True, timeout=60)


@pytest.mark.parametrize("shm", [True, False], ids=["with-its-shm", "without-shm"])
@every_way
def test_a_read_only_ledger_whose_last_writes_are_in_its_wal_is_read_whole(tmp_path: Path, read_only, how,
                                                                           shm: bool) -> None:  # type: ignore[no-untyped-def]
    """Test that a read-only ledger whose last transaction is only in its -wal (a killed collector; a copy of a live
    ledger), with or without the -shm index beside it, is read with that transaction, which an immutable open would
    miss, and that nothing is created beside it (no -shm) nor left in the temporary directory."""
    path = tmp_path / "archived" / "ledger.sqlite"
    _ledger_with_writes_in_its_wal(path)
    wal, index = path.with_name("ledger.sqlite-wal"), path.with_name("ledger.sqlite-shm")
    assert wal.stat().st_size > 0 and index.exists()
    if not shm:
        index.unlink()
    immutable = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    assert [r for (r,) in immutable.execute("SELECT reason FROM exemptions")] == ["检修一"]  # the -wal's is missed
    immutable.close()

    read_only.make(how, path.parent)
    listed = read_only.run("exempt", "--ledger", str(path), "list")
    assert listed.code == 0, listed.err
    assert "检修一" in listed.out and "检修二" in listed.out
    assert ("reading them from a private copy" in listed.err) == (not shm), listed.err
    assert index.exists() == shm and sorted(os.listdir(path.parent)) == sorted(
        ["ledger.sqlite", "ledger.sqlite-wal", *(["ledger.sqlite-shm"] if shm else [])])
    refused = read_only.run("exempt", "--ledger", str(path), "revoke", "1", "--by", "王五", "--reason", "撤销")
    _refused(refused, path, _reason(how, path.parent) if how == "mount" else "the file cannot be written")
    assert read_only.unchanged()


WRITER = """
import sys
from ptmon.ledger.store import Ledger
ledger = Ledger(sys.argv[1])
for reason in ("检修二", "检修三"):
    ledger.add_exemption(scope="street", target="taopu", start=1, end=2, reason=reason, approver="李四")
    print(reason, flush=True)
    sys.stdin.readline()
ledger.close()
"""


@every_way
def test_a_ledger_its_owner_still_writes_is_read_with_each_commit(tmp_path: Path, read_only, how) -> None:  # type: ignore[no-untyped-def]
    """Test that a ledger the reviewer cannot write, which its owner's process (a collector) keeps open and writes,
    is read through its -shm index with every transaction committed so far: not a stale immutable image."""
    path = tmp_path / "live" / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.add_exemption(scope="street", target="taopu", start=1, end=2, reason="检修一", approver="李四")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline() == "检修二\n"
        read_only.make(how, path.parent)
        first = read_only.run("exempt", "--ledger", str(path), "list")
        writer.stdin.write("\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == "检修三\n"
        second = read_only.run("exempt", "--ledger", str(path), "list")
        writer.stdin.write("\n")
        writer.stdin.flush()
        assert writer.wait(timeout=60) == 0
    finally:
        writer.kill()
    assert first.code == 0 and second.code == 0, first.err + second.err
    assert [r for r in ("检修一", "检修二", "检修三") if r in first.out] == ["检修一", "检修二"]
    assert [r for r in ("检修一", "检修二", "检修三") if r in second.out] == ["检修一", "检修二", "检修三"]
    assert os.listdir(path.parent) == ["ledger.sqlite"]  # the owner's last close removed its -wal and -shm
    assert not list((tmp_path / "tmpdir").iterdir())


@every_way
def test_a_ledger_closed_cleanly_in_a_read_only_directory_is_read_without_a_wal(tmp_path: Path, read_only,
                                                                                how) -> None:  # type: ignore[no-untyped-def]
    """Test that a cleanly closed ledger (no -wal, no -shm) alone in a read-only directory is read, with neither
    file created beside it, and that a new ledger cannot be made in a read-only directory (one line)."""
    path = tmp_path / "archived" / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.add_exemption(scope="street", target="taopu", start=1, end=2, reason="检修一", approver="李四")
    assert os.listdir(path.parent) == ["ledger.sqlite"]
    read_only.make(how, path.parent)
    listed = read_only.run("exempt", "--ledger", str(path), "list")
    assert listed.code == 0 and "检修一" in listed.out, listed.err
    assert os.listdir(path.parent) == ["ledger.sqlite"]
    new = path.with_name("new.sqlite")
    refused = read_only.run("exempt", "--ledger", str(new), "add", "--street", "taopu", "--from", "2026-11-10",
                            "--to", "2026-11-12", "--reason", "检修", "--approver", "李四")
    reason = _reason(how, path.parent) if how == "mount" else f"its directory {path.parent} cannot be written"
    _refused(refused, new, reason)
    assert read_only.unchanged()



# --- a partitioned deployment's seal ledger --------------------------------------------------------

@every_way
def test_a_partitioned_months_seal_ledger_on_read_only_media(collected, tmp_path: Path, read_only, how,
                                                            capsys) -> None:  # type: ignore[no-untyped-def]
    """Test that a partitioned month closed into its seal ledger, with the seal ledger and the partitions' ledgers
    and archives in directories that cannot be written, renders its sealed report from the seal ledger (the same
    bytes), shows its status and verifies; that a close into it, or into a new seal ledger there, is refused in one
    line naming it; and that nothing is created or changed there."""
    from . import test_month_partitions as tp

    dirs = tp._copy(collected, tmp_path, "a", "b")
    seal = tmp_path / "district" / "seals.sqlite"
    where = [*tp._where(collected, dirs["a"], dirs["b"]), "--seal-ledger", str(seal)]
    code, _, err = tp._month(capsys, "close", tp.MONTH, "--by", "张三", "--accept-gaps", *where)
    assert code == 0, err
    report = ["report", "--month", tp.MONTH, "--format", "csv,html", "--registry", str(collected["registry"]),
              "--rules", str(collected["rules"]), "--ledger", str(seal)]
    assert main([*report, "--out", str(tmp_path / "writable")]) == 0
    capsys.readouterr()

    read_only.make(how, dirs["a"], dirs["b"], seal.parent)
    (tmp_path / "read-only").mkdir()
    done = read_only.run(*report, "--out", str(tmp_path / "read-only"))
    assert done.code == 0, done.err
    assert {p.name: p.read_bytes() for p in (tmp_path / "read-only").iterdir()} == {
        p.name: p.read_bytes() for p in (tmp_path / "writable").iterdir()}
    status = read_only.run("month", "status", tp.MONTH, *where, "--now", tp.NOW)
    assert status.code == 0 and "nothing changed since 第 1 版" in status.out, status.err
    verify = read_only.run("month", "verify", tp.MONTH, *where, "--now", tp.NOW)
    assert verify.code == 0 and "OK: every seal matches" in verify.out, verify.out + verify.err

    restate = ["month", "restate", tp.MONTH, "--by", "王五", "--reason", "更正", "--accept-gaps", "--now", tp.NOW]
    _refused(read_only.run(*restate, *where), seal, _reason(how, seal.parent) if how == "mount"
             else "the file cannot be written")
    new_seal = seal.with_name("other.sqlite")
    _refused(read_only.run("month", "close", tp.MONTH, "--by", "王五", "--accept-gaps", "--now", tp.NOW,
                           *where[:-1], str(new_seal)),
             new_seal, _reason(how, seal.parent) if how == "mount" else f"its directory {seal.parent} cannot be written")
    assert read_only.unchanged()


@every_way
def test_check_config_refuses_an_archive_directory_that_cannot_be_written(pristine: Path, tmp_path: Path, read_only,
                                                                          how) -> None:  # type: ignore[no-untyped-def]
    """Test that `collect --check-config` refuses, in one line naming it (exit 2), an archive directory the
    collector could not write: started so, every message would wait unacknowledged for the storage to heal."""
    month = _copy(pristine, tmp_path / "m")
    read_only.make(how, month.archive)
    done = read_only.run("collect", "--config", str(month.config), "--check-config")
    assert done.code == 2, done.out + done.err
    assert "Traceback" not in done.err and "config OK" not in done.out
    assert done.errors() == [done.errors()[0]] and done.errors()[0].startswith(
        f"ptmon: error: archive {month.archive}: cannot write in {month.archive}: "), done.err
    assert read_only.unchanged()


def test_a_ledger_ptmon_may_not_read_is_said_as_such(tmp_path: Path) -> None:
    """Test that a ledger ptmon may not read (mode 000) is 'cannot read the ledger: Permission
    denied' for commands that read it and those that write it, not SQLite's "unable to open
    database file" (which reads as damage) or an advice to write on a copy."""
    require("permissions")
    ledger = tmp_path / "ledger.sqlite"
    with Ledger(ledger):
        pass
    ledger.chmod(0)
    said = f"ptmon: error: {ledger}: cannot read the ledger: Permission denied"
    try:
        for args in (["exempt", "list", "--ledger", str(ledger)],
                     ["exempt", "add", "--street", "wanli", "--from", "2026-11-02", "--to", "2026-11-03", "--reason",
                      "r", "--approver", "a", "--ledger", str(ledger)],
                     ["report", "--month", "2026-11", "--ledger", str(ledger), "--out", str(tmp_path / "out"),
                      "--registry", str(write_two_street_registry(tmp_path / "registry.csv"))]):
            done = run("permissions", [], args, tmp_path)
            assert (done.code, done.err.strip().splitlines()[-1]) == (2, said), (args, done.err)
    finally:
        ledger.chmod(0o644)


def test_a_lock_file_ptmon_may_not_open_is_not_said_to_be_missing(tmp_path: Path) -> None:
    """Test that a ledger's lock file that exists but may not be opened (mode 000) is 'cannot open'
    it, and a lock file that cannot be made 'cannot create' it: the first sends the operator to
    the file's mode, the second to the directory (named when it may not even be searched); and
    that a command asking whether a collector holds it says what it was asking."""
    require("permissions")
    lock = tmp_path / "ledger.sqlite.lock"
    lock.touch()
    lock.chmod(0)
    shut = tmp_path / "shut"
    shut.mkdir()
    shut.chmod(0o555)
    closed = tmp_path / "closed"
    closed.mkdir()
    closed.chmod(0)
    take = ("import sys; from pathlib import Path; from ptmon.errors import PtmonError; from ptmon.lock import ProcessLock\n"
            "try:\n    ProcessLock(Path(sys.argv[1]), 'ledger L').acquire()\n"
            "except PtmonError as exc:\n    print(exc)")
    try:
        for path, said in ((lock, f"ledger L: cannot open {lock}: Permission denied"),
                           (shut / "ledger.sqlite.lock", f"ledger L: cannot create {shut / 'ledger.sqlite.lock'}: "
                                                         "Permission denied"),
                           (closed / "ledger.sqlite.lock", f"ledger L: cannot create {closed / 'ledger.sqlite.lock'}: "
                                                           f"Permission denied (ptmon may not search the directory {closed})")):
            done = subprocess.run(unprivileged([sys.executable, "-c", take, str(path)]), capture_output=True, text=True,
                                  timeout=60)
            assert (done.returncode, done.stdout.strip()) == (0, said), done.stderr
        ask = ("import sys; from pathlib import Path; from ptmon.errors import PtmonError; from ptmon.lock import "
               "collector_running\ntry:\n    print(collector_running(ledger=Path(sys.argv[1])))\n"
               "except PtmonError as exc:\n    print(exc)")
        asked = subprocess.run(unprivileged([sys.executable, "-c", ask, str(tmp_path / "ledger.sqlite")]),
                               capture_output=True, text=True, timeout=60)
        assert (asked.returncode, asked.stdout.strip()) == (0, "cannot tell whether a collector is running: cannot "
                                                              f"open {lock}: Permission denied"), asked.stderr
    finally:
        lock.chmod(0o644)
        shut.chmod(0o755)
        closed.chmod(0o755)
