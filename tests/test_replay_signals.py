"""Stopping `ptmon replay` stops its scanning workers, and their failures end or slow it cleanly.

Ctrl-C in a terminal signals the whole process group: the replay says it was interrupted and exits
130 at once, its workers gone (a worker interrupted while sending a result back used to leave the
executor's lock held and the replay hung). A replay killed outright (SIGTERM, SIGKILL) takes its
workers with it instead of leaving them waiting for ever. The replay is a real process on an
archive of junk lines, whose scanned blocks are too large for a shared slot and go back through the
pipe, where the hang was. A worker killed mid-replay is an error naming the archive; workers that
cannot start leave the scan to the replay."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptmon.archive import write_archive

from .conftest import HEADER, T0, hb

PTMON = [sys.executable, "-m", "ptmon.cli"]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _replay_of_junk(tmp_path: Path, lines: int) -> list[str]:
    """The arguments of a replay of an archive of ``lines`` junk lines (a one-device registry), its
    CSV to ``kpis.csv``."""
    registry = tmp_path / "registry.csv"
    registry.write_text(f"{HEADER}\nd-1,iot,elevator,taopu,scn,taopu-c1,gw-taopu,2026-01-01,\n")
    archive = tmp_path / "ptmon-2026-11-01.jsonl.gz"
    archive.write_bytes(gzip.compress(b"x\n" * lines, compresslevel=1))
    return ["replay", "--registry", str(registry), "--start", "2026-11-01T00:00", "--end", "2026-11-02T00:00",
            "--quiet", "--csv", str(tmp_path / "kpis.csv"), str(archive)]


@pytest.fixture
def replaying(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Start a replay of 20 million junk lines in a session of its own; (process, its two workers)."""
    proc = subprocess.Popen([*PTMON, *_replay_of_junk(tmp_path, 20_000_000)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(workers := _children(proc.pid)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the replay started no workers"
            time.sleep(0.05)
        time.sleep(1.5)  # well into the blocks: results on their way back
        yield proc, workers
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in _children(proc.pid) + workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait()


def _gone(workers: list[int], within: float) -> bool:
    deadline = time.monotonic() + within
    while any(_alive(w) for w in workers):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("attempt", range(3))
def test_ctrl_c_to_the_process_group_ends_a_replay_and_its_workers(replaying, attempt: int) -> None:
    """Test that SIGINT to the replay's whole process group (Ctrl-C) ends it within seconds, exit 130,
    "interrupted", no worker's traceback, and no worker left (three times: the hang was a race)."""
    proc, workers = replaying
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    err = proc.stderr.read()
    assert "ptmon: interrupted" in err and "Traceback" not in err
    assert _gone(workers, 10)


_PLAIN_LINE = b'{"t":1762012800.5,"topic":"putuo/iot/taopu/ghost/hb","payload":"{\\"seq\\":1}"}\n'


@pytest.mark.parametrize("gap", [0.01, 0.02, 0.03])
def test_two_quick_ctrl_cs_end_a_replay_and_its_workers(tmp_path: Path, gap: float) -> None:
    """Test that two Ctrl-Cs in quick succession (a user pressing it twice) end the replay: exit
    130, or death by the second SIGINT when it lands as the replay returns (the shell shows 130
    too), "interrupted", no worker left (the second one used to cut the pool's shutdown short, and
    the exit then waited for ever for workers never told to stop). The archive's lines are plain,
    as a collector's are: the hang needed their quicker blocks."""
    args = _replay_of_junk(tmp_path, 0)
    Path(args[-1]).write_bytes(gzip.compress(_PLAIN_LINE * 4_000_000, compresslevel=1))
    proc = subprocess.Popen([*PTMON, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(workers := _children(proc.pid)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the replay started no workers"
            time.sleep(0.05)
        time.sleep(1.5)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(gap)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) in (130, -signal.SIGINT)
        assert "ptmon: interrupted" in proc.stderr.read()
        assert _gone(workers, 10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers follow their parent only on Linux")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_a_replay_killed_outright_takes_its_workers_with_it(replaying, sig: signal.Signals) -> None:
    """Test that a replay killed by a signal it does not catch leaves no worker behind."""
    proc, workers = replaying
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == -sig
    assert _gone(workers, 10), [w for w in workers if _alive(w)]


_WORKER_KILLED = """
import os, signal, sys
import ptmon.archive
from ptmon.cli import main
scan = ptmon.archive._scan_in_worker
pieces = 0
def scan_then_die(piece):  # run in the forked workers: each is killed as its second piece arrives
    global pieces
    pieces += 1
    with open(sys.argv[1], "a") as pids:
        pids.write(f"{os.getpid()}\\n")
    if pieces == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return scan(piece)
ptmon.archive._scan_in_worker = scan_then_die
sys.exit(main(sys.argv[2:]))
"""


def test_a_worker_killed_ends_the_replay_with_an_error_and_no_csv(tmp_path: Path) -> None:
    """Test that a scanning worker killed mid-replay (the kernel's OOM killer, an operator's kill -9)
    ends the replay with exit 2 and an error naming the archive, no traceback, no KPI CSV of the
    part read, and no worker left. The archive's lines are plain (the workers' bulk path), many
    pieces of them, so the replay is still sending pieces when the workers die."""
    args = _replay_of_junk(tmp_path, 0)
    Path(args[-1]).write_bytes(gzip.compress(_PLAIN_LINE * 600_000, compresslevel=1))  # ~45 MB: a dozen pieces
    pids = tmp_path / "workers"
    done = subprocess.run([sys.executable, "-c", _WORKER_KILLED, str(pids), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "ptmon: error: a worker process scanning" in done.stderr and "ptmon-2026-11-01.jsonl.gz" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "kpis.csv").exists()
    assert _gone([int(p) for p in set(pids.read_text().split())], 10)


_CTRL_C_AT_FORK = """
import multiprocessing.process, os, signal, sys
from ptmon.cli import main
start = multiprocessing.process.BaseProcess.start
def start_then_ctrl_c(self):
    start(self)
    with open(sys.argv[1], "a") as pids:
        pids.write(f"{self.pid}\\n")
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C the moment a worker is forked, before the pool runs
multiprocessing.process.BaseProcess.start = start_then_ctrl_c
sys.exit(main(sys.argv[2:]))
"""


def test_ctrl_c_while_the_workers_start_is_taken_once_they_run(tmp_path: Path) -> None:
    """Test that a Ctrl-C arriving just as the first worker is forked (before the pool's thread runs)
    still interrupts the replay, exit 130, and leaves no worker, instead of being lost in the fork's
    bookkeeping or leaving a worker the shutdown never told to stop (the replay hung at exit)."""
    pids = tmp_path / "workers"
    proc = subprocess.Popen([sys.executable, "-c", _CTRL_C_AT_FORK, str(pids), *_replay_of_junk(tmp_path, 2_000_000)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.wait(timeout=30) == 130
        assert "ptmon: interrupted" in proc.stderr.read()
        workers = [int(p) for p in pids.read_text().split()]
        assert workers and _gone(workers, 10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


_NO_WORKERS = """
import errno, os, sys
import ptmon.archive
from ptmon.cli import main
if sys.argv[1] == "no-memory":  # the workers' shared mapping refused (ulimit -v, a container's limit)
    def refused(*args):
        raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))
    ptmon.archive.Slots = refused
else:  # every fork refused (a process limit), or every one after the first
    forks, fork_once = [], os.fork
    def fork():
        forks.append(1)
        if sys.argv[1] == "no-fork" or len(forks) > 1:
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        return fork_once()
    os.fork = fork
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("refused", ["no-memory", "no-fork", "second-fork"])
def test_workers_that_cannot_start_leave_the_scan_to_the_replay(tmp_path: Path, refused: str) -> None:
    """Test that a replay whose scanning workers cannot start (their shared memory, their forks or
    the second fork refused) says so and scans the archive itself: exit 0 and the KPI CSV of an
    undisturbed replay (a worker forked before the refusal used to keep the exit waiting for ever)."""
    registry = tmp_path / "registry.csv"
    registry.write_text(HEADER + "\n" + "".join(f"s{i},iot,smoke,wanli,scn,wanli-c1,gw-wanli,2026-01-01,\n" for i in range(50)))
    archive = tmp_path / "archive"
    archive.mkdir()
    write_archive(archive / "ptmon-2026-11-01.jsonl.gz",
                  [hb(T0 + k + i / 100, f"s{i}", "iot", "wanli", seq=k, reads=k, read_ok=k - k // 97)
                   for k in range(0, 7200, 60) for i in range(50) if (k + i) % 13])
    args = ["replay", "--registry", str(registry), "--start", "2026-11-01T00:00", "--end", "2026-11-01T02:00",
            "--quiet", str(archive)]
    subprocess.run([*PTMON, *args, "--csv", str(tmp_path / "undisturbed.csv")], check=True, timeout=120)
    done = subprocess.run([sys.executable, "-c", _NO_WORKERS, refused, *args, "--csv", str(tmp_path / "alone.csv")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "scanning in this process, more slowly" in done.stderr
    assert (tmp_path / "alone.csv").read_bytes() == (tmp_path / "undisturbed.csv").read_bytes()
