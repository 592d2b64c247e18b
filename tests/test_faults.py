"""Storage fault bookkeeping (pure logic, clocks injected) and the collector's metrics read at scrape time."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from prometheus_client import generate_latest

from ptmon.collect import Collector
from ptmon.config import CollectorConfig, StorageConfig
from ptmon.faults import REPORT_EVERY, FaultCollector, Faults

from .conftest import T0, restored_collector, write_two_street_registry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def faults_with(clock: Clock, **config: float) -> tuple[Faults, list[tuple[str, str, float]]]:
    faults = Faults(StorageConfig(**{"retry_min": 0.5, "retry_max": 30.0, "alert_after": 600.0, **config}),
                    monotonic=clock, wall=lambda: 1_793_462_400.0)
    alerts: list[tuple[str, str, float]] = []
    faults.on_alert = lambda fault, event, waited: alerts.append((fault.stage, event, waited))
    return faults, alerts


def test_retries_back_off_doubling_up_to_the_cap():
    """Test that each failed try waits about twice as long as the one before, never more than retry_max."""
    clock = Clock()
    faults, _ = faults_with(clock)
    waits = []
    for _ in range(10):
        fault = faults.failed("archive", "No space left on device")
        waits.append(fault.retry_at - clock.now)
        assert not faults.due("archive")
        clock.now = fault.retry_at
        assert faults.due("archive")
    nominal = [min(30.0, 0.5 * 2**i) for i in range(10)]
    assert all(0.75 * n <= w <= n for w, n in zip(waits, nominal)), waits
    assert faults.due("ledger") and not faults.waiting("ledger")


def test_said_when_it_begins_once_a_minute_and_when_it_ends(caplog):
    """Test that a waiting stage is logged when it begins, then once per minute however often it is
    retried, and when it ends, with how long and how many tries."""
    caplog.set_level(logging.INFO)
    clock = Clock()
    faults, _ = faults_with(clock)
    faults.details["ledger"] = lambda: "3 closed hours kept in memory"
    for _ in range(150):  # 150 s of tries and ticks, one a second
        faults.failed("ledger", "database is locked")
        faults.tick()
        clock.now += 1.0
    faults.cleared("ledger")
    lines = [r.getMessage() for r in caplog.records if r.name == "ptmon.faults"]
    assert len(lines) == 1 + 150 // int(REPORT_EVERY) + 1, lines
    assert lines[0] == ("storage fault: waiting for the ledger to take its writes: database is locked; "
                        "3 closed hours kept in memory; retrying by itself")
    assert lines[1].startswith("storage fault: still waiting for the ledger to take its writes after 60 s (61 tries)")
    assert lines[-1] == "storage fault over: the ledger to take its writes after 150.0 s and 150 tries"


@pytest.mark.parametrize(("lasts", "alert_after", "expected"), [
    (30.0, 60.0, []),
    (90.0, 60.0, [("archive", "firing"), ("archive", "resolved")]),
    (90.0, 0.0, []),
], ids=["shorter-than-alert_after", "longer", "alerts-off"])
def test_alert_once_past_alert_after_and_all_clear(lasts, alert_after, expected):
    """Test that a fault lasting alert_after sends one alert (not one per tick) and an all-clear when
    it ends; a shorter one, or alert_after 0, sends none."""
    clock = Clock()
    faults, alerts = faults_with(clock, alert_after=alert_after)
    faults.failed("archive", "No space left on device")
    while clock.now < 1000.0 + lasts:
        clock.now += 1.0
        faults.tick()
    faults.cleared("archive")
    assert [(stage, event) for stage, event, _ in alerts] == expected
    if expected:
        assert alerts[0][2] == pytest.approx(alert_after) and alerts[1][2] == pytest.approx(lasts)


def test_gauge_and_counter_read_when_scraped():
    """Test that the waiting seconds are measured at scrape time and every stage has a series."""
    clock = Clock()
    faults, _ = faults_with(clock)
    collector = FaultCollector(faults)
    faults.failed("checkpoint", "No space left on device")
    clock.now += 12.5
    samples = {(s.name, s.labels["stage"]): s.value for family in collector.collect() for s in family.samples}
    assert samples[("ptmon_storage_waiting_seconds", "checkpoint")] == 12.5
    assert samples[("ptmon_storage_waiting_seconds", "archive")] == 0.0
    assert samples[("ptmon_storage_faults_total", "checkpoint")] == 1


def scrape(collector: Collector) -> dict[str, float]:
    out = {}
    for line in generate_latest(collector.metrics.registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_come_from_the_pipeline_when_scraped(tmp_path):
    """Test that rejects, messages and engine outcomes are the decoder's and engine's own counts at scrape
    time (nothing copied after a batch), that process_* and python_* are there, and that the checkpoint
    age grows from the last save and starts again at a checkpoint."""
    config = CollectorConfig(registry=write_two_street_registry(tmp_path / "registry.csv"), data_dir=tmp_path / "data",
                             metrics_listen="")
    collector = restored_collector(config)
    collector.feed.feed([(T0 + 1.0, "putuo/cam/taopu/taopu-cam0/hb", json.dumps({"seq": 1})),
                         (T0 + 2.0, "putuo/cam/taopu/taopu-cam1/hb", "{not json"),
                         (T0 + 3.0, "putuo/cam/taopu/nobody/hb", json.dumps({"seq": 1})),
                         (T0 + 4.0, "putuo/cam/taopu/taopu-cam0/hb", json.dumps({"seq": 1}))])
    m = scrape(collector)
    assert m['ptmon_decode_errors_total{kind="bad_json"}'] == collector.decoder.rejects["bad_json"] == 1
    assert m['ptmon_mqtt_messages_total{kind="heartbeat"}'] == collector.decoder.accepted
    assert m['ptmon_mqtt_messages_total{kind="rejected"}'] == sum(collector.decoder.rejects.values()) == 2
    assert m['ptmon_engine_events_total{kind="duplicate"}'] == 1
    assert m["ptmon_decode_unknown_devices"] == 1
    assert m["process_resident_memory_bytes"] > 10 * 2**20 and "python_info" in " ".join(m)
    assert 'python_gc_objects_collected_total{generation="0"}' in m
    collector.metrics.checkpoint_saved(time.time() - 300)
    assert 300 <= scrape(collector)["ptmon_checkpoint_age_seconds"] < 330
    assert asyncio.run(collector.checkpoint(persist_points=False))
    after = scrape(collector)
    assert after["ptmon_checkpoint_age_seconds"] < 5
    assert abs(after["ptmon_checkpoint_last_success_timestamp_seconds"] - time.time()) < 5
    collector.ledger.close()
