"""The exceptions ptmon raises, by what the caller should do about them."""

from __future__ import annotations

import errno
import itertools
import os
import resource  # here, not when memory has run out: it is an extension module to load
from pathlib import Path


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


def unsearchable_directory(path: str) -> Path | None:
    """The first directory on the way to ``path`` that this process may not search, if any."""
    absolute = Path(os.path.abspath(path))
    way = [*reversed(absolute.parents), absolute]
    for parent, child in itertools.pairwise(way):
        try:
            os.lstat(child)
        except PermissionError:
            return parent
        except OSError:
            return None  # missing, or not a directory: nothing to blame on a mode
    return None
