"""The alerting stage of the collector: alert rules, state changes and the emails they owe, storage
fault alerts."""

from __future__ import annotations

import logging

from .alerting.mailer import Mailer
from .alerting.model import Notification
from .alerting.outbox import outbox_rows
from .alerting.rules import ALERTS_FILE, AlertRules, load_alert_rules
from .config import CollectorConfig
from .decode import Decoder
from .engine import Engine
from .faults import Fault, Faults, send_storage_alert, storage_alert
from .ledger.keeper import LedgerKeeper
from .ledger.store import Ledger
from .metrics import Metrics
from .registry import Registry

log = logging.getLogger("ptmon.collect")  # the collector's own log, as before these stages had modules


class AlertStage:
    """How :class:`~ptmon.collect.Collector` records alerts and their emails (a mixin)."""

    config: CollectorConfig
    registry: Registry
    metrics: Metrics
    notes: list[str]
    faults: Faults
    ledger: Ledger
    keeper: LedgerKeeper
    engine: Engine
    decoder: Decoder
    mailer: Mailer | None
    alert_rules: AlertRules | None
    _replaying: bool

    def _load_alert_rules(self) -> AlertRules | None:
        if not self.config.alerts.enabled:
            return None
        path = self.config.alerts.rules_file or self.registry.rules.directory / ALERTS_FILE
        if not path.is_file():
            self.notes.append(f"no alert rules at {path}: alerting is off")
            return None
        rules = load_alert_rules(path, self.registry.rules)
        self.notes += rules.warnings()
        return rules

    def _on_alerts(self, notifications: list[Notification], states: dict[str, str | None]) -> None:
        """Alert state changes and the emails they owe, into the ledger in one transaction."""
        assert self.alert_rules is not None
        messages = outbox_rows(notifications, ledger=self.ledger, registry=self.registry, alert_rules=self.alert_rules,
                               sender=self.config.email.sender)
        if self._replaying and messages:  # a rebuild relives the past: its emails went out when it happened
            log.info("rebuilding: %d alert emails of the past not queued again", len(messages))
            messages = []
        for m in messages:
            self.metrics.alerts.labels(m["kind"], m["event"]).inc()
            log.warning("alert email queued for %s: %s", ", ".join(m["recipients"]), m["subject"])
        self.keeper.record_alerts(states, messages)  # never raises: a refusing ledger keeps them for the retry

    def _data_quality(self) -> dict[str, int]:
        """Cumulative counts the daily digest reports the increase of."""
        counts = {f"reject:{k}": int(v) for k, v in self.decoder.rejects.items()}
        counts.update({f"engine:{k}": int(self.engine.stats.get(k, 0)) for k in ("duplicate", "stale", "late")})
        return counts

    def _storage_alert(self, fault: Fault, event: str, waited: float) -> None:
        """The email of a storage fault that lasted ``alert_after``, to the district's recipients."""
        recipients = self.alert_rules.district if self.alert_rules is not None else ()
        row = storage_alert(fault, event, waited, recipients=recipients or (self.config.email.sender,),
                            sender=self.config.email.sender, instance=self.config.mqtt.client_id)
        self.metrics.alerts.labels("storage", event).inc()
        send_storage_alert(row, self.ledger, self.mailer)
