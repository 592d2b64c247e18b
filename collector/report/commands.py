"""``ptmon report``: its options and the command, which finds the ledger(s), the registry and the
rules and hands them to the report builder (:mod:`ptmon.report.build`) and renderers."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import PtmonError, UsageError
from ..merge import looked_at, merged_ledger_file
from ..outputs import output_dir, refuse_unwritable_file, scratch_directory
from ..registry import load_registry
from ..rules import DEFAULT_RULES_DIR, load_rules
from ..timebase import month_bounds


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser(
        "report", help="the monthly lease-payment acceptance report (月度租赁服务考核验收报告)",
        description="Write the month's acceptance report per contract and street: KPIs against thresholds "
        "(达标/未达标), lease fee, deduction and payable amount, monitoring coverage and gaps, exemptions, the "
        "maintenance record, the worst devices and daily trends, with the versions and SHA-256 of every input. "
        "Files: report-YYYY-MM[-CONTRACT].{pdf,html,xlsx,csv} in --out. By default the numbers come from the "
        "ledger; --from-archive recomputes them from the raw message archive so that a reviewer can check them.")
    rep.add_argument("--month", required=True, metavar="YYYY-MM", help="the calendar month (Asia/Shanghai)")
    rep.add_argument("--contract", metavar="CODE", help="one contract only (iot or cam; default: every contract)")
    rep.add_argument("--config", metavar="FILE",
                     help="collector config: its registry, rules, ledger_file and archive_dir are the defaults")
    rep.add_argument("--ledger", metavar="FILE", nargs="+", help="the ledger (default: from --config, else "
                     "ptmon-data/ledger.sqlite); several: the ledgers of partition collectors, merged into one district "
                     "once checked to be disjoint, to cover every street and to have run with the same rules and registry")
    rep.add_argument("--from-archive", nargs="*", metavar="DIR", dest="from_archive",
                     help="recompute from the archive: these directories (or files) of it; none given: the config's "
                     "archive_dir, else ptmon-data/archive; partition collectors' archive directories are recomputed "
                     "each with its streets' registry rows and merged (checked as for --ledger). Exemptions, being "
                     "approvals, still come from the ledger(s)")
    rep.add_argument("--registry", metavar="FILE", help="device registry CSV (default: from --config)")
    rep.add_argument("--rules", metavar="DIR", help="rule files directory (default: from --config, else the repo's rules/)")
    rep.add_argument("--out", metavar="DIR", default=".", help="where the files go (default: the current directory)")
    rep.add_argument("--format", default="pdf,html,xlsx,csv", metavar="LIST",
                     help="comma-separated formats among pdf, html, xlsx, csv (default: all four)")
    rep.add_argument("--version", type=int, metavar="N", dest="closing_version",
                     help="a closed month: render its version N (第 N 版) instead of the latest. A closed contract's "
                     "report always comes from its sealed closing (report-YYYY-MM-CONTRACT-vN.*), see `ptmon month`")


def cmd_report(args: argparse.Namespace) -> int:
    from .render import parse_formats

    month_bounds(args.month)  # a bad month fails here, before anything is read
    formats = parse_formats(args.format)
    output_dir(args.out, "--out")  # before the month is read (a recomputation takes minutes)
    for fmt in formats:
        for taken in Path(args.out).glob(f"report-{args.month}*.{fmt}"):
            if taken.is_dir():
                raise UsageError(f"--out {args.out}: {taken} is a directory where a report file goes: move it away")
            refuse_unwritable_file(taken, f"--out {args.out}: {taken.name}")
    config = None
    if args.config:
        from ..config import load_config

        config = load_config(args.config)
    rules = load_rules(args.rules or (config.rules if config and config.rules else DEFAULT_RULES_DIR))
    if args.contract and args.contract not in [c.code for c in rules.contracts]:
        raise UsageError(f"--contract {args.contract!r} is not a contract of the rules (known: "
                         f"{', '.join(c.code for c in rules.contracts)})")
    with scratch_directory("ptmon-report-") as scratch:
        ledger, label = _report_ledger(args.ledger, config, rules, Path(scratch))
        live_contracts: list[str | None] = [args.contract]
        if args.from_archive is None:
            from .sealed import render_closed_month

            live_contracts = render_closed_month(ledger, args.month, args.contract, [c.code for c in rules.contracts],
                                                 Path(args.out), formats, args.closing_version)
            if not live_contracts:
                return 0
        registry_path = args.registry or (config.registry if config else None)
        if registry_path is None:
            raise UsageError("give the registry: --registry FILE, or --config FILE naming it")
        registry = load_registry(registry_path, rules)
        return _report(args, config, rules, registry, formats, ledger, label, live_contracts)


def _report_ledger(paths: list[str] | None, config, rules, scratch: Path) -> tuple[Path, str | None]:
    """The report's ledger, and what to call it: several partitions' ledgers are merged into one."""
    if not paths or len(paths) == 1:
        path = Path(paths[0]) if paths else config.ledger_path if config else Path("ptmon-data") / "ledger.sqlite"
        _refuse_one_partition(path, rules)
        return path, None
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise UsageError(f"ledger not found: {', '.join(missing)}")
    return merged_ledger_file([Path(p) for p in paths], rules, scratch / "merged.sqlite"), " + ".join(paths)


def _refuse_one_partition(path: Path, rules) -> None:
    """One partition's ledger alone is not the district (an unusable file is the builder's to report)."""
    from ..errors import LedgerError
    from ..ledger.store import Ledger
    from ..partition import check_partitions, ledger_tag

    try:
        with Ledger(path, readonly=True) as ledger:
            tag = ledger_tag(ledger.db, str(path))
    except LedgerError:
        return
    if tag is not None:
        check_partitions(rules, [(str(path), tag)])


def _report(args, config, rules, registry, formats, ledger: Path, label: str | None,
            live_contracts: list[str | None]) -> int:
    from .render import render

    archive_dirs = None
    if args.from_archive is not None:
        archive_dirs = [Path(d) for d in args.from_archive] or [config.archive_path if config else Path("ptmon-data") / "archive"]
        missing = [str(d) for d in archive_dirs if not looked_at(d, Path.exists)]
        if missing:
            raise UsageError(f"archive directory or file not found: {', '.join(missing)}")
        ledger_path = ledger if ledger.is_file() else None
    elif not ledger.is_file():
        raise UsageError(f"ledger not found: {ledger} (give --ledger FILE or --config FILE, or recompute with --from-archive)")
    else:
        ledger_path = ledger

    def say(message: str) -> None:
        print(f"ptmon report: {message}", file=sys.stderr, flush=True)

    try:
        from .build import build_inputs
    except ImportError as exc:  # pragma: no cover - the builder ships with the ledger
        raise PtmonError(f"the report builder is not available: {exc}") from exc
    began = time.monotonic()
    inputs = build_inputs(month=args.month, registry=registry, rules=rules, ledger_path=ledger_path,
                          archive_dirs=archive_dirs, progress=say, ledger_label=label)
    say(f"inputs ready ({time.monotonic() - began:.1f} s)")
    for contract in live_contracts:
        for path in render(inputs, Path(args.out), formats, contract=contract, progress=say):
            print(path)
    say(f"done in {time.monotonic() - began:.1f} s")
    return 0
