"""Replay benchmark: ``ptmon replay`` of a generated archive of the district, against its floor.

    python bench/replay_month.py [--days N] [--seed N] [--workers N] [--keep DIR]

Writes the generated district's registry and ``--days`` days of its traffic (about 9 million
heartbeats a day; ``--days 30``: a month, ~270 million) as a gzip JSON Lines archive, then, in
the same run, times:

1. the floor: gzip decompression of the archive and ``orjson.loads`` of every line, nothing
   kept (what any reader of the archive must do), with the inflater the reader uses (zlib-ng);
   the same with the standard library's zlib is printed too, for reference;
2. ``ptmon replay`` of the archive (``ptmon.replay.replay``: read, decode, engine, tally),
   the period being the days written, run as a subprocess with ``--csv``; beside its wall time,
   the CPU time of all its processes (the reader's forked scanning workers included) and the peak
   RSS of its own process (which should not grow with ``--days``).

Printed: records/s of each, the ratio replay / floor (target ≥ 0.5), the replay's CPU time as a
multiple of the floor and the best ratio that CPU time allows on this machine's cores (the wall
time cannot fall below CPU / cores), the time of a 30-day
month projected from the measured rate (target ≤ 600 s on 2 cores; exact with ``--days 30``),
and the SHA-256 of the replay CSV, which is the same for the same ``--days`` and ``--seed``
on every run and every code version that replays exactly. Generation is not timed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from datetime import date
from pathlib import Path
from typing import Any

import orjson
from zlib_ng import zlib_ng

from ptmon import kernels
from ptmon.rules import load_rules
from ptmon.simulators.district import COLUMNS, generate_registry
from ptmon.simulators.synthetic import Scenario, write_archive
from ptmon.timebase import US_PER_S, date_to_day, day_start, format_instant

FIRST_DAY = date(2026, 11, 1)
MONTH_DAYS = 30


def floor_seconds(path: Path, inflate: Any = zlib_ng) -> tuple[int, float]:
    """(lines, seconds) to decompress the archive with ``inflate`` (a zlib-like module) and parse
    every line with orjson."""
    loads = orjson.loads
    began = time.perf_counter()
    lines = 0
    rest = b""
    with open(path, "rb") as raw:
        member = inflate.decompressobj(31)
        while chunk := raw.read(1 << 20):
            while chunk:
                data = rest + member.decompress(chunk)
                chunk = b""
                if member.eof:
                    chunk, member = member.unused_data, inflate.decompressobj(31)
                parts = data.split(b"\n")
                rest = parts.pop()
                for line in parts:
                    loads(line)
                lines += len(parts)
    if rest:
        loads(rest)
        lines += 1
    return lines, time.perf_counter() - began


def write_inputs(tmp: Path, days: float, seed: int, workers: int) -> tuple[Path, Path, str, str, int]:
    """(registry CSV, archive, period start, period end, heartbeat records)."""
    rules = load_rules()
    registry_path = tmp / "registry.csv"
    with open(registry_path, "w", encoding="utf-8", newline="") as out:  # the same for the same seed
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(generate_registry(rules, seed))
    from ptmon.registry import load_registry

    registry = load_registry(str(registry_path), rules)
    start = day_start(date_to_day(FIRST_DAY))
    end = start + int(days * 86_400) * US_PER_S
    archive = tmp / f"traffic-{days:g}d-seed{seed}.jsonl.gz"
    if archive.exists():
        return registry_path, archive, format_instant(start), format_instant(end), -1
    count = write_archive(archive, registry, rules, start, end, Scenario(seed=seed, lead_in=True), workers=workers)
    return registry_path, archive, format_instant(start), format_instant(end), count


# `ptmon` itself, then its own peak RSS on the last line of stderr (VmHWM: see rss.py)
_PTMON_WITH_PEAK = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from rss import peak_rss
from ptmon.__main__ import main
status = main()
print(f"peak RSS kB {{peak_rss() // 1024}}", file=sys.stderr)
sys.exit(status)
"""


def replay_seconds(registry: Path, archive: Path, start: str, end: str, csv_path: Path) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of the replay and every process it waited for: its scanning workers,
    peak RSS of the replay's own process in MB)."""
    command = [sys.executable, "-c", _PTMON_WITH_PEAK, "replay", "--registry", str(registry),
               "--start", start, "--end", end, "--csv", str(csv_path), "--quiet", str(archive)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(command, check=True, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    *said, peak = done.stderr.splitlines()
    sys.stderr.write("".join(f"{line}\n" for line in said))
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), int(peak.split()[-1]) / 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=1.0, help="days of district traffic (default 1; 30: a month)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="processes writing the archive (not timed; default 2)")
    parser.add_argument("--keep", metavar="DIR", help="write the registry, archive and CSV here and keep them; "
                        "an archive already there for the same --days and --seed is reused (to time two versions on one archive)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.keep or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        registry, archive, start, end, count = write_inputs(tmp, args.days, args.seed, args.workers)
        print(f"archive: {'reused' if count < 0 else f'{count:,} heartbeats'}, "
              f"{archive.stat().st_size / 1e6:,.0f} MB gzip, written in "
              f"{time.perf_counter() - began:.0f} s; period {start} — {end}", flush=True)
        print(f"ptmon replay's archive scanner and payload parser: {kernels.in_use()}", flush=True)
        lines, floor = floor_seconds(archive)
        print(f"floor: gzip decompress (zlib-ng, as the reader) + orjson.loads of {lines:,} lines in {floor:.1f} s "
              f"({lines / floor:,.0f}/s)", flush=True)
        _, floor_zlib = floor_seconds(archive, zlib)
        print(f"  (the same with the standard library's zlib: {floor_zlib:.1f} s)", flush=True)
        csv_path = tmp / "replay.csv"
        seconds, cpu, peak_mb = replay_seconds(registry, archive, start, end, csv_path)
        digest = hashlib.sha256(csv_path.read_bytes()).hexdigest()
    ratio = floor / seconds
    month = seconds * MONTH_DAYS / args.days
    print(f"ptmon replay: {lines:,} lines in {seconds:.1f} s ({lines / seconds:,.0f}/s); CSV sha256 {digest}")
    print(f"replay / floor: {ratio:.2f} (target ≥ 0.5) {'PASS' if ratio >= 0.5 else 'MISS'}")
    cores = len(os.sched_getaffinity(0))
    print(f"replay CPU, all its processes: {cpu:.1f} s = {cpu / floor:.2f} × the floor; on {cores} core(s) its wall "
          f"time cannot fall below {cpu / cores:.1f} s, so replay / floor ≤ {floor * cores / cpu:.2f} at this CPU cost")
    print(f"replay's peak RSS (its own process, the workers apart): {peak_mb:,.0f} MB")
    print(f"a {MONTH_DAYS}-day month at this rate: {month:,.0f} s (target ≤ 600 s) {'PASS' if month <= 600 else 'MISS'}"
          + ("" if args.days >= MONTH_DAYS else f" (projected from {args.days:g} days)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
