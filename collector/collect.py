"""The live collector: MQTT source → archive → decode → engine → sinks, in one process.

Lifecycle, in order:

1. **Startup**: rules and registry; the state checkpoint, if any, and then the archive
   records written after it (a crash loses the state since the last checkpoint, never the
   archive, so replaying that tail makes the state exact again and re-sends its points, which
   InfluxDB stores idempotently); the InfluxDB sink (which resumes its spool); /metrics;
   finally the MQTT source.
2. **Main loop** (:meth:`Collector.step`), woken by arriving messages or once a second: take
   what arrived, append it to the archive and commit it to the OS, acknowledge it to the
   broker, feed it to the engine, hand the points to InfluxDB. Every
   ``checkpoint_interval``, make the InfluxDB buffer durable and save the state.
3. **Shutdown**: disconnect from the broker (no more intake), process what is left, close
   the archive (fsync), save the state, flush InfluxDB within a deadline (the rest stays in
   its spool for the next start).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server

from .archive import TICK_TOPIC, ArchiveReader, Record
from .alerting.evaluate import AlertEvaluator, AlertEvent
from .alerting.mailer import Mailer
from .alerting.message import compose
from .alerting.rules import ALERTS_FILE, AlertRules, load_alert_rules
from .checkpoint import Checkpoint, restore_decoder, save_checkpoint, try_load_checkpoint
from .config import CollectorConfig
from .decode import DecodedBatch, Decoder
from .engine import Engine
from .errors import PtmonError
from .health import health_lines
from .exemptions import ExemptionMask
from .ledger.episodes import EpisodeTracker, episode_line
from .ledger.records import Episode
from .ledger.store import Ledger
from .ledger.writer import LedgerWriter
from .live import HeartbeatPoints, MonthTallies, SlaPoints
from .loss import LossAlert, LossAlerts, LossPoints, LossWindow, broker_lines
from .metrics import LossCounts, Metrics
from .registry import Registry, load_registry
from .replay import Feed, finish_results, freeze_startup_heap
from .results import Results
from .rules import DEFAULT_RULES_DIR, load_rules
from .sinks.archive import ArchiveWriter, archive_files
from .timebase import US_PER_S, format_instant
from .source import MqttSource

log = logging.getLogger(__name__)

IDLE_TICK = 1.0  # seconds: with no message, the clock still advances (and is archived) this often
GATHER = 0.02  # seconds to let a batch gather after the first message wakes the loop
EXEMPTION_POLL = 5.0  # seconds between looks for exemptions recorded by `ptmon exempt`
HEALTH_INTERVAL = 10.0  # seconds between the collector's own `collector` points


class Collector:
    """One collector process. ``await run(stop)``; set ``stop`` to shut down in order."""

    def __init__(self, config: CollectorConfig, *, metrics: Metrics | None = None, registry: Registry | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.on_checkpoint: Callable[[Results], None] | None = None
        self.metrics = metrics or Metrics()
        self.registry = registry or load_registry(config.registry, load_rules(config.rules or DEFAULT_RULES_DIR))
        self.gaps_at_start: list[tuple[int, int]] = []
        self.notes: list[str] = []
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_tick = 0.0
        self._last_checkpoint = time.monotonic()
        self._last_exemption_poll = time.monotonic()
        self._last_health = 0.0
        self._counted: dict[str, int] = {}
        self.influx: Any = None  # an InfluxSink when an InfluxDB url is configured
        self._restore()
        self.archive = ArchiveWriter(config.archive_path, compresslevel=config.archive_compresslevel, metrics=self.metrics)
        self.source = MqttSource(config.mqtt, self.metrics, wakeup=self._wakeup_threadsafe, clock=clock)

    # --- startup ------------------------------------------------------------------------

    def _restore(self) -> None:
        """Engine, tallies and decoder from the checkpoint (or fresh), then the archive's tail."""
        path = self.config.checkpoint_path
        checkpoint = try_load_checkpoint(path, self.registry)
        self.decoder = Decoder.from_config(self.registry, self.config.limits)
        if checkpoint is None:
            self.engine = Engine(self.registry)
            tallies: list[Any] = []
            position: dict[str, Any] = {}
        else:
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
        self.heartbeats = HeartbeatPoints(self.engine) if self.config.influx.url and self.config.influx.heartbeats else None
        self.feed = Feed(self.engine, self.decoder, on_batch=self._on_batch)
        self._pending_points: list[str] = []
        if checkpoint is not None:
            self._replay_tail(position)
            if self.engine.up and self.engine.clock is not None:
                self.notes.append(f"the previous run ended without a clean shutdown; its last record was at "
                                  f"{format_instant(self.engine.clock)}: until the broker connection is back is a monitoring gap")
        freeze_startup_heap()

    def _attach_ledger(self, checkpoint: Checkpoint | None) -> None:
        """Exemptions, the ledger's hours and episodes, and alerting, before any record is fed."""
        config, engine = self.config, self.engine
        self.ledger = Ledger(config.ledger_path)
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
        self.alerts: AlertEvaluator | None = None
        self.alert_rules = self._load_alert_rules()
        if self.alert_rules is not None:
            self.alerts = AlertEvaluator(engine, self.months, self.sla, self.alert_rules, on_change=self._on_alerts,
                                         emit_points=self._emit, states=self.ledger.alert_states())
        self.mailer: Mailer | None = None

    def _attach_loss(self) -> None:
        """Loss in transit: the trailing window, its InfluxDB points, its alerts and its metrics."""
        self.loss_window = LossWindow(self.engine, self.config.loss.window)
        self.loss_points = LossPoints(self.months, self.loss_window, self._emit) if self.config.influx.url else None
        self.loss_alerts = (LossAlerts(self.loss_window, self.config.loss, self._on_loss_alerts)
                            if self.config.loss.enabled else None)
        self.metrics.loss.read = self._loss_counts

    # --- HOOK(loss alerts) ----------------------------------------------------------------------
    # Loss alerts are decided in ptmon.loss (LossAlerts); until the reworked alerting framework
    # takes them (emails, the ledger's alert states), they are logged and counted here. Wire
    # them in by replacing this method's body: each LossAlert has kind, event, contract,
    # street, rate, lost, messages, level and text().
    def _on_loss_alerts(self, alerts: list[LossAlert]) -> None:
        for alert in alerts:
            self.metrics.alerts.labels(alert.kind, alert.event).inc()
            log.warning("loss alert %s %s: %s", alert.kind, alert.event, alert.text())
    # --- end HOOK(loss alerts) ------------------------------------------------------------------

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
        if self.loss_alerts is not None:
            self.loss_alerts.on_broker(snapshot, int(now * US_PER_S))
        if health_due and self.influx is not None:
            self.influx.submit(broker_lines(snapshot, int(now * US_PER_S), instance=self.config.mqtt.client_id))

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

    def _on_alerts(self, events: list[AlertEvent], states: dict[str, str]) -> None:
        assert self.alert_rules is not None
        messages = [compose(e, self.registry.rules, self.alert_rules, self.config.email.sender) for e in events]
        self.ledger.record_alerts(states, messages)
        for e in events:
            self.metrics.alerts.labels(e.kind, e.event).inc()
            log.warning("alert %s %s: %s %s %s", e.kind, e.event, e.contract, e.street, e.kpi)
        if messages and self.mailer is not None:
            self.mailer.wake()

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
        self._pending_points.extend(lines)

    def _on_batch(self, batch: DecodedBatch) -> None:
        if self.heartbeats is not None:
            self._pending_points.extend(self.heartbeats.lines(batch))

    def _flush_points(self) -> None:
        lines, self._pending_points = self._pending_points, []
        if lines and self.influx is not None:
            self.influx.submit(lines)

    # --- the main loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        metrics_server = self._start_metrics()
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
        # The limits decoded with from here on, so a replay of the archive rejects alike.
        self.archive.append([self.decoder.limits_record(self.clock())])
        self.archive.commit()
        self.source.start()
        try:
            while not stop.is_set():
                await self._wait(stop)
                now = self.clock()
                self.step(now)
                health_due = now - self._last_health >= HEALTH_INTERVAL
                if self.influx is not None and health_due:
                    # The collector's clock, so under a simulated clock these line up with the sla points.
                    self._last_health = now
                    self.influx.submit(health_lines(self.metrics, int(now * US_PER_S), instance=self.config.mqtt.client_id))
                self._watch_broker(now, health_due)
                if time.monotonic() - self._last_exemption_poll >= EXEMPTION_POLL:
                    self._last_exemption_poll = time.monotonic()
                    self._poll_exemptions()
                if time.monotonic() - self._last_checkpoint >= self.config.checkpoint_interval:
                    await self.checkpoint()
        finally:
            await self._shutdown(metrics_server)

    async def _wait(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=IDLE_TICK, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        self._wake.clear()
        if self.source.pending() < self.config.mqtt.batch_size:
            await asyncio.sleep(GATHER)

    def step(self, now: float) -> None:
        """Take what arrived; archive, acknowledge, apply; the clock advances to ``now`` when idle."""
        records, acks = self.source.take()
        if not records and self.engine.up and now - self._last_tick >= IDLE_TICK:
            records = [(now, TICK_TOPIC, "")]
            self._last_tick = now
        if not records:
            return
        self.archive.append(records)
        self.archive.commit()
        self.source.ack(acks)
        for start in range(0, len(records), self.config.mqtt.batch_size):
            self.feed.feed(records[start : start + self.config.mqtt.batch_size])
        self._flush_points()
        self._update_metrics(records, now)

    def _update_metrics(self, records: list[Record], now: float) -> None:
        m = self.metrics
        m.batch_size.observe(len(records))
        m.engine_lag.set(max(0.0, now - records[-1][0]))
        counts = {"heartbeat": self.decoder.accepted, **{f"reject:{k}": v for k, v in self.decoder.rejects.items()},
                  **{f"engine:{k}": v for k, v in self.engine.stats.items()}}
        for key, value in counts.items():
            delta = value - self._counted.get(key, 0)
            if delta <= 0:
                continue
            self._counted[key] = value
            if key == "heartbeat":
                m.messages.labels("heartbeat").inc(delta)
            elif key.startswith("reject:"):
                m.messages.labels("rejected").inc(delta)
                m.decode_errors.labels(key[7:]).inc(delta)
            else:
                m.engine_events.labels(key[7:]).inc(delta)
        m.unknown_devices.set(len(self.decoder.unknown_topics) + self.decoder.unknown_overflow)

    # --- checkpoint and shutdown --------------------------------------------------------------

    async def checkpoint(self, *, persist_points: bool = True) -> None:
        """Make every point so far durable, then save the state with the archive position."""
        if self.influx is not None and persist_points:
            await self.influx.persist()
        self.ledger_writer.flush(open_buckets=True)
        if self.alerts is not None:
            self.ledger.record_alerts(self.alerts.checkpoint_states(), [])
        save_checkpoint(self.config.checkpoint_path, engine=self.engine, tallies=list(self.months.tallies.values()),
                        decoder=self.decoder, extra={"archive": self.archive.position, "saved_wall": time.time()},
                        named={"ledger_hour": self.ledger_writer.hour, "ledger_day": self.ledger_writer.day})
        self._last_checkpoint = time.monotonic()
        self.metrics.checkpoint_seconds.set(0)
        results = self.month_results()
        if self.on_checkpoint is not None and results is not None:
            self.on_checkpoint(results)

    async def _shutdown(self, metrics_server: Any) -> None:
        log.info("shutting down: disconnecting from the broker")
        await asyncio.to_thread(self.source.stop)
        self.step(self.clock())  # what arrived last, and the monitor's 'down'
        self.engine.finish()  # the sample owed at the instant observation ended
        self._flush_points()
        self.archive.close()
        if self.influx is not None:
            await self.influx.close()  # writes within its deadline, spools the rest: every point is durable
        await self.checkpoint(persist_points=False)
        if self.mailer is not None:
            await asyncio.to_thread(self.mailer.stop)
        self.ledger.close()
        if metrics_server is not None:
            metrics_server.shutdown()
        log.info("stopped; archive at %s", self.archive.path)

    def _start_metrics(self) -> Any:
        listen = self.config.metrics_listen
        if not listen:
            return None
        host, _, port = listen.rpartition(":")
        try:
            server, _thread = start_http_server(int(port), addr=host or "0.0.0.0", registry=self.metrics.registry)
        except OSError as exc:
            raise PtmonError(f"cannot serve /metrics on {listen}: {exc.strerror}") from exc
        log.info("Prometheus metrics on http://%s/metrics", listen)
        return server

    # --- what it has measured -----------------------------------------------------------------

    def month_results(self) -> Results | None:
        """Month-to-date KPIs of the current month, as the live engine has them."""
        tally = self.months.current()
        return None if tally is None else finish_results(tally, self.decoder)


def write_results_csv(results: Results, path: Path) -> None:
    """The KPI CSV, replaced atomically (readers never see half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as out:
        results.write_csv(out)
    os.replace(tmp, path)

