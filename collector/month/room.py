"""A full disk, told as such: SQLite says "database or disk is full" when a write finds no room,
but "disk I/O error" when it cannot even create a ledger's shared-memory file on a disk with no
free block left. Either way the month commands say one line: the disk is full, nothing was sealed.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

from ..errors import LedgerError

LOW = 1 << 20  # bytes free under which a "disk I/O error" is taken for a full disk


class DiskFull(LedgerError):
    """The disk of the ledger (or of its scratch ledger) is full; the message says so."""


def no_room(exc: BaseException, where: Path) -> bool:
    """Whether ``exc`` (raised writing under ``where``) comes from a full disk."""
    if isinstance(exc, DiskFull):
        return False  # told already
    cause = exc.__cause__ if isinstance(exc, LedgerError) and exc.__cause__ is not None else exc
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(cause, sqlite3.DatabaseError):
        return False
    if "full" in str(cause):
        return True
    return "disk I/O error" in str(cause) and _free(where) < LOW


def _free(where: Path) -> int:
    for path in (where, *where.parents):
        if path.exists():
            return shutil.disk_usage(path).free
    return LOW


def disk_full(where: Path, doing: str) -> DiskFull:
    return DiskFull(f"{where}: {doing}: database or disk is full: nothing was sealed; free space on its disk and "
                    "run the command again")
