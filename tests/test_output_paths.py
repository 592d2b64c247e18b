"""Commands that write files refuse, before the work and in one line naming the path and the reason
(exit 2, no traceback), an output they cannot write: on a read-only filesystem, an existing regular
file where a directory is wanted, a directory where a file is wanted, a place like /proc. A write
that fails midway leaves the target as it was. And ``ptmon replay --quiet`` is quiet.

The read-only filesystem is a real one (a tmpfs mounted read-only) when the tests run as root;
otherwise a directory without write permission, which the kernel refuses the same way."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptmon import errors
from ptmon.cli import main
from ptmon.errors import PtmonError
from ptmon.outputs import writing

from . import readonly as unprivileged


@pytest.fixture
def readonly(tmp_path: Path) -> Iterator[Path]:
    """A directory nothing can be written in."""
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() == 0:
        mounted = shutil.which("mount") and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(target)], capture_output=True).returncode == 0
        if not mounted:
            pytest.skip("root without a read-only mount: cannot make an unwritable directory")
        try:
            yield target
        finally:
            subprocess.run(["umount", str(target)], check=True)
    else:
        target.chmod(0o555)
        try:
            yield target
        finally:
            target.chmod(0o755)


def _refused(capsys, args: list[str], *expected: str) -> str:  # type: ignore[no-untyped-def]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, (args, err)
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("ptmon: error:")]
    for text in expected:
        assert text in line, (text, line)
    return line


def test_report_out_that_cannot_be_written_is_refused_before_the_month_is_read(collected, readonly, tmp_path, capsys) -> None:
    """Test that --out on a read-only filesystem, an existing regular file, a path below one, and
    /proc/x are refused in one line naming the path and the reason, and nothing is written."""
    tmp = collected["tmp"]
    plain = tmp_path / "plain"
    plain.write_text("not a directory")
    report = ["report", "--month", "2026-11", "--format", "csv", "--registry", str(collected["registry"]),
              "--rules", str(collected["rules"]), "--ledger", str(tmp / "all" / "ledger.sqlite")]
    for out, reason in ((readonly / "x", "Read-only file system" if os.geteuid() == 0 else "Permission denied"),
                        (plain, "exists and is not a directory"), (plain / "sub", f"{plain} is not a directory"),
                        (Path("/proc/x"), "cannot write in /proc")):
        _refused(capsys, [*report, "--out", str(out)], f"--out {out}:", reason)
        _refused(capsys, [*report, "--out", str(out), "--from-archive", str(tmp / "all" / "archive")], f"--out {out}:")
    assert plain.read_text() == "not a directory" and not list(readonly.iterdir())
    assert main([*report, "--out", str(tmp_path / "new" / "dir")]) == 0  # a directory that can be made still is
    assert (tmp_path / "new" / "dir" / "report-2026-11.csv").is_file()


def test_replay_csv_that_cannot_be_written_is_refused_before_the_replay(collected, readonly, tmp_path, capsys) -> None:
    """Test that replay --csv on a read-only filesystem, in a missing directory, or naming a directory
    is refused in one line (before any archive is read), and a good --csv is written whole."""
    replay = ["replay", str(collected["tmp"] / "all" / "archive"), "--month", "2026-11", "--registry",
              str(collected["registry"]), "--rules", str(collected["rules"]), "--quiet"]
    for csv, reason in ((readonly / "x.csv", f"cannot write in {readonly}"), (tmp_path / "nodir" / "x.csv", "no directory"),
                        (tmp_path, "is a directory")):
        line = _refused(capsys, [*replay, "--csv", str(csv)], f"--csv {csv}:", reason)
        assert "records" not in capsys.readouterr().err, line
    assert not list(readonly.iterdir())
    assert main([*replay, "--csv", str(tmp_path / "k.csv")]) == 0
    assert (tmp_path / "k.csv").read_text().startswith("contract,street,kpi,value")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_other_commands_writing_files_refuse_an_unwritable_path(collected, readonly, capsys) -> None:
    """Test that registry generate --out, demo --workdir, simulate --record and collect --data-dir /
    --kpi-csv (with --check-config too) on a read-only filesystem are refused in one line naming the
    path (the simulator's is not told as a broker it cannot reach)."""
    registry, rules = str(collected["registry"]), str(collected["rules"])
    _refused(capsys, ["registry", "generate", "--rules", rules, "--out", str(readonly / "r.csv")], f"--out {readonly / 'r.csv'}:")
    _refused(capsys, ["demo", "--offline", "--workdir", str(readonly / "d")], f"--workdir {readonly / 'd'}:")
    record = readonly / "s.jsonl.gz"
    line = _refused(capsys, ["simulate", "--registry", registry, "--rules", rules, "--broker", "mqtt://127.0.0.1:1",
                             "--record", str(record), "--duration", "1s"], f"--record {record}:")
    assert "broker" not in line
    _refused(capsys, ["collect", "--registry", registry, "--rules", rules, "--broker", "mqtt://127.0.0.1:1",
                      "--data-dir", str(readonly / "data")], f"data directory {readonly / 'data'}: cannot write in")
    _refused(capsys, ["collect", "--registry", registry, "--rules", rules, "--broker", "mqtt://127.0.0.1:1",
                      "--data-dir", str(readonly.parent / "data"), "--kpi-csv", str(readonly / "k.csv")],
             f"--kpi-csv {readonly / 'k.csv'}:")
    _refused(capsys, ["collect", "--registry", registry, "--rules", rules, "--broker", "mqtt://127.0.0.1:1",
                      "--data-dir", str(readonly.parent / "data"), "--kpi-csv", str(readonly / "k.csv"),
                      "--check-config"], f"--kpi-csv {readonly / 'k.csv'}:")  # as the start would, not 'config OK'
    assert not list(readonly.iterdir())
    a_file = readonly.parent / "a-file"
    a_file.write_text("")
    line = _refused(capsys, ["collect", "--registry", registry, "--rules", rules, "--broker", "mqtt://127.0.0.1:1",
                             "--data-dir", str(a_file)], f"data directory {a_file}: exists and is not a directory")
    assert "read-only" not in line


def test_a_path_below_a_directory_that_cannot_be_searched_is_one_line(collected, tmp_path: Path) -> None:
    """Test that an output file or directory, an input and a data directory below a directory
    ptmon may not search (mode 000, for an ordinary user or for root without its override) end
    the command in one line naming the path, the reason and that directory (exit 2), not a
    traceback; so does a rules directory of mode 000, whose files' own modes are fine."""
    unprivileged.require("permissions")
    locked = tmp_path / "locked"
    (locked / "sub").mkdir(parents=True)
    locked.chmod(0)
    registry, rules = str(collected["registry"]), str(collected["rules"])
    report = ["report", "--month", "2026-11", "--registry", registry, "--rules", rules]
    below = locked / "sub"
    shut_rules = tmp_path / "rules"
    shutil.copytree(rules, shut_rules)
    shut_rules.chmod(0)
    try:
        for args, said, blocking in (
            (["rules", "check", str(shut_rules)], f"{shut_rules / 'streets.yaml'}: cannot read rule file", shut_rules),
            (["rules", "check", str(below / "rules")], f"{below / 'rules'}: cannot reach the rules directory", locked),
            (["registry", "generate", "--out", str(below / "r.csv")], f"--out {below / 'r.csv'}: cannot reach it", locked),
            ([*report, "--ledger", str(collected["tmp"] / "all" / "ledger.sqlite"), "--out", str(below / "report")],
             f"--out {below / 'report'}: cannot reach it", locked),
            ([*report, "--ledger", str(below / "l.sqlite")], f"{below / 'l.sqlite'}:", locked),
            (["replay", str(below / "archive"), "--month", "2026-11", "--registry", registry, "--rules", rules],
             f"{below / 'archive'}: cannot reach the archive", locked),
            ([*report, "--from-archive", str(below / "archive"), "--out", str(tmp_path / "out")],
             f"{below / 'archive'}: cannot reach the archive", locked),
            (["exempt", "list", "--ledger", str(below / "l.sqlite")], f"{below / 'l.sqlite'}: cannot read the ledger",
             locked),
            (["collect", "--registry", registry, "--rules", rules, "--broker", "mqtt://127.0.0.1:1", "--data-dir",
              str(below / "data")], f"{below / 'data'}", locked),
        ):
            done = unprivileged.run("permissions", [], args, tmp_path)
            assert (done.code, "Traceback" in done.err) == (2, False), (args, done.err)
            line = done.err.strip().splitlines()[-1]
            assert line.startswith(f"ptmon: error: {said}"), (args, line)
            assert line.endswith(f"Permission denied (ptmon may not search the directory {blocking})"), (args, line)
    finally:
        locked.chmod(0o755)
        shut_rules.chmod(0o755)


def test_a_write_failing_midway_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    """Test that a file written through ``writing`` stays the old one when the write fails midway (as
    on a full disk), the failure names the file, and no temporary file stays."""
    target = tmp_path / "report.csv"
    target.write_text("old")
    with pytest.raises(PtmonError, match=f"cannot write {target}: No space left on device"), writing(target, "w") as f:
        f.write("new, half")
        f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.csv"]


def test_a_device_a_fifo_and_a_link_are_written_not_replaced(collected, tmp_path: Path) -> None:
    """Test that replay --csv onto a character device (a copy of /dev/null when root may make one),
    a FIFO or a symbolic link writes through it: the device stays a device and the FIFO's reader
    gets the CSV (a file renamed over /dev/null used to replace the device), the link stays a link
    to its target, which holds the CSV, and a dangling link's target is created."""
    replay = ["replay", str(collected["tmp"] / "all" / "archive"), "--month", "2026-11", "--registry",
              str(collected["registry"]), "--rules", str(collected["rules"]), "--quiet"]
    assert main([*replay, "--csv", str(tmp_path / "plain.csv")]) == 0
    expected = (tmp_path / "plain.csv").read_bytes()
    device = tmp_path / "null"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except OSError:
        device = Path(os.devnull)  # not root: the real one, which a regression would fail to replace
    assert main([*replay, "--csv", str(device)]) == 0
    assert stat.S_ISCHR(device.stat().st_mode)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    assert main([*replay, "--csv", str(fifo)]) == 0
    reader.join(30)
    assert got == [expected] and stat.S_ISFIFO(fifo.stat().st_mode)
    (tmp_path / "target.csv").write_text("old")
    for link, target in ((tmp_path / "link.csv", "target.csv"), (tmp_path / "dangling.csv", "new.csv")):
        link.symlink_to(target)
        assert main([*replay, "--csv", str(link)]) == 0
        assert link.is_symlink() and (tmp_path / target).read_bytes() == expected


def test_a_fifo_nobody_reads_is_an_error_not_a_wait(collected, tmp_path: Path, capsys) -> None:
    """Test that replay --csv onto a FIFO no process reads ends with one line saying so, exit 2,
    instead of waiting for ever in open() (the collector writes its KPI CSV at every checkpoint:
    it would stop collecting)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    replay = ["replay", str(collected["tmp"] / "all" / "archive"), "--month", "2026-11", "--registry",
              str(collected["registry"]), "--rules", str(collected["rules"]), "--quiet", "--csv", str(fifo)]
    _refused(capsys, replay, f"cannot write {fifo}: no process reads this FIFO")


def test_stdout_by_name_appends_to_what_the_shell_opened_and_closed_stdout_is_quiet(collected, tmp_path: Path) -> None:
    """Test that `{ echo H; ptmon replay --csv /dev/stdout; } > f` keeps H (the CSV written through
    the shell's descriptor, not over the file from its start nor renamed over it), and that a
    command started with stdout closed (`>&-`) runs, its output going nowhere."""
    replay = [sys.executable, "-m", "ptmon.cli", "replay", str(collected["tmp"] / "all" / "archive"), "--month", "2026-11",
              "--registry", str(collected["registry"]), "--rules", str(collected["rules"]), "--quiet"]
    out = tmp_path / "out.txt"
    with out.open("w") as f:
        f.write("H\n")
        f.flush()
        subprocess.run([*replay, "--csv", "/dev/stdout"], stdout=f, check=True, timeout=300)
    lines = out.read_text().splitlines()
    assert lines[0] == "H" and lines[1].startswith("contract,street,kpi") and len(lines) > 10
    for command in ([*replay, "--csv", "-"], [sys.executable, "-m", "ptmon.cli", "--version"]):
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300,
                              preexec_fn=lambda: os.close(1))
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_report_files_onto_a_link_or_a_device_are_written_through(collected, tmp_path: Path) -> None:
    """Test that `ptmon report --out DIR` whose report file there is a symlink keeps the link and
    replaces its target, and one that is a device (a copy of /dev/null, root only) stays a device."""
    tmp = collected["tmp"]
    report = ["report", "--month", "2026-11", "--format", "csv", "--registry", str(collected["registry"]),
              "--rules", str(collected["rules"]), "--ledger", str(tmp / "all" / "ledger.sqlite"), "--out"]
    assert main([*report, str(tmp_path / "plain")]) == 0
    expected = (tmp_path / "plain" / "report-2026-11.csv").read_bytes()
    linked = tmp_path / "linked"
    linked.mkdir()
    (tmp_path / "elsewhere.csv").write_text("old")
    (linked / "report-2026-11.csv").symlink_to(tmp_path / "elsewhere.csv")
    assert main([*report, str(linked)]) == 0
    assert (linked / "report-2026-11.csv").is_symlink() and (tmp_path / "elsewhere.csv").read_bytes() == expected
    devices = tmp_path / "devices"
    devices.mkdir()
    try:
        os.mknod(devices / "report-2026-11.csv", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except OSError:
        return  # not root
    assert main([*report, str(devices)]) == 0
    assert stat.S_ISCHR((devices / "report-2026-11.csv").stat().st_mode)


def test_replay_quiet_prints_no_rejects_or_progress_but_counts_them(collected, tmp_path, capsys, caplog) -> None:
    """Test that replay --quiet prints neither the table nor the decoder's reject warnings, only one
    line counting the rejects; without --quiet the warnings are logged as before."""
    from .partition_data import END

    bad = tmp_path / "bad.jsonl"
    device = "putuo/iot/wanli/wanli-lift0/hb"
    bad.write_text("".join(json.dumps({"t": END - 60 + i, "topic": device, "payload": "{not json"}) + "\n" for i in range(3)))
    files = sorted(str(p) for p in (collected["tmp"] / "all" / "archive").glob("ptmon-*.jsonl.gz"))
    args = ["replay", *files, str(bad), "--start", "2026-11-01T00:10:00", "--end", "2026-11-01T02:20:00",
            "--registry", str(collected["registry"]), "--rules", str(collected["rules"])]
    with caplog.at_level(logging.WARNING, logger="ptmon.decode"):
        assert main(args) == 0
    loud = capsys.readouterr()
    assert "bad_json 3" in loud.out  # the table
    assert any(r.name == "ptmon.decode" and "bad_json" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ptmon.decode"):
        assert main([*args, "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert not [r for r in caplog.records if r.name == "ptmon.decode"]
    # files named: no source line; the whole collector's archive adds the fixture's unknown gateway's
    # status and its malformed one
    assert quiet.out == "" and quiet.err == ("replay: 5 messages rejected (bad_gateway_status 1, bad_json 3, "
                                             "unknown_gateway 1)\n")
    assert logging.getLogger("ptmon.decode").level == logging.NOTSET  # --quiet lasts the command only


def test_a_scratch_directory_lets_go_of_the_memory_before_it_is_removed(tmp_path: Path, monkeypatch) -> None:
    """Test that a block running out of memory in a scratch directory has its frames' locals let go
    before the directory is removed (removing it allocates), and that a removal failing all the
    same leaves the MemoryError, not the removal's error, to be reported."""
    import tempfile
    import weakref

    from ptmon.outputs import scratch_directory

    class Held:
        pass

    refs: list[weakref.ref] = []
    gone_at_removal: list[bool] = []
    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        gone_at_removal.append(refs[0]() is None)
        return real_rmtree(path, *args, **kwargs)

    def render(directory: Path) -> None:
        held = Held()
        refs.append(weakref.ref(held))
        (directory / "part").write_text("x")
        raise MemoryError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    with pytest.raises(MemoryError), scratch_directory("ptmon-test-") as scratch:
        render(scratch)
    assert gone_at_removal == [True] and not scratch.exists()

    def failing_rmtree(path, *args, onerror=None, onexc=None, **kwargs):  # type: ignore[no-untyped-def]
        """shutil.rmtree as it fails to open a directory without memory: the error goes to its handler."""
        try:
            raise OSError(errno.ENOMEM, "Cannot allocate memory", path)
        except OSError as exc:
            onexc(os.scandir, path, exc) if onexc else onerror(os.scandir, path, sys.exc_info())

    monkeypatch.setattr(shutil, "rmtree", failing_rmtree)
    with pytest.raises(MemoryError), scratch_directory("ptmon-test-") as scratch:
        render(scratch)


@pytest.mark.parametrize("mode", [0, 0o644])
def test_an_archive_directory_ptmon_may_not_read_is_named(collected, tmp_path: Path, mode: int) -> None:
    """Test that an archive directory ptmon may not read or search (mode 000, 644) is named as
    such by the commands that read it, not by a file looked for in it."""
    unprivileged.require("permissions")
    archive = tmp_path / "archive"
    shutil.copytree(collected["tmp"] / "all" / "archive", archive)
    archive.chmod(mode)
    registry, rules = str(collected["registry"]), str(collected["rules"])
    try:
        for args in (["replay", str(archive), "--month", "2026-11", "--registry", registry, "--rules", rules],
                     ["report", "--month", "2026-11", "--registry", registry, "--rules", rules, "--from-archive",
                      str(archive), "--out", str(tmp_path / "out")]):
            done = unprivileged.run("permissions", [], args, tmp_path)
            said = f"ptmon: error: {archive}: cannot read the archive directory: Permission denied"
            if mode:  # it may be listed, not searched: said so
                said += f" (ptmon may not search the directory {archive})"
            assert (done.code, done.err.strip().splitlines()[-1]) == (2, said), done.err
    finally:
        archive.chmod(0o755)


def test_the_reason_of_a_refusal_without_a_path_is_its_errno_text(tmp_path: Path) -> None:
    """Test that reason() of an EACCES without a path, or with a file descriptor for one, or with
    a path whose directories are all searchable, is the errno's text alone."""
    readable = tmp_path / "f"
    for exc in (PermissionError(errno.EACCES, "Permission denied"), OSError(errno.EACCES, "Permission denied", 5),
                PermissionError(errno.EACCES, "Permission denied", str(readable)),
                PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "missing" / "f"))):
        assert errors.reason(exc) == "Permission denied", exc


_BLAME = """
import json, os, sys
from ptmon.errors import unsearchable_directory
cases = json.loads(sys.argv[1])
out = {}
for name, (cwd, path) in cases.items():
    os.chdir(cwd)
    out[name] = unsearchable_directory(path)
print(json.dumps(out))
"""


def test_the_directory_blamed_is_the_one_the_kernel_could_not_search(tmp_path: Path) -> None:
    """Test that the directory named for a refused path is the one the kernel's walk stopped at:
    through symbolic links (to the real directory, not the link, the last component's link
    followed too, a link to the shut directory itself), ``..`` looked up where it stands, a
    relative path from the current directory (whose own parents are not searched; one deleted
    since is no traceback); and none for a file whose own mode refuses it, for /proc's links
    (/dev/stdin is the open file, not the path it reads as), or once the walk has run too long."""
    unprivileged.require("permissions")
    locked = tmp_path / "locked"
    (locked / "sub").mkdir(parents=True)
    (locked / "sub" / "f").write_text("")
    (tmp_path / "free").mkdir()
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "to-sub").symlink_to(locked / "sub")
    (tmp_path / "links" / "to-f").symlink_to(locked / "sub" / "f")
    (tmp_path / "links" / "loop").symlink_to(tmp_path / "links" / "loop")
    (tmp_path / "links" / "to-locked").symlink_to(locked)
    (tmp_path / "links" / "up-to-locked").symlink_to("../locked")
    (tmp_path / "links" / "to-up").symlink_to("up-to-locked")
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    (home / "work" / "shut").write_text("")
    (home / "work" / "shut").chmod(0)
    gone = tmp_path / "gone"
    gone.mkdir()
    cases = {
        "absolute": [str(tmp_path), str(locked / "sub" / "f")],
        "through a link": [str(tmp_path), str(tmp_path / "links" / "to-sub" / "f")],
        "a link last": [str(tmp_path), "links/to-f"],
        "dot-dot": [str(tmp_path), "locked/../free"],
        "relative, its parents shut": [str(home / "work"), "shut"],
        "a loop of links": [str(tmp_path), str(tmp_path / "links" / "loop" / "f")],
        "missing below": [str(tmp_path), str(tmp_path / "free" / "nothing" / "f")],
        "a link to it": [str(tmp_path), str(tmp_path / "links" / "to-locked" / "sub")],
        "relative links to it": [str(tmp_path), "links/to-up/sub"],
        "the current directory by /proc": [str(tmp_path / "free"), "/proc/self/cwd/../locked/sub"],
    }
    locked.chmod(0)
    home.chmod(0o311)  # searchable, for the walk to reach work/; then shut below
    try:
        done = subprocess.run(unprivileged.unprivileged([sys.executable, "-c", _BLAME, json.dumps(cases)]),
                              capture_output=True, text=True, timeout=60)
        # in home/work, then home shut: the kernel looks "shut" up from the current directory alone
        again = subprocess.run(unprivileged.unprivileged([sys.executable, "-c", (
            "import os, sys; from ptmon.errors import unsearchable_directory; os.chdir(sys.argv[1]); "
            "os.chmod(sys.argv[2], 0); print(unsearchable_directory('shut'))"), str(home / "work"), str(home)]),
            capture_output=True, text=True, timeout=60)
        gone_cwd = subprocess.run(unprivileged.unprivileged([sys.executable, "-c", (
            "import os, sys; from ptmon.errors import unsearchable_directory; os.chdir(sys.argv[1]); "
            "os.rmdir(sys.argv[1]); print(unsearchable_directory('../locked/sub/f'))"), str(gone)]),
            capture_output=True, text=True, timeout=60)
        with open(locked / "sub" / "f", "rb") as opened:  # opened here, where the directory is searched
            stdin = subprocess.run(unprivileged.unprivileged([sys.executable, "-c", (
                "from ptmon.errors import unsearchable_directory; print(unsearchable_directory('/dev/stdin'))")]),
                stdin=opened, capture_output=True, text=True, timeout=60)
        slow = subprocess.run(unprivileged.unprivileged([sys.executable, "-c", (
            "import sys; from ptmon import errors; errors._Walk.SECONDS = -1; "
            "print(errors.unsearchable_directory(sys.argv[1]))"), str(locked / "sub")]),
            capture_output=True, text=True, timeout=60)
    finally:
        locked.chmod(0o755)
        home.chmod(0o755)
        (home / "work" / "shut").chmod(0o644)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "absolute": str(locked), "through a link": str(locked), "a link last": str(locked), "dot-dot": "locked",
        "relative, its parents shut": None, "a loop of links": None, "missing below": None,
        "a link to it": str(locked), "relative links to it": "links/../locked", "the current directory by /proc": None}
    assert (stdin.returncode, stdin.stdout.strip()) == (0, "None"), stdin.stderr
    assert (slow.returncode, slow.stdout.strip()) == (0, "None"), slow.stderr
    assert (again.returncode, again.stdout.strip()) == (0, "None"), again.stderr
    assert (gone_cwd.returncode, gone_cwd.stdout.strip()) == (0, "../locked"), gone_cwd.stderr


def test_a_file_ptmon_may_not_write_is_not_replaced_behind_its_mode(tmp_path: Path) -> None:
    """Test that an output file ptmon may not write (mode 000 in a writable directory, or a link to
    one) is refused in one line, as the shell's ``>`` refuses it, and left as it was, though the
    directory would let ptmon rename a new file over it."""
    unprivileged.require("permissions")
    kept = tmp_path / "kept.csv"
    kept.write_text("what the owner keeps\n")
    kept.chmod(0)
    (tmp_path / "link.csv").symlink_to(kept)
    try:
        for given in (kept, tmp_path / "link.csv"):
            done = unprivileged.run("permissions", [], ["registry", "generate", "--out", str(given)], tmp_path)
            assert (done.code, done.err.strip().splitlines()[-1]) == (
                2, f"ptmon: error: --out {given}: cannot write it: Permission denied"), done.err
    finally:
        kept.chmod(0o644)
    assert kept.read_text() == "what the owner keeps\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "kept.csv", "link.csv"]


def test_report_files_ptmon_may_not_write_are_refused_before_the_month_is_read(collected, tmp_path: Path) -> None:
    """Test that ``report --out DIR`` holding a report file of this month that ptmon may not write
    (mode 000) is refused before anything is read, the file left as it was, as for one output
    file; another month's file of that mode is no concern of this report."""
    unprivileged.require("permissions")
    out = tmp_path / "out"
    out.mkdir()
    kept, other = out / "report-2026-11.csv", out / "report-2026-10.csv"
    for path in (kept, other):
        path.write_text("signed copy\n")
        path.chmod(0)
    report = ["report", "--month", "2026-11", "--format", "csv", "--registry", str(collected["registry"]),
              "--rules", str(collected["rules"]), "--ledger", str(collected["tmp"] / "all" / "ledger.sqlite"),
              "--out", str(out)]
    try:
        done = unprivileged.run("permissions", [], report, tmp_path)
        assert (done.code, done.err.strip().splitlines()[-1]) == (
            2, f"ptmon: error: --out {out}: report-2026-11.csv: cannot write it: Permission denied"), done.err
        kept.chmod(0o644)
        done = unprivileged.run("permissions", [], report, tmp_path)
        assert done.code == 0, done.err
    finally:
        kept.chmod(0o644)
        other.chmod(0o644)
    assert kept.read_text() != "signed copy\n" and other.read_text() == "signed copy\n"


def test_stdout_by_name_is_written_whoever_owns_what_it_is(collected, tmp_path: Path) -> None:
    """Test that ``--out /dev/stdout`` writes through the descriptor ptmon was given when what is
    behind it belongs to someone else and its mode would not let ptmon open it again (a pipe or a
    file a shell of another user opened): the descriptor's own open mode decides, as for ``>``."""
    unprivileged.require("permissions")
    held = tmp_path / "held.csv"
    with open(held, "wb") as opened:
        held.chmod(0)
        done = subprocess.run(unprivileged.unprivileged([sys.executable, "-m", "ptmon.cli", "registry", "generate",
                                                         "--out", "/dev/stdout"]),
                              stdout=opened, stderr=subprocess.PIPE, text=True, timeout=300)
    held.chmod(0o644)
    assert done.returncode == 0, done.stderr
    assert held.read_text(encoding="utf-8").startswith("device_id,")
