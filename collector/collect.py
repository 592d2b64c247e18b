"""The live collector: MQTT source → archive → decode → engine → sinks, in one process.

Lifecycle, in order:

1. **Startup**: rules and registry; the state checkpoint, if any, and then the archive
   records written after it (a crash loses the state since the last checkpoint, never the
   archive, so replaying that tail makes the state exact again and re-sends its points, which
   InfluxDB stores idempotently); the InfluxDB sink (which resumes its spool); /metrics;
   finally the MQTT source.
2. **Main loop** (:meth:`Collector.step`), woken by arriving messages or once a second: take
   what arrived, append it to the archive and commit it to the OS, acknowledge it to the
   broker, feed it to the engine, hand the points to InfluxDB (collector/intake.py). Every
   ``checkpoint_interval``, make the InfluxDB buffer durable and save the state.
3. **Shutdown**: disconnect from the broker (no more intake), process what is left, close
   the archive (fsync), save the state, flush InfluxDB within a deadline (the rest stays in
   its spool for the next start).

Storage faults (collector/faults.py) never stop the loop: a full disk holds intake (nothing
unarchived is acknowledged), a locked ledger keeps its rows in memory, a failed checkpoint
waits; each is retried with capped backoff and reported until it clears. Only storage that
vanished (:class:`StorageGone`: the data directory deleted) stops the collector, with exit
status 3 and no checkpoint over the state it can no longer match.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

from .alerting.evaluate import AlertEvaluator
from .alerting.mailer import Mailer
from .alerting.model import Notification
from .alerting.outbox import outbox_rows
from .alerting.rules import ALERTS_FILE, AlertRules, load_alert_rules
from .anomaly import DeviceHealth
from .anomaly.ledger import forget_raised_since, write_anomalies
from .anomaly.metrics import AnomalyCollector
from .anomaly.records import Anomaly
from .anomaly.rules import rules_in
from .archive import MONITOR_TOPIC, ArchiveReader, Record
from .checkpoint import Checkpoint, load_checkpoint, restore_decoder, save_checkpoint
from .config import CollectorConfig
from .decode import DecodedBatch, Decoder
from .durable import replacing_file
from .engine import Engine
from .errors import CheckpointError, PtmonError, SinkError, StorageGone
from .exemptions import ExemptionMask
from .faults import (
    Fault,
    FaultCollector,
    Faults,
    check_storage_present,
    send_storage_alert,
    storage_alert,
)
from .health import health_lines
from .intake import Intake
from .ledger.episodes import EpisodeTracker, episode_line
from .ledger.keeper import LedgerKeeper
from .ledger.read import ledger_results
from .ledger.records import Episode
from .ledger.store import Ledger
from .ledger.writer import LedgerWriter
from .live import HeartbeatPoints, MonthTallies, SlaPoints
from .lock import CollectorLocks
from .loss import LossPoints, LossWindow, broker_lines
from .metrics import LossCounts, Metrics, PipelineCounts, serve_metrics
from .partition import claim, owned_points, partition_of, partitioned_config, refuse_partitioned, restrict_registry
from .registry import Registry, load_registry
from .replay import Feed, freeze_startup_heap
from .results import Results
from .rules import DEFAULT_RULES_DIR, load_rules
from .sinks.archive import ArchiveWriter, archive_files
from .snapshots import load_snapshot, month_sources, save_snapshot
from .source import MqttSource
from .tally import Tally
from .timebase import US_PER_S, format_instant, month_bounds

log = logging.getLogger(__name__)

IDLE_TICK = 1.0  # seconds: the loop wakes at least this often (and intake archives a clock tick)
GATHER = 0.02  # seconds to let a batch gather after the first message wakes the loop
EXEMPTION_POLL = 5.0  # seconds between looks for exemptions recorded by `ptmon exempt`
HEALTH_INTERVAL = 10.0  # seconds between the collector's own `collector` points
LEDGER_BUSY_TIMEOUT_MS = 250  # in the main loop a locked ledger waits this long per try, then backs off


def _inputs_changed(checkpoint: Checkpoint, registry: Registry) -> str:
    """What changed in the registry and rules since the checkpoint ('' when nothing did)."""
    changed = [f"the {what} changed ({old} → {new})" for what, old, new in (
        ("registry", checkpoint.registry_version, registry.version),
        ("rules", checkpoint.rules_version, registry.rules.version)) if old != new]
    return " and ".join(changed)


class Collector:
    """One collector process. ``await run(stop)``; set ``stop`` to shut down in order."""

    def __init__(self, config: CollectorConfig, *, metrics: Metrics | None = None, registry: Registry | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        config = self.config = partitioned_config(config)
        self.clock = clock
        self.on_checkpoint: Callable[[Results], None] | None = None
        self.metrics = metrics or Metrics()
        self.registry = registry or load_registry(config.registry, load_rules(config.rules or DEFAULT_RULES_DIR))
        if config.streets:
            self.registry = restrict_registry(self.registry, config.streets)
        self.gaps_at_start: list[tuple[int, int]] = []
        self.notes: list[str] = []
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_checkpoint = time.monotonic()
        self._last_exemption_poll = time.monotonic()
        self._last_health = 0.0
        self._replaying = False  # rebuilding from the whole archive: no InfluxDB points, no snapshots
        self._last_turn = (0.0, 0.0)  # (monotonic, clock) of the main loop's last turn
        self.final_results: Results | None = None  # the month's KPIs as the collector stopped
        self.influx: Any = None  # an InfluxSink when an InfluxDB url is configured
        self.lock = CollectorLocks(config.data_dir, config.ledger_path)
        self.lock.acquire()
        self.faults = Faults(config.storage)
        self.keeper = LedgerKeeper(self.faults, wake_mailer=lambda: self.mailer.wake() if self.mailer else None)
        self._restore()
        self.archive = ArchiveWriter(config.archive_path, compresslevel=config.archive_compresslevel, metrics=self.metrics)
        self.source = MqttSource(config.mqtt, self.metrics, wakeup=self._wakeup_threadsafe, clock=clock)
        self._watch_storage()

    def _watch_storage(self) -> None:
        """Fault handling and the metrics that read the pipeline's own counts when scraped."""
        self.faults.on_alert = self._storage_alert
        self.keeper.bind(self.ledger, self.ledger_writer)
        self.keeper.record_alerts({}, [])  # those of the replayed archive tail
        self.intake = Intake(self.source, self.archive, self.faults, self.metrics, clock=self.clock,
                             blocked=lambda: self.influx.holding() if self.influx is not None else None)
        self.metrics.pipeline.read = self._pipeline_counts
        self.metrics.registry.register(FaultCollector(self.faults))
        if self.config.checkpoint_path.exists():
            self.metrics.checkpoint_saved(self.config.checkpoint_path.stat().st_mtime)

    def _pipeline_counts(self) -> PipelineCounts:
        """Read by Prometheus' thread: copies are taken in C, so a concurrent batch cannot break them."""
        decoder, engine = self.decoder, self.engine
        return PipelineCounts(accepted=decoder.accepted, rejects=dict(decoder.rejects), engine=dict(engine.stats),
                              unknown_devices=len(decoder.unknown_topics) + decoder.unknown_overflow,
                              ledger_hours=self.ledger_writer.hours_written)

    # --- startup ------------------------------------------------------------------------

    def _restore(self) -> None:
        """Engine, tallies and decoder from the checkpoint, then the archive's tail; without a
        usable checkpoint, from the archive (a month-start snapshot and the files after it)."""
        path = self.config.checkpoint_path
        checkpoint, lost = self._read_checkpoint(path)
        self.decoder = Decoder.from_config(self.registry, self.config.limits)
        self.ledger = Ledger(self.config.ledger_path)
        if self.config.streets:  # before any history is read: refuse another partition's storage
            claim(partition_of(self.registry, self.config.streets), self.config.archive_path, self.ledger)
        else:  # nor may a whole-district collector write into a partition's storage
            refuse_partitioned(self.config.archive_path, self.ledger)
        history = bool(archive_files(self.config.archive_path)) or self.ledger.has_hours()
        if checkpoint is not None and (mismatch := self._mismatch(checkpoint, history)):
            lost, checkpoint = mismatch, None
        rebuild = checkpoint is None and history
        self._saved_extensions: dict | None = None  # the device-health state the engine's goes with
        if rebuild:
            self.engine, tallies, position = self._start_from_snapshot(lost)
        elif checkpoint is None:
            self.engine, tallies, position = Engine(self.registry), [], {}
        else:
            self._saved_extensions = checkpoint.extensions
            self.engine = checkpoint.engine
            tallies = checkpoint.tallies
            restore_decoder(self.decoder, checkpoint)
            position = dict(checkpoint.extra.get("archive") or {})
            self.notes += checkpoint.notes
            log.info("state restored from %s (saved %s)", path, checkpoint.saved_at)
        self.months = MonthTallies(self.engine, tallies)
        self.sla = SlaPoints(self.months, self._emit, self.metrics)
        self._attach_loss()
        self._attach_ledger(checkpoint)
        if rebuild or checkpoint is not None:  # a fresh engine rebuilds from the ledger's rebuilt hours on
            self._forget_anomalies_to_replay(self.engine.clock if self.engine.clock is not None else self._rebuild_from())
        self.heartbeats = HeartbeatPoints(self.engine) if self.config.influx.url and self.config.influx.heartbeats else None
        self.feed = Feed(self.engine, self.decoder, on_batch=self._on_batch, on_month=self._month_snapshot)
        self._pending_points: list[str] = []
        if rebuild:
            self.ledger_writer.write_from = self._rebuild_from()
            self.ledger.clear_from(self.ledger_writer.write_from)  # rows of other registries or rules go too
            self._replay_archive()
            self.ledger_writer.write_from = None
        elif checkpoint is not None:
            self._replay_tail(position)
        if (rebuild or checkpoint is not None) and self.engine.up and self.engine.clock is not None:
            self.notes.append(f"the previous run ended without a clean shutdown; its last record was at "
                              f"{format_instant(self.engine.clock)}: until the broker connection is back is a monitoring gap")
        freeze_startup_heap()

    def _mismatch(self, checkpoint: Checkpoint, history: bool) -> str:
        """Why the checkpoint cannot be continued with this ledger, registry and rules ('' when it can)."""
        if self.ledger.created and history:
            return f"the ledger {self.config.ledger_path} is new but the checkpoint is not"
        through, last = checkpoint.extra.get("ledger_last_hour"), self.ledger.last_hour()
        if isinstance(through, int) and (last is None or last < through):
            return (f"the ledger {self.config.ledger_path} is older than the checkpoint (its last hour "
                    f"{format_instant(last) if last is not None else 'none'}, the checkpoint's {format_instant(through)}; "
                    "restored from a backup?)")
        if changed := _inputs_changed(checkpoint, self.registry):
            return f"{changed} since the checkpoint, and the month's figures must come from one set of them"
        return ""

    def _read_checkpoint(self, path: Path) -> tuple[Checkpoint | None, str]:
        """The checkpoint, or None and why not; an unreadable one is moved aside, never reused."""
        if not path.exists():
            return None, f"there is no checkpoint at {path}"
        try:
            return load_checkpoint(path, self.registry), ""
        except CheckpointError as exc:
            aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(path, aside)
            return None, f"the checkpoint was unreadable ({exc}); it is kept as {aside.name}"

    def _start_from_snapshot(self, why: str) -> tuple[Engine, list[Tally], dict[str, Any]]:
        """An engine from the latest month-start snapshot (fresh without one), before the archive is fed."""
        archive = self.config.archive_path
        files = archive_files(archive)
        if not files:
            raise PtmonError(f"{why}, and the ledger {self.config.ledger_path} holds hours but there is no archive in "
                             f"{archive} to rebuild the state from: restore the archive, or move the ledger away to "
                             "start a new one (its months would then be lost)")
        last_month = files[-1].name[6:13]
        while True:
            self._sources = month_sources([archive], last_month)
            if self._sources.snapshot is None:
                engine = Engine(self.registry)
                break
            try:
                snapshot = load_snapshot(self._sources.snapshot, self.registry)
            except CheckpointError as exc:  # an earlier snapshot, or every file, gives the same state
                aside = self._sources.snapshot.with_name(
                    f"{self._sources.snapshot.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
                os.replace(self._sources.snapshot, aside)
                self.notes.append(f"{exc}; it is kept as {aside.name}")
                continue
            restore_decoder(self.decoder, snapshot)
            self._saved_extensions = snapshot.extensions
            engine = snapshot.engine
            break
        note = (f"{why}: rebuilding the state and this month's ledger from the archive "
                f"({self._sources.describe()}); this reads every message again and takes a while")
        log.warning("%s", note)
        self.notes.append(note)
        return engine, [], {}

    def _rebuild_from(self) -> int:
        """Where a rebuild starts writing the ledger: this month (the archive's last), or the last hour
        the ledger holds if that is earlier; older months stay as they are."""
        files = archive_files(self.config.archive_path)
        month_start = month_bounds(files[-1].name[6:13])[0] if files else 0
        last = self.ledger.last_hour()
        return month_start if last is None else min(month_start, last)

    def _replay_archive(self) -> None:
        """Feed the archive files of the rebuild (points to InfluxDB were sent when they were live)."""
        began = time.monotonic()
        reader = ArchiveReader(self._sources.files)
        self._replaying = True
        try:
            self.feed.feed(reader, progress=lambda p: log.warning(
                "rebuilding from the archive: %s records, %s/s, at %s", f"{p.records:,}",
                f"{p.records / max(p.elapsed, 1e-9):,.0f}", format_instant(p.clock) if p.clock else "-"), every=10.0)
        finally:
            self._replaying = False
        self.ledger_writer.flush(open_buckets=True)
        self._write_anomalies()
        self.notes.append(f"rebuilt from {reader.records:,} archived records in {time.monotonic() - began:.0f} s")

    def _month_snapshot(self, month_start: int) -> None:
        if not self._replaying:
            save_snapshot(self.config.archive_path, month_start, self.engine, self.decoder,
                          extensions=self.health.state_arrays() if self.health is not None else None)

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
        self.ledger_writer = LedgerWriter(engine, self.ledger, hour=named.get("ledger_hour"), day=named.get("ledger_day"))
        open_starts = self.ledger.episode_starts(engine.clock) if engine.clock is not None else None
        self.episodes = EpisodeTracker(engine, self._on_episodes, open_starts)
        self._attach_health()
        self.alerts: AlertEvaluator | None = None
        self.alert_rules = self._load_alert_rules()
        if self.alert_rules is not None:
            restored = checkpoint.extra.get("alerting") if checkpoint is not None else None
            self.alerts = AlertEvaluator(
                engine, self.months, self.sla, self.alert_rules, on_change=self._on_alerts, emit_points=self._emit,
                states=self.ledger.alert_states(), restored=restored, data_quality=self._data_quality,
                month_to_date=lambda start, end: ledger_results(self.ledger, self.registry, start, end),
                loss_window=self.loss_window, loss=self.config.loss,
                device_health=self.health.monitor if self.health is not None else None)
        self.mailer: Mailer | None = None

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

    def _load_alert_rules(self) -> AlertRules | None:
        if not self.config.alerts.enabled:
            return None
        path = self.config.alerts.rules_file or self.registry.rules.directory / ALERTS_FILE
        if not path.is_file():
            self.notes.append(f"no alert rules at {path}: alerting is off")
            return None
        return load_alert_rules(path, self.registry.rules)

    def _on_episodes(self, episodes: list[Episode]) -> None:
        self.ledger_writer.on_episodes(episodes)
        if self.config.influx.url:
            self._pending_points.extend(filter(None, map(episode_line, episodes)))

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

    def _poll_exemptions(self) -> None:
        version = self.ledger.exemptions_version()
        if version != self._exemptions_version and self.engine.exemptions is not None:
            self._exemptions_version = version
            added = self.engine.exemptions.load(self.ledger.exemptions(include_revoked=False), known_from=self.engine.clock)
            for e in added:
                log.info("exemption %d (%s %s) applies from now", e.id, e.scope, e.target)

    def _replay_tail(self, position: dict[str, Any]) -> None:
        """Feed the records archived after the checkpoint, so the state is as it was at the crash."""
        files = archive_files(self.config.archive_path)
        names = [p.name for p in files]
        if position.get("file") not in names:
            if position.get("file"):
                self.notes.append(f"archive file {position['file']} of the checkpoint is missing; state is as checkpointed")
            return
        start = names.index(position["file"])
        skip = int(position.get("records", 0))
        replayed = 0
        for i, path in enumerate(files[start:]):
            reader = ArchiveReader([path])
            self.feed.feed(islice(iter(reader), skip if i == 0 else 0, None))
            replayed += reader.records - (skip if i == 0 else 0)
        if replayed > 0:
            self.notes.append(f"replayed {replayed} archived records written after the checkpoint")

    def _wakeup_threadsafe(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # --- points ----------------------------------------------------------------------

    def _emit(self, lines: list[str]) -> None:
        if self.config.streets:
            lines = owned_points(lines, self.config.streets)
        if not self._replaying:
            self._pending_points.extend(lines)

    def _on_batch(self, batch: DecodedBatch) -> None:
        if self.heartbeats is not None and not self._replaying:
            self._pending_points.extend(self.heartbeats.lines(batch))

    def _flush_points(self) -> None:
        lines, self._pending_points = self._pending_points, []
        if lines and self.influx is not None:
            self.influx.submit(lines)

    # --- the main loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set; raises :class:`StorageGone` (after an emergency shutdown) when the storage vanished."""
        self._loop = asyncio.get_running_loop()
        metrics_server = serve_metrics(self.config.metrics_listen, self.metrics)
        fatal = False
        try:
            await self._start_sinks()
            while not stop.is_set():
                await self._wait(stop)
                await self._tick(self.clock())
        except StorageGone as exc:
            fatal = True
            log.critical("stopping: %s", exc)
            raise
        finally:
            await self._shutdown(metrics_server, fatal=fatal)

    async def _start_sinks(self) -> None:
        if self.config.influx.url:
            from .sinks.influx import InfluxSink

            self.influx = InfluxSink(self.config.influx, spool_dir=self.config.spool_path, metrics=self.metrics)
            await self.influx.start()
        self._flush_points()  # points of the replayed tail
        if self.config.email.host:
            self.mailer = Mailer(str(self.config.ledger_path), self.config.email, self.metrics, clock=self.clock)
            self.mailer.start()
        elif self.alerts is not None:
            log.warning("no [email] host configured: alert emails are kept in the ledger's outbox, unsent")
        # From here on a locked ledger must not stall intake: short waits, retried with backoff.
        self.ledger.db.execute(f"PRAGMA busy_timeout = {LEDGER_BUSY_TIMEOUT_MS}")
        self._ledger_inode = os.stat(self.config.ledger_path).st_ino
        # The limits decoded with from here on, first in the archive, so a replay of it rejects alike.
        self.intake.held.append(self.decoder.limits_record(self.clock()))
        self.source.start()

    async def _tick(self, now: float) -> None:
        self._watch_stall(now)
        self.step(now)
        health_due = now - self._last_health >= HEALTH_INTERVAL
        if self.influx is not None and health_due and not self.faults.waiting("spool"):
            # The collector's clock, so under a simulated clock these line up with the sla points.
            self._last_health = now
            self.influx.submit(health_lines(self.metrics, int(now * US_PER_S), instance=self.config.mqtt.client_id))
        self._watch_broker(now, health_due)
        if self.alerts is not None and not self.engine.up:
            self.alerts.monitor_down(int(now * US_PER_S))  # the broker connection down: told while it lasts
        if time.monotonic() - self._last_exemption_poll >= EXEMPTION_POLL:
            self._last_exemption_poll = time.monotonic()
            try:
                self._poll_exemptions()
            except sqlite3.Error as exc:  # read again at the next poll
                log.warning("cannot read exemptions from the ledger now: %s", exc)
        if self.faults.waiting("ledger") and self.faults.due("ledger"):
            self._flush_ledger(open_buckets=False)
        if time.monotonic() - self._last_checkpoint >= self.config.checkpoint_interval \
                and self.faults.due("checkpoint") and not self.faults.waiting("ledger"):
            await self.checkpoint()
        self.faults.tick()

    def _watch_stall(self, now: float) -> None:
        """A main loop that did not run for ``stall_gap`` (the process frozen, the host suspended) could
        not observe: its last turn's instant to now is a monitoring gap, archived as a 'down' and an 'up'
        before anything received after it (stamped late, it would make the frozen time devices offline)."""
        wall = time.monotonic()
        last_wall, last_clock = self._last_turn
        self._last_turn = (wall, now)
        if last_wall and wall - last_wall > self.config.stall_gap and self.engine.up:
            log.warning("the collector did not run for %.0f s (frozen or suspended): a monitoring gap from %s to %s",
                        wall - last_wall, format_instant(int(last_clock * US_PER_S)), format_instant(int(now * US_PER_S)))
            self.intake.held += [(last_clock, MONITOR_TOPIC, "down"), (now, MONITOR_TOPIC, "up")]

    async def _wait(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=IDLE_TICK, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        self._wake.clear()
        if self.source.pending() < self.config.mqtt.batch_size and not self.intake.holding:
            await asyncio.sleep(GATHER)

    def step(self, now: float, *, retry_now: bool = False) -> None:
        """Take what arrived; archive, acknowledge, apply; the clock advances to ``now`` when idle."""
        records = self.intake.take(now, ticking=self.engine.up, retry_now=retry_now)
        if not records:
            return
        for start in range(0, len(records), self.config.mqtt.batch_size):
            self.feed.feed(records[start : start + self.config.mqtt.batch_size])
        self._flush_points()
        self._update_metrics(records, now)
        self.keeper.note_writer_error()

    def _update_metrics(self, records: list[Record], now: float) -> None:
        self.metrics.batch_size.observe(len(records))
        self.metrics.engine_lag.set(max(0.0, now - records[-1][0]))

    # --- storage -------------------------------------------------------------------------------

    def _flush_ledger(self, *, open_buckets: bool) -> bool:
        """What waits for the ledger, with ``open_buckets`` the open hour and day and the alert states."""
        states = self.alerts.checkpoint_states() if open_buckets and self.alerts is not None else None
        if self.keeper.flush(open_buckets=open_buckets, states=states) and self._write_anomalies():
            return True
        self._check_storage()
        return False

    def _check_storage(self) -> None:
        check_storage_present(self.config, getattr(self, "_ledger_inode", None))

    # --- checkpoint and shutdown --------------------------------------------------------------

    async def checkpoint(self, *, persist_points: bool = True) -> bool:
        """Make every point so far durable, then save the state with the archive position.

        False when the storage refused: the fault is reported and retried, and the previous checkpoint
        with the archive written after it still gives the exact state after a crash."""
        self._check_storage()
        if self.health is not None:
            self.health.monitor.settle()  # its changes reach the ledger before the state that made them is saved
        if not self._flush_ledger(open_buckets=True):
            return False
        extra: dict[str, Any] = {"archive": self.archive.position, "saved_wall": time.time(),
                                 "ledger_last_hour": self.ledger.last_hour()}
        if self.alerts is not None:
            extra["alerting"] = self.alerts.checkpoint_doc()
        try:
            if self.influx is not None and persist_points:
                await self.influx.persist()
            save_checkpoint(self.config.checkpoint_path, engine=self.engine, tallies=list(self.months.tallies.values()),
                            decoder=self.decoder, extra=extra,
                            named={"ledger_hour": self.ledger_writer.hour, "ledger_day": self.ledger_writer.day},
                            extensions=self.health.state_arrays() if self.health is not None else None)
        except (OSError, SinkError, CheckpointError) as exc:
            self._check_storage()
            self.faults.failed("checkpoint", str(exc))
            return False
        self.faults.cleared("checkpoint")
        self._last_checkpoint = time.monotonic()
        self.metrics.checkpoint_saved(time.time())
        results = self.month_results()
        if self.on_checkpoint is not None and results is not None:
            try:
                self.on_checkpoint(results)
            except OSError as exc:
                log.warning("cannot write the month-to-date KPIs now: %s; again at the next checkpoint", exc)
        return True

    async def _shutdown(self, metrics_server: Any, *, fatal: bool = False) -> None:
        log.info("shutting down: disconnecting from the broker")
        await asyncio.to_thread(self.source.stop)  # only archived messages were acknowledged
        if not fatal:
            self._finish_intake()
        if self.influx is not None:
            await self.influx.close()  # writes within its deadline, spools the rest: every point is durable
        if not fatal and not await self.checkpoint(persist_points=False):
            log.error("the state could not be saved at shutdown (%s); the next start replays the archive from "
                      "the previous checkpoint instead", self.faults.describe())
        if self.mailer is not None:
            await asyncio.to_thread(self.mailer.stop)
        if not fatal:
            self.final_results = self.month_results()
        self.ledger.close()
        if metrics_server is not None:
            metrics_server.shutdown()
        self.lock.release()
        log.info("stopped; archive at %s", self.archive.path)

    def _finish_intake(self) -> None:
        """What arrived last and the monitor's 'down', then the archive closed (fsync'd)."""
        try:
            self.step(self.clock(), retry_now=True)
        except StorageGone:
            self.archive.abandon()
            raise
        if self.intake.held:
            log.error("%d messages could not be archived before shutdown (%s); they were not acknowledged: the "
                      "broker delivers them again at the next start", len(self.intake.held), self.faults.describe())
        self.engine.finish()  # the sample owed at the instant observation ended
        self._flush_points()
        try:
            self.archive.close()
        except OSError as exc:
            self.archive.abandon()
            log.error("cannot finish the archive file %s (%s): it stays readable up to its last batch", self.archive.path, exc)

    # --- what it has measured -----------------------------------------------------------------

    def month_results(self) -> Results | None:
        """Month-to-date KPIs of the current month as the ledger has them (what the report pays on);
        after shutdown, those at shutdown; None while the ledger cannot be written."""
        if self.final_results is not None:
            return self.final_results
        tally = self.months.current()
        if tally is None:
            return None
        try:
            self.ledger_writer.flush(open_buckets=True)
            return ledger_results(self.ledger, self.registry, tally.start, tally.end)
        except sqlite3.Error as exc:
            log.warning("the month-to-date KPIs wait for the ledger: %s", exc)
            return None


def write_results_csv(results: Results, path: Path) -> None:
    """The KPI CSV, replaced atomically (readers never see half a file)."""
    with replacing_file(path, "w", durable=False, newline="", encoding="utf-8") as out:
        results.write_csv(out)

