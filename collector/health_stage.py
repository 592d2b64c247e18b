"""Device health (rules/anomaly.yaml) and loss in transit, as the collector wires them: their
InfluxDB points, their /metrics, and the anomalies written to the ledger."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from .alerting.evaluate import AlertEvaluator
from .anomaly import DeviceHealth
from .anomaly.ledger import forget_raised_since, write_anomalies
from .anomaly.metrics import AnomalyCollector
from .anomaly.records import Anomaly
from .anomaly.rules import rules_in
from .config import CollectorConfig
from .engine import Engine
from .faults import Faults
from .ledger.store import Ledger
from .live import MonthTallies
from .loss import LossPoints, LossWindow, broker_lines
from .metrics import LossCounts, Metrics
from .registry import Registry
from .source import MqttSource
from .timebase import US_PER_S

log = logging.getLogger("ptmon.collect")  # the collector's own log, as before these stages had modules


class HealthStage:
    """Device health and loss in transit in :class:`~ptmon.collect.Collector` (a mixin)."""

    config: CollectorConfig
    registry: Registry
    metrics: Metrics
    notes: list[str]
    faults: Faults
    engine: Engine
    ledger: Ledger
    months: MonthTallies
    source: MqttSource
    alerts: AlertEvaluator | None
    influx: Any
    _saved_extensions: dict | None
    _emit: Callable[[list[str]], None]

    def _attach_loss(self) -> None:
        """Loss in transit: the trailing window, its InfluxDB points and its metrics (its alerts are
        the alert evaluator's: causes ``loss`` and ``broker_drops``)."""
        self.loss_window = LossWindow(self.engine, self.config.loss.window)
        self.loss_points = LossPoints(self.months, self.loss_window, self._emit) if self.config.influx.url else None
        self.metrics.loss.read = self._loss_counts

    def _loss_counts(self) -> LossCounts:
        """What /metrics shows of loss in transit and of the broker, read when scraped."""
        tally = self.months.current()
        streets = self.registry.rules.street_codes()
        by_street: dict[str, dict[tuple[str, str], int]] = {"lost": {}, "recovered": {}}
        for kind, out in by_street.items():
            per_group = tally.counts.get(kind) if tally is not None else None
            for ci, contract in enumerate(self.registry.rules.contracts):
                for si, street in enumerate(streets):
                    out[contract.code, street] = int(per_group[ci * len(streets) + si]) if per_group is not None else 0
        ratios = self.loss_window.latest
        broker = self.source.broker_stats.snapshot() if self.source.broker_stats is not None else None
        return LossCounts(lost=by_street["lost"], recovered=by_street["recovered"],
                          ratio={key: rate for key, (rate, _, _) in ratios.items() if rate is not None},
                          broker=broker.values if broker else {}, broker_dropped_seen=broker.dropped_seen if broker else 0,
                          broker_updated=broker.updated if broker else 0.0)

    def _watch_broker(self, now: float, health_due: bool) -> None:
        """The broker's $SYS statistics: drops alert, and they go to InfluxDB with the health point."""
        if self.source.broker_stats is None:
            return
        snapshot = self.source.broker_stats.snapshot()
        if self.alerts is not None:
            self.alerts.on_broker(snapshot, int(now * US_PER_S))
        if health_due and self.influx is not None:
            self.influx.submit(broker_lines(snapshot, int(now * US_PER_S), instance=self.config.mqtt.client_id))

    def _attach_health(self) -> None:
        """Device health (rules/anomaly.yaml): before alerting, which reads its open anomalies."""
        self.anomalies_pending: list[Anomaly] = []
        anomaly_rules = rules_in(self.registry.rules.directory)
        if anomaly_rules is None:
            self.health: DeviceHealth | None = None
            self.notes.append(f"no anomaly.yaml in {self.registry.rules.directory}: device health is off")
            return
        self.health = DeviceHealth(self.engine, anomaly_rules, on_anomalies=self.anomalies_pending.extend,
                                   emit_points=self._emit if self.config.influx.url else None,
                                   saved=self._saved_extensions)
        self.notes += self.health.notes
        self.metrics.registry.register(AnomalyCollector(self.health.monitor))

    def _forget_anomalies_to_replay(self, since: int) -> None:
        """Before the archive after the restored state (at engine time ``since``) is fed: the ledger's rows of
        anomalies raised from then on go (those open in it stay), as feeding it raises them again, each as
        the archive dates it."""
        if self.health is None:
            return
        monitor, ids = self.health.monitor, self.registry.ids
        keep = {(ids[row], kind, o.since) for (kind, row), o in monitor.open.items()}
        if forgotten := forget_raised_since(self.ledger, since, keep):
            log.info("%d anomaly rows raised after the restored state dropped: the archive gives them again", forgotten)

    def _write_anomalies(self) -> bool:
        """Anomalies raised and cleared, and every open one's figures so far, into the ledger."""
        if self.health is None:
            return True
        written = len(self.anomalies_pending)
        try:
            write_anomalies(self.ledger, self.anomalies_pending + self.health.monitor.open_anomalies())
        except sqlite3.Error as exc:
            self.faults.failed("ledger", str(exc))
            return False
        del self.anomalies_pending[:written]
        return True
