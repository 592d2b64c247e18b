"""Running ptmon as a reviewer who cannot write the ledger's directory, for real.

Two ways, as the tests' ``how``:

* ``permissions``: the directories are ``chmod a-w`` and ptmon runs without the power to ignore
  that. Run by an ordinary user, that is any subprocess; run by root, which writes anywhere, the
  subprocess keeps uid 0 but loses CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER from its
  bounding set (``setpriv``), so the file modes hold for it as for anyone. (Switching to
  ``nobody`` is not an option here: the interpreter lives under /root, which nobody can read.)
* ``mount``: the directories are bind-mounted read-only in a private mount namespace
  (``unshare -rm``): read-only media, EROFS for every writer, root included.

Either is probed once; a test that cannot have it is skipped with the reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

HOWS = ("permissions", "mount")
DROPPED = "-dac_override,-dac_read_search,-fowner,-linux_immutable"
MOUNT_RO = 'for d in "$@"; do [ "$d" = -- ] && break; mount --bind "$d" "$d" && mount -o remount,bind,ro "$d" "$d" ' \
           '|| exit 97; shift; done; shift; exec "$@"'


@dataclass(frozen=True)
class Done:
    code: int
    out: str
    err: str

    def errors(self) -> list[str]:
        """stderr without the progress lines ptmon prints while it works."""
        return [line for line in self.err.splitlines() if line.startswith("ptmon: error") or not line.startswith("ptmon")]


def unprivileged(argv: Sequence[str]) -> list[str]:
    if os.geteuid() != 0:
        return list(argv)
    return [shutil.which("setpriv") or "setpriv", f"--bounding-set={DROPPED}", "--", *argv]


def _read_only_mount(dirs: Iterable[Path], argv: Sequence[str]) -> list[str]:
    return ["unshare", "-rm", "sh", "-c", MOUNT_RO, "sh", *(str(d) for d in dirs), "--", *argv]


def run(how: str, dirs: Sequence[Path], args: Sequence[str], tmpdir: Path, timeout: float = 300) -> Done:
    """``ptmon ARGS`` unable to write ``dirs`` (made read-only by :func:`make_read_only` for
    ``permissions``); its temporary files go to ``tmpdir``."""
    argv = [sys.executable, "-m", "ptmon.cli", *args]
    argv = unprivileged(argv) if how == "permissions" else _read_only_mount(dirs, argv)
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode != 97, f"the read-only mount failed: {done.stderr}"
    return Done(done.returncode, done.stdout, done.stderr)


def make_read_only(how: str, dirs: Iterable[Path]) -> None:
    """``chmod -R a-w`` (``permissions``); the ``mount`` way mounts them read-only in :func:`run`."""
    if how != "permissions":
        return
    for d in dirs:
        for path in [d, *d.rglob("*")]:
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def make_writable(dirs: Iterable[Path]) -> None:
    """Undo :func:`make_read_only` (pytest must be able to delete its temporary directories)."""
    for d in dirs:
        for path in [d, *d.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def files_under(dirs: Iterable[Path]) -> dict[str, str]:
    """Every file under ``dirs`` and the SHA-256 of its bytes: what a read-only command must leave as it was."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for d in dirs for p in sorted(d.rglob("*")) if p.is_file()}


@cache
def unavailable(how: str) -> str | None:
    """Why ``how`` cannot be had on this machine (None: it can): a probe that must fail to write."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "ro"
        d.mkdir()
        probe = [sys.executable, "-c", f"open({str(d / 'probe')!r}, 'w')"]
        make_read_only(how, [d])
        try:
            argv = unprivileged(probe) if how == "permissions" else _read_only_mount([d], probe)
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{how}: {exc}"
        finally:
            make_writable([d])
        if done.returncode == 97 or "Error" not in done.stderr:
            what = "setpriv cannot drop root's capabilities" if how == "permissions" else "no read-only bind mount (unshare -rm)"
            return f"{what}: {done.stderr.strip()[-200:] or 'the probe could write'}"
    return None


def require(how: str) -> None:
    if (why := unavailable(how)) is not None:
        pytest.skip(f"cannot make a directory read-only for ptmon here: {why}")
