"""Alerts → incidents → emails: inhibition by cause and Alertmanager's grouping, per recipient.

**Inhibition.** An alert a wider cause explains sends nothing of its own while that cause is
firing (its state still runs, and it shows in the cause's email as context):

* a district silence (pipeline) inhibits every other alert but the broker's drops (the broker's
  own word on the pipe, and maybe why the district looks silent);
* a street × contract silence inhibits that street's gateway, breach and device alerts of the contract;
* a month at risk is inhibited (and not evaluated) while a monitoring gap, its street × contract's
  silence or a dead gateway of its street × contract is firing;
* while the district is silent, the incidents already sent of other causes are held as they
  are: no repeat, update or resolved email until the district is heard again;
* a loss in transit is inhibited by the cause that explains it (:mod:`~ptmon.alerting.transit`):
  the broker's drops, the district silence, its street's silence or a dead gateway of its
  street, while that cause fires and for one loss window after it ended (the messages a
  silence kept from the collector are counted lost only when the devices are heard again).

(A dead gateway's devices are already left out of the street's breach counts, so a breach
that still fires is not the gateway's doing and is sent.)

**Grouping.** Each recipient's alerts are grouped by cause and contract (district and street
silences across contracts): one group is one incident in that recipient's mailbox, its
streets in one email. A group's first email waits ``group_wait`` from its first alert, so
alerts of one cause arriving together go out together; later changes (alerts joining,
resolving) wait ``group_wait`` too, and at least ``group_interval`` after the previous email; an
unchanged firing incident is sent again after ``repeat_interval`` (not a month at risk: the daily
digest lists it); when every alert has resolved, one resolved email (``send_resolved``) closes it.
An alert that is inhibited after it was sent stays in its group as it was (no false "resolved")
until it resolves.

Pure: the evaluator passes in the alert states and the groups, and gets back the groups'
new states and the emails owed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ..timebase import US_PER_S
from .model import AlertKey, AlertState, Cause, GroupKey, GroupState, Notice, Notified
from .rules import AlertRules


@dataclass(frozen=True, kw_only=True)
class Planned:
    """An email a group owes now: its new state (None: the incident is over) and contents."""

    group: GroupKey
    notice: Notice
    state: GroupState
    firing: tuple[Notified, ...]
    resolved: tuple[Notified, ...]


@dataclass(frozen=True)
class Causes:
    """The alerts that can explain others: the district silence, the street silences, and the
    causes of each loss in transit (firing, or ended less than a loss window ago)."""

    pipeline: AlertKey | None
    streets: dict[tuple[str, str], AlertKey]  # (contract, street) -> its silence
    explained: Mapping[AlertKey, AlertKey] = field(default_factory=dict)  # loss alert -> its cause
    monitor_gap: AlertKey | None = None
    gateways: dict[tuple[str, str], AlertKey] = field(default_factory=dict)  # (contract, street) -> a dead gateway

    @classmethod
    def of(cls, states: Mapping[AlertKey, AlertState], explained: Mapping[AlertKey, AlertKey] | None = None) -> Causes:
        pipeline: AlertKey | None = None
        monitor_gap: AlertKey | None = None
        streets: dict[tuple[str, str], AlertKey] = {}
        gateways: dict[tuple[str, str], AlertKey] = {}
        for key, state in states.items():
            if not state.phase.active:
                continue
            if key.cause is Cause.PIPELINE:
                pipeline = key
            elif key.cause is Cause.MONITOR_GAP:
                monitor_gap = key
            elif key.cause is Cause.STREET_SILENT:
                streets[key.contract, key.street] = key
            elif key.cause is Cause.GATEWAY:
                gateways.setdefault((key.contract, key.street), key)
        return cls(pipeline, streets, explained or {}, monitor_gap, gateways)

    def inhibitor(self, key: AlertKey) -> AlertKey | None:
        """The alert whose cause explains ``key``, if any."""
        if key.cause in (Cause.PIPELINE, Cause.BROKER_DROPS, Cause.MONITOR_GAP):
            # the broker's drops are its own word about the pipe (they may be why the district is silent);
            # a monitoring gap is about the monitor itself: nothing explains either
            return None
        if self.pipeline is not None:
            return self.pipeline
        if key.cause in (Cause.GATEWAY, Cause.BREACH, Cause.DEVICE):
            return self.streets.get((key.contract, key.street))
        if key.cause is Cause.LOSS:
            return self.explained.get(key)
        if key.cause is Cause.MONTH_RISK:  # projected from the dip the cause explains
            return (self.monitor_gap or self.streets.get((key.contract, key.street))
                    or self.gateways.get((key.contract, key.street)))
        return None


_UNHELD = (Cause.PIPELINE, Cause.BROKER_DROPS, Cause.MONITOR_GAP)


def plan(states: Mapping[AlertKey, AlertState], groups: Mapping[GroupKey, GroupState], rules: AlertRules,
         t: int, explained: Mapping[AlertKey, AlertKey] | None = None) -> tuple[dict[GroupKey, GroupState | None], list[Planned]]:
    """The groups changed at ``t`` (None: closed) and the emails owed; ``explained``: the cause of
    each loss alert a cause explains (see :class:`Causes`)."""
    current = _current(states, groups, rules, explained)
    silent = Causes.of(states).pipeline is not None
    changed: dict[GroupKey, GroupState | None] = {}
    owed: list[Planned] = []
    for gk in sorted(set(current) | set(groups)):
        if silent and gk in groups and gk.cause not in _UNHELD:
            continue  # "nothing but one district email while the district is silent": held as sent
        alerts = current.get(gk, {})
        before = groups.get(gk)
        after, planned = _step(gk, before, alerts, rules, t)
        if after != before:
            changed[gk] = after
        if planned is not None:
            owed.append(planned)
    return changed, owed


def _current(states: Mapping[AlertKey, AlertState], groups: Mapping[GroupKey, GroupState], rules: AlertRules,
             explained: Mapping[AlertKey, AlertKey] | None) -> dict[GroupKey, dict[AlertKey, Notified]]:
    """Per group, the firing alerts to report: those not inhibited, and those inhibited since sent."""
    sent = {gk: {n.key for n in g.notified} for gk, g in groups.items()}
    causes = Causes.of(states, explained)
    out: dict[GroupKey, dict[AlertKey, Notified]] = {}
    for key, state in states.items():
        if not state.phase.active:
            continue
        held = causes.inhibitor(key) is not None
        for recipient in rules.recipients_of(key):
            gk = GroupKey(recipient=recipient, cause=key.cause, contract=key.group_contract)
            if not held or key in sent.get(gk, ()):
                out.setdefault(gk, {})[key] = Notified.of(state)
    return out


def _step(gk: GroupKey, g: GroupState | None, alerts: dict[AlertKey, Notified], rules: AlertRules,
          t: int) -> tuple[GroupState | None, Planned | None]:
    timing = rules.grouping
    if g is None:
        if not alerts:
            return None, None
        g = GroupState(key=gk, opened=t, changed=t, due=t + timing.group_wait * US_PER_S)
    now = tuple(sorted(alerts.values()))
    signature = {(n.key, n.level) for n in now}
    if signature != {(n.key, n.level) for n in g.notified} and g.due is None:
        # Something changed since the last email: the next one waits group_wait for the rest of
        # the change (streets of one cause come back within seconds of each other, not at once),
        # and never comes sooner than group_interval after the previous one.
        due = t + timing.group_wait * US_PER_S
        if g.sent and g.last_sent is not None:
            due = max(due, g.last_sent + timing.group_interval * US_PER_S)
        g = replace(g, changed=t, due=due)
    if g.due is not None and t >= g.due:
        return _flush(g, now, signature, rules, t)
    # A month at risk stays so for weeks: the daily digest lists it instead of a repeat every few hours.
    repeats = gk.cause is not Cause.MONTH_RISK
    if (repeats and g.due is None and now and g.sent and g.last_sent is not None
            and t - g.last_sent >= timing.repeat_interval * US_PER_S):
        return _sent(g, Notice.REPEAT, now, (), t)
    return g, None


def _flush(g: GroupState, now: tuple[Notified, ...], signature: set[tuple[AlertKey, int]], rules: AlertRules,
           t: int) -> tuple[GroupState | None, Planned | None]:
    if not now and (not g.sent or not rules.grouping.send_resolved):
        return None, None  # resolved within group_wait, or resolved emails are off: nothing to say
    if signature == {(n.key, n.level) for n in g.notified}:
        return replace(g, due=None), None  # it changed and changed back: nothing new to say
    gone = tuple(n for n in g.notified if n.key not in {m.key for m in now})
    if not now:
        return None, _sent(g, Notice.RESOLVED, (), gone, t)[1]
    return _sent(g, Notice.FIRING if not g.sent else Notice.UPDATE, now, gone, t)


def _sent(g: GroupState, notice: Notice, now: tuple[Notified, ...], gone: tuple[Notified, ...],
          t: int) -> tuple[GroupState, Planned]:
    after = replace(g, due=None, last_sent=t, sent=g.sent + 1, notified=now)
    return after, Planned(group=g.key, notice=notice, state=after, firing=now, resolved=gone)
