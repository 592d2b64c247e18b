"""The alert state machine, one pure step per condition reading.

Breach (a rate over the rule's trailing window):

    ok ──below──▶ pending ──below for `for`──▶ firing ──above thr+hysteresis──▶ resolving
     ▲              │ above                      ▲                                │
     └──────────────┘                            └──────────────below─────────────┤
     ◀─────────────────────────── above thr+hysteresis for `resolve_for` ─────────┘

A reading of None (the window was not observed enough, or nothing was expected) never
fires or resolves anything: a firing alert holds until the monitor can judge again, a pending
one starts over (its ``for`` counts observed time only, as Prometheus drops a pending alert
whose series vanished).

Causes read from silence and gateways (their ``for`` is part of the condition) fire as soon
as the condition holds and are ok as soon as it does not. Month at risk carries a level. Loss in
transit fires above its level and ends at or below a lower one (:func:`level_step`).
``None`` stands for ok: ok alerts are not stored.
"""

from __future__ import annotations

from dataclasses import replace

from ..timebase import US_PER_S
from .model import AlertKey, AlertState, Phase
from .rules import AlertRule


def breach_step(state: AlertState | None, key: AlertKey, rule: AlertRule, *, below: bool | None,
                recovered: bool, t: int) -> AlertState | None:
    if below is None:
        # Not judged (the window was not observed enough): a pending alert starts over once it
        # can be judged again, a firing one holds.
        return None if state is not None and state.phase is Phase.PENDING else state
    if state is None:
        return AlertState(key=key, phase=Phase.PENDING, since=t, changed=t) if below else None
    if state.phase is Phase.PENDING:
        if not below:
            return None
        if t - state.since >= rule.for_ * US_PER_S:
            return replace(state, phase=Phase.FIRING, fired=t, changed=t)
        return state
    if state.phase is Phase.FIRING:
        return replace(state, phase=Phase.RESOLVING, ok_since=t, changed=t) if recovered else state
    if state.phase is Phase.RESOLVING:
        if not recovered:
            return replace(state, phase=Phase.FIRING, ok_since=None, changed=t)
        if t - (state.ok_since or t) >= rule.resolve_for * US_PER_S:
            return None
    return state


def condition_step(state: AlertState | None, key: AlertKey, *, holds: bool, since: int, t: int,
                   level: int = 0) -> AlertState | None:
    """A condition that fires while it holds (silences, gateways, month at risk)."""
    if not holds:
        return None
    if state is None:
        return AlertState(key=key, phase=Phase.FIRING, since=since, fired=t, changed=t, level=level)
    if state.level != level:
        return replace(state, level=level, changed=t)
    return state


def level_step(state: AlertState | None, key: AlertKey, *, fires: bool | None, resolved: bool,
               t: int) -> AlertState | None:
    """A rate over a trailing window that fires above a level and is ok again at or below a
    lower one (loss in transit). ``fires`` None: the window cannot be judged now (the monitor
    has not watched a whole window, or a cause explains what it holds): nothing fires or ends."""
    if fires is None:
        return state
    if state is None:
        return AlertState(key=key, phase=Phase.FIRING, since=t, fired=t, changed=t) if fires else None
    return None if resolved else state
