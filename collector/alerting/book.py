"""The alert book: alert and group states as the ledger's ``alert_state`` table holds them.

Rows (an opaque key → a JSON document): ``alert {key}`` per alert not ok, ``group {key}`` per
open incident of a recipient, ``$watermark`` (the last engine instant evaluated: the archive
tail replayed after a crash is not evaluated again), ``$digest`` (the last daily digest) and
``$transit`` (what loss-in-transit alerting must remember: the broker's drop count last
accounted for, and when the causes that explain a loss ended; see :mod:`~ptmon.alerting.transit`).
Every change is handed to the ledger with the emails it causes, in one transaction.

Rows of earlier versions (``breach:cam:taopu:online`` …) are read by
:func:`~ptmon.alerting.model.legacy_states`: alerts that had sent their firing email become
incidents already notified, so they send a resolved email when they end and nothing twice.
The legacy rows are deleted, and the new ones written, at the first commit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..engine import NEVER
from .model import AlertKey, AlertState, Cause, GroupKey, GroupState, Notified, dumps, legacy_states
from .rules import AlertRules

log = logging.getLogger(__name__)

WATERMARK, DIGEST, TRANSIT = "$watermark", "$digest", "$transit"
Place = Callable[[str], tuple[str, str] | None]  # gateway id -> (contract, street)


class AlertBook:
    def __init__(self, rows: dict[str, str] | None = None) -> None:
        self.alerts: dict[AlertKey, AlertState] = {}
        self.groups: dict[GroupKey, GroupState] = {}
        self.watermark = NEVER
        self.digest: dict[str, Any] = {}
        self.transit: dict[str, Any] = {}
        self._changed: dict[str, str | None] = {}
        self._legacy: list[AlertState] = []
        self._legacy_notified: list[AlertState] = []
        rows = rows or {}
        for row, text in rows.items():
            try:
                self._load(row, text)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("alert state row %r is unreadable (%s): dropped", row, exc)
                self._changed[row] = None
        self._legacy, self._legacy_notified, legacy_rows = legacy_states(rows)
        self._changed.update(dict.fromkeys(legacy_rows))

    def _load(self, row: str, text: str) -> None:
        if row == WATERMARK:
            self.watermark = int(text)
        elif row == DIGEST:
            self.digest = json.loads(text)
        elif row == TRANSIT:
            self.transit = json.loads(text)
        elif row.startswith("alert "):
            state = AlertState.from_doc(json.loads(text))
            self.alerts[state.key] = state
        elif row.startswith("group "):
            group = GroupState.from_doc(json.loads(text))
            self.groups[group.key] = group

    def adopt_legacy(self, rules: AlertRules, place: Place) -> int:
        """Earlier versions' alerts as alerts and incidents of this one; returns how many."""
        for state in self._legacy:
            key = state.key
            if key.cause is Cause.GATEWAY and not key.street:
                found = place(key.gateway)
                if found is None:
                    continue
                key = replace(key, contract=found[0], street=found[1])
                state = replace(state, key=key)
            self.set_alert(key, state)
            if state in self._legacy_notified or state.phase.active:
                self._notified(state, rules)
        adopted = len(self._legacy)
        self._legacy, self._legacy_notified = [], []
        return adopted

    def _notified(self, state: AlertState, rules: AlertRules) -> None:
        sent_at = state.changed if state.fired is None else max(state.fired, state.changed)
        for recipient in rules.recipients_of(state.key):
            gk = GroupKey(recipient=recipient, cause=state.key.cause, contract=state.key.group_contract)
            group = self.groups.get(gk) or GroupState(key=gk, opened=state.fired or state.since, changed=sent_at,
                                                      last_sent=sent_at, sent=1)
            self.set_group(gk, replace(group, notified=tuple(sorted({*group.notified, Notified.of(state)}))))

    # --- changes ---------------------------------------------------------------------------

    def set_alert(self, key: AlertKey, state: AlertState | None) -> None:
        if self.alerts.get(key) == state:
            return
        if state is None:
            self.alerts.pop(key, None)
        else:
            self.alerts[key] = state
        self._changed[key.row] = None if state is None else dumps(state.doc())

    def set_group(self, key: GroupKey, state: GroupState | None) -> None:
        if state is None:
            self.groups.pop(key, None)
        else:
            self.groups[key] = state
        self._changed[key.row] = None if state is None else dumps(state.doc())

    def set_digest(self, doc: dict[str, Any]) -> None:
        self.digest = doc
        self._changed[DIGEST] = dumps(doc)

    def set_transit(self, doc: dict[str, Any]) -> None:
        if doc != self.transit:
            self.transit = doc
            self._changed[TRANSIT] = dumps(doc)

    @property
    def dirty(self) -> bool:
        return bool(self._changed)

    def take(self, watermark: int) -> dict[str, str | None]:
        """The rows changed since the last take, with the new watermark."""
        self.watermark = watermark
        changed, self._changed = self._changed, {}
        changed[WATERMARK] = str(watermark)
        return changed
