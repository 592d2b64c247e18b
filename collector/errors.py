"""The exceptions ptmon raises, by what the caller should do about them."""

from __future__ import annotations


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
