"""The SLA ledger: one SQLite file (WAL) holding the auditable record of the month.

Tables:

* ``hours`` — per contract × street × hour: observed sample instants, Σ online, Σ expected
  (devices under lease; exemptions are applied when the ledger is read), the counter delta
  sums, and the rule-file and registry versions that produced the row. Rows are written when the
  hour closes; writing the same hour again (the archive tail replayed after a crash) replaces it,
  so no hour counts twice.
* ``days`` — per contract × street × day, for the ``daily`` online method: devices heard
  that day and the day's observed sample instants.
* ``spans`` — the instants the monitor observed; everything else is a monitoring gap.
* ``status`` — each device's online status (heard within its type's timeout) at the samples
  where it changed: with ``spans`` it gives any device's status at any observed sample, which
  is what applying an exemption at read time needs.
* ``counts`` and ``unknown_topics`` — per hour, the messages counted by kind (accepted
  heartbeats, rejects, duplicates, late arrivals…) per contract × street (``''`` for messages
  of no registry device), and the unknown devices' topics: the report's data quality.
* ``exemptions`` — approved windows that take devices out of the denominator.
* ``episodes`` — device offline episodes (运维记录: start, end, restored or not).
* ``alert_state`` and ``alerts`` — the state of each alert rule, and every alert email
  (queued, sent or failing) with its full message: the outbox and the record of what was sent.
* ``closings`` and ``closing_blobs`` — the sealed closings of months (`ptmon month close`,
  ``restate``): every version kept, never changed (triggers refuse UPDATE and DELETE); see
  :mod:`ptmon.ledger.closing`.

Instants are int64 µs since the Unix epoch; calendar boundaries are Asia/Shanghai.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import LedgerError
from ..rules import COUNTERS
from ..timebase import day_of
from .access import read_only_uri, refuse_read_only, refuse_unreadable
from .observed import splice
from .records import EXEMPTION_SCOPES, AlertMessage, CountRow, DayRow, Episode, Exemption, HourRow
from .schema import check_format, create, upgrade


def now_us() -> int:
    return time.time_ns() // 1000


class Ledger:
    """The ledger file. One connection per thread; every write is one transaction."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            refuse_unreadable(self.path)  # first: below a directory ptmon may not search, exists() raises
            if not self.path.exists():
                raise LedgerError(f"{self.path}: no ledger here (it is written by `ptmon collect`)")
        else:
            refuse_read_only(self.path)  # (unreadable included)
        try:
            if not readonly:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(read_only_uri(self.path) if readonly else str(self.path), uri=readonly,
                                      timeout=30.0, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA busy_timeout = 30000")
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "meta" not in tables:
                raise LedgerError(f"{self.path}: not a ptmon ledger (an SQLite file with other tables)")
            self.created = not tables  # a new file: nothing written yet
            if not readonly:
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA synchronous = FULL")  # a committed hour survives power loss
                with self.transaction():
                    create(self.db)
                    if tables:
                        upgrade(self.db, self.path, now_us())
            check_format(self.db, self.path)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.path}: not a usable ledger: {exc}") from exc

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any error (unless SQLite already rolled it
        back itself, as after a full disk: a second ROLLBACK would hide the error)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise


    def status_since(self) -> int:
        """From when device status changes are kept (exemptions can be applied to hours from then on)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'status_since'").fetchone()
        return int(row[0]) if row else 0


    def replace_month(self, source: Path, start: int, end: int) -> None:
        """Replace ``[start, end)``'s hours, days, counts, device status, spans and episodes with
        those of the ledger file ``source``, in one transaction; exemptions and alerts stay."""
        first_day, end_day = day_of(start), day_of(end)
        self.db.execute("ATTACH DATABASE ? AS src", (str(source),))
        try:
            with self.transaction() as db:
                for table, column in (("hours", "hour"), ("counts", "hour"), ("unknown_topics", "hour"), ("status", "t")):
                    db.execute(f"DELETE FROM main.{table} WHERE {column} >= ? AND {column} < ?", (start, end))
                    db.execute(f"INSERT INTO main.{table} SELECT * FROM src.{table} WHERE {column} >= ? AND {column} < ?",
                               (start, end))
                db.execute("DELETE FROM main.days WHERE day >= ? AND day < ?", (first_day, end_day))
                db.execute("INSERT INTO main.days SELECT * FROM src.days WHERE day >= ? AND day < ?", (first_day, end_day))
                self._replace_spans(db, start, end)
                db.execute("DELETE FROM main.episodes WHERE start >= ? AND start < ?", (start, end))
                db.execute('INSERT INTO main.episodes SELECT * FROM src.episodes '
                           'WHERE start < ? AND ("end" IS NULL OR "end" > ?) '
                           'ON CONFLICT (device, start) DO UPDATE SET "end" = excluded."end", restored = excluded.restored',
                           (end, start))
        finally:
            self.db.execute("DETACH DATABASE src")

    def copy_to(self, path: Path) -> None:
        """The whole ledger, as it is now, into the new file ``path`` (SQLite's online backup)."""
        target = sqlite3.connect(str(path))
        try:
            self.db.backup(target)
        finally:
            target.close()

    @staticmethod
    def _replace_spans(db: sqlite3.Connection, start: int, end: int) -> None:
        """The attached source's observed time in ``[start, end)``, this ledger's before and after it:
        a span running into the next month keeps that part, which the next month's hours sampled in."""
        overlapping = 'SELECT start, "end" FROM {}.spans WHERE start < ? AND "end" >= ?'
        spliced = splice(db.execute(overlapping.format("main"), (end, start)).fetchall(),
                         db.execute(overlapping.format("src"), (end, start)).fetchall(), start, end)
        db.execute('DELETE FROM main.spans WHERE start < ? AND "end" >= ?', (end, start))
        db.executemany('INSERT OR REPLACE INTO main.spans (start, "end") VALUES (?, ?)', spliced)

    def clear_from(self, t: int) -> None:
        """Forget the rows a rebuild writes again from ``t`` on (hours, days, counts, device status,
        spans, episodes), in one transaction; exemptions and alerts stay. A span that began before
        ``t`` keeps its part before ``t``, which the hours kept sampled in (the rebuild writes it whole
        again when it replays its start)."""
        with self.transaction() as db:
            for table, column in (("hours", "hour"), ("counts", "hour"), ("unknown_topics", "hour"), ("status", "t"),
                                  ("episodes", "start"), ("spans", "start")):
                db.execute(f"DELETE FROM {table} WHERE {column} >= ?", (t,))
            db.execute('UPDATE spans SET "end" = ? WHERE "end" >= ?', (t - 1, t))
            first_whole_day = day_of(t - 1) + 1  # a day the rebuild writes whole: it starts at or after t
            db.execute("DELETE FROM days WHERE day >= ?", (first_whole_day,))

    def has_hours(self) -> bool:
        return self.db.execute("SELECT 1 FROM hours LIMIT 1").fetchone() is not None

    def last_hour(self) -> int | None:
        hour = self.db.execute("SELECT max(hour) FROM hours").fetchone()[0]
        return None if hour is None else int(hour)

    def integrity_check(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])

    # --- KPI aggregates --------------------------------------------------------------------

    def write_aggregates(self, hours: Sequence[HourRow], days: Sequence[DayRow],
                         spans: Sequence[tuple[int, int]], episodes: Sequence[Episode] = (),
                         counts: Sequence[CountRow] = (), unknown: Sequence[tuple[int, str, int]] = (),
                         status: Sequence[tuple[str, int, int]] = ()) -> None:
        """Closed hours and days, the monitor's spans, episode changes and the hours' message
        counts, in one transaction.

        Every write is keyed, so writing the same hour again replaces it instead of adding to it
        (an hour's counts are replaced whole: those of every hour in ``hours`` are).
        """
        written = now_us()
        with self.transaction() as db:
            rewritten = sorted({h.hour for h in hours} | {c.hour for c in counts} | {u[0] for u in unknown})
            db.executemany("DELETE FROM counts WHERE hour = ?", [(h,) for h in rewritten])
            db.executemany("DELETE FROM unknown_topics WHERE hour = ?", [(h,) for h in rewritten])
            db.executemany("INSERT INTO counts VALUES (?, ?, ?, ?, ?)",
                           [(c.hour, c.contract, c.street, c.kind, c.n) for c in counts])
            db.executemany("INSERT INTO unknown_topics VALUES (?, ?, ?)", unknown)
            db.executemany("INSERT OR REPLACE INTO status VALUES (?, ?, ?)", status)
            db.executemany(
                f"INSERT OR REPLACE INTO hours VALUES ({', '.join('?' * (10 + len(COUNTERS)))})",
                [(h.hour, h.contract, h.street, h.samples, h.online, h.expected, *h.counters,
                  h.exemptions, h.rules_version, h.registry_version, written) for h in hours])
            db.executemany(
                "INSERT OR REPLACE INTO days VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(d.day, d.contract, d.street, d.samples, d.online_devices, d.rules_version,
                  d.registry_version, written) for d in days])
            db.executemany('INSERT OR REPLACE INTO spans (start, "end") VALUES (?, ?)', spans)
            self._write_episodes(db, episodes)

    def write_episodes(self, episodes: Sequence[Episode]) -> None:
        with self.transaction() as db:
            self._write_episodes(db, episodes)

    @staticmethod
    def _write_episodes(db: sqlite3.Connection, episodes: Iterable[Episode]) -> None:
        db.executemany(
            'INSERT INTO episodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, start) '
            'DO UPDATE SET "end" = excluded."end", restored = excluded.restored',
            [(e.device, e.start, e.end, int(e.restored), e.contract, e.street, e.type, e.community,
              e.gateway) for e in episodes])

    def hours(self, start: int, end: int) -> list[HourRow]:
        rows = self.db.execute(
            f"SELECT hour, contract, street, samples, online, expected, {', '.join(COUNTERS)}, exemptions, "
            "rules_version, registry_version FROM hours WHERE hour >= ? AND hour < ? ORDER BY hour, contract, street",
            (start, end)).fetchall()
        n = len(COUNTERS)
        return [HourRow(hour=r[0], contract=r[1], street=r[2], samples=r[3], online=r[4], expected=r[5],
                        counters=tuple(r[6:6 + n]), exemptions=r[6 + n], rules_version=r[7 + n],
                        registry_version=r[8 + n]) for r in rows]

    def counts(self, start: int, end: int) -> list[CountRow]:
        rows = self.db.execute("SELECT hour, contract, street, kind, n FROM counts WHERE hour >= ? AND hour < ? "
                               "ORDER BY hour, contract, street, kind", (start, end)).fetchall()
        return [CountRow(hour=r[0], contract=r[1], street=r[2], kind=r[3], n=r[4]) for r in rows]

    def unknown_topics(self, start: int, end: int) -> dict[str, int]:
        rows = self.db.execute("SELECT topic, sum(n) FROM unknown_topics WHERE hour >= ? AND hour < ? "
                               "GROUP BY topic ORDER BY topic", (start, end)).fetchall()
        return {topic: int(n) for topic, n in rows}

    def status_history(self, devices: Sequence[str], start: int, end: int) -> dict[str, list[tuple[int, bool]]]:
        """Each device's status changes before ``end``, from its last one at or before ``start`` on."""
        out: dict[str, list[tuple[int, bool]]] = {}
        for chunk in range(0, len(devices), 500):
            part = list(devices[chunk:chunk + 500])
            marks = ", ".join("?" * len(part))
            rows = self.db.execute(
                f"SELECT s.device, s.t, s.online FROM status s WHERE s.device IN ({marks}) AND s.t < ? AND s.t >= "
                f"coalesce((SELECT max(b.t) FROM status b WHERE b.device = s.device AND b.t <= ?), ?) ORDER BY s.device, s.t",
                (*part, end, start, start)).fetchall()
            for device, t, online in rows:
                out.setdefault(device, []).append((t, bool(online)))
        return out

    def days(self, first_day: int, end_day: int) -> list[DayRow]:
        rows = self.db.execute(
            "SELECT day, contract, street, samples, online_devices, rules_version, registry_version "
            "FROM days WHERE day >= ? AND day < ? ORDER BY day, contract, street", (first_day, end_day)).fetchall()
        return [DayRow(day=r[0], contract=r[1], street=r[2], samples=r[3], online_devices=r[4],
                       rules_version=r[5], registry_version=r[6]) for r in rows]

    def spans(self) -> list[list[int]]:
        return [[a, b] for a, b in self.db.execute('SELECT start, "end" FROM spans ORDER BY start')]

    def episodes(self, start: int, end: int) -> list[Episode]:
        """Episodes overlapping ``[start, end)``, open ones included."""
        rows = self.db.execute(
            'SELECT device, contract, street, type, community, gateway, start, "end", restored FROM episodes '
            'WHERE start < ? AND ("end" IS NULL OR "end" > ?) ORDER BY street, device, start', (end, start))
        return [Episode(device=r[0], contract=r[1], street=r[2], type=r[3], community=r[4], gateway=r[5],
                        start=r[6], end=r[7], restored=bool(r[8])) for r in rows]

    def episode_starts(self, before: int) -> dict[str, int]:
        """Each device's latest episode start at or before ``before`` (to resume open episodes)."""
        return dict(self.db.execute("SELECT device, max(start) FROM episodes WHERE start <= ? GROUP BY device",
                                    (before,)).fetchall())

    # --- exemptions ------------------------------------------------------------------------

    def add_exemption(self, *, scope: str, target: str, start: int, end: int, reason: str,
                      approver: str, created_at: int | None = None) -> Exemption:
        if scope not in EXEMPTION_SCOPES:
            raise LedgerError(f"exemption scope must be one of {', '.join(EXEMPTION_SCOPES)}: {scope!r}")
        if end <= start:
            raise LedgerError("an exemption must end after it starts")
        if not reason.strip() or not approver.strip():
            raise LedgerError("an exemption needs a reason and an approver")
        with self.transaction() as db:
            cur = db.execute(
                'INSERT INTO exemptions (scope, target, start, "end", reason, approver, created_at) '
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (scope, target, start, end, reason, approver, created_at if created_at is not None else now_us()))
            exemption_id = int(cur.lastrowid or 0)
        return self.exemption(exemption_id)

    def revoke_exemption(self, exemption_id: int, *, by: str, reason: str, at: int | None = None) -> Exemption:
        with self.transaction() as db:
            row = db.execute("SELECT revoked_at FROM exemptions WHERE id = ?", (exemption_id,)).fetchone()
            if row is None:
                raise LedgerError(f"no exemption {exemption_id}")
            if row[0] is not None:
                raise LedgerError(f"exemption {exemption_id} is already revoked")
            db.execute("UPDATE exemptions SET revoked_at = ?, revoked_by = ?, revoke_reason = ? WHERE id = ?",
                       (at if at is not None else now_us(), by, reason, exemption_id))
        return self.exemption(exemption_id)

    def exemption(self, exemption_id: int) -> Exemption:
        found = self.exemptions(ids=[exemption_id])
        if not found:
            raise LedgerError(f"no exemption {exemption_id}")
        return found[0]

    def exemptions(self, *, start: int | None = None, end: int | None = None,
                   ids: Sequence[int] | None = None, include_revoked: bool = True) -> list[Exemption]:
        """Exemptions overlapping ``[start, end)`` (all when unbounded), oldest first."""
        where, args = [], []  # type: list[str], list[Any]
        if start is not None:
            where.append('"end" > ?')
            args.append(start)
        if end is not None:
            where.append("start < ?")
            args.append(end)
        if ids is not None:
            where.append(f"id IN ({', '.join('?' * len(ids))})")
            args.extend(ids)
        if not include_revoked:
            where.append("revoked_at IS NULL")
        sql = ('SELECT id, scope, target, start, "end", reason, approver, created_at, revoked_at, revoked_by, '
               "revoke_reason FROM exemptions" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id")
        return [Exemption(id=r[0], scope=r[1], target=r[2], start=r[3], end=r[4], reason=r[5], approver=r[6],
                          created_at=r[7], revoked_at=r[8], revoked_by=r[9], revoke_reason=r[10])
                for r in self.db.execute(sql, args)]

    def exemptions_version(self) -> tuple[int, int]:
        """Changes to exemptions since opening can be told by this (count, latest change)."""
        row = self.db.execute("SELECT count(*), max(max(created_at), coalesce(max(revoked_at), 0)) "
                              "FROM exemptions").fetchone()
        return int(row[0]), int(row[1] or 0)

    # --- alerts ----------------------------------------------------------------------------

    def alert_states(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, doc FROM alert_state").fetchall())

    def record_alerts(self, states: Mapping[str, str | None], messages: Sequence[dict[str, Any]]) -> None:
        """New alert states (None: the row is deleted) and the emails their transitions produce,
        in one transaction.

        An email's ``event_key`` is unique: the same event computed again (the archive tail
        replayed after a crash) is not queued twice.
        """
        written = now_us()
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO alert_state VALUES (?, ?, ?)",
                           [(k, v, written) for k, v in states.items() if v is not None])
            db.executemany("DELETE FROM alert_state WHERE key = ?", [(k,) for k, v in states.items() if v is None])
            db.executemany(
                "INSERT OR IGNORE INTO alerts (event_key, kind, event, contract, street, kpi, at, subject, "
                "recipients, message, created_at) VALUES (:event_key, :kind, :event, :contract, :street, :kpi, "
                ":at, :subject, :recipients, :message, :created_at)",
                [{**m, "recipients": ",".join(m["recipients"]), "created_at": written} for m in messages])

    def due_alerts(self, now: int, limit: int = 20) -> list[AlertMessage]:
        rows = self.db.execute(
            "SELECT id, event_key, kind, event, contract, street, kpi, at, subject, recipients, message, status, "
            "attempts, last_error, sent_at FROM alerts WHERE status = 'pending' AND next_try <= ? ORDER BY id LIMIT ?",
            (now, limit)).fetchall()
        return [_alert(r) for r in rows]

    def alerts(self, *, start: int | None = None, end: int | None = None) -> list[AlertMessage]:
        rows = self.db.execute(
            "SELECT id, event_key, kind, event, contract, street, kpi, at, subject, recipients, message, status, "
            "attempts, last_error, sent_at FROM alerts WHERE at >= ? AND at < ? ORDER BY id",
            (start if start is not None else -(2**62), end if end is not None else 2**62)).fetchall()
        return [_alert(r) for r in rows]

    def mark_sent(self, alert_id: int, at: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE alerts SET status = 'sent', sent_at = ?, attempts = attempts + 1, last_error = NULL "
                       "WHERE id = ?", (at, alert_id))

    def mark_failed(self, alert_id: int, error: str, next_try: int, *, give_up: bool = False) -> None:
        with self.transaction() as db:
            db.execute("UPDATE alerts SET status = ?, attempts = attempts + 1, last_error = ?, next_try = ? "
                       "WHERE id = ?", ("failed" if give_up else "pending", error[:500], next_try, alert_id))


def _alert(r: tuple[Any, ...]) -> AlertMessage:
    return AlertMessage(id=r[0], event_key=r[1], kind=r[2], event=r[3], contract=r[4], street=r[5], kpi=r[6],
                        at=r[7], subject=r[8], recipients=tuple(x for x in r[9].split(",") if x),
                        message=bytes(r[10]), status=r[11], attempts=r[12], last_error=r[13], sent_at=r[14])
