"""Making files survive a crash or a power cut: the one place files are replaced atomically and
directories fsync'd.

Every file a reader may open while it is being rewritten (the checkpoint, a spool file, a
report, the KPI CSV) is written beside its target under a hidden temporary name and renamed
over it, so a reader sees the old file or the new one, never half of one; with ``durable``
the data and the rename are fsync'd too, so a power cut leaves one of the two on disk."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entries, so a file created or renamed in it survives a power loss."""
    fsync_path(directory)


def directory_gone(path: Path) -> bool:
    """Whether ``path`` is no longer a directory. One ptmon may no longer look into (its
    permissions changed: ``Path.is_dir`` raises) is not gone: its writers fail with EACCES and
    wait, as on any storage fault, until the permissions are given back."""
    try:
        return not path.is_dir()
    except PermissionError:
        return False


def file_replaced(path: Path, inode: int) -> bool:
    """Whether the file opened at ``path`` as ``inode`` was deleted or replaced since. One out of
    reach (its permissions changed) was not, as for :func:`directory_gone`."""
    try:
        return os.stat(path).st_ino != inode
    except FileNotFoundError:
        return True
    except PermissionError:
        return False


def temporary_beside(path: Path, *, durable: bool) -> Path:
    """The hidden name a new version of ``path`` is written under before the rename. The collector's
    durable files have one writer (it holds the data dir's lock), so a crash's leftover is reused and
    removed by the next write; files any process may write (reports) get the writer's pid."""
    return path.with_name(f".{path.name}.tmp" if durable else f".{path.name}.{os.getpid()}.tmp")


def written_path(path: Path) -> Path:
    """Where writing ``path`` writes: a symbolic link's target (the link stays a link), else ``path``."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def is_special(path: Path) -> bool:
    """Whether ``path`` is to be written in place, not replaced: it is there and neither a regular
    file nor a directory (a device such as /dev/null, a FIFO, a socket), or it names one of the
    process's descriptors (/dev/stdout is a file's when stdout goes to a file: the rename would
    replace the file the shell opened, and what it already held)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return (not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)) or _own_descriptor(path) is not None


@contextmanager
def replacing(path: Path, *, durable: bool = True) -> Iterator[Path]:
    """A temporary path to write the new ``path`` at; renamed over ``path`` when the block ends
    cleanly, removed when it raises (``path`` is then as it was). A symbolic link's target is
    replaced, the link kept. For regular files: a device or a FIFO (:func:`is_special`) is written
    in place by :func:`replacing_file` (renaming a file over /dev/null would replace the device)."""
    path = written_path(path)
    tmp = temporary_beside(path, durable=durable)
    try:
        yield tmp
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_directory(path.parent)  # makes the rename itself survive a power loss


@contextmanager
def replacing_file(path: Path, mode: str = "wb", *, durable: bool = True, **open_args: Any) -> Iterator[IO[Any]]:
    """:func:`replacing`, with the temporary file opened in ``mode``; a FIFO nobody reads is an
    OSError (ENXIO), not a wait for ever (the collector's KPI CSV is written at every checkpoint)."""
    if is_special(path):
        with open(_descriptor(path), mode, **open_args) as f:
            yield f
        return
    with replacing(path, durable=durable) as tmp, open(tmp, mode, **open_args) as f:
        yield f


_STANDARD_STREAMS = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def _own_descriptor(path: Path) -> int | None:
    """The descriptor ``path`` names: /dev/stdout, /dev/stderr, /dev/fd/N, /proc/self/fd/N."""
    name = os.path.abspath(path)
    for prefix in ("/dev/fd/", "/proc/self/fd/"):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return int(name[len(prefix):])
    return _STANDARD_STREAMS.get(name)


def writable_in_place(path: Path) -> OSError | None:
    """Why ``path`` (:func:`is_special`) cannot be written in place; None when it can. One of the
    process's own descriptors is writable when it was opened for writing, whoever owns what is
    behind it (a pipe a shell of another user made); anything else by its mode."""
    fd = _own_descriptor(path)
    if fd is not None:
        try:
            writable = (fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)
        except OSError as exc:
            return exc
        return None if writable else OSError(errno.EBADF, "not open for writing", str(path))
    return None if os.access(path, os.W_OK) else OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))


def _descriptor(path: Path) -> int:
    """A new descriptor to write ``path`` (:func:`is_special`) in place. One of the process's own
    descriptors is duplicated: opened again, a file would be written from its start, over what the
    shell or the command wrote there already."""
    if (fd := _own_descriptor(path)) is not None:
        return os.dup(fd)
    try:
        new = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # not blocked by a FIFO nobody reads
    except OSError as exc:
        if exc.errno == errno.ENXIO and stat.S_ISFIFO(os.stat(path).st_mode):
            raise OSError(errno.ENXIO, "no process reads this FIFO") from exc
        raise
    os.set_blocking(new, True)
    return new


def fsync_path(path: Path) -> None:
    """A file's data, or a directory's entries, to disk (both are opened read-only to be fsync'd)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
