"""A ledger that cannot be written: an archived, signed month on read-only media, a mounted
backup, a copy in a directory the reviewer may not write.

SQLite reads a WAL ledger through its ``-shm`` index and ``-wal`` file, and creates them
beside the ledger when they are missing; where nothing can be created, a plain read-only
open fails. So a read-only command opens such a ledger

* ``immutable=1`` when no ``-wal`` with content is beside it: every page is in the file
  itself, no index is needed and SQLite takes no lock and creates nothing;
* ``mode=ro`` through the ``-shm`` beside it when there is one: SQLite reads a read-only
  index, and rebuilds it in its own memory when it is stale (a copy of a live ledger);
* from a private copy of the ledger and its ``-wal`` in the temporary directory when the
  ``-wal`` holds pages (writes never checkpointed: a collector killed, a copy taken while
  it ran) and no ``-shm`` is beside it. ``immutable=1`` would ignore those pages and give
  figures without the last writes; the copy gives them all and nothing is created beside
  the ledger.

An immutable open is only as safe as its name: were the owner of a ledger the reviewer cannot
write to start a collector on it while the reviewer reads it, SQLite would not notice. A live
collector keeps its ``-wal`` and ``-shm`` open, so a ledger read while one runs is read through them.

Commands that write refuse a read-only ledger at once with one line naming it
(:func:`refuse_read_only`), before anything else is written.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

from ..errors import LedgerError, reason

log = logging.getLogger("ptmon")


def read_only_reason(path: Path) -> str | None:
    """Why the ledger ``path`` (or the new file it would be) cannot be written; None when it can."""
    if str(path) == ":memory:":
        return None
    where = path.parent
    while not where.exists() and where != where.parent:  # a new ledger's directories are created
        where = where.parent
    if _on_read_only_filesystem(where):
        return f"{where} is on a read-only file system"
    for item, what in ((path, "the file"), (_beside(path, "-wal"), "its -wal file"), (_beside(path, "-shm"), "its -shm file")):
        if item.exists() and not os.access(item, os.W_OK):
            return f"{what} cannot be written"
    if not os.access(where, os.W_OK | os.X_OK):
        return f"its directory {where} cannot be written"
    return None


def refuse_unreadable(path: Path) -> None:
    """LedgerError naming the ledger when it is there but ptmon may not read it (its permissions):
    said as such, where SQLite would only say "unable to open database file"."""
    try:
        with open(path, "rb"):
            pass
    except PermissionError as exc:
        raise LedgerError(f"{path}: cannot read the ledger: {reason(exc)}") from exc
    except OSError:  # not there yet, or trouble SQLite reports in its own words
        pass


def refuse_read_only(path: Path) -> None:
    """LedgerError naming the ledger when a command that writes finds it read-only (or unreadable)."""
    refuse_unreadable(path)
    if (reason := read_only_reason(path)) is not None:
        raise LedgerError(f"{path}: the ledger is read-only ({reason}) and this command writes to it: run it on a "
                          "writable copy (`ptmon report`, `month status|verify`, `ledger verify` only read it)")


def read_only_uri(path: Path) -> str:
    """The SQLite URI that reads ``path`` without writing or creating anything beside it when it is read-only."""
    if read_only_reason(path) is None:
        return _uri(path, "mode=ro")  # another process may write it: share its -shm index
    wal, shm = _beside(path, "-wal"), _beside(path, "-shm")
    if not _has_content(wal):
        return _uri(path, "mode=ro&immutable=1")
    if shm.is_file() and os.access(shm, os.R_OK):
        return _uri(path, "mode=ro")
    return _uri(_private_copy(path, wal), "mode=ro")


def scratch_parent(beside: Path) -> Path | None:
    """Where a command's scratch files go: beside ``beside`` (a ledger's directory: same disk, room
    for a month) when it can be written, else the temporary directory (None)."""
    return beside if beside.is_dir() and os.access(beside, os.W_OK | os.X_OK) and not _on_read_only_filesystem(beside) \
        else None


_copies: dict[tuple[str, tuple[int, int], tuple[int, int]], Path] = {}  # per ledger and -wal state


def _private_copy(path: Path, wal: Path) -> Path:
    """A copy of the ledger and its -wal, made once per process (a command opens its ledger several times)
    and deleted when the process ends."""
    key = (str(path.resolve()), _stamp(path), _stamp(wal))
    if (known := _copies.get(key)) is not None and known.is_file():
        return known
    if not _copies:
        atexit.register(_delete_copies)
    size = path.stat().st_size + wal.stat().st_size
    log.warning("%s: its -wal holds writes not yet in the ledger file and no -shm index is beside it on this "
                "read-only directory: reading them from a private copy (%.1f MB) in the temporary directory",
                path, size / 1e6)
    private = Path(tempfile.mkdtemp(prefix="ptmon-ledger-ro-"))
    try:
        copy = private / path.name
        shutil.copyfile(path, copy)
        shutil.copyfile(wal, _beside(copy, "-wal"))
    except OSError as exc:
        shutil.rmtree(private, ignore_errors=True)
        raise LedgerError(f"{path}: read-only ledger with writes in its -wal: copying it to read them failed: {exc}") \
            from exc
    _copies[key] = copy
    return copy


def _delete_copies() -> None:
    for copy in _copies.values():
        shutil.rmtree(copy.parent, ignore_errors=True)
    _copies.clear()


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _uri(path: Path, query: str) -> str:
    return f"file:{quote(str(path.absolute()))}?{query}"


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _on_read_only_filesystem(where: Path) -> bool:
    try:
        return bool(os.statvfs(where).f_flag & os.ST_RDONLY)
    except OSError:
        return False
