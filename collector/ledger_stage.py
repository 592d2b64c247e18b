"""The ledger stage of the collector: exemptions, the hourly rows and episodes, and flushing what
waits for a ledger that was locked or refused."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .alerting.evaluate import AlertEvaluator
from .alerting.model import Notification
from .alerting.rules import AlertRules
from .anomaly import DeviceHealth
from .checkpoint import Checkpoint
from .config import CollectorConfig
from .engine import Engine
from .errors import LedgerError
from .exemptions import ExemptionMask
from .faults import Faults, check_storage_present
from .ledger.episodes import EpisodeTracker, episode_line
from .ledger.keeper import LedgerKeeper
from .ledger.read import ledger_results
from .ledger.records import Episode
from .ledger.store import Ledger
from .ledger.writer import LedgerWriter
from .live import MonthTallies, SlaPoints
from .loss import LossWindow
from .metrics import Metrics
from .registry import Registry
from .results import Results

log = logging.getLogger("ptmon.collect")  # the collector's own log, as before these stages had modules


class LedgerStage:
    """How :class:`~ptmon.collect.Collector` attaches to and flushes the ledger (a mixin)."""

    config: CollectorConfig
    registry: Registry
    metrics: Metrics
    notes: list[str]
    faults: Faults
    engine: Engine
    ledger: Ledger
    keeper: LedgerKeeper
    months: MonthTallies
    sla: SlaPoints
    _pending_points: list[str]
    alerts: AlertEvaluator | None
    health: DeviceHealth | None
    loss_window: LossWindow
    # the collector's other stages, wired in here
    _emit: Callable[[list[str]], None]
    _attach_health: Callable[[], None]
    _load_alert_rules: Callable[[], AlertRules | None]
    _on_alerts: Callable[[list[Notification], dict[str, str | None]], None]
    _data_quality: Callable[[], dict[str, int]]
    _write_anomalies: Callable[[], bool]

    def _attach_ledger(self, checkpoint: Checkpoint | None) -> None:
        """Exemptions, the ledger's hours and episodes, and alerting, before any record is fed."""
        engine = self.engine
        engine.exemptions = ExemptionMask(self.registry)
        self._exemptions_version = self.ledger.exemptions_version()
        saved_at = checkpoint.saved_at if checkpoint is not None else None
        exemptions = self.ledger.exemptions(include_revoked=False)
        engine.exemptions.load([e for e in exemptions if saved_at is None or e.created_at <= saved_at])
        engine.exemptions.load(exemptions, known_from=engine.clock)  # recorded since the checkpoint
        named = checkpoint.named if checkpoint is not None else {}
        # A checkpoint is saved only once the ledger took everything, spans included: those ending before
        # its clock are in the ledger as they are; a rebuilt or new state writes all it has
        self.ledger_writer = LedgerWriter(engine, self.ledger, hour=named.get("ledger_hour"), day=named.get("ledger_day"),
                                          spans_since=engine.clock if checkpoint is not None else None)
        open_starts = self.ledger.episode_starts(engine.clock) if engine.clock is not None else None
        self.episodes = EpisodeTracker(engine, self._on_episodes, open_starts)
        self._attach_health()
        self.alerts: AlertEvaluator | None = None
        self._month_to_date_errors: set[str] = set()
        self.alert_rules = self._load_alert_rules()
        if self.alert_rules is not None:
            restored = checkpoint.extra.get("alerting") if checkpoint is not None else None
            self.alerts = AlertEvaluator(
                engine, self.months, self.sla, self.alert_rules, on_change=self._on_alerts, emit_points=self._emit,
                states=self.ledger.alert_states(), restored=restored, data_quality=self._data_quality,
                month_to_date=self._month_to_date,
                loss_window=self.loss_window, loss=self.config.loss,
                device_health=self.health.monitor if self.health is not None else None)

    def _month_to_date(self, start: int, end: int) -> Results | None:
        """The ledger's results for the month-at-risk alerts; None (logged once per reason) when the ledger
        cannot give them, which must not stop the monitoring."""
        try:
            return ledger_results(self.ledger, self.registry, start, end)
        except LedgerError as exc:
            if str(exc) not in self._month_to_date_errors:
                self._month_to_date_errors.add(str(exc))
                log.error("month-at-risk alerts skipped: %s", exc)
            return None

    def _on_episodes(self, episodes: list[Episode]) -> None:
        self.ledger_writer.on_episodes(episodes)
        if self.config.influx.url:
            self._pending_points.extend(filter(None, map(episode_line, episodes)))

    def _poll_exemptions(self) -> None:
        version = self.ledger.exemptions_version()
        if version != self._exemptions_version and self.engine.exemptions is not None:
            self._exemptions_version = version
            added = self.engine.exemptions.load(self.ledger.exemptions(include_revoked=False), known_from=self.engine.clock)
            for e in added:
                log.info("exemption %d (%s %s) applies from now", e.id, e.scope, e.target)

    def _flush_ledger(self, *, open_buckets: bool) -> bool:
        """What waits for the ledger, with ``open_buckets`` the open hour and day and the alert states."""
        states = self.alerts.checkpoint_states() if open_buckets and self.alerts is not None else None
        if self.keeper.flush(open_buckets=open_buckets, states=states) and self._write_anomalies():
            return True
        self._check_storage()
        return False

    def _check_storage(self) -> None:
        sink = getattr(self, "ledger_sink", None)  # None while restoring
        check_storage_present(self.config, sink.inode if sink is not None else None)
