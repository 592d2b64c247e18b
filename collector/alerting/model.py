"""The alert state machine's types: causes, phases, typed keys and frozen state records.

An **alert** is one condition about one thing (a street's KPI, a street, a gateway, the
district): its :class:`AlertKey` names it field by field (the gateway id in a field of its own,
never parsed out of a string) and its :class:`AlertState` is where its state machine stands.

A **group** is one recipient's view of one cause (Alertmanager's aggregation group): the
alerts of that cause and contract the recipient is told about. A group's life from its first
alert to its resolved notification is an **incident**; every email is a :class:`Notification`
of a group.

States are stored in the ledger's ``alert_state`` table as JSON documents under an opaque row
key. Rows written by earlier versions (keys such as ``breach:cam:taopu:online``) are read by
:func:`legacy_states` and replaced at the first commit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Any


class Cause(str, Enum):
    """What an alert is about, from the widest cause to the narrowest."""

    PIPELINE = "pipeline"  # the whole district silent at once: broker, network or collector side
    STREET_SILENT = "street_silent"  # every reporting device of a street × contract silent
    GATEWAY = "gateway"  # a gateway's Last Will stands
    BREACH = "breach"  # a street's KPI below its threshold over the rule's window
    MONTH_RISK = "month_risk"  # the month ends (or must end) below the threshold
    DEVICE = "device"  # a device online but not doing its job: blind, degraded, stuck (kpi holds the kind)
    BROKER_DROPS = "broker_drops"  # the MQTT broker's $SYS says it dropped messages (a client's queue was full)
    LOSS = "loss"  # messages lost in transit (seq gaps) over the loss window: a street × contract, or the district
    MONITOR_GAP = "monitor_gap"  # the monitor could not see (collector down, broker unreachable) longer than allowed

    @property
    def cross_contract(self) -> bool:
        """Grouped across contracts: one district or street cause, whichever contract it hits."""
        return self in (Cause.PIPELINE, Cause.STREET_SILENT, Cause.LOSS)

    @property
    def district_only(self) -> bool:
        """About the district's pipeline as a whole: told to the district recipients only."""
        return self in (Cause.PIPELINE, Cause.BROKER_DROPS, Cause.MONITOR_GAP)


class Phase(str, Enum):
    OK = "ok"
    PENDING = "pending"  # the condition holds, not yet for long enough
    FIRING = "firing"
    RESOLVING = "resolving"  # back to normal, not yet for long enough (still notified as firing)

    @property
    def active(self) -> bool:
        return self in (Phase.FIRING, Phase.RESOLVING)


class Notice(str, Enum):
    """Why a group's email is sent."""

    FIRING = "firing"  # the incident's first email, after group_wait
    UPDATE = "update"  # alerts joined or left the incident, after group_interval
    REPEAT = "repeat"  # unchanged and still firing, after repeat_interval
    RESOLVED = "resolved"  # every alert of the incident resolved
    DIGEST = "digest"  # the daily digest (每日简报)


@dataclass(frozen=True, kw_only=True, order=True)
class AlertKey:
    cause: Cause
    contract: str = ""
    street: str = ""
    kpi: str = ""
    gateway: str = ""
    month: str = ""  # YYYY-MM, month at risk only
    device: str = ""  # device anomalies only

    def doc(self) -> dict[str, str]:
        return {k: (v.value if isinstance(v, Enum) else v) for k, v in asdict(self).items() if v}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> AlertKey:
        return cls(cause=Cause(doc["cause"]), **{k: str(doc.get(k, "")) for k in
                                                 ("contract", "street", "kpi", "gateway", "month", "device")})

    @property
    def row(self) -> str:
        return "alert " + _canonical(self.doc())

    @property
    def group_contract(self) -> str:
        return "" if self.cause.cross_contract else self.contract


@dataclass(frozen=True, kw_only=True)
class AlertState:
    key: AlertKey
    phase: Phase
    since: int  # µs: the condition began
    changed: int  # µs: the last change of phase or level
    fired: int | None = None  # µs: began firing
    ok_since: int | None = None  # µs: resolving since
    level: int = 0  # month at risk: 1 projected below, 2 unreachable

    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"key": self.key.doc(), "phase": self.phase.value, "since": self.since,
                               "changed": self.changed}
        for name in ("fired", "ok_since"):
            if getattr(self, name) is not None:
                doc[name] = getattr(self, name)
        if self.level:
            doc["level"] = self.level
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> AlertState:
        return cls(key=AlertKey.from_doc(doc["key"]), phase=Phase(doc["phase"]), since=int(doc["since"]),
                   changed=int(doc.get("changed", doc["since"])), fired=_opt_int(doc.get("fired")),
                   ok_since=_opt_int(doc.get("ok_since")), level=int(doc.get("level", 0)))


@dataclass(frozen=True, kw_only=True, order=True)
class GroupKey:
    recipient: str
    cause: Cause
    contract: str = ""

    def doc(self) -> dict[str, str]:
        return {"recipient": self.recipient, "cause": self.cause.value, "contract": self.contract}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> GroupKey:
        return cls(recipient=str(doc["recipient"]), cause=Cause(doc["cause"]), contract=str(doc.get("contract", "")))

    @property
    def row(self) -> str:
        return "group " + _canonical(self.doc())


@dataclass(frozen=True, kw_only=True, order=True)
class Notified:
    """An alert as the group's last email reported it firing."""

    key: AlertKey
    level: int = 0
    since: int = 0

    def doc(self) -> dict[str, Any]:
        return {"key": self.key.doc(), "level": self.level, "since": self.since}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Notified:
        return cls(key=AlertKey.from_doc(doc["key"]), level=int(doc.get("level", 0)), since=int(doc.get("since", 0)))

    @classmethod
    def of(cls, state: AlertState) -> Notified:
        return cls(key=state.key, level=state.level, since=state.since)


@dataclass(frozen=True, kw_only=True)
class GroupState:
    """Where one recipient's incident of one cause stands."""

    key: GroupKey
    opened: int  # µs: its first alert was seen firing
    changed: int  # µs: the last change of its set of alerts
    due: int | None = None  # µs: the next email is owed at (group_wait / group_interval); None: nothing owed
    last_sent: int | None = None
    sent: int = 0  # emails of this incident so far
    notified: tuple[Notified, ...] = ()  # the alerts the last email reported firing

    def doc(self) -> dict[str, Any]:
        return {"key": self.key.doc(), "opened": self.opened, "changed": self.changed, "due": self.due,
                "last_sent": self.last_sent, "sent": self.sent, "notified": [n.doc() for n in self.notified]}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> GroupState:
        return cls(key=GroupKey.from_doc(doc["key"]), opened=int(doc["opened"]), changed=int(doc["changed"]),
                   due=_opt_int(doc.get("due")), last_sent=_opt_int(doc.get("last_sent")), sent=int(doc.get("sent", 0)),
                   notified=tuple(Notified.from_doc(n) for n in doc.get("notified", [])))


@dataclass(frozen=True, kw_only=True)
class AlertView:
    """One alert as an email shows it: its state and what was measured at the notification."""

    key: AlertKey
    phase: Phase | None  # None: resolved
    since: int
    fired: int | None
    level: int = 0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Notification:
    """One email owed to one recipient: about one incident (``group``), or the daily digest."""

    recipient: str
    notice: Notice
    at: int  # µs, engine time
    group: GroupKey | None = None  # None: the daily digest
    opened: int = 0  # the incident's first alert seen firing
    first_seen: int = 0  # the earliest condition start among its alerts
    last_change: int = 0  # the last change of the incident's alerts
    seq: int = 1  # the incident's n-th email
    firing: tuple[AlertView, ...] = ()
    resolved: tuple[AlertView, ...] = ()
    digest: Any = None  # a DigestRequest for Notice.DIGEST

    @property
    def event_key(self) -> str:
        """Unique per email: the outbox ignores the same email queued again."""
        if self.group is None:
            return "|".join([self.notice.value, str(self.digest.day), self.recipient, self.digest.street])
        g = self.group
        return "|".join([self.notice.value, g.cause.value, g.contract, g.recipient, str(self.opened), str(self.seq)])

    @property
    def thread_key(self) -> str | None:
        """The event key of the incident's first email, which every later one replies to (None: it
        is the first, or the digest)."""
        if self.group is None or self.seq <= 1:
            return None
        g = self.group
        return "|".join([Notice.FIRING.value, g.cause.value, g.contract, g.recipient, str(self.opened), "1"])


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _canonical(doc: dict[str, str]) -> str:
    return dumps(doc)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


# --- rows written by earlier versions --------------------------------------------------------

LEGACY_CAUSES = {c.value for c in Cause if c not in (Cause.BROKER_DROPS, Cause.LOSS, Cause.MONITOR_GAP)}  # newer than those rows
LEGACY_PHASES = {"ok": Phase.OK, "pending": Phase.PENDING, "firing": Phase.FIRING, "resolving": Phase.RESOLVING}


def legacy_states(rows: dict[str, str]) -> tuple[list[AlertState], list[AlertState], list[str]]:
    """Alert states of rows keyed ``breach:{contract}:{street}:{kpi}``, ``street_silent:…``,
    ``gateway:{id}`` and ``month_risk:{contract}:{street}:{kpi}:{month start µs}``.

    Returns (all states that are not ok, those that had sent their firing email, the legacy row
    keys to delete). A gateway id is everything after the first colon (ids may hold colons).
    """
    states: list[AlertState] = []
    notified: list[AlertState] = []
    keys: list[str] = []
    for row, text in rows.items():
        kind, _, rest = row.partition(":")
        if row.startswith(("alert ", "group ", "$")) or kind not in LEGACY_CAUSES:
            continue
        keys.append(row)
        try:
            doc = json.loads(text)
            state = _legacy_state(Cause(kind), rest, doc)
        except (ValueError, KeyError, TypeError):
            continue  # an unreadable legacy row is dropped: it can at worst repeat one email
        if state is None:
            continue
        states.append(state)
        if state.phase.active:
            notified.append(state)
    return states, notified, keys


def _legacy_state(cause: Cause, rest: str, doc: dict[str, Any]) -> AlertState | None:
    phase = LEGACY_PHASES.get(str(doc.get("state")), Phase.OK)
    if phase is Phase.OK:
        return None
    since = int(doc.get("since", 0))
    if cause is Cause.GATEWAY:
        key = AlertKey(cause=cause, gateway=rest)
    elif cause is Cause.MONTH_RISK:
        contract, street, kpi, start = rest.split(":")
        from ..timebase import day_of, day_to_date

        key = AlertKey(cause=cause, contract=contract, street=street, kpi=kpi,
                       month=day_to_date(day_of(int(start))).strftime("%Y-%m"))
    else:
        contract, street, kpi = rest.split(":")
        key = AlertKey(cause=cause, contract=contract, street=street, kpi=kpi)
    fired = _opt_int(doc.get("fired")) if phase.active else None
    state = AlertState(key=key, phase=phase, since=since, changed=int(doc.get("last_sent", fired or since)),
                       fired=fired if fired is not None or not phase.active else since,
                       ok_since=_opt_int(doc.get("ok_since")), level=int(doc.get("level", 0)))
    return replace(state, phase=Phase.FIRING) if cause is Cause.MONTH_RISK else state
