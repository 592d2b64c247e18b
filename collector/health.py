"""The collector's own health as InfluxDB points (measurement ``collector``), for Grafana.

Prometheus scrapes ``/metrics``; the same values also go to InfluxDB every few seconds, so the
collector-health dashboard (grafana/) works where no Prometheus runs and sits beside the KPIs.
One point per call and collector (tag ``instance`` when given, e.g. the MQTT client id, so
collectors that split the district keep their own series):

====================================  =============================================  =========
field                                 from (collector/metrics.py)                    kind
====================================  =============================================  =========
``messages``, ``messages_<kind>``     ``ptmon_mqtt_messages_total`` (all; by kind)   counter
``rejects``, ``rejects_<kind>``       ``ptmon_decode_errors_total``                  counter
``engine``, ``engine_<kind>``         ``ptmon_engine_events_total``                  counter
``influx_points_<outcome>``           ``ptmon_influx_points_total``                  counter
``influx_failures[_<reason>]``        ``ptmon_influx_failures_total``                counter
``alerts[_<kind>_<event>]``           ``ptmon_alerts_total``                         counter
``alert_emails[_<outcome>]``          ``ptmon_alert_emails_total``                   counter
``mqtt_reconnects``                   ``ptmon_mqtt_reconnects_total``                counter
``archive_records``, ``archive_bytes``  ``ptmon_archive_*_total``                    counter
``ledger_hours``                      ``ptmon_ledger_hours_total``                   counter
``batches``, ``batch_messages``       ``ptmon_collector_batch_messages`` count, sum  counter
``influx_writes``                     ``ptmon_influx_write_seconds`` count           counter
``influx_write_seconds``              ``ptmon_influx_write_seconds`` sum (float)     counter
``mqtt_connected``                    ``ptmon_mqtt_connected`` (0/1)                 gauge
``unknown_devices``                   ``ptmon_decode_unknown_devices``               gauge
``engine_lag_seconds``                ``ptmon_engine_lag_seconds``                   gauge
``influx_buffered_points``            ``ptmon_influx_buffered_points``               gauge
``influx_spilled_bytes``              ``ptmon_influx_spilled_bytes``                 gauge
``checkpoint_age_seconds``            ``ptmon_checkpoint_age_seconds``               gauge
====================================  =============================================  =========

Counters are totals since the collector started, written as integers (except the latency
sum): a dashboard takes ``non_negative_derivative(last(x), 1s)`` for a rate, which skips the
drop to zero at a restart instead of drawing a negative spike. Mean batch size and mean write
latency over an interval are ratios of two counters' increases (``batch_messages / batches``,
``influx_write_seconds / influx_writes``). A labelled counter has a field per label value seen
so far; a label value never seen has no field yet.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from prometheus_client.metrics import MetricWrapperBase

from .metrics import Metrics
from .sinks.lineproto import FieldValue, line

MEASUREMENT = "collector"

# (field prefix, Metrics attribute): a total, plus one field per label value (joined by "_").
LABELLED_COUNTERS = (
    ("messages", "messages"),
    ("rejects", "decode_errors"),
    ("engine", "engine_events"),
    ("influx_points", "influx_points"),
    ("influx_failures", "influx_failures"),
    ("alerts", "alerts"),
    ("alert_emails", "alert_emails"),
)
COUNTERS = (
    ("mqtt_reconnects", "mqtt_reconnects"),
    ("archive_records", "archive_records"),
    ("archive_bytes", "archive_bytes"),
    ("ledger_hours", "ledger_hours"),
)
# (count field, sum field, Metrics attribute, sum as integer)
HISTOGRAMS = (
    ("batches", "batch_messages", "batch_size", True),
    ("influx_writes", "influx_write_seconds", "influx_write_seconds", False),
)
# (field, Metrics attribute, integer)
GAUGES = (
    ("mqtt_connected", "mqtt_connected", True),
    ("unknown_devices", "unknown_devices", True),
    ("engine_lag_seconds", "engine_lag", False),
    ("influx_buffered_points", "influx_buffered_points", True),
    ("influx_spilled_bytes", "influx_spilled_bytes", True),
    ("checkpoint_age_seconds", "checkpoint_seconds", False),
)
_NOT_NAME = re.compile(r"[^0-9A-Za-z_]+")


def health_lines(metrics: Metrics, t_us: int, *, instance: str = "") -> list[str]:
    """The ``collector`` point of the metrics' current values at ``t_us`` (unix µs), as lines."""
    fields: dict[str, FieldValue] = {}
    for prefix, attribute in LABELLED_COUNTERS:
        total = 0
        for labels, value in _samples(getattr(metrics, attribute), "_total"):
            fields[_field_name(prefix, *labels.values())] = int(value)
            total += int(value)
        fields[prefix] = total
    for name, attribute in COUNTERS:
        fields[name] = sum(int(value) for _, value in _samples(getattr(metrics, attribute), "_total"))
    for count_name, sum_name, attribute, whole in HISTOGRAMS:
        histogram = getattr(metrics, attribute)
        fields[count_name] = sum(int(value) for _, value in _samples(histogram, "_count"))
        seconds = sum(value for _, value in _samples(histogram, "_sum"))
        fields[sum_name] = int(seconds) if whole else float(seconds)
    for name, attribute, whole in GAUGES:
        value = sum(value for _, value in _samples(getattr(metrics, attribute), ""))
        fields[name] = int(value) if whole else float(value)
    text = line(MEASUREMENT, {"instance": instance} if instance else {}, fields, t_us)
    return [text] if text is not None else []


def _samples(metric: MetricWrapperBase, suffix: str) -> Iterator[tuple[dict[str, str], float]]:
    """(labels, value) of the metric's samples named ``<metric name><suffix>``."""
    for family in metric.collect():
        wanted = family.name + suffix
        for sample in family.samples:
            if sample.name == wanted:
                yield sample.labels, sample.value


def _field_name(prefix: str, *labels: str) -> str:
    """``prefix_label1_label2``, with anything but letters, digits and ``_`` as ``_``."""
    return "_".join([prefix, *(_NOT_NAME.sub("_", label).strip("_") or "_" for label in labels)])
