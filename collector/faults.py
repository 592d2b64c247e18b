"""Storage faults: what the collector waits for, retried with capped backoff, and said out loud.

A full disk, a ledger another process keeps locked, a failing write: none of these is a reason
to stop. Each *stage* that can fail waits and tries again, and the rest of the collector goes on
as far as it safely can:

* ``archive`` — messages cannot be archived. Intake holds: what was taken stays in memory, and
  nothing more is acknowledged, so the broker keeps the rest (its in-flight window bounds what
  reaches us). Once the archive takes them, the held messages go on in order.
* ``spool`` — InfluxDB is away and its spool cannot be written: intake holds too, rather than
  drop points, until InfluxDB or the spool takes them again.
* ``ledger`` — the SQLite ledger is locked or full: its rows wait in memory (the archive, not the
  ledger, is what a message is acknowledged on), and no checkpoint is saved ahead of them.
* ``checkpoint`` — the state cannot be saved: the previous checkpoint and the archive after it
  still give the exact state after a crash.

While a stage waits, :class:`Faults` says so when it begins, once per ``report_every`` (a minute)
and when it ends: a log line, the ``ptmon_storage_waiting_seconds{stage}`` gauge (also in the
collector's health point), and an alert email once it has lasted ``alert_after``.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .config import CollectorConfig, StorageConfig
from .durable import directory_gone, file_replaced
from .errors import StorageGone
from .timebase import SHANGHAI, US_PER_S

log = logging.getLogger(__name__)

STAGES = ("archive", "spool", "ledger", "checkpoint")
REPORT_EVERY = 60.0  # seconds between the log lines of a stage that keeps waiting
STAGE_WORDS = {"archive": "消息归档 (archive)", "spool": "InfluxDB 缓存 (spool)", "ledger": "SLA 台账 (ledger)",
               "checkpoint": "状态检查点 (checkpoint)"}
WAITING_FOR = {
    "archive": "the archive to take messages",
    "spool": "InfluxDB or its spool to take points",
    "ledger": "the ledger to take its writes",
    "checkpoint": "the checkpoint to be saved",
}


@dataclass
class Fault:
    """One stage waiting: since when, why, and when it tries next."""

    stage: str
    since: float  # wall time (unix seconds) the fault began
    began: float  # monotonic time it began
    error: str
    attempts: int = 1
    retry_at: float = 0.0  # monotonic
    reported_at: float = 0.0  # monotonic
    alerted: bool = False

    def waited(self, now: float) -> float:
        return max(0.0, now - self.began)


AlertHook = Callable[[Fault, str, float], None]  # (fault, "firing" | "resolved", seconds waited)


class Faults:
    """The stages waiting now; the clock is injected so tests need not wait a minute."""

    def __init__(self, config: StorageConfig, *, report_every: float = REPORT_EVERY,
                 monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.report_every = report_every
        self.monotonic, self.wall = monotonic, wall
        self.active: dict[str, Fault] = {}
        self.episodes = dict.fromkeys(STAGES, 0)
        self.on_alert: AlertHook | None = None
        self.details: dict[str, Callable[[], str]] = {}  # per stage: what it holds, for the log line

    def failed(self, stage: str, error: str) -> Fault:
        """A try of ``stage`` failed: start (or continue) its fault and schedule the next try."""
        now = self.monotonic()
        fault = self.active.get(stage)
        if fault is None:
            fault = self.active[stage] = Fault(stage, self.wall(), now, error, reported_at=now)
            self.episodes[stage] += 1
            log.error("storage fault: waiting for %s: %s%s; retrying by itself", WAITING_FOR[stage], error,
                      self._detail(stage))
        else:
            fault.attempts += 1
            fault.error = error
        delay = min(self.config.retry_max, self.config.retry_min * 2 ** min(fault.attempts - 1, 30))
        fault.retry_at = now + delay * random.uniform(0.75, 1.0)  # jitter: collectors sharing a disk do not retry in step
        return fault

    def cleared(self, stage: str) -> None:
        """``stage`` works again."""
        fault = self.active.pop(stage, None)
        if fault is None:
            return
        waited = fault.waited(self.monotonic())
        log.warning("storage fault over: %s after %.1f s and %d tries", WAITING_FOR[stage], waited, fault.attempts)
        if fault.alerted and self.on_alert is not None:
            self.on_alert(fault, "resolved", waited)

    def due(self, stage: str) -> bool:
        """Whether ``stage`` may be tried now: it is not waiting, or its next try has come."""
        fault = self.active.get(stage)
        return fault is None or self.monotonic() >= fault.retry_at

    def waiting(self, stage: str) -> bool:
        return stage in self.active

    def tick(self) -> None:
        """Once-per-``report_every`` log lines, and the alert of a fault that lasted ``alert_after``."""
        now = self.monotonic()
        for fault in list(self.active.values()):
            waited = fault.waited(now)
            if now - fault.reported_at >= self.report_every:
                fault.reported_at = now
                log.error("storage fault: still waiting for %s after %.0f s (%d tries): %s%s",
                          WAITING_FOR[fault.stage], waited, fault.attempts, fault.error, self._detail(fault.stage))
            alert_after = self.config.alert_after
            if alert_after and not fault.alerted and waited >= alert_after and self.on_alert is not None:
                fault.alerted = True
                self.on_alert(fault, "firing", waited)

    def describe(self) -> str:
        """One line: what the collector waits for now ('' when nothing)."""
        now = self.monotonic()
        return "; ".join(f"{WAITING_FOR[f.stage]} for {f.waited(now):.0f} s ({f.error})" for f in self.active.values())

    def _detail(self, stage: str) -> str:
        detail = self.details.get(stage)
        text = detail() if detail is not None else ""
        return f"; {text}" if text else ""


class FaultCollector(Collector):
    """``ptmon_storage_waiting_seconds`` and ``ptmon_storage_faults_total``, read when scraped."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults

    def collect(self) -> Iterator[Metric]:
        now = self.faults.monotonic()
        active = dict(self.faults.active)  # a copy: the scrape runs in the HTTP server's thread
        waiting = GaugeMetricFamily("ptmon_storage_waiting_seconds",
                                    "Seconds a storage stage has been waiting (disk full, ledger locked, ...); 0 = working",
                                    labels=["stage"])
        episodes = CounterMetricFamily("ptmon_storage_faults", "Storage faults begun, by stage", labels=["stage"])
        for stage in STAGES:
            fault = active.get(stage)
            waiting.add_metric([stage], fault.waited(now) if fault is not None else 0.0)
            episodes.add_metric([stage], self.faults.episodes[stage])
        yield waiting
        yield episodes


def storage_alert(fault: Fault, event: str, waited: float, *, recipients: Sequence[str], sender: str,
                  instance: str) -> dict[str, Any]:
    """The outbox row (as ``Ledger.record_alerts`` takes it) of a storage fault's email, in Chinese first."""
    from datetime import datetime

    firing = event == "firing"
    at = datetime.now(SHANGHAI)
    since = datetime.fromtimestamp(fault.since, SHANGHAI)
    word = "存储故障" if firing else "存储恢复"
    subject = f"【采集器{word}】{instance}：{STAGE_WORDS[fault.stage]}"
    lines = [f"采集器 (collector)：{instance}",
             f"环节 (stage)：{STAGE_WORDS[fault.stage]}",
             f"开始时间 (since)：{since:%Y-%m-%d %H:%M:%S}",
             f"已持续 (for)：{waited / 60:.1f} 分钟 (minutes)，重试 {fault.attempts} 次 (tries)",
             f"最近错误 (last error)：{' '.join(fault.error.split())[:300]}"]
    if firing:
        lines += ["", "采集器仍在运行并自动重试；归档失败期间不确认 MQTT 消息，由消息代理保留。请检查磁盘空间或占用台账的进程。",
                  ("(The collector keeps running and retries by itself; while the archive fails it acknowledges "
                   "nothing, and the broker keeps the messages. Check the disk space, or what holds the ledger.)")]
    else:
        lines += ["", "已恢复正常 (working again)。"]
    msg = EmailMessage(policy=SMTP)
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(at)
    msg["Message-ID"] = make_msgid(domain="ptmon.local")
    key = f"storage:{instance}:{fault.stage}:{int(fault.since * US_PER_S)}:{event}"
    msg["X-Ptmon-Event"] = key
    msg.set_content("\n".join(lines) + "\n\n—— ptmon SLA 监测\n", charset="utf-8")
    return {"event_key": key, "kind": "storage", "event": event, "contract": "", "street": "", "kpi": fault.stage,
            "at": int(at.timestamp() * US_PER_S), "subject": subject, "recipients": list(recipients),
            "message": bytes(msg)}


def send_storage_alert(row: dict[str, Any], ledger: Any, mailer: Any) -> None:
    """Queue the email in the ledger's outbox; when the ledger (which holds the outbox) is what fails,
    hand it straight to the SMTP sender instead (in a thread: intake must not wait for a mail server)."""
    try:
        ledger.record_alerts({}, [row])
    except sqlite3.Error as exc:
        if mailer is None:
            log.error("storage alert email not queued (the ledger refuses: %s) and no [email] host to send it", exc)
            return
        threading.Thread(target=mailer.send_now, args=(row["recipients"], row["message"]), daemon=True).start()
        return
    if mailer is not None:
        mailer.wake()


def check_storage_present(config: CollectorConfig, ledger_inode: int | None) -> None:
    """StorageGone when a directory or the ledger file the collector writes to has vanished (the data
    directory deleted): writing on would only fill files nobody can find."""
    for what, directory in (("archive", config.archive_path), ("checkpoint", config.checkpoint_path.parent)):
        if directory_gone(directory):
            raise StorageGone(f"the {what} directory {directory} is gone (was the data directory deleted?)")
    if ledger_inode is not None and file_replaced(config.ledger_path, ledger_inode):
        raise StorageGone(f"the ledger {config.ledger_path} was deleted or replaced while in use")
