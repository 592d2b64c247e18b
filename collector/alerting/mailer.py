"""The outbox sender: alert emails from the ledger to an SMTP server, in its own thread.

The collector only queues (a row in the ledger, in the same transaction as the alert state),
so a slow or absent mail server never blocks intake. This thread sends what is due, marks it
sent, or keeps it with the error and a next try that backs off (``retry_min`` doubling up to
``retry_max``). A restart finds the unsent rows still queued: nothing is lost, nothing sent twice
(a row is marked sent right after the server accepted it; a crash in between may repeat one).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable

from ..config import EmailConfig
from ..ledger.store import Ledger, now_us
from ..metrics import Metrics

log = logging.getLogger(__name__)


class Mailer:
    def __init__(self, ledger_path: str, config: EmailConfig, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.ledger_path = ledger_path
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.failures = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ptmon-mailer", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        ledger = Ledger(self.ledger_path)
        try:
            while not self._stop.is_set():
                try:
                    self.send_due(ledger)
                except Exception:  # noqa: BLE001 - the mailer must keep running; the rows stay queued
                    log.exception("mailer: unexpected error; will retry")
                self._wake.wait(self.config.poll_interval)
                self._wake.clear()
        finally:
            ledger.close()

    def send_due(self, ledger: Ledger) -> int:
        """Send every alert due now; returns how many were sent."""
        sent = 0
        for alert in ledger.due_alerts(int(self.clock() * 1_000_000)):
            if self._stop.is_set():
                break
            try:
                self._send(alert.recipients, alert.message)
            except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
                self.failures += 1
                delay = min(self.config.retry_max, self.config.retry_min * 2 ** min(alert.attempts, 20))
                give_up = bool(self.config.max_attempts) and alert.attempts + 1 >= self.config.max_attempts
                ledger.mark_failed(alert.id, f"{type(exc).__name__}: {exc}", int((self.clock() + delay) * 1_000_000),
                                   give_up=give_up)
                log.warning("alert email %d (%s) not sent, attempt %d: %s; %s", alert.id, alert.subject,
                            alert.attempts + 1, exc, "giving up" if give_up else f"retry in {delay:.0f} s")
                if self.metrics is not None:
                    self.metrics.alert_emails.labels("failed").inc()
                break  # the server is likely down for the others too; they wait for the next round
            ledger.mark_sent(alert.id, now_us())
            sent += 1
            self.sent += 1
            log.info("alert email %d sent to %s: %s", alert.id, ", ".join(alert.recipients), alert.subject)
            if self.metrics is not None:
                self.metrics.alert_emails.labels("sent").inc()
        return sent

    def send_now(self, recipients: list[str] | tuple[str, ...], message: bytes) -> None:
        """Send one message at once, outside the outbox (for when the ledger holding it is what fails)."""
        try:
            self._send(tuple(recipients), message)
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            log.error("email to %s not sent: %s", ", ".join(recipients), exc)
            return
        log.info("email sent to %s outside the outbox", ", ".join(recipients))

    def _send(self, recipients: tuple[str, ...], message: bytes) -> None:
        c = self.config
        context = ssl.create_default_context(cafile=str(c.ca_file) if c.ca_file else None)
        smtp: smtplib.SMTP
        if c.security == "tls":
            smtp = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=context)
        else:
            smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
        with smtp:
            if c.security == "starttls":
                smtp.starttls(context=context)
            if c.username:
                smtp.login(c.username, c.password or "")
            smtp.sendmail(c.sender, list(recipients), message)
