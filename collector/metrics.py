"""Every Prometheus metric of the collector, declared once.

Names follow ``ptmon_<subsystem>_<name>_<unit>``; labels stay low-cardinality (kinds,
contracts, streets). The registry is passed in, so each test gets a fresh one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
        self.loss = LossCollector()
        registry.register(self.loss)


@dataclass(frozen=True)
class LossCounts:
    """Loss in transit and the broker's statistics, at one instant (collector/loss.py, brokerstats.py)."""

    lost: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (contract, street) → month to date
    recovered: Mapping[tuple[str, str], int] = field(default_factory=dict)
    ratio: Mapping[tuple[str, str], float] = field(default_factory=dict)  # over the [loss] window; street "district" too
    broker: Mapping[str, int] = field(default_factory=dict)  # brokerstats.STAT_NAMES → last $SYS value
    broker_dropped_seen: int = 0
    broker_updated: float = 0.0  # unix s of the last $SYS value; 0: none yet (off, or the broker's ACL hides $SYS)


class LossCollector(Collector):
    """Messages lost in transit per contract × street, and the broker's $SYS counts, read when scraped."""

    def __init__(self) -> None:
        self.read: Callable[[], LossCounts] = LossCounts

    def collect(self) -> Iterator[Metric]:
        counts = self.read()
        yield _by_street(CounterMetricFamily("ptmon_mqtt_lost_messages", "Messages lost in transit (gaps in a device's "
                                             "seq), month to date", labels=["contract", "street"]), counts.lost)
        yield _by_street(CounterMetricFamily("ptmon_mqtt_recovered_messages", "Messages counted lost that arrived late, "
                                             "month to date", labels=["contract", "street"]), counts.recovered)
        yield _by_street(GaugeMetricFamily("ptmon_mqtt_loss_ratio", "Lost / (received + lost) over the [loss] window",
                                           labels=["contract", "street"]), counts.ratio)
        b = counts.broker
        for name, help_text, counter in BROKER_FAMILIES:
            if name in b:
                family = CounterMetricFamily if counter else GaugeMetricFamily
                yield family(f"ptmon_broker_{name}", help_text, value=b[name])
        yield CounterMetricFamily("ptmon_broker_dropped_seen_messages", "Messages the broker reported dropped since "
                                  "the collector first heard it, across broker restarts", value=counts.broker_dropped_seen)
        yield GaugeMetricFamily("ptmon_broker_stats_updated_timestamp_seconds", "Unix time of the broker's last $SYS "
                                "value (0: none received)", value=counts.broker_updated)


# (stat, help, counter?) of the broker's $SYS values exposed (brokerstats.SYS_TOPICS)
BROKER_FAMILIES = (
    ("dropped_messages", ("Messages the broker dropped (a client's queue full: max_queued_messages / "
                          "max_queued_bytes), since it started"), True),
    ("stored_messages", "Messages the broker holds (retained and queued)", False),
    ("stored_bytes", "Bytes of messages the broker holds", False),
    ("received_messages", "PUBLISH messages the broker received, since it started", True),
    ("sent_messages", "PUBLISH messages the broker sent, since it started", True),
    ("connected_clients", "Clients connected to the broker", False),
    ("uptime_seconds", "Seconds since the broker started", False),
)


def _by_street(family: CounterMetricFamily | GaugeMetricFamily, values: Mapping[tuple[str, str], float]) -> Metric:
    for (contract, street), value in sorted(values.items()):
        family.add_metric([contract, street], value)
    return family
