"""The collector's ledger writes that may have to wait: closed hours, alert states and alert emails.

Another process may hold the ledger locked (a backup, an operator's ``sqlite3`` shell) or its disk
may be full. The archive, not the ledger, is what a message is acknowledged on, so intake goes on
meanwhile: these writes keep what they carry in memory (later alert states replacing earlier ones)
and are retried by the collector's loop with backoff (``faults``, stage ``ledger``). Alert events
arrive from inside the engine, so :meth:`LedgerKeeper.record_alerts` never raises.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from ..faults import Faults
from .store import Ledger
from .writer import LedgerWriter

log = logging.getLogger(__name__)


class LedgerKeeper:
    def __init__(self, faults: Faults, *, wake_mailer: Callable[[], None]) -> None:
        self.faults = faults
        self.wake_mailer = wake_mailer
        self.ledger: Ledger | None = None
        self.writer: LedgerWriter | None = None
        self.states: dict[str, str | None] = {}  # None: the alert state is deleted
        self.messages: list[dict[str, Any]] = []
        faults.details["ledger"] = self.describe

    def bind(self, ledger: Ledger, writer: LedgerWriter) -> None:
        """The ledger is open; what waited for it (alerts of a replayed archive tail) can go in."""
        self.ledger, self.writer = ledger, writer

    def record_alerts(self, states: dict[str, str | None], messages: list[dict[str, Any]]) -> None:
        """Alert states and their emails in one transaction, or kept for the next try."""
        self.states.update(states)
        self.messages.extend(messages)
        if self.ledger is None or self.faults.waiting("ledger"):
            return  # the retry writes them
        try:
            self._write_alerts({})
        except sqlite3.Error as exc:
            self.faults.failed("ledger", str(exc))

    def flush(self, *, open_buckets: bool, states: dict[str, str | None] | None = None) -> bool:
        """Everything waiting, with ``open_buckets`` the open hour and day too, and ``states``; False when
        the ledger refuses (the fault reported, retried with backoff)."""
        assert self.ledger is not None and self.writer is not None
        try:
            self.writer.flush(open_buckets=open_buckets)
            self._write_alerts(states or {})
        except sqlite3.Error as exc:
            self.faults.failed("ledger", str(exc))
            return False
        self.faults.cleared("ledger")
        return True

    def note_writer_error(self) -> None:
        """The writer kept closed hours after a refused write inside the engine: start the retries."""
        if self.writer is not None and self.writer.error is not None and not self.faults.waiting("ledger"):
            self.faults.failed("ledger", str(self.writer.error))

    def describe(self) -> str:
        hours = self.writer.pending if self.writer is not None else "nothing"
        return f"{hours}, and {len(self.messages)} alert emails"

    def _write_alerts(self, states: dict[str, str | None]) -> None:
        assert self.ledger is not None
        states = {**self.states, **states}
        if not states and not self.messages:
            return
        self.ledger.record_alerts(states, self.messages)
        sent = bool(self.messages)
        self.states, self.messages = {}, []
        if sent:
            self.wake_mailer()
