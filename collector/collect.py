"""The live collector: MQTT source → archive → decode → engine → sinks, in one process.

Lifecycle, in order (uvicorn's shape; constructing a :class:`Collector` reads and opens nothing):

1. **Restore** (:meth:`Collector.restore`, blocking, restore.py): rules and registry, the locks,
   the ledger; the state checkpoint, if any, and then the archive records written after it (a
   crash loses the state since the last checkpoint, never the archive, so replaying that tail
   makes the state exact again and re-sends its points, which InfluxDB stores idempotently).
2. **Startup** (:meth:`Collector.startup`): the sinks open in pipeline order (:meth:`Collector.sinks`:
   archive, ledger, InfluxDB resuming its spool, /metrics), then the MQTT source connects.
3. **Main loop** (:meth:`Collector.main_loop`, each turn :meth:`Collector.step`), woken by arriving
   messages or once a second: take what arrived, append it to the archive and commit it to the
   OS, acknowledge it to the broker, feed it to the engine, hand the points to InfluxDB
   (collector/intake.py). Every ``checkpoint_interval``, persist the sinks and save the state.
4. **Shutdown** (:meth:`Collector.shutdown`): disconnect from the broker (no more intake), process
   what is left, close the archive (fsync), flush InfluxDB within a deadline (the rest stays in
   its spool for the next start), save the state, close the ledger and /metrics, release the
   locks. ``force_exit`` (a second signal) cuts the waits on the broker, InfluxDB and the mail
   server short; the local steps still run.

Storage faults (collector/faults.py) never stop the loop: a full disk holds intake (nothing
unarchived is acknowledged), a locked ledger keeps its rows in memory, a failed checkpoint
waits; each is retried with capped backoff and reported until it clears. Only storage that
vanished (:class:`StorageGone`: the data directory deleted) stops the collector, with exit
status 3 and no checkpoint over the state it can no longer match.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .alert_stage import AlertStage
from .alerting.mailer import Mailer
from .archive import MONITOR_TOPIC
from .checkpoint import save_checkpoint
from .config import CollectorConfig
from .decode import DecodedBatch
from .durable import replacing_file
from .errors import CheckpointError, SinkError, StorageGone
from .faults import FaultCollector, Faults
from .health import health_lines
from .health_stage import HealthStage
from .intake import Intake
from .ledger.access import refuse_read_only
from .ledger.keeper import LedgerKeeper
from .ledger.read import ledger_results
from .ledger_stage import LedgerStage
from .lifecycle import unless_forced
from .lock import CollectorLocks
from .metrics import Metrics, MetricsEndpoint, PipelineCounts
from .outputs import output_dir
from .partition import file_header, owned_points, partitioned_config, restrict_registry
from .registry import Registry, load_registry
from .restore import StateRestore
from .results import Results
from .rules import DEFAULT_RULES_DIR, load_rules
from .sinks.archive import ArchiveWriter
from .sinks.ledger import LedgerRefused, LedgerSink
from .sinks.protocol import Sink
from .source import MqttSource
from .timebase import US_PER_S, format_instant

log = logging.getLogger(__name__)

IDLE_TICK = 1.0  # seconds: the loop wakes at least this often (and intake archives a clock tick)
GATHER = 0.02  # seconds to let a batch gather after the first message wakes the loop
EXEMPTION_POLL = 5.0  # seconds between looks for exemptions recorded by `ptmon exempt`
HEALTH_INTERVAL = 10.0  # seconds between the collector's own `collector` points


class Collector(StateRestore, LedgerStage, AlertStage, HealthStage):
    """One collector process. ``await run(stop)``; set ``stop`` to shut down in order."""

    def __init__(self, config: CollectorConfig, *, metrics: Metrics | None = None, registry: Registry | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """Cheap: nothing is read or opened until :meth:`restore` (or :meth:`startup`)."""
        config = self.config = partitioned_config(config)
        self.clock = clock
        self.on_checkpoint: Callable[[Results], None] | None = None
        self.metrics = metrics or Metrics()
        self._given_registry = registry
        self.restored = False
        self.gaps_at_start: list[tuple[int, int]] = []
        self.notes: list[str] = []
        self._wake = asyncio.Event()
        self._forced = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_checkpoint = time.monotonic()
        self._last_exemption_poll = time.monotonic()
        self._last_health = 0.0
        self._replaying = False  # rebuilding from the whole archive: no InfluxDB points, no snapshots
        self._last_turn = (0.0, 0.0)  # (monotonic, clock) of the main loop's last turn
        self.final_results: Results | None = None  # the month's KPIs as the collector stopped
        self.influx: Any = None  # an InfluxSink when an InfluxDB url is configured
        self.mailer: Mailer | None = None
        self.metrics_endpoint = MetricsEndpoint(config.metrics_listen, self.metrics, clock=clock)
        self.lock = CollectorLocks(config.data_dir, config.ledger_path)
        self.faults = Faults(config.storage)

    @property
    def force_exit(self) -> bool:
        """Set by a second signal: shutdown stops waiting on the broker, InfluxDB and the mail server."""
        return self._forced.is_set()

    @force_exit.setter
    def force_exit(self, value: bool) -> None:
        if value:
            self._forced.set()
            self._wake.set()
            if self.influx is not None:
                self.influx.hurry()
        else:
            self._forced.clear()

    # --- startup ------------------------------------------------------------------------

    def restore(self) -> None:
        """The staged start-up's first part (blocking, may take long: a rebuild reads the whole archive):
        registry and rules, the locks, the ledger, and the state from the checkpoint and the archive."""
        if self.restored:
            return
        config = self.config
        self.registry = self._given_registry or load_registry(config.registry, load_rules(config.rules or DEFAULT_RULES_DIR))
        if config.streets:
            self.registry = restrict_registry(self.registry, config.streets)
        if not config.ledger_path.exists():  # a data directory that is a file or cannot be made is said as such
            output_dir(config.data_dir, "data directory")
        refuse_read_only(config.ledger_path)  # one clear line, before a lock file is made beside it
        self.lock.acquire()
        try:
            self.keeper = LedgerKeeper(self.faults, wake_mailer=lambda: self.mailer.wake() if self.mailer else None)
            self._restore()
            self.archive = ArchiveWriter(config.archive_path, compresslevel=config.archive_compresslevel,
                                         metrics=self.metrics,
                                         file_header=file_header(self.partition) if self.partition else None)
            self.ledger_writer.before_write = self._archive_to_disk
            self.source = MqttSource(config.mqtt, self.metrics, wakeup=self._wakeup_threadsafe, clock=self.clock)
            self.ledger_sink = LedgerSink(self.ledger, self.ledger_writer, self.keeper, self.faults,
                                          path=config.ledger_path, flush=lambda: self._flush_ledger(open_buckets=True))
            self._watch_storage()
        except BaseException:
            if getattr(self, "ledger", None) is not None:
                self.ledger.close()
            self.lock.release()
            raise
        self.restored = True

    async def startup(self) -> None:
        """State restored (unless :meth:`restore` ran already), /metrics served, the sinks opened, then the
        broker connected: from here on messages arrive."""
        self.restore()
        self._loop = asyncio.get_running_loop()
        await self._start_sinks()

    def sinks(self) -> list[Sink]:
        """The sinks in pipeline order: a batch is archived (before it is acknowledged) and fed to the
        engine, whose hours, episodes and alerts go to the ledger and whose points go to InfluxDB;
        /metrics serves the counts. They open in this order, persist in it at each checkpoint (all
        before the state that refers to them is saved) and close in it at shutdown."""
        sinks: list[Sink] = [self.archive, self.ledger_sink]
        if self.influx is not None:
            sinks.append(self.influx)
        return [*sinks, self.metrics_endpoint]

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
        """startup → main loop until ``stop`` is set → shutdown; raises :class:`StorageGone` (after an
        emergency shutdown) when the storage vanished."""
        self.restore()  # outside the try: a collector that never started has nothing to shut down
        fatal = False
        try:
            await self.startup()
            await self.main_loop(stop)
        except StorageGone as exc:
            fatal = True
            log.critical("stopping: %s", exc)
            raise
        finally:
            await self.shutdown(fatal=fatal)

    async def main_loop(self, stop: asyncio.Event) -> None:
        """Turn until ``stop`` is set (or a forced exit is asked for)."""
        while not stop.is_set() and not self.force_exit:
            await self._wait(stop)
            await self._tick(self.clock())

    async def _start_sinks(self) -> None:
        if self.config.influx.url:
            from .sinks.influx import InfluxSink

            self.influx = InfluxSink(self.config.influx, spool_dir=self.config.spool_path, metrics=self.metrics)
        for sink in self.sinks():
            await sink.open()
        self._flush_points()  # points of the replayed tail
        if self.config.email.host:
            self.mailer = Mailer(str(self.config.ledger_path), self.config.email, self.metrics, clock=self.clock)
            self.mailer.start()
        elif self.alerts is not None:
            log.warning("no [email] host configured: alert emails are kept in the ledger's outbox, unsent")
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
        self.metrics_endpoint.observe(records, now)
        self.keeper.note_writer_error()

    def _archive_to_disk(self) -> None:
        """Before the ledger is written: the records its hours count are on disk (fsync), so a power cut
        cannot leave the ledger counting what the archive lost."""
        try:
            self.archive.commit()
        except OSError as exc:
            log.error("cannot fsync the archive file %s before writing the ledger (%s): a power cut now could leave "
                      "the ledger counting records the archive lost", self.archive.path, exc)

    # --- checkpoint and shutdown --------------------------------------------------------------

    async def checkpoint(self, *, persist_points: bool = True) -> bool:
        """Make every point so far durable, then save the state with the archive position.

        False when the storage refused: the fault is reported and retried, and the previous checkpoint
        with the archive written after it still gives the exact state after a crash."""
        self._check_storage()
        if self.health is not None:
            self.health.monitor.settle()  # its changes reach the ledger before the state that made them is saved
        try:
            for sink in self.sinks():
                if sink is not self.influx or persist_points:  # at shutdown InfluxDB was closed (spooled) already
                    await sink.persist()
            extra: dict[str, Any] = {"archive": self.archive.position, "saved_wall": time.time(),
                                     "ledger_last_hour": self.ledger.last_hour()}
            if self.alerts is not None:
                extra["alerting"] = self.alerts.checkpoint_doc()
            save_checkpoint(self.config.checkpoint_path, engine=self.engine, tallies=list(self.months.tallies.values()),
                            decoder=self.decoder, extra=extra,
                            named={"ledger_hour": self.ledger_writer.hour, "ledger_day": self.ledger_writer.day},
                            extensions=self.health.state_arrays() if self.health is not None else None,
                            partition=self.partition)
        except LedgerRefused:  # reported by the ledger's keeper, retried with its backoff
            return False
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

    async def shutdown(self, *, fatal: bool = False) -> None:
        """In order: no more intake, what arrived processed and archived, InfluxDB flushed within its
        deadline, the state saved, the mailer stopped, the ledger closed, the locks released.

        After a forced exit the waits on the broker, InfluxDB and the mail server are cut short (unsent
        points go to the spool, unsent emails stay in the ledger's outbox); the local steps that make
        the next start exact still run."""
        log.info("shutting down: disconnecting from the broker")
        await unless_forced(self.source.stop, self._forced)  # only archived messages were acknowledged
        if not fatal:
            self._finish_intake()
        if self.influx is not None:
            # writes within its deadline (cut short when forced), spools the rest: every point is durable
            await self.influx.close()
        if not fatal and not await self.checkpoint(persist_points=False):
            log.error("the state could not be saved at shutdown (%s); the next start replays the archive from "
                      "the previous checkpoint instead", self.faults.describe())
        if self.mailer is not None:
            await unless_forced(self.mailer.stop, self._forced)
        if not fatal:
            self.final_results = self.month_results()
        await self.ledger_sink.close()
        await self.metrics_endpoint.close()
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
            self.archive.finish()
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

