"""The collector's health point (measurement ``collector``) from its Prometheus metrics."""

from __future__ import annotations

import time

import pytest

from ptmon.config import StorageConfig
from ptmon.faults import FaultCollector, Faults
from ptmon.health import health_lines
from ptmon.metrics import Metrics, PipelineCounts

T_US = 1_793_462_400_000_000


def fields_of(text: str) -> dict[str, str]:
    """The raw field values of one line (no string fields or escapes in this measurement)."""
    _series, field_set, timestamp = text.split(" ")
    assert timestamp == str(T_US)
    return dict(pair.split("=", 1) for pair in field_set.split(","))


@pytest.fixture
def metrics() -> Metrics:
    m = Metrics()
    m.pipeline.read = lambda: PipelineCounts(accepted=1200, rejects={"bad_json": 4, "unknown_device": 3},
                                             engine={"duplicate": 2}, unknown_devices=3, ledger_hours=5)
    m.influx_points.labels("written").inc(5000)
    m.influx_failures.labels("network").inc()
    m.alerts.labels("breach", "firing").inc()
    m.mqtt_reconnects.inc(2)
    m.mqtt_dropped.inc(3)
    m.batch_size.observe(100)
    m.batch_size.observe(50)
    m.influx_write_seconds.observe(0.25)
    m.influx_write_seconds.observe(0.5)
    m.mqtt_connected.set(1)
    m.engine_lag.set(0.125)
    m.held_messages.set(17)
    m.influx_buffered_points.set(42)
    m.influx_spilled_bytes.set(1024)
    return m


@pytest.mark.parametrize(("field", "value"), [
    ("messages", "1207i"),
    ("messages_heartbeat", "1200i"),
    ("messages_rejected", "7i"),
    ("rejects", "7i"),
    ("rejects_bad_json", "4i"),
    ("rejects_unknown_device", "3i"),
    ("engine_duplicate", "2i"),
    ("influx_points_written", "5000i"),
    ("influx_failures", "1i"),
    ("influx_failures_network", "1i"),
    ("alerts_breach_firing", "1i"),
    ("alert_emails", "0i"),
    ("mqtt_reconnects", "2i"),
    ("mqtt_dropped", "3i"),
    ("batches", "2i"),
    ("batch_messages", "150i"),
    ("influx_writes", "2i"),
    ("influx_write_seconds", "0.75"),
    ("mqtt_connected", "1i"),
    ("unknown_devices", "3i"),
    ("engine_lag_seconds", "0.125"),
    ("influx_buffered_points", "42i"),
    ("influx_spilled_bytes", "1024i"),
    ("held_messages", "17i"),
    ("ledger_hours", "5i"),
    ("waiting_seconds", "0.0"),
], ids=lambda v: str(v))
def test_health_point_carries_each_metric(metrics, field, value):
    """Test that each metric becomes its field, counters as integers and totals summed over labels."""
    [text] = health_lines(metrics, T_US)
    assert text.startswith("collector ")
    assert fields_of(text)[field] == value


def test_fresh_metrics_give_a_point_of_zeros():
    """Test that a collector that has seen nothing still writes a point (the dashboard shows 0, not a gap)."""
    [text] = health_lines(Metrics(), T_US)
    fields = fields_of(text)
    assert fields["messages"] == "0i" and fields["influx_buffered_points"] == "0i"
    assert fields["messages_heartbeat"] == "0i" and not any(name.startswith("rejects_") for name in fields)


def test_checkpoint_age_and_memory_are_measured():
    """Test that the checkpoint age is measured from the last save when the point is made, and the
    process's resident memory is in the point."""
    m = Metrics()
    m.checkpoint_saved(time.time() - 90)
    fields = fields_of(health_lines(m, T_US)[0])
    assert 90 <= float(fields["checkpoint_age_seconds"]) < 120
    assert int(fields["rss_bytes"].rstrip("i")) > 10 * 2**20


def test_waiting_storage_stage_shows_per_stage_and_longest():
    """Test that a storage fault shows as waiting_seconds_<stage> and as the longest wait."""
    now = [1000.0]
    faults = Faults(StorageConfig(), monotonic=lambda: now[0])
    m = Metrics()
    m.registry.register(FaultCollector(faults))
    faults.failed("ledger", "database is locked")
    now[0] += 42
    faults.failed("archive", "No space left on device")
    now[0] += 3
    fields = fields_of(health_lines(m, T_US)[0])
    assert (fields["waiting_seconds_ledger"], fields["waiting_seconds_archive"]) == ("45.0", "3.0")
    assert fields["waiting_seconds"] == "45.0" and fields["waiting_seconds_spool"] == "0.0"
    assert (fields["storage_faults_ledger"], fields["storage_faults"]) == ("1i", "2i")


def test_instance_becomes_an_escaped_tag(metrics):
    """Test that the instance is a tag, escaped as line protocol wants."""
    [text] = health_lines(metrics, T_US, instance="ptmon collector,1")
    assert text.startswith("collector,instance=ptmon\\ collector\\,1 ")


def test_label_values_become_safe_field_names():
    """Test that a label value with odd characters still gives a plain field name."""
    m = Metrics()
    m.influx_failures.labels("HTTP 503/retry").inc()
    [text] = health_lines(m, T_US)
    assert fields_of(text)["influx_failures_HTTP_503_retry"] == "1i"
