"""Device health in Prometheus, read from the monitor when scraped (no labelled child per device).

* ``ptmon_anomaly_devices{contract, street, kind}`` — devices with an open anomaly of ``kind``
  (blind, degraded, stuck) now, and devices still ``learning`` (not judged yet);
* ``ptmon_anomaly_detections_total{kind}`` — anomalies raised since the collector started.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .monitor import AnomalyMonitor
from .rules import KINDS


class AnomalyCollector(Collector):
    def __init__(self, monitor: AnomalyMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        monitor = self.monitor
        registry = monitor.engine.registry
        rules = registry.rules
        contracts, streets = [c.code for c in rules.contracts], rules.street_codes()
        counts: Counter[tuple[str, str, str]] = Counter()
        for kind, row in list(monitor.open):  # a copy: the engine thread may change it meanwhile
            counts[contracts[int(registry.contract[row])], streets[int(registry.street[row])], kind] += 1
        learning = monitor.learning_mask()
        group = registry.contract.astype(np.int64) * len(streets) + registry.street
        per_group = np.bincount(group[learning], minlength=len(contracts) * len(streets))
        devices = GaugeMetricFamily("ptmon_anomaly_devices", "Devices with an open anomaly by kind, and those still "
                                    "learning their baseline", labels=["contract", "street", "kind"])
        for ci, contract in enumerate(contracts):
            for si, street in enumerate(streets):
                for kind in KINDS:
                    devices.add_metric([contract, street, kind], counts[contract, street, kind])
                devices.add_metric([contract, street, "learning"], int(per_group[ci * len(streets) + si]))
        yield devices
        raised = CounterMetricFamily("ptmon_anomaly_detections", "Anomalies raised since the collector started",
                                     labels=["kind"])
        for kind in KINDS:
            raised.add_metric([kind], monitor.detections[kind])
        yield raised
