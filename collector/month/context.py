"""What the month commands work on: the ledger, the archive, the registry and rules, the clock.

One :class:`MonthContext` per command run. It opens the ledger, and keeps what is costly to
make — recomputations of the month from the archive (one per registry and rules version), the
scan for late heartbeats — for as long as the command runs, so that status, restatement and
their per-contract steps never recompute the same thing twice.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LedgerError, UsageError
from ..ledger.rebuild import Recomputed
from ..ledger.store import Ledger
from ..registry import Registry
from ..replay import Progress
from ..snapshots import MonthSources, month_sources
from ..timebase import US_PER_S, month_bounds
from .figures import recomputed
from .late import LateScan, scan_late
from .room import disk_full, no_room
from .words import when


@dataclass(frozen=True, kw_only=True)
class MonthSetup:
    """Where things are and the month settings (from ``--config`` or the options)."""

    ledger: Path
    archive: Path
    registry: Registry
    registry_path: Path
    rules_dir: Path
    config_path: Path | None
    data_dir: Path | None
    close_grace: int  # µs
    late_horizon: int  # µs
    min_coverage: float = 0.0  # a month observed less is never closed; 0: only one with nothing observed


@dataclass
class MonthContext:
    setup: MonthSetup
    month: str
    now: int  # µs: the instant taken as now (the clock, or --now for simulations and tests)
    ledger: Ledger
    say: Callable[[str], None] = field(default=lambda text: print(f"ptmon month: {text}", file=sys.stderr, flush=True))
    recompute_seconds: float = 0.0
    recomputed_records: int = 0
    _stack: ExitStack = field(default_factory=ExitStack)
    _bases: dict[tuple[str, str], tuple[Ledger, Recomputed]] = field(default_factory=dict)
    _late: LateScan | None = None

    @classmethod
    def open(cls, setup: MonthSetup, month: str, now: int, *, writable: bool) -> MonthContext:
        month_bounds(month)
        if not setup.ledger.is_file():
            raise UsageError(f"ledger not found: {setup.ledger}")
        if not setup.archive.is_dir():
            raise UsageError(f"archive directory not found: {setup.archive}")
        try:
            ledger = Ledger(setup.ledger, readonly=not writable)
        except LedgerError as exc:
            if no_room(exc, setup.ledger.parent):
                raise disk_full(setup.ledger, "opening the ledger") from exc
            raise
        return cls(setup=setup, month=month, now=now, ledger=ledger)

    def close(self) -> None:
        self._stack.close()
        self.ledger.close()

    def __enter__(self) -> MonthContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def bounds(self) -> tuple[int, int]:
        return month_bounds(self.month)

    def sources(self) -> MonthSources:
        return month_sources([self.setup.archive], self.month)

    def late_until(self) -> int:
        """Late records are looked for up to now, at most ``late_horizon`` after the month."""
        return min(self.now, self.bounds[1] + self.setup.late_horizon)

    def late_scan(self) -> LateScan:
        if self._late is None:
            began = time.monotonic()
            self._late = scan_late([self.setup.archive], self.setup.registry, self.month, self.late_until())
            self.say(f"late heartbeats of {self.month}: {len(self._late.heartbeats):,} in {self._late.records:,} records "
                     f"received up to {when(self._late.until)} ({time.monotonic() - began:.1f} s)")
        return self._late

    def recomputed(self, registry: Registry) -> tuple[Ledger, Recomputed]:
        """The month recomputed from the archive with ``registry`` (and its rules), once per command."""
        key = (registry.version, registry.rules.version)
        if key not in self._bases:
            began = time.monotonic()
            last = [began]

            def progress(p: Progress) -> None:
                if time.monotonic() - last[0] >= 2.0:
                    last[0] = time.monotonic()
                    at = when(p.clock) if p.clock is not None else "-"
                    self.say(f"recomputing {self.month}: {p.records:,} records, {p.records / max(p.elapsed, 1e-9):,.0f}/s, "
                             f"at {at}")

            self._bases[key] = self._stack.enter_context(
                recomputed([self.setup.archive], registry, self.month, self.setup.ledger.parent, progress))
            spent = time.monotonic() - began
            self.recompute_seconds += spent
            self.recomputed_records += self._bases[key][1].records
            self.say(f"recomputed {self.month} from {self._bases[key][1].sources.describe()}: "
                     f"{self._bases[key][1].records:,} records in {spent:.1f} s")
        return self._bases[key]


def now_us() -> int:
    return time.time_ns() // 1000


def wall_clock() -> int:
    """The clock a ``--now`` is checked against (tests fix it: their months are simulated)."""
    return now_us()


def seconds(us: int) -> float:
    return us / US_PER_S
