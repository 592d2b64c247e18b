"""The ledger's observed spans hold exactly the sample instants its hours sampled, whatever
happens to the collector: a crash just after an hour was written, a crash loop, a rebuild after
a lost checkpoint (from a month-start snapshot, or from an archive whose older files were moved
away), and `ptmon ledger rebuild` of a month the collector ran past. Exemptions are applied, and
a merged district reads its observed time, at the instants inside those spans only.

The collector processes are driven in-process through their intake on a simulated clock (the
broker is not what is under test); a crash is left as SIGKILL leaves it: nothing more written,
the locks freed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ptmon.archive import MONITOR_TOPIC
from ptmon.collect import Collector
from ptmon.config import CollectorConfig
from ptmon.config.sections import MqttConfig
from ptmon.ledger.observed import splice, union
from ptmon.ledger.store import Ledger
from ptmon.merge import intersect_spans
from ptmon.rules import load_rules
from ptmon.sinks.archive import archive_files
from ptmon.timebase import US_PER_S, UTC_OFFSET_US, format_instant, parse_instant

from .conftest import HEADER, hb, restored_collector

CAMERAS = {"taopu-cam0": ("taopu", 7.0), "taopu-cam1": ("taopu", 23.0), "changzheng-cam0": ("changzheng", 41.0)}
MINUTE = 60.0
PTMON = [sys.executable, "-m", "ptmon.cli"]


def at(text: str) -> float:
    """Unix seconds of a Shanghai instant, half a second past it (receive times are never on the grid)."""
    return parse_instant(text) / US_PER_S + 0.5


class Cameras:
    """The cameras' heartbeats, one a minute each at its own second, counting on across collector runs."""

    def __init__(self) -> None:
        self.seq = dict.fromkeys(CAMERAS, 0)

    def between(self, begin: float, end: float) -> list[tuple[float, str, str]]:
        """Heartbeats received in ``(begin, end]``, in time order."""
        out = []
        for device, (street, second) in CAMERAS.items():
            t = begin - (begin - second) % MINUTE + MINUTE
            while t <= end:
                self.seq[device] += 1
                n = self.seq[device]
                out.append(hb(t, device, street=street, seq=n, boot="b1", face_try=10 * n, face_ok=9 * n,
                              plate_try=0, plate_ok=0))
                t += MINUTE
        return sorted(out)


class Run:
    """One collector process on the data directory, its clock the last record it was given."""

    def __init__(self, config: CollectorConfig, cameras: Cameras, start: float) -> None:
        self.cameras = cameras
        self.now = [start]
        self.collector: Collector = restored_collector(config, clock=lambda: self.now[0])
        self.give([(start, MONITOR_TOPIC, "up")])  # connected to the broker

    def give(self, records: list[tuple[float, str, str]], *, clock: float = 0.0) -> None:
        """Archived, acknowledged and applied in one step of the main loop, as live, the clock then at the
        last record (or ``clock``, if later: the idle clock tick archived with them)."""
        self.now[0] = max(self.now[0], records[-1][0] if records else 0.0, clock)
        self.collector.intake.held += records
        self.collector.step(self.now[0])

    def until(self, end: float, *, step: float = 600.0) -> Run:
        """The cameras' heartbeats up to ``end``, ``step`` seconds of them at a time."""
        while self.now[0] < end:
            upto = min(end, self.now[0] + step)
            self.give(self.cameras.between(self.now[0], upto), clock=upto)
        return self

    def checkpoint(self) -> Run:
        assert asyncio.run(self.collector.checkpoint())
        return self

    def stop(self) -> None:
        self.give([(self.now[0] + 0.25, MONITOR_TOPIC, "down")])  # disconnected from the broker
        asyncio.run(self.collector.shutdown())

    def crash(self) -> None:
        """As SIGKILL leaves it: the archive without its trailer, the ledger as last committed, the locks freed."""
        self.collector.archive.abandon()
        self.collector.ledger.close()
        self.collector.lock.release()


@pytest.fixture
def config(tmp_path: Path) -> CollectorConfig:
    lines = [HEADER] + [f"{d},cam,face_cam,{s},scn,{s}-c1,gw-{s}-cam-0,2026-01-01," for d, (s, _) in CAMERAS.items()]
    (tmp_path / "registry.csv").write_text("\n".join(lines) + "\n")
    return CollectorConfig(registry=tmp_path / "registry.csv", data_dir=tmp_path / "data", checkpoint_interval=3600,
                           metrics_listen="", mqtt=MqttConfig(port=1, client_id="spans-test", qos=1))


def disagreements(ledger_path: Path, *, outside_only: bool = False) -> list[str]:
    """Hours whose samples differ from their contract's sample instants inside the ledger's spans
    (``outside_only``: hours that sampled more of them than the spans hold), counted here the plain
    way: every grid instant of every span, one by one."""
    rules = load_rules()
    with Ledger(ledger_path, readonly=True) as ledger:
        spans = ledger.spans()
        rows = ledger.db.execute("SELECT hour, contract, max(samples) FROM hours GROUP BY hour, contract").fetchall()
    sampled = {(contract, hour): n for hour, contract, n in rows}
    observed: Counter[tuple[str, int]] = Counter()
    hour_us = 3600 * US_PER_S
    for contract in rules.contracts:
        interval = contract.sample_interval * US_PER_S
        instants = {t for a, b in spans for t in range(a + (-(a + UTC_OFFSET_US)) % interval, b + 1, interval)}
        observed.update((contract.code, t - (t + UTC_OFFSET_US) % hour_us) for t in instants)
    return [f"{format_instant(hour)} {code}: {sampled.get((code, hour), 0)} samples, "
            f"{observed.get((code, hour), 0)} instants inside the spans"
            for code, hour in sorted(set(sampled) | set(observed), key=lambda k: (k[1], k[0]))
            if sampled.get((code, hour), 0) > observed.get((code, hour), 0)
            or (not outside_only and sampled.get((code, hour), 0) != observed.get((code, hour), 0))]


def test_a_crash_just_after_an_hour_is_written_leaves_it_inside_the_spans(config: CollectorConfig) -> None:
    """Test that a collector killed right after the step that wrote a closed hour leaves a ledger whose spans
    hold every instant of that hour it sampled (the batch that closed the hour was still being applied)."""
    cameras = Cameras()
    run = Run(config, cameras, at("2026-11-10T09:00")).until(at("2026-11-10T09:58:10"))
    run.give(cameras.between(run.now[0] + 120, at("2026-11-10T10:02")))  # nothing heard for two minutes, then this
    run.crash()
    ledger = config.ledger_path
    with Ledger(ledger, readonly=True) as written:
        assert [h.samples for h in written.hours(0, 2**62) if h.street == "taopu" and h.contract == "cam"] == [59]
    # the hour that was open is not written yet (the restart writes it from the archive): only sampling
    # outside the spans is wrong in a ledger a crash left
    assert disagreements(ledger, outside_only=True) == []


def test_a_crash_loop_leaves_every_sampled_instant_inside_the_spans(config: CollectorConfig) -> None:
    """Test that after nine collectors in a row crashed within an hour, each before writing anything, the one
    that then runs writes with that hour every span it sampled in (not only the last few)."""
    cameras = Cameras()
    first = Run(config, cameras, at("2026-11-10T09:00")).until(at("2026-11-10T11:10")).checkpoint()
    first.until(at("2026-11-10T11:20"))
    first.crash()
    for k in range(9):  # restarted by the service manager, crashing again two minutes in each time
        crashing = Run(config, cameras, at("2026-11-10T11:22") + 240 * k)
        crashing.until(crashing.now[0] + 120)
        crashing.crash()
    Run(config, cameras, at("2026-11-10T11:58")).until(at("2026-11-10T13:05")).stop()
    assert disagreements(config.ledger_path) == []
    with Ledger(config.ledger_path, readonly=True) as ledger:
        assert len(ledger.spans()) == 11


def test_a_rebuild_starts_from_the_state_before_the_first_hour_it_rewrites(config: CollectorConfig) -> None:
    """Test that a collector that crossed into a month (its snapshot saved) and crashed before writing an hour
    of it, without a checkpoint, is rebuilt from before the last hour its ledger holds: that hour is not lost."""
    cameras = Cameras()
    run = Run(config, cameras, at("2026-10-31T21:00")).until(at("2026-11-01T00:20"))
    assert (config.archive_path / "ptmon-2026-11.state.npz").exists()
    run.crash()
    with Ledger(config.ledger_path, readonly=True) as ledger:
        assert ledger.last_hour() == parse_instant("2026-10-31T23:00")
    rebuilt = Run(config, cameras, at("2026-11-01T00:40"))
    assert any("rebuilding the state" in note for note in rebuilt.collector.notes)
    rebuilt.until(at("2026-11-01T01:10")).stop()
    with Ledger(config.ledger_path, readonly=True) as ledger:
        last = [h.samples for h in ledger.hours(parse_instant("2026-10-31T23:00"), parse_instant("2026-11-01T00:00"))]
    assert last and set(last) == {60}
    assert disagreements(config.ledger_path) == []


def test_a_rebuild_keeps_the_observed_time_before_it_that_it_cannot_replay(config: CollectorConfig,
                                                                        tmp_path: Path) -> None:
    """Test that a rebuild after a lost checkpoint, from an archive whose files before the month were moved away
    (and whose month-start snapshot is unreadable), keeps the observed time of the hours before the month that it
    does not rewrite."""
    cameras = Cameras()
    Run(config, cameras, at("2026-10-31T20:00")).until(at("2026-11-01T02:00")).stop()
    (config.data_dir / "checkpoint.npz").unlink()
    cold = tmp_path / "cold-storage"
    cold.mkdir()
    for path in archive_files(config.archive_path):
        if path.name < "ptmon-2026-11":
            path.rename(cold / path.name)
    (config.archive_path / "ptmon-2026-11.state.npz").write_bytes(b"damaged")
    rebuilt = Run(config, cameras, at("2026-11-01T02:30"))
    assert any("rebuilding the state" in note for note in rebuilt.collector.notes)
    rebuilt.until(at("2026-11-01T03:10")).stop()
    with Ledger(config.ledger_path, readonly=True) as ledger:
        kept = ledger.hours(parse_instant("2026-10-31T21:00"), parse_instant("2026-11-01T00:00"))
    assert {h.samples for h in kept if h.contract == "cam"} == {60}  # as the collector wrote them
    assert disagreements(config.ledger_path) == []


def test_a_month_rebuilt_keeps_the_observed_time_of_the_next_month(config: CollectorConfig) -> None:
    """Test that `ptmon ledger rebuild` of a month the collector ran past replaces the month's spans only: the
    next month's hours, which it leaves as they are, stay inside the ledger's spans."""
    cameras = Cameras()
    Run(config, cameras, at("2026-11-30T20:00")).until(at("2026-12-01T03:00")).stop()
    rebuilt = subprocess.run([*PTMON, "ledger", "rebuild", "--month", "2026-11", "--ledger", str(config.ledger_path),
                              "--archive", str(config.archive_path), "--registry", str(config.registry)],
                             capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    with Ledger(config.ledger_path, readonly=True) as ledger:
        assert {h.samples for h in ledger.hours(parse_instant("2026-12-01T00:00"), parse_instant("2026-12-01T01:00"))
                if h.contract == "cam"} == {60}
    assert disagreements(config.ledger_path) == []


def test_verify_reports_hours_sampled_outside_the_spans(config: CollectorConfig) -> None:
    """Test that `ptmon ledger verify` passes a consistent ledger and names the hours of one whose spans lost
    time its hours sampled (as ledgers written before this was fixed can hold), exiting 1."""
    cameras = Cameras()
    Run(config, cameras, at("2026-11-10T09:00")).until(at("2026-11-10T12:30")).stop()
    verify = [*PTMON, "ledger", "verify", "--month", "2026-11", "--ledger", str(config.ledger_path),
              "--archive", str(config.archive_path), "--registry", str(config.registry)]
    passed = subprocess.run(verify, capture_output=True, text=True, timeout=300)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "observed spans: hours inside them" in passed.stdout
    with Ledger(config.ledger_path) as ledger:  # its span cut short, as the defects fixed here could leave it
        ledger.db.execute('UPDATE spans SET "end" = ?', (parse_instant("2026-11-10T10:30"),))
    failed = subprocess.run(verify, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "hour 2026-11-10T10:00:00+08:00 cam: 60 samples, only 31 sample instants inside the observed spans" \
        in failed.stdout, failed.stdout
    assert "hour 2026-11-10T12:00:00+08:00 cam: 31 samples, only 0 sample instants" in failed.stdout


S = parse_instant("2026-11-01T00:00")
E = parse_instant("2026-12-01T00:00")


@pytest.mark.parametrize(("outside", "inside", "expected"), [
    ([(S - 50, E + 50)], [(S + 10, E - 7)], [(S - 50, S - 1), (S + 10, E - 7), (E, E + 50)]),
    ([(S - 50, E + 50)], [(S - 90, E + 90)], [(S - 50, E + 50)]),
    ([(S - 50, S + 5)], [(S - 50, S + 9)], [(S - 50, S + 9)]),
    ([(S + 5, S + 9), (E - 3, E + 4)], [], [(E, E + 4)]),
    ([], [(S - 9, S + 3), (S + 3, S + 8)], [(S, S + 8)]),
], ids=["straddling-both-ends", "source-wider", "month-start", "source-empty", "overlapping-source"])
def test_splice_takes_the_month_from_inside_and_the_rest_from_outside(outside, inside, expected) -> None:
    """Test that a month's spans spliced in keep the other months' observed time exactly, joined where they adjoin."""
    assert splice(outside, inside, S, E) == expected


def test_union_joins_overlapping_and_adjoining_spans_only() -> None:
    """Test that spans are joined when they overlap or no instant lies between them, and kept apart otherwise."""
    assert union([(10, 20), (0, 5), (21, 30), (32, 40), (35, 36)]) == [(0, 5), (10, 30), (32, 40)]


def test_the_intersection_of_partitions_spans_takes_overlapping_spans_as_their_union() -> None:
    """Test that a ledger's overlapping spans (a rebuild's cut one and the one it wrote from before the cut) give
    the district's intersection with another partition's spans as their union would, not a part of it."""
    overlapping = [[0, 100], [50, 300]]
    assert intersect_spans(overlapping, [[0, 400]]) == [[0, 300]]
    assert intersect_spans([[0, 400]], overlapping) == [[0, 300]]
