"""Closing the month for the district: what close, status and restate cost, against `ledger verify`.

    python bench/month_close.py [--hours 24] [--late-hours 6] [--seed 1] [--workdir DIR]

The generated district (~114,000 devices) sends ``--hours`` of synthetic traffic ending at the
month's end (30 Nov), written as one archive file, and the ledger is fed from it as the
collector would have; ``--late-hours`` of 1 Dec follow as the next day's file. Then, timed:

* the peer: recomputing the month from the archive and comparing it with the ledger, which is
  what `ptmon ledger verify --month` does;
* `month close` of both contracts (hashing the inputs, looking for late heartbeats, the same
  recomputation and comparison, reading the figures, sealing); the sealed document's size;
* the report of the closed iot month (HTML, CSV, XLSX) rendered from the seal;
* `month status` with nothing changed, after a street-wide exemption (read from the ledger:
  no recomputation), and after a registry correction (a recomputation);
* `month restate` after those changes.

Printed: seconds per step and its ratio to the peer. A whole month holds 30 days of messages:
the peer (and every step that recomputes: close, status after a registry correction, restate)
grows with them, at the recomputation rate printed; the ratios stay.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ptmon.ledger.rebuild import rebuild_ledger
from ptmon.ledger.store import Ledger
from ptmon.month.close import close_month, restate_month
from ptmon.month.context import MonthContext, MonthSetup
from ptmon.month.status import status_lines
from ptmon.registry import load_registry
from ptmon.report.render import render
from ptmon.report.sealed import sealed_inputs
from ptmon.rules import DEFAULT_RULES_DIR, load_rules
from ptmon.simulators.district import write_registry
from ptmon.simulators.synthetic import Outage, Scenario, write_archive
from ptmon.timebase import US_PER_S, parse_instant

MONTH = "2026-11"
END = parse_instant("2026-12-01T00:00")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=int, default=24, help="hours of traffic before the month's end (default 24)")
    parser.add_argument("--late-hours", type=int, default=6, help="hours of 1 Dec after it (default 6)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ptmon-bench-month-") as tmp:
        run(args, args.workdir or Path(tmp))


def timed(label: str, results: list[tuple[str, float, str]], fn, note: str = ""):  # type: ignore[no-untyped-def]
    began = time.monotonic()
    value = fn()
    results.append((label, time.monotonic() - began, note))
    print(f"  {label}: {results[-1][1]:.1f} s {note}", flush=True)
    return value


def run(args: argparse.Namespace, work: Path) -> None:
    rules = load_rules()
    work.mkdir(parents=True, exist_ok=True)
    registry_path = work / "registry.csv"
    write_registry(registry_path, rules, args.seed)
    registry = load_registry(registry_path, rules)
    archive = work / "archive"
    archive.mkdir(exist_ok=True)
    start = END - args.hours * 3600 * US_PER_S
    scenario = Scenario(seed=args.seed, lead_in=True, outages=(Outage(street="taopu", from_us=start + 3600 * US_PER_S,
                                                                      to_us=start + 4 * 3600 * US_PER_S),))
    print(f"district: {len(registry):,} devices; {args.hours} h before the month's end, {args.late_hours} h after", flush=True)
    results: list[tuple[str, float, str]] = []
    day = archive / "ptmon-2026-11-30.jsonl.gz"
    records = timed("write the month's archive", results, lambda: write_archive(day, registry, rules, start, END, scenario))
    ledger_path = work / "data" / "ledger.sqlite"
    with Ledger(ledger_path) as ledger:
        timed("feed the ledger (as the collector)", results, lambda: rebuild_ledger([day], registry, ledger))
    after = END + args.late_hours * 3600 * US_PER_S
    write_archive(archive / "ptmon-2026-12-01.jsonl.gz", registry, rules, END, after, Scenario(seed=args.seed))
    setup = MonthSetup(ledger=ledger_path, archive=archive, registry=registry, registry_path=registry_path,
                       rules_dir=DEFAULT_RULES_DIR, config_path=None, data_dir=None, close_grace=0,
                       late_horizon=7 * 86_400 * US_PER_S)
    timed("peer: recompute and compare (ledger verify)", results, lambda: _verify(setup, after))
    peer = results[-1][1]
    timed("month close (both contracts)", results, lambda: _close(setup, after))
    print(f"  sealed: {_doc_size(ledger_path)}")
    timed("report of the closed iot month (html, csv, xlsx)", results, lambda: _report(ledger_path, work / "out"))
    timed("month status, nothing changed", results, lambda: _status(setup, after))
    with Ledger(ledger_path) as ledger:
        ledger.add_exemption(scope="street", target="taopu", start=start, end=start + 7200 * US_PER_S, reason="b",
                             approver="b")
    timed("month status after an exemption", results, lambda: _status(setup, after))
    text = registry_path.read_text().splitlines()
    changed = [_accepted(line, "2026-11-30") if i % 1000 == 1 else line for i, line in enumerate(text)]  # 114 devices
    registry_path.write_text("\n".join(changed) + "\n")
    setup = MonthSetup(**{**vars(setup), "registry": load_registry(registry_path, rules)})
    timed("month status after a registry correction", results, lambda: _status(setup, after))
    timed("month restate (both contracts)", results, lambda: _restate(setup, after))
    rate = records / peer
    print(f"\n{records:,} archive records in {args.hours} h; recompute and compare {rate:,.0f} records/s: a 30-day month "
          f"of such traffic ({records * 30 * 24 / args.hours:,.0f} records) about "
          f"{records * 30 * 24 / args.hours / rate / 60:.0f} min")
    print(f"{'step':52} {'s':>8} {'× peer':>8}")
    for label, seconds, note in results:
        print(f"{label:52} {seconds:8.1f} {seconds / peer:8.2f}  {note}")


def _accepted(line: str, day: str) -> str:
    fields = line.split(",")
    fields[7] = day
    return ",".join(fields)


def _verify(setup: MonthSetup, now: int) -> float:
    from ptmon.ledger.month import month_differences

    with MonthContext.open(setup, MONTH, now, writable=False) as ctx:
        recomputed, done = ctx.recomputed(setup.registry)
        found = month_differences(ctx.ledger, recomputed, setup.registry, MONTH, [])
        assert not found, found[:5]
        return done.records


def _close(setup: MonthSetup, now: int) -> None:
    with MonthContext.open(setup, MONTH, now, writable=True) as ctx:
        close_month(ctx, ["iot", "cam"], by="bench", accept_gaps=True)


def _doc_size(ledger_path: Path) -> str:
    with Ledger(ledger_path, readonly=True) as ledger:
        docs = ledger.db.execute("SELECT sum(length(doc)) FROM closings").fetchone()[0] or 0
        blobs = ledger.db.execute("SELECT sum(length(data)) FROM closing_blobs").fetchone()[0] or 0
    return f"closings {docs / 2**20:.1f} MB, sealed files {blobs / 2**20:.1f} MB, compressed"


def _report(ledger_path: Path, out: Path) -> None:
    with Ledger(ledger_path, readonly=True) as ledger:
        inputs = sealed_inputs(ledger, MONTH, "iot")
    render(inputs, out, ("html", "csv", "xlsx"), contract="iot", stem="report-iot-v1")


def _status(setup: MonthSetup, now: int) -> None:
    with MonthContext.open(setup, MONTH, now, writable=False) as ctx:
        lines, _ = status_lines(ctx, ["iot", "cam"])
    print("    " + "\n    ".join(line for line in lines if "money:" in line or "total" in line or "nothing changed" in line))


def _restate(setup: MonthSetup, now: int) -> None:
    with MonthContext.open(setup, MONTH, now, writable=True) as ctx:
        for contract in ("iot", "cam"):
            restate_month(ctx, contract, by="bench", reason="bench", accept_gaps=True)


if __name__ == "__main__":
    main()
