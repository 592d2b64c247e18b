"""`ptmon month close | status | restate | verify`: closing the month (月度结账).

Parsing and printing only; the work is in :mod:`ptmon.month.close`, :mod:`.status` and
:mod:`.verify`. The workflow for the contract office is docs/month-close.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..errors import LedgerError, UsageError
from ..inputs import command_inputs
from ..ledger.closing import closings
from ..ledger.store import Ledger
from ..partition import storage_tag
from ..registry import load_registry
from ..rules import load_rules
from ..timebase import US_PER_S, day_of, day_to_date, month_bounds, parse_instant
from .close import NothingChanged, Sealing, check_seal_time, close_month, restate_month
from .context import MonthContext, MonthSetup, now_us
from .parts import is_seal_ledger, lone_partition, partition_sources
from .room import disk_full, no_room
from .status import state_of, status_lines
from .verify import verify_month
from .words import when

DESCRIPTION = """\
Close a month's lease-payment acceptance (月度结账): `close` seals the month in the ledger — the
KPI rows, the money lines, the SHA-256 of every input, who closed it and when (第 1 版) — after
checking it against a recomputation from the archive. The report of a closed month is rendered
from that seal, the same bytes on every run. Data that arrives later (archive records, late
heartbeats, exemptions, registry or rules corrections) changes nothing until `restate` seals a
new version (第 2 版 …) beside the old one; `status` shows what changed and the money it would
move; `verify` checks the seals against the ledger and the files. See docs/month-close.md.

A partitioned deployment (partition collectors, docs/scale.md) closes the district's month from
every partition: `--ledger P1 P2 … --archive A1 A2 … --seal-ledger FILE`. The partitions are
checked (disjoint, every street of the rules, one rules and registry version) and merged; the
seals are kept in the seal ledger, created at the first close (`ptmon report --ledger FILE`
renders the sealed month from it).
"""


def add_month_parser(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser("month", help="close a month's acceptance, show its status, restate it, verify its seal",
                         description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = top.add_subparsers(dest="month_command", metavar="ACTION", required=True)
    close = actions.add_parser("close", help="seal the month's acceptance (第 1 版)",
                               description="Seal the month: refused before the grace period ([month] close_grace) is "
                               "over, while a collector still writes the month, for a contract already closed, for a "
                               "month not wholly observed without --accept-gaps, for a month with nothing observed (or less than "
                               "[month] min_coverage) even with it, and when the ledger differs from the "
                               "archive (the first difference is named; `ptmon ledger verify --month` lists them all). "
                               "Partitions (--ledger P1 P2 … --archive A1 A2 … --seal-ledger FILE) are refused when they "
                               "overlap, miss a street of the rules or ran with other rules or registry versions.")
    close.add_argument("month", metavar="YYYY-MM")
    close.add_argument("--by", required=True, metavar="NAME", help="who closes it (recorded in the seal and the report)")
    close.add_argument("--accept-gaps", action="store_true",
                       help="close although monitoring gaps leave the coverage below 100%% (the reviewers judged them)")
    status = actions.add_parser("status", help="open / closed / restated, and what changed since the closing",
                                description="Per contract: open, closed (第 1 版) or restated (第 N 版); for a closed "
                                "one every input that changed since (archive records of the month, late heartbeats, "
                                "exemptions, registry, rules) with the money it would move, step by step to the fen. "
                                "Recomputes the month from the archive when the archive, registry or rules changed "
                                "(minutes for the district). Without a month: every closing in the ledger.")
    status.add_argument("month", nargs="?", metavar="YYYY-MM")
    restate = actions.add_parser("restate", help="seal a new version with the inputs as they are now",
                                 description="Seal a new version (第 N+1 版) of a closed month with every input as it "
                                 "is now, and what changed since the previous version and why. Earlier versions stay.")
    restate.add_argument("month", metavar="YYYY-MM")
    restate.add_argument("--reason", required=True, help="why (shown in the report of the new version)")
    restate.add_argument("--by", required=True, metavar="NAME", help="who restates it")
    restate.add_argument("--accept-gaps", action="store_true",
                         help="as for close: the restater accepts the gaps (named in the report); without it, gaps "
                         "within those accepted in an earlier version keep that acceptance (and its signer), others "
                         "are refused")
    verify = actions.add_parser("verify", help="check the seals against the ledger and the files (exit 1 on a difference)",
                                description="Check every version's seal, the chain of versions, the sealed archive files "
                                "and snapshot, and the latest version's registry, rules, config and late heartbeats.")
    verify.add_argument("month", metavar="YYYY-MM")
    for p in (close, status, restate, verify):
        _common(p)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--contract", metavar="CODE", help="one contract (default: every contract of the rules)")
    p.add_argument("--config", metavar="FILE", help="collector config: its ledger, archive, registry, rules and [month]")
    p.add_argument("--ledger", metavar="FILE", nargs="+",
                   help="the ledger (default: from --config, else ptmon-data/ledger.sqlite); for a partitioned "
                   "deployment every partition's ledger, with --archive and --seal-ledger")
    p.add_argument("--archive", metavar="DIR", nargs="+",
                   help="the archive directory (default: from --config, else ptmon-data/archive); for a partitioned "
                   "deployment every partition's archive directory (in any order: paired by their partition tags)")
    p.add_argument("--seal-ledger", metavar="FILE",
                   help="partitioned deployment: the district's ledger of seals (created at the first close; give the "
                   "same file to every later month command and to `ptmon report --ledger` for the sealed report). "
                   "The partitions' rows are merged into it when a close or restatement seals, in the same "
                   "transaction as the seals (a refused one leaves it as it was); its closings stay")
    p.add_argument("--registry", metavar="FILE", help="device registry CSV (default: from --config)")
    p.add_argument("--rules", metavar="DIR", help="rule files directory (default: from --config, else the shipped rules)")
    p.add_argument("--now", metavar="TIME", help="for simulations and tests: act as if it were this instant (default: the clock)")


def setup_from(args: argparse.Namespace) -> MonthSetup:
    ledgers = [Path(p) for p in args.ledger or []]
    archives = [Path(p) for p in args.archive or []]
    inputs = command_inputs(argparse.Namespace(**{**vars(args), "ledger": args.ledger[0] if args.ledger else None,
                                                  "archive": args.archive[0] if args.archive else None}))
    from ..config import MonthConfig

    month = inputs.config.month if inputs.config else MonthConfig()
    settings: dict[str, Any] = {
        "registry_path": inputs.registry_path, "rules_dir": inputs.rules_dir,
        "config_path": Path(args.config).absolute() if args.config else None,
        "close_grace": int(month.close_grace * US_PER_S), "late_horizon": int(month.late_horizon * US_PER_S),
        "min_coverage": month.min_coverage}
    if len(ledgers) > 1 or len(archives) > 1 or args.seal_ledger:
        return _partitioned(args, ledgers or [inputs.ledger], archives or [inputs.archive], settings)
    try:
        tag = storage_tag(inputs.ledger, inputs.archive)
    except LedgerError as exc:  # on a full disk SQLite cannot even open a WAL ledger to read it
        if no_room(exc, inputs.ledger.parent):
            raise disk_full(inputs.ledger, "opening the ledger") from exc
        raise
    if tag is not None:
        raise lone_partition(inputs.ledger, tag, load_rules(inputs.rules_dir))
    if inputs.ledger.is_file():
        with Ledger(inputs.ledger, readonly=True) as ledger:
            if is_seal_ledger(ledger.db):
                raise UsageError(f"{inputs.ledger} is the seal ledger of a partitioned deployment: give every "
                                 f"partition's --ledger and --archive, and --seal-ledger {inputs.ledger}")
    registry = load_registry(inputs.registry_path, load_rules(inputs.rules_dir))
    return MonthSetup(ledger=inputs.ledger, archive=inputs.archive, registry=registry, data_dir=inputs.data_dir,
                      **settings)


def _partitioned(args: argparse.Namespace, ledgers: list[Path], archives: list[Path], settings: dict[str, Any]) -> MonthSetup:
    """A partitioned deployment's setup: its partitions checked and paired, and the seal ledger."""
    rules = load_rules(settings["rules_dir"])
    parts = partition_sources(ledgers, archives, rules)
    if not args.seal_ledger:
        raise UsageError("the month of partitions " + ", ".join(p.label for p in parts) + " is sealed in the "
                         "district's seal ledger: give --seal-ledger FILE (a new file at the first close, the same "
                         "file for every later `ptmon month` command)")
    seal = Path(args.seal_ledger)
    if seal.exists() and not seal.is_file():
        raise UsageError(f"--seal-ledger {seal} is not a file: give the district's seal ledger file")
    if args.month_command == "verify" and not seal.exists():
        raise UsageError(f"seal ledger not found: {seal}: a partitioned month's seals are kept there (`ptmon month "
                         "close` creates it); there is nothing to verify without it")
    registry = load_registry(settings["registry_path"], rules)
    return MonthSetup(ledger=seal, archive=parts[0].archive, registry=registry, data_dir=None,
                      parts=parts, **settings)


def cmd_month(args: argparse.Namespace) -> int:
    setup = setup_from(args)
    codes = [c.code for c in setup.registry.rules.contracts]
    if args.contract and args.contract not in codes:
        raise UsageError(f"--contract {args.contract!r} is not a contract of the rules (known: {', '.join(codes)})")
    contracts = [args.contract] if args.contract else codes
    now = parse_instant(args.now) if args.now else now_us()
    if args.month_command == "status" and not args.month:
        return _overview(setup, contracts, now)
    with MonthContext.open(setup, args.month, now, writable=args.month_command in ("close", "restate")) as ctx:
        return {"close": _close, "status": _status, "restate": _restate, "verify": _verify}[args.month_command](
            ctx, args, contracts)


def _close(ctx: MonthContext, args: argparse.Namespace, contracts: list[str]) -> int:
    began = time.monotonic()
    for sealing in close_month(ctx, contracts, by=args.by, accept_gaps=args.accept_gaps):
        _print_sealing(sealing)
    print(f"({time.monotonic() - began:.1f} s; recomputed from the archive: {ctx.recomputed_records:,} records in "
          f"{ctx.recompute_seconds:.1f} s)")
    return 0


def _restate(ctx: MonthContext, args: argparse.Namespace, contracts: list[str]) -> int:
    closed = [c for c in contracts if closings(ctx.ledger, ctx.month, c)]
    if not closed:
        raise UsageError(f"{ctx.month}: no closed contract to restate{' (' + args.contract + ')' if args.contract else ''}")
    for code in closed:  # every contract's date checked before any is sealed
        check_seal_time(ctx, closings(ctx.ledger, ctx.month, code)[-1])
    done = 0
    for code in closed:
        try:
            sealing = restate_month(ctx, code, by=args.by, reason=args.reason, accept_gaps=args.accept_gaps)
        except NothingChanged as exc:
            if args.contract:
                raise
            print(f"{code} {ctx.month}: {exc}")  # one contract unchanged does not stop the others
            continue
        _print_sealing(sealing)
        done += 1
    if not done:
        raise UsageError(f"{ctx.month}: nothing changed since the last version of any closed contract")
    return 0


def _print_sealing(s: Sealing) -> None:
    c = s.closing
    district = next((m for m in c.doc["money"] if m["street"] == "district"), None)
    money = (", ".join(f"{key} {Decimal(district[key]):,.2f}" for key in ("fee", "deduction", "payable")) if district
             else "no payment rule")
    late = c.doc["inputs"]["late"]
    print(f"{c.contract} {c.month}: sealed {c.label} at {when(c.closed_at)} by {c.closed_by}")
    print(f"  seal {c.seal}")
    print(f"  {money}")
    parts = c.doc["inputs"].get("partitions", [])
    shots = len(c.doc["inputs"].get("snapshots", []))
    print(f"  inputs: {len(c.doc['inputs']['archive'])} archive file(s)"
          f"{' + month-start snapshot' if c.doc['inputs']['snapshot'] else ''}"
          f"{f' + {shots} month-start snapshot(s)' if shots else ''}"
          f"{f' of {len(parts)} partitions' if parts else ''}, registry, rules, "
          f"{len(c.doc['inputs']['exemptions'])} exemption(s); late heartbeats of the contract: {late['of_contract']} "
          f"found, {late['counted']} counted")
    if s.analysis is not None:
        for step in s.analysis.steps:
            print(f"  changed: {step.title}: {'; '.join(step.lines[:3])}")
    if s.figures.inputs.warnings:
        print("  warnings: " + "; ".join(s.figures.inputs.warnings))


def _status(ctx: MonthContext, args: argparse.Namespace, contracts: list[str]) -> int:
    lines, _ = status_lines(ctx, contracts)
    print("\n".join(lines))
    return 0


def _verify(ctx: MonthContext, args: argparse.Namespace, contracts: list[str]) -> int:
    verdict = verify_month(ctx, contracts)
    print("\n".join(verdict.lines))
    if verdict.problems:
        print(f"DIFFERENT: {len(verdict.problems)} difference(s) from the seal")
        return 1
    print("OK: every seal matches the ledger and the files")
    return 0


def _overview(setup: MonthSetup, contracts: list[str], now: int) -> int:
    """Every closing in the ledger, and whether the last month is closed."""
    if not setup.ledger.is_file():
        raise UsageError(f"ledger not found: {setup.ledger}")
    last_month = day_to_date(day_of(month_bounds(day_to_date(day_of(now)).strftime("%Y-%m"))[0] - 1)).strftime("%Y-%m")
    with Ledger(setup.ledger, readonly=True) as ledger:
        found = closings(ledger)
        months = sorted({c.month for c in found} | {last_month})
        for month in months:
            for code in contracts:
                versions = [c for c in found if c.month == month and c.contract == code]
                latest = (f", {versions[-1].label} {when(versions[-1].closed_at)} by {versions[-1].closed_by}"
                          if versions else "")
                print(f"{month} {code}: {state_of(versions)}{latest}")
    print("`ptmon month status YYYY-MM` shows what changed since a closing", file=sys.stderr)
    return 0
