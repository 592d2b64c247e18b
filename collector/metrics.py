"""Every Prometheus metric of the collector, declared once.

Names follow ``ptmon_<subsystem>_<name>_<unit>``; labels stay low-cardinality (kinds,
contracts, streets). The registry is passed in, so each test gets a fresh one.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = (1, 10, 100, 1_000, 4_096, 16_384, 65_536)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The collector's metrics in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        self.messages = Counter("ptmon_mqtt_messages", "MQTT messages received, by kind (heartbeat, gateway_status, rejected, control)",
                                ["kind"], registry=registry)
        self.mqtt_connected = Gauge("ptmon_mqtt_connected", "1 while connected to the broker", registry=registry)
        self.mqtt_reconnects = Counter("ptmon_mqtt_reconnects", "Connections to the broker after the first", registry=registry)
        self.decode_errors = Counter("ptmon_decode_errors", "Rejected messages, by kind", ["kind"], registry=registry)
        self.unknown_devices = Gauge("ptmon_decode_unknown_devices", "Distinct unknown device topics seen", registry=registry)
        self.batch_size = Histogram("ptmon_collector_batch_messages", "Messages per processed batch", buckets=BATCH_BUCKETS,
                                    registry=registry)
        self.engine_lag = Gauge("ptmon_engine_lag_seconds", "Wall time minus the receive time of the last applied message",
                                registry=registry)
        self.engine_events = Counter("ptmon_engine_events", "Engine outcomes (duplicate, stale, resets, late, ...)", ["kind"],
                                     registry=registry)
        self.archive_records = Counter("ptmon_archive_records", "Records appended to the archive", registry=registry)
        self.archive_bytes = Counter("ptmon_archive_bytes", "Compressed bytes appended to the archive", registry=registry)
        self.influx_write_seconds = Histogram("ptmon_influx_write_seconds", "InfluxDB write request latency",
                                              buckets=LATENCY_BUCKETS, registry=registry)
        self.influx_points = Counter("ptmon_influx_points", "Points by outcome (written, dead_letter, dropped)", ["outcome"],
                                     registry=registry)
        self.influx_failures = Counter("ptmon_influx_failures", "Failed write requests, by reason", ["reason"], registry=registry)
        self.influx_buffered_points = Gauge("ptmon_influx_buffered_points", "Points waiting in memory", registry=registry)
        self.influx_spilled_bytes = Gauge("ptmon_influx_spilled_bytes", "Bytes of points spilled to disk", registry=registry)
        self.kpi = Gauge("ptmon_kpi_ratio", "Month-to-date KPI value", ["contract", "street", "kpi"], registry=registry)
        self.kpi_pass = Gauge("ptmon_kpi_pass", "1 when the month-to-date KPI meets its threshold", ["contract", "street", "kpi"],
                              registry=registry)
        self.online_devices = Gauge("ptmon_online_devices", "Online devices at the last sample", ["contract", "street"],
                                    registry=registry)
        self.expected_devices = Gauge("ptmon_expected_devices", "Expected devices at the last sample", ["contract", "street"],
                                      registry=registry)
        self.alerts = Counter("ptmon_alerts", "Alert events queued, by kind and event", ["kind", "event"], registry=registry)
        self.alert_emails = Counter("ptmon_alert_emails", "Alert email send attempts, by outcome (sent, failed)", ["outcome"],
                                    registry=registry)
        self.ledger_hours = Counter("ptmon_ledger_hours", "Hours written to the ledger", registry=registry)
        self.checkpoint_seconds = Gauge("ptmon_checkpoint_age_seconds", "Seconds since the last state checkpoint",
                                        registry=registry)
