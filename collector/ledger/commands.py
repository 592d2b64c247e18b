"""`ptmon exempt add | list | revoke`: exemptions recorded in the ledger.

An exemption takes devices out of the denominator for a window (docs/domain.md: Expected). The
running collector picks a new one up within seconds; one recorded after its window began
applies from then on, and the report names the hours it could not apply to.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..timebase import format_instant, month_bounds, parse_instant
from .access import refuse_read_only
from .records import Exemption
from .store import Ledger


def _add_locations(p: argparse.ArgumentParser, default: object = None) -> None:
    """Where the ledger and registry are: accepted before the action and after it alike."""
    p.add_argument("--config", metavar="FILE", default=default,
                   help="collector config (its ledger_file / data_dir locate the ledger, its registry and rules check targets)")
    p.add_argument("--ledger", metavar="FILE", default=default,
                   help="the ledger file (default: from --config, else ptmon-data/ledger.sqlite)")
    p.add_argument("--registry", metavar="FILE", default=default,
                   help="the registry the device, street or gateway is checked against (default: from --config)")


def add_exempt_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ex = sub.add_parser("exempt", help="record, list or revoke exemptions (maintenance windows, force majeure)",
                        description="Exemptions take devices out of the SLA denominator for a window: a maintenance "
                        "window, force majeure, a street-wide power cut approved by the center. They are kept in the "
                        "ledger with their approver and reason, applied by the collector, and listed in the report.")
    _add_locations(ex)
    ex_sub = ex.add_subparsers(dest="exempt_command", metavar="ACTION", required=True)
    add = ex_sub.add_parser("add", help="record an approved exemption",
                            description="Record an approved exemption. The street must be one of the rules; a device "
                            "or gateway must be in the registry (--registry, or the one --config names).")
    target = add.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", metavar="ID", help="one device")
    target.add_argument("--street", metavar="CODE", help="every device of a street (e.g. a street-wide power cut)")
    target.add_argument("--gateway", metavar="ID", help="every device behind a gateway")
    add.add_argument("--from", dest="start", required=True, metavar="TIME",
                     help="start, ISO 8601 (Shanghai time unless an offset is given), e.g. 2026-11-03T09:00")
    add.add_argument("--to", dest="end", required=True, metavar="TIME", help="end (exclusive)")
    add.add_argument("--reason", required=True, help="why (shown in the report)")
    add.add_argument("--approver", required=True, help="who approved it (shown in the report)")
    lst = ex_sub.add_parser("list", help="list exemptions", description="List the ledger's exemptions, revoked ones marked.")
    lst.add_argument("--month", metavar="YYYY-MM", help="only those overlapping this month")
    lst.add_argument("--active", action="store_true", help="leave out revoked ones")
    rev = ex_sub.add_parser("revoke", help="revoke an exemption (it stays listed, marked revoked)",
                            description="Revoke an exemption: it stays in the ledger and the report, marked revoked.")
    rev.add_argument("id", type=int, help="exemption id (see list)")
    rev.add_argument("--by", required=True, help="who revokes it")
    rev.add_argument("--reason", required=True, help="why")
    for action in (add, lst, rev):
        _add_locations(action, default=argparse.SUPPRESS)  # given after the action, they override


def cmd_exempt(args: argparse.Namespace) -> int:
    path = _ledger_path(args)
    action = args.exempt_command
    if action != "list":
        refuse_read_only(path)
    if action == "add":  # before the ledger is opened (or created)
        scope, target = next((s, getattr(args, s)) for s in ("device", "street", "gateway") if getattr(args, s))
        start, end = parse_instant(args.start), parse_instant(args.end)
        _check_window(args.start, start, args.end, end)
        _check_text("--reason", args.reason)
        _check_text("--approver", args.approver)
        streets = _check_target(args, scope, target)
        _check_new_ledger(args, path)
    with Ledger(path, readonly=action == "list") as ledger:
        if action != "list":
            from ..month.parts import refuse_seal_ledger

            refuse_seal_ledger(ledger, f"record the {'exemption' if action == 'add' else 'revocation'} in the ledger "
                                       "of the partition that owns the street")
        if action == "add":
            _refuse_other_partitions(ledger, path, scope, target, streets)
            e = ledger.add_exemption(scope=scope, target=target, start=start, end=end, reason=args.reason,
                                     approver=args.approver)
            print(f"exemption {e.id} recorded: {_describe(e)}")
            _closed_note(ledger, e)
        elif action == "revoke":
            e = ledger.revoke_exemption(args.id, by=args.by, reason=args.reason)
            print(f"exemption {e.id} revoked by {e.revoked_by}: {_describe(e)}")
            _closed_note(ledger, e)
        else:
            bounds = month_bounds(args.month) if args.month else (None, None)
            rows = ledger.exemptions(start=bounds[0], end=bounds[1], include_revoked=not args.active)
            if not rows:
                print("no exemptions")
            for e in rows:
                print(f"{e.id:>5}  {_describe(e)}")
    return 0


def _check_new_ledger(args: argparse.Namespace, path: Path) -> None:
    """An exemption recorded where no collector reads it counts nowhere: a ledger is created only at the path
    a config names (before its collector first runs) or in a directory that exists, with a note."""
    if path.exists():
        return
    if not args.ledger and not args.config:
        raise UsageError(f"no ledger at {path} (the default): give the collector's --config, or --ledger FILE")
    if args.ledger and not path.parent.is_dir():
        raise UsageError(f"--ledger {path}: no directory {path.parent}")
    print(f"note: {path} did not exist: a new ledger is created; the exemption counts only if the collector "
          "writes this ledger", file=sys.stderr)


def _closed_note(ledger: Ledger, e: Exemption) -> None:
    """Say so when the exemption's window touches a closed month: it changes that month only
    through a restatement (`ptmon month`)."""
    from .closing import closings

    touched = sorted({(c.month, c.contract) for c in closings(ledger)
                      if e.start < month_bounds(c.month)[1] and month_bounds(c.month)[0] < e.end})
    for month in sorted({m for m, _ in touched}):
        contracts = ", ".join(c for m, c in touched if m == month)
        print(f"note: {month} is closed ({contracts}): this changes its figures only through a restatement; "
              f"`ptmon month status {month}` shows the effect, `ptmon month restate {month}` seals it", file=sys.stderr)


def _describe(e: Exemption) -> str:
    revoked = (e.revoked_at or 0) - (e.revoked_at or 0) % 1_000_000  # recorded to the µs, shown to the second
    state = "" if e.active else f"  [revoked {format_instant(revoked)} by {e.revoked_by}: {e.revoke_reason}]"
    return (f"{e.scope} {e.target}  {format_instant(e.start)} → {format_instant(e.end)}  "
            f"reason: {e.reason}  approver: {e.approver}{state}")


def _ledger_path(args: argparse.Namespace) -> Path:
    if args.ledger:
        return Path(args.ledger)
    if args.config:
        from ..config import load_config

        return load_config(args.config).ledger_path
    return Path("ptmon-data") / "ledger.sqlite"


EARLIEST = parse_instant("2000-01-01")  # before this, or after LATEST, a date is a typo: no lease ran then
LATEST = parse_instant("2100-01-01")


def _check_window(start_text: str, start: int, end_text: str, end: int) -> None:
    """Refuse a window that is no exemption an operator approved: a typed year (1026, 0026) that would
    exempt the devices over every month back to it, closed ones included."""
    for option, text, t in (("--from", start_text, start), ("--to", end_text, end)):
        if not EARLIEST <= t <= LATEST:
            raise UsageError(f"{option} {text!r} is {format_instant(t) if t >= 0 else 'before 1970'}: an exemption lies "
                             f"between {format_instant(EARLIEST)} and {format_instant(LATEST)}; a typo in the year?")


def _check_text(option: str, text: str) -> None:
    """The reason and approver are shown on one line of the report and the status: no control characters."""
    if not text.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise UsageError(f"{option} must be one line of text, without control characters (newlines, tabs): {text!r}")


def _refuse_other_partitions(ledger: Ledger, path: Path, scope: str, target: str, streets: list[str]) -> None:
    """A partition's ledger records exemptions of its own streets only: one of another street would count
    nowhere (its devices are not in this partition's registry rows) and be missing from the owner's ledger."""
    from ..partition import ledger_tag

    tag = ledger_tag(ledger.db, str(path))
    if tag is None or set(streets) & set(tag.streets):
        return
    raise UsageError(f"--{scope} {target!r} is on street {', '.join(streets)}, which the ledger {path} does not own "
                     f"(its partition is {tag.label}): record the exemption in the ledger of the partition that owns "
                     "the street")


def _check_target(args: argparse.Namespace, scope: str, target: str) -> list[str]:
    """Refuse a street the rules do not have, and a device or gateway the registry does not have; the
    streets the target covers."""
    from ..exemptions import ExemptionMask
    from ..registry import load_registry
    from ..rules import DEFAULT_RULES_DIR, load_rules

    config = None
    if args.config:
        from ..config import load_config

        config = load_config(args.config)
    rules = load_rules(config.rules if config and config.rules else DEFAULT_RULES_DIR)
    registry_path = args.registry or (config.registry if config else None)
    if scope == "street":
        if target not in rules.street_codes():
            raise UsageError(f"--street {target!r} is not a street of the rules (known: {', '.join(rules.street_codes())})")
        return [target]
    if registry_path is None:
        raise UsageError(f"--{scope} {target!r} cannot be checked: give the registry (--registry FILE, or --config FILE "
                         "naming it)")
    registry = load_registry(registry_path, rules)
    probe = Exemption(id=0, scope=scope, target=target, start=0, end=1, reason="", approver="", created_at=0)
    rows = ExemptionMask(registry).rows_of(probe)
    if not len(rows):
        where = "is not in" if scope == "device" else "has no device in"
        raise UsageError(f"--{scope} {target!r} {where} the registry {registry_path}")
    print(f"{len(rows)} device(s) covered", file=sys.stderr)
    codes = rules.street_codes()
    return [codes[i] for i in np.unique(registry.street[rows]).tolist()]
