"""Sealed closings of a month (月度结账): every version kept in the ledger, none ever changed.

A closing is one JSON document per month × contract × version (第 1 版, 第 2 版 …), stored
zlib-compressed beside its **seal**: the SHA-256 of the document's canonical bytes (keys
sorted, no spaces, UTF-8). The document holds the KPI rows, the money lines, everything the
report is rendered from, and the SHA-256 of every input; large inputs kept as they were (the
registry and rule files, the late heartbeats found) go once into ``closing_blobs`` under their
own SHA-256, which the document names, so the seal covers them too. A restatement is a new
version whose document names the previous version's seal: the versions form a chain.

The ledger's triggers refuse UPDATE and DELETE of a closing. Someone with write access to the
file could still drop them, which is why the report prints the seal: the signed copy pins it,
and `ptmon month verify` recomputes it from the stored document.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import LedgerError
from .store import Ledger

FORMAT = "ptmon-closing"
FORMAT_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Closing:
    """One sealed version of a month's acceptance for a contract."""

    month: str  # YYYY-MM
    contract: str
    version: int  # 1, 2, ...
    closed_at: int  # µs
    closed_by: str
    reason: str  # '' for the first closing; why, for a restatement
    seal: str  # SHA-256 (hex) of the document's canonical bytes, as recorded
    doc: dict[str, Any]
    # the table's own columns (month, contract, version, closed_at, closed_by, reason): an index
    # for queries only; what is shown is the sealed document's, and verify compares the two
    columns: tuple[Any, ...] = ()

    @property
    def label(self) -> str:
        return f"第 {self.version} 版"

    def sealed_ok(self) -> bool:
        """The stored document still hashes to the recorded seal."""
        return seal_of(self.doc) == self.seal

    def column_mismatches(self) -> list[str]:
        """The table columns that no longer say what the sealed document says (edited by SQL)."""
        names = ("month", "contract", "version", "closed_at", "closed_by", "reason")
        return [f"{name} {col!r} (sealed: {self.doc.get(name, '')!r})" for name, col in zip(names, self.columns)
                if col != (int(self.doc.get(name, 0)) if name in ("version", "closed_at") else self.doc.get(name, ""))]


def canonical(doc: Mapping[str, Any]) -> bytes:
    """The bytes a seal is taken over: sorted keys, no whitespace, UTF-8."""
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def seal_of(doc: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(doc)).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_closing(ledger: Ledger, doc: dict[str, Any], blobs: Mapping[str, bytes] = {}) -> Closing:
    """Add one closing: :func:`record_closings` of one."""
    return record_closings(ledger, [(doc, blobs)])[0]


def record_closings(ledger: Ledger, sealed: Sequence[tuple[dict[str, Any], Mapping[str, bytes]]], *,
                    with_rows: Callable[[sqlite3.Connection], None] | None = None) -> list[Closing]:
    """Add closings (each document's ``version`` must follow the last one of its month and
    contract, and name its seal as ``previous_seal``) with the blobs they name, all in one
    transaction taken before the versions are read: all are recorded or none (two closings
    racing for the same month cannot leave it half closed). ``with_rows`` writes, in that same
    transaction, the rows the closings were made from (a partitioned month's merge)."""
    for _, blobs in sealed:
        for digest, data in blobs.items():
            if sha256_bytes(data) != digest:
                raise LedgerError(f"blob {digest[:16]}… does not hash to its name")
    try:
        with ledger.transaction() as db:
            if with_rows is not None:
                with_rows(db)
            for doc, blobs in sealed:
                _insert(db, doc, blobs)
    except sqlite3.OperationalError as exc:
        if "full" not in str(exc):
            raise
        raise LedgerError(f"{ledger.path}: {exc}: nothing was sealed; free space on its disk and close again") from exc
    found = [closing(ledger, doc["month"], doc["contract"], int(doc["version"])) for doc, _ in sealed]
    recorded = [c for c in found if c is not None]
    assert len(recorded) == len(found)  # each was inserted in the transaction just committed
    return recorded


def _insert(db: sqlite3.Connection, doc: dict[str, Any], blobs: Mapping[str, bytes]) -> None:
    month, contract, version = doc["month"], doc["contract"], int(doc["version"])
    row = db.execute("SELECT max(version) FROM closings WHERE month = ? AND contract = ?", (month, contract)).fetchone()
    last = int(row[0] or 0)
    if version > last + 1:
        raise LedgerError(f"{contract} {month}: version {version} does not follow the last one ({last})")
    if version <= last:
        by = db.execute("SELECT closed_by, closed_at FROM closings WHERE month = ? AND contract = ? AND version = ?",
                        (month, contract, last)).fetchone()
        raise ClosingRaced(
            f"{contract} {month}: 第 {last} 版 was sealed by {by[0]} while this command ran (another `ptmon month` at "
            f"the same time); nothing was sealed by this one. `ptmon month status {month}` shows the month as it is now")
    if last:
        previous = db.execute("SELECT seal FROM closings WHERE month = ? AND contract = ? AND version = ?",
                              (month, contract, last)).fetchone()[0]
        if doc.get("previous_seal") != previous:
            raise LedgerError(f"{contract} {month}: version {version} must name the seal of version {last}")
    db.executemany("INSERT OR IGNORE INTO closing_blobs VALUES (?, ?)",
                   [(digest, zlib.compress(data, 6)) for digest, data in blobs.items()])
    db.execute("INSERT INTO closings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (month, contract, version, int(doc["closed_at"]), doc["closed_by"], doc.get("reason", ""),
                zlib.compress(canonical(doc), 6), seal_of(doc)))


class ClosingRaced(LedgerError):
    """Another command sealed a version of the same month and contract first."""


def closings(ledger: Ledger, month: str | None = None, contract: str | None = None) -> list[Closing]:
    """Every version, by month, contract and version; [] for a ledger without closings (schema 2)."""
    where, args = [], []  # type: list[str], list[Any]
    if month is not None:
        where.append("month = ?")
        args.append(month)
    if contract is not None:
        where.append("contract = ?")
        args.append(contract)
    sql = ("SELECT month, contract, version, closed_at, closed_by, reason, doc, seal FROM closings"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY month, contract, version")
    try:
        rows = ledger.db.execute(sql, args).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []  # a schema-2 ledger opened read-only: no month was ever closed in it
        raise
    return [_closing(r) for r in rows]


def closing(ledger: Ledger, month: str, contract: str, version: int | None = None) -> Closing | None:
    """A version (the latest when ``version`` is None), or None."""
    found = closings(ledger, month, contract)
    if version is not None:
        found = [c for c in found if c.version == version]
    return found[-1] if found else None


def blob(ledger: Ledger, digest: str) -> bytes:
    """A sealed file by its SHA-256, checked."""
    row = ledger.db.execute("SELECT data FROM closing_blobs WHERE sha256 = ?", (digest,)).fetchone()
    if row is None:
        raise LedgerError(f"{ledger.path}: sealed file {digest[:16]}… is missing from the ledger")
    try:
        data = zlib.decompress(bytes(row[0]))
    except zlib.error:
        data = b""  # not even compressed data any more: altered
    if sha256_bytes(data) != digest:
        raise LedgerError(f"{ledger.path}: sealed file {digest[:16]}… no longer hashes to its SHA-256 (altered)")
    return data


def blob_problems(ledger: Ledger, c: Closing) -> list[str]:
    """Sealed files the closing names that are missing or altered."""
    problems = []
    for digest in sorted(named_blobs(c.doc)):
        try:
            blob(ledger, digest)
        except LedgerError as exc:
            problems.append(str(exc))
    return problems


def named_blobs(doc: Mapping[str, Any]) -> set[str]:
    """SHA-256 of every blob a document names (its ``blobs`` map: role → digest, e.g.
    ``registry``, ``rules/types.yaml``, ``late``)."""
    return set(doc.get("blobs", {}).values())


def _closing(r: tuple[Any, ...]) -> Closing:
    try:
        doc = json.loads(zlib.decompress(bytes(r[6])).decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, ValueError) as exc:
        raise LedgerError(f"closing {r[1]} {r[0]} version {r[2]}: its document cannot be read ({exc}): altered") from exc
    # who, when and why as sealed (the columns are not covered by the seal: verify compares them)
    return Closing(month=r[0], contract=r[1], version=int(r[2]), closed_at=int(doc.get("closed_at", 0)),
                   closed_by=str(doc.get("closed_by", "")), reason=str(doc.get("reason", "")), doc=doc, seal=r[7],
                   columns=(r[0], r[1], int(r[2]), int(r[3]), r[4], r[5]))
