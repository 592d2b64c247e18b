"""A synthetic November for the month-closing tests: a registry file, day archive files, a ledger.

Two streets; per street two face cameras (60 s heartbeats) and two elevator sensors (5 min).
What the month holds, so that later changes move money:

* changzheng's ``lift0`` is silent 1–8 Nov: the street's iot online rate is 86.7 % (< 90 %);
  registering it as accepted on 9 Nov takes those days out of the denominator (100 %);
* changzheng's ``cam0`` is silent 10–14 Nov: the street's cam online rate is 93.3 % (< 95 %);
  an exemption over 10–12 Nov lifts it above 95 %;
* taopu's cameras lose their gateway's uplink from 29 Nov 00:00 to 1 Dec 10:00 (a two-day
  outage in November: 93.3 %); when the link returns the gateway flushes what it buffered,
  stamped with the devices' clocks (``ts``): late heartbeats.

The archive is written up to ``CLOSE_AT`` (the collector's day files); what arrives after it —
the rest of 1 Dec and the gateway's flush — is :func:`write_after_close`, a later part file.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ptmon.archive import write_archive
from ptmon.ledger.rebuild import rebuild_ledger
from ptmon.ledger.store import Ledger
from ptmon.registry import Registry, load_registry
from ptmon.rules import Rules
from ptmon.simulators.synthetic import Outage, Scenario, Silence, TrafficGenerator
from ptmon.sinks.archive import archive_files
from ptmon.timebase import day_of, day_to_date, parse_instant

from .conftest import HEADER

US = 1_000_000
MONTH = "2026-11"
START = parse_instant("2026-11-01T00:00")
END = parse_instant("2026-12-01T00:00")
CLOSE_AT = parse_instant("2026-12-01T06:00")  # the archive as the month is closed (grace set to 6 h)
UPLINK_BACK = parse_instant("2026-12-01T10:00")
AFTER = parse_instant("2026-12-01T12:00")  # the flush takes about 15 minutes
OUTAGE_FROM = parse_instant("2026-11-29T00:00")
STREETS = ("changzheng", "taopu")


def write_registry(path: Path) -> Path:
    lines = [HEADER]
    for s in STREETS:
        for i in range(2):
            lines.append(f"{s}-cam{i},cam,face_cam,{s},scn,{s}-c1,gw-{s}-cam,2026-01-01,")
            lines.append(f"{s}-lift{i},iot,elevator,{s},scn,{s}-c1,gw-{s}-iot,2026-01-01,")
    path.write_text("\n".join(lines) + "\n")
    return path


def scenario(registry: Registry) -> Scenario:
    def rows(*ids: str) -> np.ndarray:
        return np.array([registry.index[i] for i in ids], dtype=np.int64)

    return Scenario(seed=7, jitter=0.02, lead_in=True, outages=(
        Outage(street="taopu", contract="cam", from_us=OUTAGE_FROM, to_us=UPLINK_BACK),), silences=(
        Silence(devices=rows("changzheng-lift0"), from_us=START, to_us=parse_instant("2026-11-09T00:00")),
        Silence(devices=rows("changzheng-cam0"), from_us=parse_instant("2026-11-10T00:00"),
                to_us=parse_instant("2026-11-14T00:00"))))


def write_month(archive: Path, registry: Registry) -> None:
    """Day files ``ptmon-YYYY-MM-DD.jsonl.gz`` of what was received before ``CLOSE_AT``."""
    archive.mkdir(parents=True, exist_ok=True)
    by_day: dict[int, list[tuple[float, str, str]]] = defaultdict(list)
    first = True
    for record in TrafficGenerator(registry, registry.rules, scenario(registry)).records(START, CLOSE_AT):
        if first:
            by_day[day_of(int(record[0] * US))].append((record[0] - 1, "$ptmon/monitor", "up"))
            first = False
        by_day[day_of(int(record[0] * US))].append(record)
    for day, records in by_day.items():
        write_archive(archive / f"ptmon-{day_to_date(day).isoformat()}.jsonl.gz", records)


FLUSH_PACE = 0.25  # s between a device's buffered heartbeats: 240 a minute, within the default device_rate of 600


def flush_records(registry: Registry) -> list[tuple[float, str, str]]:
    """The taopu camera gateway's buffer, flushed when its uplink returns: every minute of the
    outage per camera, stamped with the device clock, paced under the collector's rate limit."""
    out = []
    stamps = range(OUTAGE_FROM // US, UPLINK_BACK // US, 60)
    for n, stamp in enumerate(stamps):
        for i in range(2):
            device = f"taopu-cam{i}"
            received = UPLINK_BACK / US + n * FLUSH_PACE + i * 0.01
            out.append((received, f"putuo/cam/taopu/{device}/hb", json.dumps({"ts": stamp + 7 + i})))
    return out


def write_after_close(archive: Path, registry: Registry) -> Path:
    """What the collector received after the closing: the rest of 1 Dec and the gateway's flush,
    as a new part of the day's file (a restarted collector writes one)."""
    later = list(TrafficGenerator(registry, registry.rules, dataclasses.replace(scenario(registry), lead_in=False))
                 .records(CLOSE_AT, AFTER))
    records = sorted(later + flush_records(registry), key=lambda r: r[0])
    path = archive / "ptmon-2026-12-01.1.jsonl.gz"
    write_archive(path, records)
    return path


def build(root: Path, rules: Rules, rules_dir: Path) -> tuple[Path, Path, Path]:
    """registry.csv, archive/ and data/ledger.sqlite (the ledger fed from the archive, as the
    collector would have written it)."""
    registry_path = write_registry(root / "registry.csv")
    registry = load_registry(registry_path, rules)
    archive = root / "archive"
    write_month(archive, registry)
    ledger_path = root / "data" / "ledger.sqlite"
    with Ledger(ledger_path) as ledger:
        rebuild_ledger(archive_files(archive), registry, ledger)
    return registry_path, archive, ledger_path
