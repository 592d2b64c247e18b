"""`ptmon ledger rebuild | verify --month YYYY-MM`: the ledger's month against the archive.

``verify`` recomputes the month from the archive (month-start snapshot and the files after
it) into a scratch ledger and compares it with the real one: the KPI rows with the ledger's
exemptions, and every hour row. ``rebuild`` replaces the month's rows of the real ledger
with the recomputed ones, in one transaction; it refuses while a collector runs on the data
directory (the collector writes the month's hours as they close).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..anomaly.ledger import read_anomalies
from ..anomaly.ledger import replace_month as replace_anomalies
from ..errors import UsageError
from ..inputs import command_inputs
from ..lock import collector_running
from ..outputs import scratch_directory
from ..partition import restrict_registry, storage_tag
from ..registry import Registry, load_registry
from ..replay import Progress
from ..results import Results
from ..rules import load_rules
from ..timebase import format_instant, month_bounds
from .access import refuse_read_only, scratch_parent
from .observed import sampled_outside_spans
from .read import MERGED_SPANS_KEY, ledger_results
from .rebuild import Recomputed, recompute_month
from .records import Exemption, HourRow
from .store import Ledger

SHOWN_DIFFERENCES = 10


def add_ledger_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    led = sub.add_parser("ledger", help="check or rebuild a month of the ledger against the archive",
                         description="The ledger is the record the report pays on; the archive holds every message "
                         "received. `verify` recomputes a month from the archive and compares; `rebuild` replaces the "
                         "month's rows with the recomputed ones (after a lost checkpoint, a fixed registry, or when "
                         "verify found a difference). Both show progress; a month of the district takes minutes.")
    actions = led.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    for name, text in (("verify", "compare the ledger's month with a recomputation from the archive; exit 1 on a "
                                  "difference, listing the first differing rows"),
                       ("rebuild", "recompute the month from the archive and replace its rows in the ledger "
                                   "(exemptions, alerts and other months are kept)")):
        p = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("--month", required=True, metavar="YYYY-MM", help="the calendar month (Asia/Shanghai)")
        p.add_argument("--config", metavar="FILE", help="collector config: its ledger, archive, registry and rules")
        p.add_argument("--ledger", metavar="FILE", help="the ledger (default: from --config, else ptmon-data/ledger.sqlite)")
        p.add_argument("--archive", metavar="DIR", help="the archive directory (default: from --config, else ptmon-data/archive)")
        p.add_argument("--registry", metavar="FILE", help="device registry CSV (default: from --config)")
        p.add_argument("--rules", metavar="DIR", help="rule files directory (default: from --config, else the shipped rules)")


@dataclass(frozen=True)
class _Paths:
    ledger: Path
    archive: Path
    data_dir: Path | None
    registry: Registry


def _paths(args: argparse.Namespace) -> _Paths:
    inputs = command_inputs(args)
    if not inputs.archive.is_dir():
        raise UsageError(f"archive directory not found: {inputs.archive}")
    registry = load_registry(inputs.registry_path, load_rules(inputs.rules_dir))
    if (tag := storage_tag(inputs.ledger, inputs.archive)) is not None:  # a partition's: its own streets' rows only
        registry = restrict_registry(registry, tag.streets)
        _say(f"partition {tag.label}: the registry's rows of its streets only")
    return _Paths(inputs.ledger, inputs.archive, inputs.data_dir, registry)


def cmd_ledger(args: argparse.Namespace) -> int:
    month_bounds(args.month)
    paths = _paths(args)
    if not paths.ledger.is_file():
        raise UsageError(f"ledger not found: {paths.ledger}")
    from ..month.parts import refuse_seal_ledger

    with Ledger(paths.ledger, readonly=True) as ledger:
        refuse_seal_ledger(ledger, f"{args.ledger_command} each partition's ledger against its own archive")
    if args.ledger_command == "rebuild":
        refuse_read_only(paths.ledger)
    if args.ledger_command == "rebuild" and collector_running(paths.data_dir, paths.ledger):
        raise UsageError(f"a collector is running on {paths.ledger}: stop it before rebuilding (it writes the "
                         "month's hours as they close); `ptmon ledger verify` works while it runs")
    with scratch_directory("ptmon-ledger-", scratch_parent(paths.ledger.parent)) as scratch:
        recomputed_path = Path(scratch) / "recomputed.sqlite"
        with Ledger(recomputed_path) as recomputed:
            done = _recompute(paths, args.month, recomputed)
        if args.ledger_command == "verify":
            return _verify(paths, args.month, recomputed_path, done, _rebuild_command(args))
        with Ledger(paths.ledger) as ledger, Ledger(recomputed_path, readonly=True) as recomputed:
            ledger.replace_month(recomputed_path, *month_bounds(args.month))
            replace_anomalies(ledger, recomputed, args.month)
        _say(f"{args.month}: the ledger's rows replaced by the recomputation ({done.sources.describe()})")
        return 0


def _recompute(paths: _Paths, month: str, into: Ledger) -> Recomputed:
    began = time.monotonic()
    last = [began]

    def progress(p: Progress) -> None:
        if time.monotonic() - last[0] >= 2.0:
            last[0] = time.monotonic()
            at = format_instant(p.clock) if p.clock is not None else "-"
            _say(f"recomputing {month}: {p.records:,} records, {p.records / max(p.elapsed, 1e-9):,.0f}/s, at {at}")

    done = recompute_month([paths.archive], paths.registry, month, into, progress=progress)
    _say(f"recomputed {month} from {done.sources.describe()}: {done.records:,} records in {time.monotonic() - began:.0f} s")
    return done


def _rebuild_command(args: argparse.Namespace) -> str:
    """`ptmon ledger rebuild` of the month verified, with the options verify was given."""
    given = [x for option in ("config", "ledger", "archive", "registry", "rules") if getattr(args, option)
             for x in (f"--{option}", str(getattr(args, option)))]
    return shlex.join(["ptmon", "ledger", "rebuild", "--month", args.month, *given])


def _verify(paths: _Paths, month: str, recomputed_path: Path, done: Recomputed, rebuild: str) -> int:
    start, end = month_bounds(month)
    with Ledger(paths.ledger, readonly=True) as ledger, Ledger(recomputed_path, readonly=True) as recomputed:
        exemptions = ledger.exemptions(start=start, end=end)
        found = compare_month(ledger, recomputed, paths.registry, month, exemptions)
        merged = ledger.db.execute("SELECT 1 FROM meta WHERE key = ?", (MERGED_SPANS_KEY,)).fetchone() is not None
        outside = [] if merged else sampled_outside_spans(ledger.hours(start, end), ledger.spans(),
                                                          paths.registry.rules, start, end)
    print(f"ledger verify {month}: {paths.ledger} against the archive ({done.sources.describe()}, {done.records:,} records)")
    for what, diff, total in (("KPI rows", found.kpi, found.kpi_rows), ("hour rows", found.hours, None),
                              ("count rows", found.counts, None), ("anomaly rows", found.anomalies, None)):
        print(f"  {what}: {'equal' if not diff else f'{len(diff)} differ'}" + (f" ({total})" if total else ""))
        for line in diff[:SHOWN_DIFFERENCES]:
            print(f"    {line}")
    # The ledger against itself: exemptions apply only at instants inside its spans, so an hour that
    # sampled outside them would keep devices an exemption takes out (a ledger written before that was
    # fixed). A merged ledger's spans are the time every partition observed, its hours each one's own.
    print(f"  observed spans: {f'{len(outside)} hours sampled outside them' if outside else 'hours inside them'}")
    for line in outside[:SHOWN_DIFFERENCES]:
        print(f"    {line}")
    if outside:
        print("INCONSISTENT: the ledger's hours sampled time its observed spans do not hold; `ptmon ledger rebuild "
              f"--month {month}` writes both again from the archive")
    if found.any:
        print(f"DIFFERENT: `{rebuild}` (collector stopped) replaces the ledger's month with the recomputation")
        return 1
    if outside:
        return 1
    print("OK: the ledger's month equals the archive's")
    return 0


@dataclass(frozen=True)
class MonthComparison:
    """Lines only in the ledger ('ledger:  …') or only in the recomputation ('archive: …')."""

    kpi: list[str]
    hours: list[str]
    counts: list[str]
    anomalies: list[str]
    kpi_rows: int

    @property
    def any(self) -> bool:
        return bool(self.kpi or self.hours or self.counts or self.anomalies)


def compare_month(ledger: Ledger, recomputed: Ledger, registry: Registry, month: str, exemptions: Sequence[Exemption],
                  contracts: Sequence[str] | None = None) -> MonthComparison:
    """The ledger's month against its recomputation: KPI rows (with ``exemptions``), hour rows and
    message count rows; only those of ``contracts`` when given (count rows of no device too)."""
    start, end = month_bounds(month)
    wanted = set(contracts) if contracts is not None else None
    mine = ledger_results(ledger, registry, start, end, exemptions)
    theirs = ledger_results(recomputed, registry, start, end, exemptions)

    def kpi_lines(results: Results) -> list[str]:
        return [line for line in results.csv_text().splitlines()[1:] if wanted is None or line.split(",")[0] in wanted]

    def hour_lines(db: Ledger) -> list[str]:
        return [_hour_key(h) for h in db.hours(start, end) if wanted is None or h.contract in wanted]

    def count_lines(db: Ledger) -> list[str]:
        return [repr(c) for c in db.counts(start, end) if wanted is None or c.contract in wanted or not c.contract]

    return MonthComparison(kpi=_differences(kpi_lines(mine), kpi_lines(theirs)),
                           hours=_differences(hour_lines(ledger), hour_lines(recomputed)),
                           counts=_differences(count_lines(ledger), count_lines(recomputed)),
                           anomalies=_differences([repr(a) for a in read_anomalies(ledger, month)],
                                                  [repr(a) for a in read_anomalies(recomputed, month)]),
                           kpi_rows=len(kpi_lines(mine)))


def month_differences(ledger: Ledger, recomputed: Ledger, registry: Registry, month: str,
                      exemptions: Sequence[Exemption], contracts: Sequence[str] | None = None) -> list[str]:
    """Every differing line of :func:`compare_month`, KPI rows first."""
    found = compare_month(ledger, recomputed, registry, month, exemptions, contracts)
    return [*found.kpi, *found.hours, *found.counts, *found.anomalies]


def _hour_key(h: HourRow) -> str:
    return (f"hour {format_instant(h.hour)} {h.contract} {h.street}: samples {h.samples} online {h.online} "
            f"expected {h.expected} counters {','.join(map(str, h.counters))}")


def _differences(ledger: list[str], archive: list[str]) -> list[str]:
    """Lines only in one side, in order: '- ledger' / '+ archive'."""
    only_ledger = set(ledger) - set(archive)
    only_archive = set(archive) - set(ledger)
    return [f"ledger:  {x}" for x in ledger if x in only_ledger] + [f"archive: {x}" for x in archive if x in only_archive]


def _say(text: str) -> None:
    print(f"ptmon ledger: {text}", file=sys.stderr, flush=True)
