"""Real storage faults for tests: a size-limited filesystem to fill, and an SQLite lock held by
another process.

``small_filesystem`` mounts a tmpfs of the given size (as root); where mounting a tmpfs is not
allowed it formats a loop-mounted ext4 image instead; where neither works the test is skipped
with the reason (the only case, since a fault on the machine's real disk would hit everyone).
``fill`` then takes every free byte with a file of its own, and releasing it frees them again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _run(*args: str) -> bool:
    return subprocess.run(args, capture_output=True, timeout=60, check=False).returncode == 0


def mount_small_filesystem(path: Path, size_mb: int) -> str | None:
    """Mount a ``size_mb`` filesystem at ``path``: a tmpfs, else a loop-mounted ext4 image beside it;
    returns which, or None when neither can be mounted here."""
    path.mkdir(parents=True, exist_ok=True)
    if _run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)):
        return f"a {size_mb} MB tmpfs"
    image = path.with_name(path.name + ".img")
    with image.open("wb") as f:
        f.truncate(size_mb * 2**20)
    if _run("mkfs.ext4", "-q", "-F", str(image)) and _run("mount", "-o", "loop", str(image), str(path)):
        return f"a {size_mb} MB loop-mounted ext4 image"
    image.unlink(missing_ok=True)
    return None


def unmount(path: Path) -> None:
    if not _run("umount", str(path)):
        _run("umount", "-l", str(path))
    path.with_name(path.name + ".img").unlink(missing_ok=True)


@contextmanager
def small_filesystem(path: Path, size_mb: int) -> Iterator[str]:
    """A ``size_mb`` filesystem at ``path`` until the block ends; yields what it is. Skips the test
    where none can be mounted (a fault on the machine's real disk would hit everyone on it)."""
    kind = mount_small_filesystem(path, size_mb)
    if kind is None:
        pytest.skip("cannot mount a size-limited filesystem here (needs root for tmpfs or a loop device)")
    try:
        yield kind
    finally:
        unmount(path)


class Filler:
    """Takes every free byte of a filesystem (a file of its own), until released."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "filler.bin"

    def fill(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        block, written = b"\0" * 65536, 0
        try:
            for size in (65536, 4096, 512, 1):
                try:
                    while True:
                        written += os.write(fd, block[:size])
                except OSError:
                    pass
        finally:
            os.close(fd)
        return written

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
print("released", flush=True)
"""


def lock_ledger(ledger: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding ``BEGIN EXCLUSIVE`` on the ledger for ``seconds`` (as an operator's
    sqlite3 shell or a backup tool would); returns once the lock is held."""
    proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(ledger), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "locked":
        proc.kill()
        raise RuntimeError(f"could not lock {ledger}: {line!r}")
    return proc


@contextmanager
def ledger_locked(ledger: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """:func:`lock_ledger` for the block; the block's end waits until the lock is released."""
    proc = lock_ledger(ledger, seconds)
    try:
        yield proc
    finally:
        try:
            proc.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
