"""One collector per data directory: an advisory lock (``collector.lock``) held while it runs.

Two collectors writing one archive, checkpoint and ledger would interleave their records and
overwrite each other's state; ``ptmon ledger rebuild`` of the month a collector is writing
would race its hours. The lock is ``flock`` on a file, released by the kernel when the
process ends, SIGKILL included, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from .errors import PtmonError

LOCK_NAME = "collector.lock"


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Hold the lock, or PtmonError naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise PtmonError(f"{self.path.parent}: a collector is already running on this data directory "
                             f"(pid {holder}); one collector per data directory") from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def collector_running(data_dir: Path) -> bool:
    """Whether a collector holds the lock of ``data_dir`` right now."""
    path = Path(data_dir) / LOCK_NAME
    if not path.exists():
        return False
    with path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False
