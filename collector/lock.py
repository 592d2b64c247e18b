"""One collector per data directory and per ledger: advisory locks held while it runs.

Two collectors writing one archive, checkpoint or ledger would interleave their records and
overwrite each other's rows (collectors splitting the district by street each keep their own
ledger); ``ptmon ledger rebuild`` of the month a collector is writing would race its hours.
The locks are ``flock`` on files beside what they guard (``data_dir/collector.lock``,
``ledger.sqlite.lock``), released by the kernel when the process ends, SIGKILL included, so a
crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from .errors import PtmonError, reason

LOCK_NAME = "collector.lock"


def ledger_lock_path(ledger: Path) -> Path:
    return Path(ledger).with_name(Path(ledger).name + ".lock")


class ProcessLock:
    """An exclusive lock on ``path`` for this process; ``what`` names what it guards in errors."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Hold the lock, or PtmonError naming the process that holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = self.path.open("a+")
        except OSError as exc:  # a read-only data directory or lock file: one line, not a traceback
            verb = "open" if os.path.lexists(self.path) else "create"  # (False where it cannot be known)
            raise PtmonError(f"{self.what}: cannot {verb} {self.path}: {reason(exc)}") from exc
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise PtmonError(f"{self.what}: a collector is already running on it (pid {holder}); one collector "
                             "per data directory and per ledger (collectors splitting the district keep a ledger "
                             "each)") from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class CollectorLocks:
    """The data directory's and the ledger's locks, taken together."""

    def __init__(self, data_dir: Path, ledger: Path) -> None:
        self.locks = [ProcessLock(Path(data_dir) / LOCK_NAME, f"data directory {data_dir}"),
                      ProcessLock(ledger_lock_path(ledger), f"ledger {ledger}")]

    def acquire(self) -> None:
        for i, lock in enumerate(self.locks):
            try:
                lock.acquire()
            except PtmonError:
                for held in self.locks[:i]:
                    held.release()
                raise

    def release(self) -> None:
        for lock in self.locks:
            lock.release()


def held(path: Path) -> bool:
    """Whether a process holds the lock file ``path`` right now."""
    try:
        f = path.open("r")  # flock needs no write access: a read-only lock file is tested too
    except (FileNotFoundError, NotADirectoryError):  # no lock: no collector
        return False
    except OSError as exc:
        raise PtmonError(f"cannot tell whether a collector is running: cannot open {path}: {reason(exc)}") from exc
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def collector_running(data_dir: Path | None = None, ledger: Path | None = None) -> bool:
    """Whether a collector holds the data directory's or the ledger's lock right now."""
    return ((data_dir is not None and held(Path(data_dir) / LOCK_NAME))
            or (ledger is not None and held(ledger_lock_path(ledger))))
