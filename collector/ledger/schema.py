"""The ledger file's SQLite schema: its tables, their creation, upgrades from older ptmon and
the check that a file is a ptmon ledger this version can read (store.py describes the tables).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import LedgerError
from ..rules import COUNTERS

SCHEMA_VERSION = 3  # 2: hours without exemptions, device status changes, message counts; 3: closings
FORMAT = "ptmon-ledger"

_COUNTER_COLUMNS = ", ".join(f"{c} INTEGER NOT NULL" for c in COUNTERS)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hours (
    hour INTEGER NOT NULL, contract TEXT NOT NULL, street TEXT NOT NULL,
    samples INTEGER NOT NULL, online INTEGER NOT NULL, expected INTEGER NOT NULL,
    {_COUNTER_COLUMNS},
    exemptions TEXT NOT NULL, rules_version TEXT NOT NULL, registry_version TEXT NOT NULL,
    written_at INTEGER NOT NULL,
    PRIMARY KEY (hour, contract, street));
CREATE TABLE IF NOT EXISTS days (
    day INTEGER NOT NULL, contract TEXT NOT NULL, street TEXT NOT NULL,
    samples INTEGER NOT NULL, online_devices INTEGER NOT NULL,
    rules_version TEXT NOT NULL, registry_version TEXT NOT NULL, written_at INTEGER NOT NULL,
    PRIMARY KEY (day, contract, street));
CREATE TABLE IF NOT EXISTS spans (start INTEGER PRIMARY KEY, "end" INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS status (
    device TEXT NOT NULL, t INTEGER NOT NULL, online INTEGER NOT NULL, PRIMARY KEY (device, t)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counts (
    hour INTEGER NOT NULL, contract TEXT NOT NULL, street TEXT NOT NULL, kind TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (hour, contract, street, kind));
CREATE TABLE IF NOT EXISTS unknown_topics (
    hour INTEGER NOT NULL, topic TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (hour, topic));
CREATE TABLE IF NOT EXISTS exemptions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL CHECK (scope IN ('device', 'street', 'gateway')),
    target TEXT NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL CHECK ("end" > start),
    reason TEXT NOT NULL, approver TEXT NOT NULL, created_at INTEGER NOT NULL,
    revoked_at INTEGER, revoked_by TEXT, revoke_reason TEXT);
CREATE TABLE IF NOT EXISTS episodes (
    device TEXT NOT NULL, start INTEGER NOT NULL, "end" INTEGER, restored INTEGER NOT NULL DEFAULT 0,
    contract TEXT NOT NULL, street TEXT NOT NULL, type TEXT NOT NULL, community TEXT NOT NULL,
    gateway TEXT NOT NULL,
    PRIMARY KEY (device, start));
CREATE INDEX IF NOT EXISTS episodes_by_time ON episodes (start, "end");
CREATE TABLE IF NOT EXISTS alert_state (key TEXT PRIMARY KEY, doc TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, event_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL, event TEXT NOT NULL, contract TEXT NOT NULL, street TEXT NOT NULL,
    kpi TEXT NOT NULL, at INTEGER NOT NULL, subject TEXT NOT NULL, recipients TEXT NOT NULL,
    message BLOB NOT NULL, status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, next_try INTEGER NOT NULL DEFAULT 0, sent_at INTEGER, created_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_pending ON alerts (status, next_try);
CREATE TABLE IF NOT EXISTS closings (
    month TEXT NOT NULL, contract TEXT NOT NULL, version INTEGER NOT NULL CHECK (version >= 1),
    closed_at INTEGER NOT NULL, closed_by TEXT NOT NULL, reason TEXT NOT NULL,
    doc BLOB NOT NULL, seal TEXT NOT NULL, PRIMARY KEY (month, contract, version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS closing_blobs (sha256 TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS closings_never_updated BEFORE UPDATE ON closings
    BEGIN SELECT RAISE(ABORT, 'a sealed closing is never changed: restate the month instead'); END;
CREATE TRIGGER IF NOT EXISTS closings_never_deleted BEFORE DELETE ON closings
    BEGIN SELECT RAISE(ABORT, 'a sealed closing is never deleted: restate the month instead'); END;
CREATE TRIGGER IF NOT EXISTS closing_blobs_never_updated BEFORE UPDATE ON closing_blobs
    BEGIN SELECT RAISE(ABORT, 'a sealed file is never changed'); END;
"""


def create(db: sqlite3.Connection) -> None:
    """Create what is missing (every statement is IF NOT EXISTS) and stamp a new file."""
    statement = ""
    for part in SCHEMA.split(";"):  # a trigger's body holds ';' too: run each statement once it is complete
        statement += part + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip(" \n;"):
                db.execute(statement)
            statement = ""
    db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
    db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


def upgrade(db: sqlite3.Connection, path: Path, now: int) -> None:
    """Schema 1 → 2 → 3, in the open transaction. Schema 2 → 3 only adds the closings tables
    (created above). Schema 1 hours hold exemptions as the collector applied them; without any
    exemption they equal schema 2's, else the months must be recomputed from the archive.
    Device status is kept from now on."""
    version = int(dict(db.execute("SELECT key, value FROM meta").fetchall()).get("schema_version", "0"))
    if version == 2:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        return
    if version != 1:
        return
    if db.execute("SELECT count(*) FROM exemptions").fetchone()[0]:
        raise LedgerError(
            f"{path}: this ledger was written by an older ptmon (schema 1), whose hours hold the exemptions "
            "as the collector applied them live; move it away and recompute each month from the archive with "
            "`ptmon ledger rebuild --month YYYY-MM`, then record the exemptions again")
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
    db.execute("INSERT OR REPLACE INTO meta VALUES ('status_since', ?)", (str(now),))


def check_format(db: sqlite3.Connection, path: Path) -> None:
    """Raise unless ``db`` is a ptmon ledger of a schema this ptmon reads."""
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.OperationalError:
        meta = {}
    if meta.get("format") != FORMAT:
        raise LedgerError(f"{path}: not a ptmon ledger")
    if int(meta.get("schema_version", "0")) > SCHEMA_VERSION:
        raise LedgerError(f"{path}: ledger schema {meta['schema_version']} is newer than this ptmon "
                          f"({SCHEMA_VERSION}); upgrade ptmon")
