"""Acceptance: online but blind, live. Nine days of the district's normal traffic are in the
collector's archive (as a collector that ran them would have left it); the collector starts, learns
every device's baseline from the archive, then the simulator sends over a real Mosquitto a camera
gone blind, a camera degraded and an elevator stuck, all still heartbeating. The collector finds the
three and no other device, writes them to InfluxDB 1.6.7 (``anomaly``, and the ``sla_type`` /
``sla_community`` rollups), to the ledger, and sends one device email per recipient through a real
SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import numpy as np
import pytest

from ptmon.anomaly.ledger import read_anomalies
from ptmon.archive import MONITOR_TOPIC
from ptmon.config import InfluxConfig
from ptmon.ledger.rebuild import recompute_month
from ptmon.ledger.store import Ledger
from ptmon.registry import load_registry
from ptmon.rules import load_rules
from ptmon.simulators.live_demo import SimulatedClock
from ptmon.simulators.scenario import load_scenario
from ptmon.simulators.synthetic import TrafficGenerator
from ptmon.sinks.archive import ArchiveWriter
from ptmon.timebase import US_PER_S, parse_instant

from .conftest import restored_collector
from .servers import InfluxServer, influx_rows, influxql
from .test_alert_incidents import ALERTS, SPEED, Run, simulate

pytestmark = pytest.mark.slow

HOUR = 3600 * US_PER_S
LIVE_START = "2026-11-24T09:00:00+08:00"  # a Tuesday morning: the cameras capture
HISTORY_DAYS = 9
LIVE_MINUTES = 210
SEED = 7  # Run.simulator's: the live traffic continues the archive's devices, each with its own habits
FAULTS = """events:
  - blind: {count: 1, contract: cam, street: taopu, from: 0m}
  - degraded: {count: 1, contract: cam, street: taopu, from: 0m, points: 0.4}
  - stuck: {count: 1, contract: iot, street: taopu, from: 0m}
"""
DEVICE_ALERTS = ALERTS.replace("digest: {enabled: false}", "digest: {enabled: false}\ndevices: {enabled: true, for: 30m}")


def write_history(run: Run, start_us: int) -> int:
    """The archive a collector would have left after nine days of normal traffic up to ``start_us``."""
    registry = load_registry(run.registry_file, load_rules())
    first = start_us - HISTORY_DAYS * 86_400 * US_PER_S
    traffic = replace(load_scenario(None, registry, first, start_us, SEED).traffic, lead_in=True)
    writer = ArchiveWriter(run.tmp_path / "data" / "archive")
    writer.append([(first / US_PER_S, MONITOR_TOPIC, "up")])
    count, batch = 0, []
    for record in TrafficGenerator(registry, registry.rules, traffic).records(first, start_us):
        batch.append(record)
        if len(batch) == 50_000:
            writer.append(batch)
            count, batch = count + len(batch), []
    writer.append(batch)
    count += len(batch)
    writer.append([(start_us / US_PER_S, MONITOR_TOPIC, "down")])
    writer.finish()
    return count


def faulty_devices(run: Run, start_us: int) -> dict[str, str]:
    """The devices the scenario's faults chose (the simulator resolves the same file with the same seed)."""
    registry = load_registry(run.registry_file, load_rules())
    plan = load_scenario(run.scenario, registry, start_us, start_us + LIVE_MINUTES * 60 * US_PER_S, SEED)
    return {registry.ids[int(f.devices[0])]: f.kind for f in plan.traffic.faults}


def learn_from_archive(run: Run, start_us: int) -> None:
    """A collector started on the archive alone rebuilds its state from it (the baselines too) and stops,
    leaving its checkpoint: the live collector then starts from it without the simulated clock running
    through a rebuild."""
    collector = restored_collector(run.config(), clock=lambda: start_us / US_PER_S)
    assert collector.health is not None and any("rebuilding" in n for n in collector.notes)
    stop = asyncio.Event()
    stop.set()
    asyncio.run(collector.run(stop))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("anomaly-live")
    start_us = parse_instant(LIVE_START)
    with InfluxServer(tmp) as influx, Run(tmp, DEVICE_ALERTS, LIVE_START, FAULTS) as run:
        influxql(influx.url, "", "CREATE DATABASE health")
        history = write_history(run, start_us)
        config = run.config
        run.config = lambda: replace(config(), influx=InfluxConfig(url=influx.url, database="health",  # type: ignore[method-assign]
                                                                   flush_interval=0.2))
        learn_from_archive(run, start_us)
        run.clock = SimulatedClock(start_us / US_PER_S, time.time() + 1.5, SPEED)  # the live part starts now
        [collector] = simulate(run, LIVE_MINUTES, LIVE_MINUTES + 2)
        run.flush_outbox()
        yield run, collector, influx, history, faulty_devices(run, start_us), start_us


def test_the_faulty_devices_are_found_from_their_own_history_and_no_other(live):
    """Test that the collector learnt the baselines from its archive and raised blind, degraded and stuck on
    exactly the devices the simulator broke, within two hours of capture time."""
    _run, collector, _, history, faulty, start_us = live
    assert history > 500_000 and collector.health is not None
    monitor = collector.health.monitor
    assert not monitor.learning_mask()[[collector.registry.index[d] for d in faulty]].any()
    opened = {collector.registry.ids[row]: (kind, o) for (kind, row), o in monitor.open.items()}
    assert {device: kind for device, (kind, _) in opened.items()} == faulty
    for device, (kind, o) in opened.items():
        assert start_us <= o.since <= o.detected <= start_us + 2 * HOUR, (device, kind)


def test_influxdb_holds_the_anomalies_and_the_rollups(live):
    """Test that InfluxDB has an open anomaly point per faulty device, and rollups by type and community
    whose blind / degraded / stuck counts at the end name the faulty devices' cells."""
    _, _collector, influx, _, faulty, _ = live
    series = influxql(influx.url, "health", 'SELECT last("open") FROM "anomaly" GROUP BY "device", "kind"')
    found = {(s["tags"]["device"], s["tags"]["kind"]): s["values"][0][1]
             for r in series["results"] for s in r.get("series", [])}
    assert found == dict.fromkeys(faulty.items(), 1)
    by_type = influxql(influx.url, "health", 'SELECT last("blind") AS b, last("degraded") AS d, last("stuck") AS s, '
                       'sum("expected") AS e FROM "sla_type" WHERE "street" = \'taopu\' GROUP BY "contract", "type"')
    cells = {(s["tags"]["contract"], s["tags"]["type"]): s["values"][0][1:] for r in by_type["results"]
             for s in r.get("series", [])}
    assert cells["cam", "face_cam"][:3] == [1, 1, 0] and cells["iot", "elevator"][:3] == [0, 0, 1]
    assert all(v[3] > 0 for v in cells.values())
    communities = influx_rows(influx.url, "health", 'SELECT sum("face_try") FROM "sla_community" '
                              "WHERE \"street\" = 'taopu' GROUP BY \"community\"")
    assert communities and all(row[1] > 0 for row in communities)


def test_the_ledger_keeps_each_anomaly_with_what_it_cost(live):
    """Test that the ledger has each anomaly open at the end, exactly the faulty devices, the blind camera far
    below its expected attempts and the degraded one below its expected successes; any other row is one that
    opened and closed in the learnt history, before the faults."""
    _run, collector, _, _, faulty, start_us = live
    with Ledger(collector.config.ledger_path) as ledger:
        rows = read_anomalies(ledger, "2026-11")
    still_open = [a for a in rows if a.end is None]
    assert {(a.device, a.kind) for a in still_open} == set(faulty.items())
    closed = [(a.device, a.kind, a.start, a.end) for a in rows if a.end is not None]
    assert all(end <= start_us for *_, end in closed), closed
    blind = next(a for a in still_open if a.kind == "blind")
    degraded = next(a for a in still_open if a.kind == "degraded")
    assert blind.expected_attempts > 10 * max(blind.attempts, 1)
    assert degraded.missing_successes > 0 and np.isclose(degraded.expected_attempts, degraded.attempts, rtol=0.5)


def test_one_device_incident_per_recipient_names_the_three(live):
    """Test that the device anomalies are one incident per recipient (district and the street): a firing email,
    then updates as later anomalies join it, together naming the three devices, with a link to the cameras
    dashboard."""
    run, _, _, _, faulty, _ = live
    device_mails = [m for m in run.smtp.inbox.messages if "设备失效" in str(m["Subject"])]
    assert {m["To"] for m in device_mails} == {"center@example.org", "taopu@example.org"}
    for recipient in ("center@example.org", "taopu@example.org"):
        mails = [m for m in device_mails if m["To"] == recipient]
        texts = [m.get_body(("plain",)).get_content() for m in mails]
        assert "·更新" not in str(mails[0]["Subject"]) and "·持续" not in str(mails[0]["Subject"])
        assert len(mails) <= 3, [str(m["Subject"]) for m in mails]  # at most one email per device joining
        assert all(any(device in text for text in texts) for device in faulty), texts
        assert any("失明" in text and "/d/ptmon-cameras?" in text for text in texts)


def test_a_rebuild_from_the_archive_finds_the_same_anomalies(live, tmp_path):
    """Test that the month recomputed from the collector's archive (history and live part) has the anomalies
    the live collector recorded: same devices, kinds, starts, detections and figures."""
    run, collector, _, _, _, _ = live
    with Ledger(collector.config.ledger_path) as ledger:
        live_rows = read_anomalies(ledger, "2026-11")
    registry = load_registry(run.registry_file, load_rules())
    with Ledger(tmp_path / "rebuilt.sqlite") as ledger:
        recompute_month([collector.config.archive_path], registry, "2026-11", ledger)
        rebuilt = read_anomalies(ledger, "2026-11")
    assert len([a for a in live_rows if a.end is None]) == 3
    assert [vars(a) for a in rebuilt] == [vars(a) for a in live_rows]
