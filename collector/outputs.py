"""Where a command writes its files, checked before the work: a path that cannot be written is
refused in one line naming it and the reason (exit 2), not found out by a traceback after the
work, and a write that fails midway leaves nothing half-written (files go through
:func:`ptmon.durable.replacing`, so the target is the old file or the new one)."""

from __future__ import annotations

import errno
import os
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .durable import is_special, replacing_file, writable_in_place, written_path
from .errors import PtmonError, UsageError, reason


def output_dir(path: str | Path, option: str) -> Path:
    """``path`` as a directory to write files in: it is one, or can be made (its nearest existing
    ancestor is a writable directory); else a UsageError. Nothing is created."""
    path = Path(path)
    with _unreachable(path, option):
        if path.exists() and not path.is_dir():
            raise UsageError(f"{option} {path}: exists and is not a directory")
        base = path
        while not base.exists() and base != base.parent:
            base = base.parent
        if not base.is_dir():
            raise UsageError(f"{option} {path}: {base} is not a directory")
    _probe(base, f"{option} {path}")
    return path


def output_file(path: str | Path, option: str) -> Path:
    """``path`` as a file to write: not a directory, in a writable directory that exists, not a
    file we may not write; or a device or FIFO we may write (/dev/null, /dev/stdout), written in
    place."""
    path = Path(path)
    with _unreachable(path, option):
        if path.is_dir():
            raise UsageError(f"{option} {path}: is a directory")
        if is_special(path):
            if (refused := writable_in_place(path)) is not None:
                raise UsageError(f"{option} {path}: cannot write it: {reason(refused)}")
            return path
        target = written_path(path)
        refuse_unwritable_file(target, f"{option} {path}")
        parent = target.parent
        if not parent.is_dir():
            raise UsageError(f"{option} {path}: no directory {parent}" if not parent.exists()
                             else f"{option} {path}: {parent} is not a directory")
    _probe(parent, f"{option} {path}")
    return path


def refuse_unwritable_file(path: Path, shown: str) -> None:
    """UsageError when ``path`` is a file there that ptmon may not write (its mode, immutable, a
    read-only mount), with the kernel's reason: as the shell's ``>`` refuses it, it is not replaced
    by a rename behind its back. Opened for writing without truncating, and closed: left as it was.
    A symbolic link is followed, as the write follows it."""
    if not path.is_file():
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC))
    except OSError as exc:
        raise UsageError(f"{shown}: cannot write it: {reason(exc)}") from exc


@contextmanager
def _unreachable(path: Path, option: str) -> Iterator[None]:
    """Looking at ``path`` failing (a directory on the way we may not search: EACCES) is a
    UsageError naming the option, not a traceback."""
    try:
        yield
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot reach it: {reason(exc)}") from exc


@contextmanager
def writing(path: Path, mode: str = "w", **open_args: object) -> Iterator[IO]:
    """The file ``path`` opened to be written under a temporary name and renamed when the block ends;
    a failure to write it is a PtmonError naming it, and leaves ``path`` as it was."""
    try:
        with replacing_file(Path(path), mode, durable=False, **open_args) as f:
            yield f
    except OSError as exc:
        raise PtmonError(f"cannot write {path}: {reason(exc)}") from exc


@contextmanager
def scratch_directory(prefix: str, dir: Path | None = None) -> Iterator[Path]:
    """A temporary directory, removed with what it holds when the block ends. When the block ran
    out of memory, the locals of its finished frames are let go first, so that removing the
    directory can allocate (opening a directory takes a buffer); a removal that fails all the
    same leaves the directory rather than hiding the error that ended the block."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=dir, ignore_cleanup_errors=True) as path:
        try:
            yield Path(path)
        except MemoryError as exc:
            traceback.clear_frames(exc.__traceback__)
            raise


def _probe(directory: Path, what: str) -> None:
    try:
        probe = tempfile.mkdtemp(prefix=".ptmon-write-test-", dir=directory)
        os.rmdir(probe)
    except OSError as exc:
        why = "files cannot be created there" if exc.errno == errno.ENOENT else reason(exc)
        raise UsageError(f"{what}: cannot write in {directory}: {why}") from exc
