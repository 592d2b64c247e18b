"""Every Prometheus metric of the collector, declared once.

Names follow ``ptmon_<subsystem>_<name>_<unit>``; labels stay low-cardinality (kinds,
contracts, streets, stages). The registry is passed in, so each test gets a fresh one.

Counts the pipeline keeps anyway (messages accepted, rejects by kind, engine outcomes, unknown
devices, ledger hours) are not copied into metrics by hand: :class:`PipelineCollector` reads
them from the decoder, the engine and the ledger writer when Prometheus scrapes, as
client_python recommends for values that live elsewhere. Those counts are restored from the
checkpoint at a restart, so they continue across restarts. The registry also carries the
standard ``process_*`` (memory, CPU, file descriptors) and ``python_*`` (GC, version) metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .errors import PtmonError

log = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 10, 100, 1_000, 4_096, 16_384, 65_536)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True)
class PipelineCounts:
    """The counts the decoder, the engine and the ledger writer keep, at one instant."""

    accepted: int = 0
    rejects: Mapping[str, int] = field(default_factory=dict)
    engine: Mapping[str, int] = field(default_factory=dict)
    unknown_devices: int = 0
    ledger_hours: int = 0


class PipelineCollector(Collector):
    """Messages, rejects, engine outcomes, unknown devices and ledger hours, read when scraped."""

    def __init__(self) -> None:
        self.read: Callable[[], PipelineCounts] = PipelineCounts

    def collect(self) -> Iterator[Metric]:
        counts = self.read()
        messages = CounterMetricFamily("ptmon_mqtt_messages", "MQTT messages decoded, by kind (heartbeat, rejected)",
                                       labels=["kind"])
        messages.add_metric(["heartbeat"], counts.accepted)
        messages.add_metric(["rejected"], sum(counts.rejects.values()))
        yield messages
        yield _labelled(CounterMetricFamily("ptmon_decode_errors", "Rejected messages, by kind", labels=["kind"]),
                        counts.rejects)
        yield _labelled(CounterMetricFamily("ptmon_engine_events", "Engine outcomes (heartbeats, duplicate, stale, "
                                            "resets, late, ...)", labels=["kind"]), counts.engine)
        yield GaugeMetricFamily("ptmon_decode_unknown_devices", "Distinct unknown device topics seen",
                                value=counts.unknown_devices)
        yield CounterMetricFamily("ptmon_ledger_hours", "Hours written to the ledger", value=counts.ledger_hours)


def _labelled(family: CounterMetricFamily, values: Mapping[str, int]) -> CounterMetricFamily:
    for kind, value in sorted(values.items()):
        family.add_metric([kind], value)
    return family


class Metrics:
    """The collector's metrics in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        if process:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.pipeline = PipelineCollector()
        registry.register(self.pipeline)
        self.mqtt_connected = Gauge("ptmon_mqtt_connected", "1 while connected to the broker", registry=registry)
        self.mqtt_reconnects = Counter("ptmon_mqtt_reconnects", "Connections to the broker after the first", registry=registry)
        self.mqtt_dropped = Counter("ptmon_mqtt_dropped_messages", "QoS 0 messages the collector dropped, its backlog "
                                    "full (each run of drops is a monitoring gap)", registry=registry)
        self.batch_size = Histogram("ptmon_collector_batch_messages", "Messages per processed batch", buckets=BATCH_BUCKETS,
                                    registry=registry)
        self.engine_lag = Gauge("ptmon_engine_lag_seconds", "Wall time minus the receive time of the last applied message",
                                registry=registry)
        self.held_messages = Gauge("ptmon_collector_held_messages",
                                   "Messages received but not yet archived, so not acknowledged (read when scraped)",
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
        self.checkpoint_last_success = Gauge("ptmon_checkpoint_last_success_timestamp_seconds",
                                             "Unix time the state checkpoint was last saved (0: never)", registry=registry)
        self.checkpoint_seconds = Gauge("ptmon_checkpoint_age_seconds",
                                        "Seconds since the state checkpoint was last saved (since start when never)",
                                        registry=registry)
        self.loss = LossCollector()
        registry.register(self.loss)
        self._started = time.time()
        self._last_checkpoint = 0.0
        self.checkpoint_seconds.set_function(self._checkpoint_age)

    def checkpoint_saved(self, at: float) -> None:
        """A checkpoint was saved (or found on disk at start) at unix time ``at``."""
        self._last_checkpoint = at
        self.checkpoint_last_success.set(at)

    def _checkpoint_age(self) -> float:
        """Measured when scraped, so a collector that stopped checkpointing shows it growing."""
        return max(0.0, time.time() - (self._last_checkpoint or self._started))


def serve_metrics(listen: str, metrics: Metrics) -> Any:
    """Serve ``/metrics`` on ``host:port`` in a thread (None when ``listen`` is empty); ``.shutdown()`` stops it."""
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    try:
        server, _thread = start_http_server(int(port), addr=host or "0.0.0.0", registry=metrics.registry)
    except OSError as exc:
        raise PtmonError(f"cannot serve /metrics on {listen}: {exc.strerror}") from exc
    log.info("Prometheus metrics on http://%s/metrics", listen)
    return server


class MetricsEndpoint:
    """``/metrics`` as a :class:`~ptmon.sinks.protocol.Sink`: it serves what the pipeline counted, and
    each archived batch's size and the engine's lag behind ``clock``."""

    name = "metrics"

    def __init__(self, listen: str, metrics: Metrics, *, clock: Callable[[], float] = time.time) -> None:
        self.listen, self.metrics, self.clock = listen, metrics, clock
        self.server: Any = None

    async def open(self) -> None:
        self.server = serve_metrics(self.listen, self.metrics)

    def submit(self, batch: list[tuple[float, str, str]]) -> None:
        self.observe(batch, self.clock())

    def observe(self, batch: list[tuple[float, str, str]], now: float) -> None:
        """A batch archived and fed at ``now`` (the instant the main loop took it)."""
        if batch:
            self.metrics.batch_size.observe(len(batch))
            self.metrics.engine_lag.set(max(0.0, now - batch[-1][0]))

    async def persist(self) -> None:
        """Nothing to keep: Prometheus scrapes what is current."""

    async def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()  # the port is free for the next start, in this process too
            self.server = None

    def health(self) -> str | None:
        return None


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
