"""The live collector against real Mosquitto and InfluxDB: what arrives is archived, applied,
written and survives restarts of the broker, of InfluxDB and of the collector itself."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ptmon.config import CollectorConfig, InfluxConfig, MqttConfig
from ptmon.registry import load_registry
from ptmon.replay import replay
from ptmon.rules import load_rules
from ptmon.simulators.link import BrokerAddress
from ptmon.simulators.live_demo import SimulatedClock
from ptmon.simulators.scenario import load_scenario
from ptmon.simulators.simulate import Options, Simulator
from ptmon.sinks.archive import archive_files
from ptmon.timebase import US_PER_S

from .conftest import restored_collector, write_two_street_registry
from .servers import InfluxServer, influxql

SPEED = 120.0  # simulated seconds per wall second, shared by simulator and collector


@pytest.fixture(scope="module")
def influx(tmp_path_factory):
    with InfluxServer(tmp_path_factory.mktemp("influx")) as server:
        yield server


@pytest.fixture(scope="module")
def registry_file(tmp_path_factory):
    return write_two_street_registry(tmp_path_factory.mktemp("reg") / "registry.csv")


def make_config(tmp_path: Path, registry_file: Path, port: int, **influx: object) -> CollectorConfig:
    return CollectorConfig(
        registry=registry_file,
        data_dir=tmp_path / "data",
        checkpoint_interval=2.0,
        metrics_listen="",
        mqtt=MqttConfig(port=port, client_id=f"collector-{time.monotonic_ns()}", qos=1),
        influx=InfluxConfig(**influx) if influx else InfluxConfig(),  # type: ignore[arg-type]
    )


def sim_clock(start_s: float) -> SimulatedClock:
    """Simulated time from ``start_s``, ``SPEED`` times faster than the wall clock from a second from now."""
    return SimulatedClock(start_s, time.time() + 1.0, SPEED)


async def run_simulator(registry, port: int, clock: SimulatedClock, minutes: float, seed: int = 1) -> None:
    start_us = int(clock.start_s) * US_PER_S
    end = start_us + int(minutes * 60) * US_PER_S
    plan = load_scenario(None, registry, start_us, end, seed)
    options = Options(broker=BrokerAddress.parse(f"mqtt://127.0.0.1:{port}"), start_us=start_us,
                      duration_us=end - start_us, speed=SPEED, qos=1, anchor_wall=clock.anchor,
                      client_prefix=f"sim-{time.monotonic_ns()}")
    await Simulator(registry, plan, options).run()


def current_minute() -> float:
    return float(int(time.time()) // 60 * 60)


@pytest.mark.slow
def test_simulated_district_reaches_influx_and_replays_to_the_same_kpis(tmp_path, registry_file, broker_port, influx):
    """Test that simulator → broker → collector → InfluxDB stores every accepted heartbeat, sla points per
    street, even with InfluxDB stopped for a while under load, and that replaying the archive gives exactly
    the live month-to-date KPIs."""
    database = "collect_e2e"
    config = make_config(tmp_path, registry_file, broker_port, url=influx.url, database=database, flush_interval=0.2)
    influxql(influx.url, "", f"CREATE DATABASE {database}")
    clock = sim_clock(current_minute() - 3600)
    collector = restored_collector(config, clock=clock)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop))
        simulator = asyncio.create_task(run_simulator(collector.registry, broker_port, clock, minutes=20))
        await asyncio.sleep(3.0)
        await asyncio.to_thread(influx.stop)
        await asyncio.sleep(3.0)
        assert collector.influx.pending_points > 0  # points wait while InfluxDB is down
        await asyncio.to_thread(influx.start)
        await simulator
        await asyncio.sleep(1.0)
        deadline = time.monotonic() + 90
        while collector.influx.pending_points and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # the spool drains once InfluxDB answers again
        stop.set()
        await task

    asyncio.run(main())
    live = collector.month_results()
    assert live is not None
    accepted = collector.engine.stats["heartbeats"]
    assert accepted > 300
    assert collector.influx.pending_points == 0 and collector.influx.dropped_points == 0
    points = influxql(influx.url, database, "SELECT count(seq) FROM heartbeat")
    assert points["results"][0]["series"][0]["values"][0][1] == accepted
    streets = influxql(influx.url, database, "SHOW TAG VALUES FROM sla WITH KEY = street")
    every_street = {s.code for s in collector.registry.rules.streets}
    assert {v[1] for v in streets["results"][0]["series"][0]["values"]} == every_street | {"district"}
    # loss in transit: a point per contract × street (and district) at every sample, with the month's heartbeats
    loss = influxql(influx.url, database, "SELECT last(heartbeats) FROM loss WHERE street = 'district' GROUP BY contract")
    assert sum(s["values"][0][1] for s in loss["results"][0]["series"]) == accepted

    rules = load_rules()
    registry = load_registry(registry_file, rules)
    replayed = replay([str(p) for p in archive_files(config.archive_path)], registry, live.start, live.end)
    assert replayed.csv_text() == live.csv_text()
    assert live.row("cam", "taopu", "online").denominator > 0

