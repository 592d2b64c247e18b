"""Anomalies in the ledger: table ``anomalies``, one row per anomaly and month it touched.

Keyed by (device, kind, start, month): the row of an anomaly still open is written again as it
grows (at every checkpoint and when it closes), and the archive tail replayed after a crash writes
the same keys, so nothing counts twice; the rows of anomalies raised after the state a restart
continues from are dropped first (:func:`forget_raised_since`), so a replay that dates one
otherwise leaves no stale row. The month's report reads them with their counts: what a
blind camera should have captured, what a degraded one or a stuck sensor failed beyond its own
baseline. Created on first use, so a ledger from before it opens as it is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence

from ..ledger.store import Ledger
from .records import Anomaly

SCHEMA = """
CREATE TABLE IF NOT EXISTS anomalies (
    device TEXT NOT NULL, kind TEXT NOT NULL, start INTEGER NOT NULL, month TEXT NOT NULL,
    contract TEXT NOT NULL, street TEXT NOT NULL, type TEXT NOT NULL, community TEXT NOT NULL,
    gateway TEXT NOT NULL, detected INTEGER NOT NULL, "end" INTEGER,
    attempts REAL NOT NULL, successes REAL NOT NULL, expected_attempts REAL NOT NULL,
    expected_successes REAL NOT NULL,
    PRIMARY KEY (device, kind, start, month))
"""
COLUMNS = ("device", "kind", "start", "month", "contract", "street", "type", "community", "gateway", "detected",
           "end", "attempts", "successes", "expected_attempts", "expected_successes")


def write_anomalies(ledger: Ledger, anomalies: Sequence[Anomaly]) -> None:
    """In one transaction; a key written before is replaced (the figures only grow, and end is final)."""
    if not anomalies:
        return
    latest = {a.key(): a for a in anomalies}  # within one write, the last record of a key is the one that holds
    with ledger.transaction() as db:
        db.execute(SCHEMA)
        db.executemany(f"INSERT OR REPLACE INTO anomalies VALUES ({', '.join('?' * len(COLUMNS))})",
                       [_row(a) for a in latest.values()])


def forget_raised_since(ledger: Ledger, t: int, keep: Collection[tuple[str, str, int]]) -> int:
    """Drop the rows of anomalies raised at or after engine time ``t`` but those
    of ``keep`` (device, kind, start: the anomalies open in the state restored at ``t``); returns how
    many. A collector restarting from a checkpoint or snapshot taken at ``t`` feeds the archive after
    it again and writes what that raises; a row an earlier run wrote of it is dropped first, so none
    is left beside the one the archive gives, whatever its start. Rows kept are rewritten as the
    restored anomalies go on."""
    with ledger.transaction() as db:
        db.execute(SCHEMA)
        rows = db.execute("SELECT device, kind, start, month FROM anomalies WHERE detected >= ?", (t,)).fetchall()
        gone = [r for r in rows if (r[0], r[1], r[2]) not in keep]
        db.executemany("DELETE FROM anomalies WHERE device = ? AND kind = ? AND start = ? AND month = ?", gone)
    return len(gone)


def read_anomalies(ledger: Ledger, month: str) -> list[Anomaly]:
    """The month's anomaly rows, by street, device, kind and start."""
    try:
        rows = ledger.db.execute(f'SELECT {", ".join(_quoted(c) for c in COLUMNS)} FROM anomalies WHERE month = ? '
                                 "ORDER BY contract, street, device, kind, start", (month,)).fetchall()
    except sqlite3.OperationalError:  # a ledger written before device health was measured
        return []
    return [Anomaly(**dict(zip(COLUMNS, r))) for r in rows]


def replace_month(ledger: Ledger, source: Ledger, month: str) -> None:
    """The month's rows of ``source`` (a recomputation) instead of ``ledger``'s."""
    rows = read_anomalies(source, month)
    with ledger.transaction() as db:
        db.execute(SCHEMA)
        db.execute("DELETE FROM anomalies WHERE month = ?", (month,))
        db.executemany(f"INSERT INTO anomalies VALUES ({', '.join('?' * len(COLUMNS))})", [_row(a) for a in rows])


def _row(a: Anomaly) -> tuple[object, ...]:
    return tuple(getattr(a, c) for c in COLUMNS)


def _quoted(column: str) -> str:
    return f'"{column}"' if column == "end" else column
