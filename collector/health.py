"""The collector's own health as InfluxDB points (measurement ``collector``), for Grafana.

Prometheus scrapes ``/metrics``; the same values also go to InfluxDB every few seconds, so the
collector-health dashboard (grafana/) works where no Prometheus runs and sits beside the KPIs.
One point per call and collector (tag ``instance`` when given, e.g. the MQTT client id, so
collectors that split the district keep their own series):

====================================  =============================================  =========
field                                 from (collector/metrics.py, faults.py)         kind
====================================  =============================================  =========
``messages``, ``messages_<kind>``     ``ptmon_mqtt_messages_total`` (all; by kind)   counter
``rejects``, ``rejects_<kind>``       ``ptmon_decode_errors_total``                  counter
``engine``, ``engine_<kind>``         ``ptmon_engine_events_total``                  counter
``influx_points_<outcome>``           ``ptmon_influx_points_total``                  counter
``influx_failures[_<reason>]``        ``ptmon_influx_failures_total``                counter
``alerts[_<kind>_<event>]``           ``ptmon_alerts_total``                         counter
``alert_emails[_<outcome>]``          ``ptmon_alert_emails_total``                   counter
``storage_faults[_<stage>]``          ``ptmon_storage_faults_total``                 counter
``mqtt_reconnects``                   ``ptmon_mqtt_reconnects_total``                counter
``mqtt_dropped``                      ``ptmon_mqtt_dropped_messages_total``          counter
``archive_records``, ``archive_bytes``  ``ptmon_archive_*_total``                    counter
``ledger_hours``                      ``ptmon_ledger_hours_total``                   counter
``batches``, ``batch_messages``       ``ptmon_collector_batch_messages`` count, sum  counter
``influx_writes``                     ``ptmon_influx_write_seconds`` count           counter
``influx_write_seconds``              ``ptmon_influx_write_seconds`` sum (float)     counter
``mqtt_connected``                    ``ptmon_mqtt_connected`` (0/1)                 gauge
``unknown_devices``                   ``ptmon_decode_unknown_devices``               gauge
``engine_lag_seconds``                ``ptmon_engine_lag_seconds``                   gauge
``held_messages``                     ``ptmon_collector_held_messages``              gauge
``influx_buffered_points``            ``ptmon_influx_buffered_points``               gauge
``influx_spilled_bytes``              ``ptmon_influx_spilled_bytes``                 gauge
``checkpoint_age_seconds``            ``ptmon_checkpoint_age_seconds``               gauge
``waiting_seconds[_<stage>]``         ``ptmon_storage_waiting_seconds`` (longest;    gauge
                                      by stage: archive, spool, ledger, checkpoint)
``rss_bytes``                         ``process_resident_memory_bytes``              gauge
====================================  =============================================  =========

Counters are totals, written as integers (except the latency sum): a dashboard takes
``non_negative_derivative(last(x), 1s)`` for a rate, which skips the drop at a restart instead
of drawing a negative spike. (The pipeline's counts, messages, rejects and engine outcomes, are
the decoder's and engine's own, restored from the checkpoint at a restart; the others start at
zero.) Mean batch size and mean write latency over an interval are ratios of two counters'
increases (``batch_messages / batches``, ``influx_write_seconds / influx_writes``). A labelled
counter has a field per label value seen so far; a label value never seen has no field yet.
``waiting_seconds`` is non-zero while the collector waits for its storage (collector/faults.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from prometheus_client.core import Metric

from .metrics import Metrics
from .sinks.lineproto import FieldValue, line

MEASUREMENT = "collector"

# (field prefix, metric family): a total, plus one field per label value (joined by "_").
LABELLED_COUNTERS = (
    ("messages", "ptmon_mqtt_messages"),
    ("rejects", "ptmon_decode_errors"),
    ("engine", "ptmon_engine_events"),
    ("influx_points", "ptmon_influx_points"),
    ("influx_failures", "ptmon_influx_failures"),
    ("alerts", "ptmon_alerts"),
    ("alert_emails", "ptmon_alert_emails"),
    ("storage_faults", "ptmon_storage_faults"),
)
COUNTERS = (
    ("mqtt_reconnects", "ptmon_mqtt_reconnects"),
    ("mqtt_dropped", "ptmon_mqtt_dropped_messages"),
    ("archive_records", "ptmon_archive_records"),
    ("archive_bytes", "ptmon_archive_bytes"),
    ("ledger_hours", "ptmon_ledger_hours"),
)
# (count field, sum field, metric family, sum as integer)
HISTOGRAMS = (
    ("batches", "batch_messages", "ptmon_collector_batch_messages", True),
    ("influx_writes", "influx_write_seconds", "ptmon_influx_write_seconds", False),
)
# (field, metric family, integer)
GAUGES = (
    ("mqtt_connected", "ptmon_mqtt_connected", True),
    ("unknown_devices", "ptmon_decode_unknown_devices", True),
    ("engine_lag_seconds", "ptmon_engine_lag_seconds", False),
    ("held_messages", "ptmon_collector_held_messages", True),
    ("influx_buffered_points", "ptmon_influx_buffered_points", True),
    ("influx_spilled_bytes", "ptmon_influx_spilled_bytes", True),
    ("checkpoint_age_seconds", "ptmon_checkpoint_age_seconds", False),
    ("rss_bytes", "process_resident_memory_bytes", True),
)
# (field prefix, metric family): the largest value, plus one field per label value.
LABELLED_GAUGES = (
    ("waiting_seconds", "ptmon_storage_waiting_seconds"),
)
_NOT_NAME = re.compile(r"[^0-9A-Za-z_]+")


def health_lines(metrics: Metrics, t_us: int, *, instance: str = "") -> list[str]:
    """The ``collector`` point of the metrics' current values at ``t_us`` (unix µs), as lines."""
    families = {family.name: family for family in metrics.registry.collect()}
    fields: dict[str, FieldValue] = {}
    for prefix, name in LABELLED_COUNTERS:
        total = 0
        for labels, value in _samples(families, name, "_total"):
            fields[_field_name(prefix, *labels.values())] = int(value)
            total += int(value)
        fields[prefix] = total
    for field_name, name in COUNTERS:
        fields[field_name] = sum(int(value) for _, value in _samples(families, name, "_total"))
    for count_name, sum_name, name, whole in HISTOGRAMS:
        fields[count_name] = sum(int(value) for _, value in _samples(families, name, "_count"))
        seconds = sum(value for _, value in _samples(families, name, "_sum"))
        fields[sum_name] = int(seconds) if whole else float(seconds)
    for field_name, name, whole in GAUGES:
        if name in families:
            value = sum(value for _, value in _samples(families, name, ""))
            fields[field_name] = int(value) if whole else float(value)
    for prefix, name in LABELLED_GAUGES:
        values = [0.0]
        for labels, value in _samples(families, name, ""):
            fields[_field_name(prefix, *labels.values())] = float(value)
            values.append(value)
        fields[prefix] = float(max(values))
    text = line(MEASUREMENT, {"instance": instance} if instance else {}, fields, t_us)
    return [text] if text is not None else []


def _samples(families: dict[str, Metric], name: str, suffix: str) -> Iterator[tuple[dict[str, str], float]]:
    """(labels, value) of the family's samples named ``<name><suffix>``."""
    family = families.get(name)
    if family is None:
        return
    wanted = name + suffix
    for sample in family.samples:
        if sample.name == wanted:
            yield sample.labels, sample.value


def _field_name(prefix: str, *labels: str) -> str:
    """``prefix_label1_label2``, with anything but letters, digits and ``_`` as ``_``."""
    return "_".join([prefix, *(_NOT_NAME.sub("_", label).strip("_") or "_" for label in labels)])
