"""The exceptions ptmon raises, by what the caller should do about them."""

from __future__ import annotations

import errno
import os
import resource  # here, not when memory has run out: it is an extension module to load
import stat
import time


class PtmonError(Exception):
    """Base of every error ptmon raises on purpose."""


class ConfigError(PtmonError):
    """A rule or config file is wrong; the message names the file, the key and the value."""


class RegistryError(PtmonError):
    """The device registry CSV is broken; nothing of it was loaded.

    ``problems`` holds every ``file:line: what`` found, not only the first.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class ArchiveError(PtmonError):
    """A message archive cannot be read (missing, not gzip, ...)."""


class UsageError(PtmonError):
    """A command-line argument is wrong."""


class BrokerError(PtmonError):
    """The MQTT broker cannot be reached or refused us (bad credentials, TLS, ...)."""


class SinkError(PtmonError):
    """A sink (InfluxDB) failed to take a batch.

    ``retryable``: keep the batch and try again later (5xx, 429, network); otherwise the batch
    can never be written as it is (4xx, parse error) and goes to the dead-letter spool.
    """

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None, too_large: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.too_large = too_large


class CheckpointError(PtmonError):
    """A state checkpoint cannot be read or does not fit the registry and rules."""


class LedgerError(PtmonError):
    """The SLA ledger (SQLite) cannot be opened, is of another format, or refused a change."""


class StorageGone(PtmonError):
    """The collector's storage vanished under it (the data directory, the archive file or the
    ledger deleted or replaced): nothing more can be stored or trusted, so the collector stops
    with exit status 3. Faults that can clear (a full disk, a locked ledger) are never this."""

    exit_status = 3


def memory_limit() -> str:
    """The address-space limit (ulimit -v) the process runs under, for an out-of-memory message
    (empty when none is set)."""
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    return "" if limit == resource.RLIM_INFINITY else f" (address space limited to {limit // 2**20:,} MiB by ulimit -v)"


# what the dynamic loader says when it cannot map an extension module's pages
LOADER_OUT_OF_MEMORY = ("failed to map segment", "cannot map zero-fill pages", "Cannot allocate memory")


def loader_out_of_memory(exc: ImportError) -> bool:
    """Whether an ImportError is the loader failing to map a module under an address-space
    limit (rather than a broken install)."""
    return bool(memory_limit()) and any(text in str(exc) for text in LOADER_OUT_OF_MEMORY)


def reason(exc: OSError) -> str:
    """An OSError's reason in words (the errno's text), without the path the message names already;
    for a path refused because a directory on the way may not be searched (mode 000, another
    user's home), that directory: the file's own mode is then not what to fix."""
    said = exc.strerror or str(exc)
    if exc.errno == errno.EACCES and isinstance(exc.filename, (str, bytes, os.PathLike)):
        blocking = unsearchable_directory(os.fsdecode(exc.filename))
        if blocking is not None:
            return f"{said} (ptmon may not search the directory {blocking})"
    return said


def unsearchable_directory(path: str) -> str | None:
    """The first directory this process may not search on the way the kernel walks to ``path``:
    from the current directory for a relative path, ``..`` looked up where it stands, and every
    symbolic link followed (the last one too, as open() does), its target's directory then the
    one searched. None when there is none, and None rather than a guess where the walk cannot be
    the kernel's: /proc's links (``/dev/stdin``, ``/proc/self/cwd``) lead to open files, not to the
    text they read as; a link that may not be followed; a walk longer than a second."""
    try:
        _Walk().through("/" if os.path.isabs(path) else "", path)
    except _Blocked as blocked:
        return blocked.directory
    except _NoBlame:
        return None
    return None


class _Blocked(Exception):
    def __init__(self, directory: str) -> None:
        self.directory = directory


class _NoBlame(Exception):
    pass


class _Walk:
    MAX_LINKS = 40  # as the kernel: a loop of links ends the walk
    SECONDS = 1.0  # links nested to make each lstat re-walk long paths: give up, it is only a hint

    def __init__(self) -> None:
        self.links = 0
        self.deadline = time.monotonic() + self.SECONDS

    def through(self, directory: str, path: str) -> str:
        """Walk ``path`` from ``directory``: where it leads (raises _Blocked where it stops)."""
        for part in [p for p in path.split("/") if p]:
            step = os.path.join(directory, part)
            if time.monotonic() > self.deadline:
                raise _NoBlame
            try:
                is_link = stat.S_ISLNK(os.lstat(step).st_mode)
            except PermissionError:
                raise _Blocked(_shown(directory)) from None
            except OSError:
                raise _NoBlame from None  # missing, not a directory, a name too long: nothing to blame on a mode
            if is_link:
                step = self._follow(directory, step)
            directory = step
        return directory

    def _follow(self, directory: str, link: str) -> str:
        self.links += 1
        if self.links > self.MAX_LINKS or _in_proc(link):
            raise _NoBlame
        try:
            target = os.readlink(link)
        except OSError:
            raise _NoBlame from None
        return self.through("/" if os.path.isabs(target) else directory, target)


def _in_proc(link: str) -> bool:
    """Whether ``link`` is procfs's: under /proc, or on its file system mounted elsewhere (a bind)."""
    try:
        return os.path.abspath(link).startswith("/proc/") or os.lstat(link).st_dev == os.stat("/proc").st_dev
    except OSError:  # the current directory deleted, no /proc: not procfs's as far as can be told
        return False


def _shown(directory: str) -> str:
    """A directory of the walk as the user knows it: the current one by its name when it has one."""
    if directory:
        return directory
    try:
        return os.getcwd()
    except OSError:  # deleted since ptmon started in it
        return "."
