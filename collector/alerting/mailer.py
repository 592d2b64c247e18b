"""The outbox sender: alert emails from the ledger to an SMTP server, in its own thread.

The collector only queues (a row in the ledger, in the same transaction as the alert state),
so a slow or absent mail server never blocks intake. This thread sends what is due, marks it
sent, or keeps it with the error and a next try that backs off (``retry_min`` doubling up to
``retry_max``). A restart finds the unsent rows still queued: nothing is lost, nothing sent twice
(a row is marked sent right after the server accepted it; a crash in that instant may send one
again, with the same Message-ID, which mail clients show once).
"""

from __future__ import annotations

import logging
import smtplib
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable

from ..config import EmailConfig
from ..ledger.records import AlertMessage
from ..ledger.store import Ledger, now_us
from ..metrics import Metrics
from ..timebase import US_PER_S

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
        # Sent, but the ledger refused to record it (locked, disk full): never sent again meanwhile.
        self._unrecorded: dict[int, int] = {}

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
                except Exception:  # the mailer must keep running; the rows stay queued
                    log.exception("mailer: unexpected error; will retry")
                self._wake.wait(self.config.poll_interval)
                self._wake.clear()
        finally:
            ledger.close()

    def send_due(self, ledger: Ledger) -> int:
        """Send every alert email due now over one SMTP connection; returns how many were sent.

        A row is marked sent right after the server accepted it. A refusal the server says is
        permanent (5xx) marks that email failed and the rest go on; anything else (the server
        down, the connection lost, 4xx) keeps it queued with a backoff and ends the round.
        """
        if not self._record_sent(ledger):
            return 0
        due = ledger.due_alerts(int(self.clock() * US_PER_S))
        if not due:
            return 0
        try:
            smtp = self._connect()
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            for alert in due:
                self._failed(ledger, alert, exc)
            return 0
        sent = 0
        try:
            for alert in due:
                if self._stop.is_set():
                    break
                try:
                    smtp.sendmail(self.config.sender, list(alert.recipients), alert.message)
                except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
                    permanent = _permanent(exc)
                    self._failed(ledger, alert, exc, give_up=permanent)
                    if not permanent:
                        break  # the server is likely failing for the others too; they wait for the next round
                    continue
                self._unrecorded[alert.id] = now_us()
                self._record_sent(ledger)
                sent += 1
                self.sent += 1
                log.info("alert email %d sent to %s: %s", alert.id, ", ".join(alert.recipients), alert.subject)
                if self.metrics is not None:
                    self.metrics.alert_emails.labels("sent").inc()
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
        return sent

    def _failed(self, ledger: Ledger, alert: AlertMessage, exc: BaseException, *, give_up: bool = False) -> None:
        self.failures += 1
        delay = min(self.config.retry_max, self.config.retry_min * 2 ** min(alert.attempts, 20))
        give_up = give_up or (bool(self.config.max_attempts) and alert.attempts + 1 >= self.config.max_attempts)
        ledger.mark_failed(alert.id, f"{type(exc).__name__}: {exc}", int((self.clock() + delay) * US_PER_S),
                           give_up=give_up)
        log.warning("alert email %d (%s) not sent, attempt %d: %s; %s", alert.id, alert.subject, alert.attempts + 1,
                    exc, "giving up" if give_up else f"retry in {delay:.0f} s")
        if self.metrics is not None:
            self.metrics.alert_emails.labels("failed").inc()

    def send_now(self, recipients: list[str] | tuple[str, ...], message: bytes) -> None:
        """Send one message at once, outside the outbox (for when the ledger holding it is what fails)."""
        try:
            smtp = self._connect()
            try:
                smtp.sendmail(self.config.sender, list(recipients), message)
            finally:
                smtp.close()
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            log.error("email to %s not sent: %s", ", ".join(recipients), exc)
            return
        log.info("email sent to %s outside the outbox", ", ".join(recipients))

    def _record_sent(self, ledger: Ledger) -> bool:
        """Mark sent what the server accepted; False while the ledger refuses (nothing more is sent then)."""
        for alert_id, at in list(self._unrecorded.items()):
            try:
                ledger.mark_sent(alert_id, at)
            except sqlite3.Error as exc:
                log.warning("alert email %d was sent but the ledger cannot record it yet (%s); sending waits", alert_id, exc)
                return False
            del self._unrecorded[alert_id]
        return True

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        context = ssl.create_default_context(cafile=str(c.ca_file) if c.ca_file else None)
        smtp: smtplib.SMTP
        if c.security == "tls":
            smtp = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=context)
        else:
            smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
        try:
            if c.security == "starttls":
                smtp.starttls(context=context)
            if c.username:
                smtp.login(c.username, c.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp


def _permanent(exc: BaseException) -> bool:
    """A 5xx answer: sending the same email again would be refused again."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    code = getattr(exc, "smtp_code", None)
    return isinstance(exc, smtplib.SMTPResponseException) and isinstance(code, int) and code >= 500
