"""The ledger as a :class:`~.protocol.Sink`: the month's hourly rows, episodes, alert states and
anomalies, in the SQLite ledger the acceptance report pays on.

What the engine produces reaches the ledger writer (collector/ledger/writer.py) through the feed's
callbacks; this adapter gives the collector the same open / persist / close / health as every
other sink. A ledger that is locked or refused keeps its rows pending (collector/ledger/keeper.py):
:meth:`LedgerSink.persist` then raises :class:`LedgerRefused`, already reported and retried.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..errors import SinkError
from ..faults import Faults
from ..ledger.keeper import LedgerKeeper
from ..ledger.records import Episode
from ..ledger.store import Ledger
from ..ledger.writer import LedgerWriter

LEDGER_BUSY_TIMEOUT_MS = 250  # in the main loop a locked ledger waits this long per try, then backs off


class LedgerRefused(SinkError):
    """The ledger did not take the pending rows now; its fault is reported and retried with backoff."""

    def __init__(self) -> None:
        super().__init__("the ledger refused the pending rows", retryable=True)


class LedgerSink:
    name = "ledger"

    def __init__(self, ledger: Ledger, writer: LedgerWriter, keeper: LedgerKeeper, faults: Faults, *, path: Path,
                 flush: Callable[[], bool]) -> None:
        self.ledger, self.writer, self.keeper, self.faults, self.path = ledger, writer, keeper, faults, path
        self._flush = flush  # everything pending, with the open hour and day; False when refused
        self.inode: int | None = None  # of the file opened, to tell a ledger deleted or replaced under us

    async def open(self) -> None:
        # From here on a locked ledger must not stall intake: short waits, retried with backoff.
        self.ledger.db.execute(f"PRAGMA busy_timeout = {LEDGER_BUSY_TIMEOUT_MS}")
        self.inode = os.stat(self.path).st_ino

    def submit(self, batch: list[Episode]) -> None:
        self.writer.on_episodes(batch)

    async def persist(self) -> None:
        if not self._flush():
            raise LedgerRefused()

    async def close(self) -> None:
        self.ledger.close()

    def health(self) -> str | None:
        return f"ledger waiting: {self.keeper.describe()}" if self.faults.waiting("ledger") else None
