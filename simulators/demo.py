"""``ptmon demo``: the whole pipeline on a generated district, with nothing external.

registry (simulators.district) → synthetic traffic with a scenario (simulators.synthetic) →
gzip archive → ``ptmon.replay.replay`` → KPI table and ``kpis.csv``.

The demo day: the window starts at the Shanghai midnight of the day that contains
``now − hours``, so the simulated traffic ends before now and, with the default 24 h, covers
exactly yesterday. That date is the only input taken from the clock: for the same date,
hours and seed the registry, the archive (gzip header without a timestamp) and the CSV
are byte-identical.

The scenario, scaled down when ``hours`` < 24:

* 长征镇 (changzheng) iot: a 6-hour outage, 08:00–14:00 (sensors of that street send
  nothing; their counters keep counting and arrive with the first message after it);
* 宜川路街道 (yichuan) cam: degraded capture, success probabilities × 0.925 (about 90 %);
* 0.3 % of all devices never report.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ptmon.errors import UsageError
from ptmon.registry import Registry, load_registry
from ptmon.replay import Progress, replay
from ptmon.rules import DEFAULT_RULES_DIR, load_rules
from ptmon.timebase import US_PER_S, day_of, day_start, format_instant, seconds_to_us

from .district import write_registry
from .synthetic import Degradation, Outage, Scenario, write_archive

OUTAGE_STREET, OUTAGE_CONTRACT = "changzheng", "iot"
OUTAGE_FROM_H, OUTAGE_HOURS = 8.0, 6.0
DEGRADED_STREET, DEGRADED_CONTRACT, DEGRADED_FACTOR = "yichuan", "cam", 0.925
SILENT_FRACTION = 0.003
HOUR_US = 3600 * US_PER_S


def demo_window(hours: float, now_us: int) -> tuple[int, int]:
    """[start, end): from the Shanghai midnight of the day containing ``now − hours``, on whole minutes."""
    if not 0 < hours <= 24 * 31:
        raise UsageError(f"--hours must be in (0, 744]: {hours}")
    span = round(hours * 60) * 60 * US_PER_S
    if span == 0:
        raise UsageError(f"--hours must be at least one minute: {hours}")
    start = day_start(day_of(now_us - span))
    return start, start + span


def demo_scenario(start: int, end: int, seed: int) -> Scenario:
    """The demo's outage, degraded street and silent devices, scaled to the window."""
    scale = min(1.0, (end - start) / (24 * HOUR_US))
    outage_from = start + int(OUTAGE_FROM_H * scale * HOUR_US)
    outage_to = outage_from + int(OUTAGE_HOURS * scale * HOUR_US)
    return Scenario(
        seed=seed,
        outages=(Outage(street=OUTAGE_STREET, contract=OUTAGE_CONTRACT, from_us=outage_from, to_us=outage_to),),
        degraded=(Degradation(contract=DEGRADED_CONTRACT, street=DEGRADED_STREET, factor=DEGRADED_FACTOR),),
        silent_fraction=SILENT_FRACTION,
        lead_in=True,
    )


def _say(text: str) -> None:
    print(f"demo: {text}", file=sys.stderr, flush=True)


def _archive_progress(began: float):  # type: ignore[no-untyped-def]
    last = [began]

    def show(records: int, clock: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 2.0:
            last[0] = now
            _say(f"synthesised {records:,} records, {records / (now - began):,.0f}/s, at {format_instant(clock)}")

    return show


def _replay_progress(p: Progress) -> None:
    at = format_instant(p.clock) if p.clock is not None else "-"
    _say(f"replayed {p.records:,} records, {p.records / max(p.elapsed, 1e-9):,.0f}/s, at {at}")


def _describe(registry: Registry, scenario: Scenario) -> None:
    outage = scenario.outages[0]
    _say(f"scenario: {outage.contract} {outage.street} sends nothing {format_instant(outage.from_us)} — "
         f"{format_instant(outage.to_us)}; {DEGRADED_CONTRACT} {DEGRADED_STREET} capture success × {DEGRADED_FACTOR}; "
         f"{round(scenario.silent_fraction * len(registry)):,} devices ({scenario.silent_fraction:.1%}) never report")


def run_offline_demo(workdir: Path, hours: float = 24.0, seed: int = 1) -> int:
    """Generate, archive, replay and report ``hours`` of the district; returns the exit status."""
    start, end = demo_window(hours, seconds_to_us(time.time()))
    began = time.monotonic()
    rules = load_rules(DEFAULT_RULES_DIR)
    workdir.mkdir(parents=True, exist_ok=True)
    registry_path, archive_path, csv_path = workdir / "registry.csv", workdir / "archive.jsonl.gz", workdir / "kpis.csv"

    write_registry(registry_path, rules, seed)
    registry = load_registry(registry_path, rules)
    _say(f"registry: {len(registry):,} devices ({time.monotonic() - began:.1f} s)")
    scenario = demo_scenario(start, end, seed)
    _describe(registry, scenario)

    step = time.monotonic()
    count = write_archive(
        archive_path, registry, rules, start, end, scenario, progress=_archive_progress(step), workers=os.cpu_count() or 1
    )
    took = time.monotonic() - step
    _say(f"archive: {count:,} records, {format_instant(start)} — {format_instant(end)}, "
         f"{took:.1f} s ({count / max(took, 1e-9):,.0f}/s)")

    step = time.monotonic()
    results = replay([str(archive_path)], registry, start, end, progress=_replay_progress)
    took = time.monotonic() - step
    _say(f"replay: {took:.1f} s ({count / max(took, 1e-9):,.0f} records/s)")
    with open(csv_path, "w", encoding="utf-8", newline="") as out:
        results.write_csv(out)

    print(results.table(rules))
    print()
    for label, path in (("registry", registry_path), ("archive", archive_path), ("KPIs", csv_path)):
        print(f"{label}: {path}")
    _say(f"done in {time.monotonic() - began:.1f} s")
    return 0
