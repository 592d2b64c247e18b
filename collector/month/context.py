"""What the month commands work on: the ledger, the archive, the registry and rules, the clock.

One :class:`MonthContext` per command run. It opens the ledger, and keeps what is costly to
make — recomputations of the month from the archive (one per registry and rules version), the
scan for late heartbeats — for as long as the command runs, so that status, restatement and
their per-contract steps never recompute the same thing twice.

For a partitioned deployment (``MonthSetup.parts``) the ledger is the district's: the partitions'
rows merged into a scratch ledger beside the seal ledger's closings, which only the sealing writes
(:mod:`ptmon.month.parts`); the archive files, recomputations and late heartbeats are every partition's.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LedgerError, UsageError
from ..ledger.access import refuse_read_only, scratch_parent
from ..ledger.closing import Closing, record_closings
from ..ledger.rebuild import Recomputed
from ..ledger.store import Ledger
from ..registry import Registry
from ..replay import Progress
from ..rules import DEFAULT_RULES_DIR
from ..snapshots import MonthSources, month_sources
from ..timebase import US_PER_S, month_bounds
from .figures import recomputed
from .late import LateScan, scan_late
from .parts import PartSource, exemption_places, open_merged, part_files, recomputed_parts, scan_late_parts, seal_merged
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
    parts: tuple[PartSource, ...] = ()  # a partitioned deployment's partitions (``ledger`` is then the seal ledger)

    @property
    def archives(self) -> list[Path]:
        """Every archive directory of the month: the partitions', or the one."""
        return [p.archive for p in self.parts] if self.parts else [self.archive]

    @property
    def where(self) -> str:
        """The options a suggested ``ptmon month`` command needs to find this month's inputs again, as they
        were found this time: the config, or the ledger(s), archive(s), seal ledger, registry and rules."""
        if self.parts:
            places = ["--ledger", *(str(p.ledger) for p in self.parts), "--archive", *(str(p.archive) for p in self.parts),
                      "--seal-ledger", str(self.ledger)]
        else:
            places = ["--ledger", str(self.ledger), "--archive", str(self.archive)]
        return " " + shlex.join(places + self.input_options())

    def ledger_command(self, action: str, month: str) -> str:
        """``ptmon ledger verify|rebuild`` of the month, as it is run here: of each partition's ledger and
        archive for a partitioned deployment."""
        places = [(p.ledger, p.archive) for p in self.parts] if self.parts else [(self.ledger, self.archive)]
        commands = [shlex.join(["ptmon", "ledger", action, "--month", month, "--ledger", str(ledger), "--archive",
                                str(archive), *self.input_options()]) for ledger, archive in places]
        return ", ".join(f"`{command}`" for command in commands)

    def input_options(self) -> list[str]:
        """--config, or --registry and --rules (when not the shipped ones), as given."""
        if self.config_path is not None:
            return ["--config", str(self.config_path)]
        rules = [] if self.rules_dir.resolve() == DEFAULT_RULES_DIR.resolve() else ["--rules", str(self.rules_dir)]
        return ["--registry", str(self.registry_path), *rules]

    @property
    def scratch_dir(self) -> Path:
        """Where scratch ledgers go: beside the ledger (a seal ledger not made yet: beside a partition's), or in
        the temporary directory when that cannot be written (a read-only ledger)."""
        beside = self.ledger.parent if self.ledger.parent.is_dir() or not self.parts else self.parts[0].ledger.parent
        return scratch_parent(beside) or Path(tempfile.gettempdir())


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
    parts: list[tuple[PartSource, Ledger]] = field(default_factory=list)  # the partitions' ledgers, read-only
    exemption_places: dict[int, str] = field(default_factory=dict)  # merged exemption id → where it is recorded

    @classmethod
    def open(cls, setup: MonthSetup, month: str, now: int, *, writable: bool) -> MonthContext:
        month_bounds(month)
        if setup.parts:
            if writable:  # the seal ledger is written only when sealing: refuse a read-only one before any work
                refuse_read_only(setup.ledger)
            return cls._open_parts(setup, month, now)
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

    @classmethod
    def _open_parts(cls, setup: MonthSetup, month: str, now: int) -> MonthContext:
        """The partitions merged into a scratch ledger, beside the seal ledger's closings."""
        stack = ExitStack()
        try:
            ledger, parts = open_merged(setup.parts, setup.ledger, setup.registry.rules, stack=stack)
        except BaseException:
            stack.close()
            raise
        return cls(setup=setup, month=month, now=now, ledger=ledger, _stack=stack, parts=parts,
                   exemption_places=exemption_places(parts))

    def record(self, sealed: Sequence[tuple[dict[str, Any], Mapping[str, bytes]]]) -> list[Closing]:
        """Seal closings (all or none): in the ledger, or for partitions in the seal ledger with the
        merged rows they were made from, in one transaction."""
        if self.setup.parts:
            return seal_merged(self.ledger, self.setup.ledger, self.setup.parts, sealed)
        return record_closings(self.ledger, sealed)

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

    def archive_now(self) -> tuple[dict[str, Path], dict[str, Path]]:
        """The month's archive files and month-start snapshot(s) there now, by the names a seal gives them."""
        if self.setup.parts:
            return part_files(self.setup.parts, self.month)
        sources = self.sources()
        return {p.name: p for p in sources.files}, {sources.snapshot.name: sources.snapshot} if sources.snapshot else {}

    def late_until(self) -> int:
        """Late records are looked for up to now, at most ``late_horizon`` after the month."""
        return min(self.now, self.bounds[1] + self.setup.late_horizon)

    def scan_late(self, until: int) -> LateScan:
        if self.setup.parts:
            return scan_late_parts(self.setup.parts, self.setup.registry, self.month, until)
        return scan_late([self.setup.archive], self.setup.registry, self.month, until)

    def late_scan(self) -> LateScan:
        if self._late is None:
            began = time.monotonic()
            self._late = self.scan_late(self.late_until())
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
                recomputed_parts(self.setup.parts, registry, self.month, self.setup.scratch_dir, progress)
                if self.setup.parts else
                recomputed([self.setup.archive], registry, self.month, self.setup.scratch_dir, progress))
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
