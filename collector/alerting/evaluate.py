"""Alert rules evaluated on the engine's samples: breach, month at risk, gateway, silent street.

An engine listener registered after the month tallies. Every instant is engine time (the
receive times of the messages), so a replay, a simulation at speed and the live collector
fire the same alerts at the same instants.

Breach state machine, per contract × street × KPI (rate over the rule's trailing window):

    ok ──below──▶ pending ──below for `for`──▶ firing ──above thr+hysteresis──▶ resolving
     ▲              │ above                      ▲ repeat every `repeat`          │
     └──────────────┘                            └──────────below──────────────────┤
     ◀─────────────────────────── above thr+hysteresis for `resolve_for` ──────────┘

Only ``firing`` (the first time), ``repeat`` and ``resolved`` are events (emails); a rate
flapping around the threshold never leaves pending, or never leaves firing.

State survives restarts: every change is handed to ``on_change`` (the ledger stores it with
the email in one transaction) and evaluation resumes after the ``watermark``, the last
instant evaluated before the restart, so the archive tail replayed after a crash re-sends
nothing. Window sums are not checkpointed: after a restart the window refills from the
replayed tail.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from ..engine import NEVER, Engine
from ..live import MonthTallies, SlaPoints, month_of
from ..rules import COUNTERS, RATIO_KPIS
from ..sinks.lineproto import line
from ..timebase import US_PER_S, format_instant
from .rules import AlertRule, AlertRules

log = logging.getLogger(__name__)

WORST = 20
_COLUMN = {name: i for i, name in enumerate(COUNTERS)}


@dataclass(kw_only=True)
class AlertEvent:
    kind: str  # breach, month_risk, gateway, street_silent
    event: str  # firing, repeat, resolved
    contract: str
    street: str
    kpi: str
    at: int  # µs, engine time
    since: int  # µs, when the condition began
    value: Fraction | None = None
    threshold: Decimal | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.contract}:{self.street}:{self.kpi}:{self.event}:{self.since}:{self.at}"


OnChange = Callable[[list[AlertEvent], dict[str, str]], None]


class AlertEvaluator:
    def __init__(self, engine: Engine, months: MonthTallies, sla: SlaPoints, rules: AlertRules, *,
                 on_change: OnChange, emit_points: Callable[[list[str]], None] | None = None,
                 states: dict[str, str] | None = None) -> None:
        self.engine = engine
        self.months = months
        self.sla = sla
        self.alert_rules = rules
        self.on_change = on_change
        self.emit_points = emit_points
        registry = engine.registry
        self.kpi_rules = registry.rules
        self.streets = registry.rules.street_codes()
        self.by_contract: dict[int, list[AlertRule]] = {}
        for r in rules.rules:
            ci = [c.code for c in registry.rules.contracts].index(r.contract)
            self.by_contract.setdefault(ci, []).append(r)
        self.window = {ci: max(r.window for r in rs) for ci, rs in self.by_contract.items()}
        self.samples: dict[int, deque[tuple[int, np.ndarray, np.ndarray]]] = {}
        self.deltas: deque[tuple[int, np.ndarray]] = deque()
        self.states: dict[str, dict[str, Any]] = {}
        self.watermark = NEVER
        for key, doc in (states or {}).items():
            if key == "$watermark":
                self.watermark = int(doc)
            else:
                self.states[key] = json.loads(doc)
        self._changed: dict[str, str] = {}
        self._events: list[AlertEvent] = []
        self._last_gateway_check = NEVER
        self._last_risk = NEVER
        engine.listeners.append(self)
        engine.device_listeners.append(self)
        engine.gateway_listeners.append(self)

    # --- engine listener -------------------------------------------------------------------

    def on_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        pass  # evaluated in on_device_sample, which the engine calls after every on_sample

    def on_device_sample(self, contract: int, t: int, online_mask: np.ndarray, expected_mask: np.ndarray) -> None:
        """Evaluate at a sample instant. A device never heard from is left out of the alert's
        denominator until it is overdue (one timeout after observation began): when the
        monitor first starts, devices report over their period, and that is not an outage.
        (The KPIs themselves count it as defined; only alerting waits.)"""
        engine = self.engine
        sl = engine.contract_slices[contract]
        began = engine.spans[0][0] if engine.spans else t
        unknown = (engine.last_heartbeat[sl] == NEVER) & (began + engine.timeout[sl] > t)
        expected = engine._count_by_street(contract, expected_mask & ~unknown)
        online = engine._count_by_street(contract, online_mask)
        window = self.window.get(contract, 0)
        samples = self.samples.setdefault(contract, deque())
        samples.append((t, online, expected))
        horizon = t - max(window, self.alert_rules.silent_for) * US_PER_S
        while samples and samples[0][0] <= horizon:
            samples.popleft()
        oldest_delta = t - max(self.window.values(), default=0) * US_PER_S
        while self.deltas and self.deltas[0][0] <= oldest_delta:
            self.deltas.popleft()
        if t <= self.watermark:
            return  # evaluated before a restart: the window refills, nothing is sent again
        points: list[str] = []
        for rule in self.by_contract.get(contract, []):
            for si, street in enumerate(self.streets):
                value = self._window_rate(contract, si, rule, t)
                self._breach(rule, street, si, contract, value, t)
                points.append(self._point("breach", rule.contract, street, rule.kpi, value, rule.threshold, t))
        self._silent(contract, online, expected, t)
        if t != self._last_gateway_check:
            self._last_gateway_check = t
            self._gateways(t)
        if self.alert_rules.month_risk and t - self._last_risk >= self.alert_rules.month_risk_every * US_PER_S:
            self._last_risk = t
            self._month_risk(t)
        self._commit(t)
        if self.emit_points is not None:
            self.emit_points([p for p in points if p])

    def on_deltas(self, slot_start: int, sums: np.ndarray) -> None:
        if self.by_contract:
            self.deltas.append((slot_start, sums))

    def on_first_seen(self, day: int, counts: np.ndarray) -> None:
        pass

    def on_gateway(self, t: int, gateway: int, online: bool) -> None:
        pass  # the engine's gateway_online/gateway_since are read at each sample

    def checkpoint_states(self) -> dict[str, str]:
        """The watermark to persist with a checkpoint: evaluation up to here is done."""
        return {"$watermark": str(self.engine.next_tick - 1)}

    # --- rates -----------------------------------------------------------------------------

    def _window_rate(self, contract: int, si: int, rule: AlertRule, t: int) -> Fraction | None:
        since = t - rule.window * US_PER_S
        if rule.kpi == "online":
            num = den = 0
            for ts, online, expected in self.samples.get(contract, ()):
                if ts > since:
                    num += int(online[si])
                    den += int(expected[si])
            return Fraction(num, den) if den else None
        ok_names, try_names = RATIO_KPIS[rule.kpi]
        group = contract * len(self.streets) + si
        ok = tries = 0
        for slot, sums in self.deltas:
            if since < slot <= t:
                ok += sum(int(sums[group, _COLUMN[c]]) for c in ok_names)
                tries += sum(int(sums[group, _COLUMN[c]]) for c in try_names)
        return Fraction(ok, tries) if tries else None

    # --- breach ----------------------------------------------------------------------------

    def _breach(self, rule: AlertRule, street: str, si: int, contract: int, value: Fraction | None, t: int) -> None:
        if value is None:
            return
        key = f"breach:{rule.contract}:{street}:{rule.kpi}"
        s = self.states.get(key, {"state": "ok"})
        state = s["state"]
        below = value < rule.threshold
        recovered = value >= rule.threshold + rule.hysteresis
        new = dict(s)
        event = None
        if state == "ok" and below:
            new = {"state": "pending", "since": t}
        elif state == "pending":
            if not below:
                new = {"state": "ok"}
            elif t - s["since"] >= rule.for_ * US_PER_S:
                new = {"state": "firing", "since": s["since"], "fired": t, "last_sent": t}
                event = "firing"
        elif state == "firing":
            if recovered:
                new = {**s, "state": "resolving", "ok_since": t}
            elif t - s["last_sent"] >= rule.repeat * US_PER_S:
                new = {**s, "last_sent": t}
                event = "repeat"
        elif state == "resolving":
            if not recovered:
                new = {k: v for k, v in s.items() if k != "ok_since"} | {"state": "firing"}
            elif t - s["ok_since"] >= rule.resolve_for * US_PER_S:
                new = {"state": "ok"}
                event = "resolved"
        if new != s:
            self._set(key, new)
        if event is not None:
            details = {"window": rule.window, "month": self._month_value(rule.contract, street, rule.kpi),
                       "worst": self.worst_devices(contract, si, rule.kpi, t)}
            self._events.append(AlertEvent(kind="breach", event=event, contract=rule.contract, street=street,
                                           kpi=rule.kpi, at=t, since=int(s.get("since", t)), value=value,
                                           threshold=rule.threshold, details=details))

    def _month_value(self, contract: str, street: str, kpi: str) -> Fraction | None:
        results = self.sla.latest
        if results is None:
            return None
        try:
            return results.row(contract, street, kpi).value
        except StopIteration:
            return None

    # --- root causes -----------------------------------------------------------------------

    def _silent(self, contract: int, online: np.ndarray, expected: np.ndarray, t: int) -> None:
        code = self.kpi_rules.contracts[contract].code
        for si, street in enumerate(self.streets):
            key = f"street_silent:{code}:{street}:online"
            s = self.states.get(key, {"state": "ok"})
            silent = expected[si] > 0 and online[si] == 0
            if silent and s["state"] == "ok":
                self._set(key, {"state": "pending", "since": t})
            elif silent and s["state"] == "pending" and t - s["since"] >= self.alert_rules.silent_for * US_PER_S:
                self._set(key, {"state": "firing", "since": s["since"], "fired": t})
                self._events.append(AlertEvent(
                    kind="street_silent", event="firing", contract=code, street=street, kpi="online", at=t,
                    since=s["since"], value=Fraction(0), details={"devices": self.devices_of(contract, si, t),
                                                                  "expected": int(expected[si])}))
            elif not silent and s["state"] != "ok":
                self._set(key, {"state": "ok"})
                if s["state"] == "firing":
                    self._events.append(AlertEvent(kind="street_silent", event="resolved", contract=code, street=street,
                                                   kpi="online", at=t, since=s["since"],
                                                   details={"online": int(online[si])}))

    def _gateways(self, t: int) -> None:
        engine, registry = self.engine, self.engine.registry
        due = self.alert_rules.gateway_for * US_PER_S
        for g in np.flatnonzero(~engine.gateway_online):
            gateway = registry.gateways[g]
            key = f"gateway:{gateway}"
            since = int(engine.gateway_since[g])
            s = self.states.get(key, {"state": "ok"})
            if s["state"] == "firing" and s.get("since") == since:
                continue
            if t - since >= due:
                rows = np.flatnonzero(registry.gateway == g)
                street = self.streets[int(registry.street[rows[0]])] if len(rows) else ""
                contract = self.kpi_rules.contracts[int(registry.contract[rows[0]])].code if len(rows) else ""
                self._set(key, {"state": "firing", "since": since, "fired": t})
                self._events.append(AlertEvent(kind="gateway", event="firing", contract=contract, street=street,
                                               kpi=gateway, at=t, since=since,
                                               details={"gateway": gateway, "devices": self._rows_table(rows, t)}))
        for key, s in list(self.states.items()):
            if not key.startswith("gateway:") or s["state"] != "firing":
                continue
            gateway = key.split(":", 1)[1]
            if gateway in registry.gateways and engine.gateway_online[registry.gateways.index(gateway)]:
                g = registry.gateways.index(gateway)
                rows = np.flatnonzero(registry.gateway == g)
                street = self.streets[int(registry.street[rows[0]])] if len(rows) else ""
                contract = self.kpi_rules.contracts[int(registry.contract[rows[0]])].code if len(rows) else ""
                self._set(key, {"state": "ok"})
                self._events.append(AlertEvent(kind="gateway", event="resolved", contract=contract, street=street,
                                               kpi=gateway, at=t, since=int(s["since"]),
                                               details={"gateway": gateway, "back_at": int(engine.gateway_since[g])}))

    # --- month at risk ---------------------------------------------------------------------

    def _month_risk(self, t: int) -> None:
        from .risk import month_risks

        tally = self.months.current()
        if tally is None:
            return
        start, end = month_of(t)
        for risk in month_risks(self, tally, t, end):
            key = f"month_risk:{risk.contract}:{risk.street}:{risk.kpi}:{start}"
            s = self.states.get(key, {"state": "ok", "level": 0})
            if risk.level <= s.get("level", 0):
                continue
            self._set(key, {"state": "firing", "level": risk.level, "since": t})
            self._events.append(AlertEvent(kind="month_risk", event="firing", contract=risk.contract,
                                           street=risk.street, kpi=risk.kpi, at=t, since=t, value=risk.month_value,
                                           threshold=risk.threshold, details=risk.details()))

    # --- devices ---------------------------------------------------------------------------

    def worst_devices(self, contract: int, si: int, kpi: str, t: int) -> list[dict[str, Any]]:
        """The street's 20 worst devices for the KPI: offline longest, or lowest success since boot."""
        engine, registry = self.engine, self.engine.registry
        group = contract * len(self.streets) + si
        rows = np.arange(registry.group_bounds[group], registry.group_bounds[group + 1])
        if kpi == "online":
            offline = rows[engine.online_until[rows] <= t]
            order = np.argsort(engine.last_heartbeat[offline], kind="stable")
            return self._rows_table(offline[order][:WORST], t)
        ok_names, try_names = RATIO_KPIS[kpi]
        tries = sum(engine.counters[rows, _COLUMN[c]] for c in try_names)
        ok = sum(engine.counters[rows, _COLUMN[c]] for c in ok_names)
        has = tries > 0
        rate = np.where(has, ok / np.maximum(tries, 1), 2.0)
        order = np.argsort(rate, kind="stable")[: WORST]
        table = self._rows_table(rows[order][has[order]], t)
        for entry, i in zip(table, order[has[order]]):
            entry["ok"], entry["tries"] = int(ok[i]), int(tries[i])
        return table

    def devices_of(self, contract: int, si: int, t: int) -> list[dict[str, Any]]:
        registry = self.engine.registry
        group = contract * len(self.streets) + si
        return self._rows_table(np.arange(registry.group_bounds[group], registry.group_bounds[group + 1]), t)

    def _rows_table(self, rows: np.ndarray, t: int) -> list[dict[str, Any]]:
        engine, registry = self.engine, self.engine.registry
        rules = registry.rules
        out = []
        for i in rows.tolist():
            heard = int(engine.last_heartbeat[i])
            out.append({
                "device": registry.ids[i],
                "type": rules.types[int(registry.type[i])].name,
                "community": registry.communities[int(registry.community[i])],
                "gateway": registry.gateways[int(registry.gateway[i])],
                "last_heartbeat": format_instant(heard) if heard != NEVER else "",
                "online": bool(engine.online_until[i] > t),
            })
        return out

    # --- state -----------------------------------------------------------------------------

    def _set(self, key: str, state: dict[str, Any]) -> None:
        self.states[key] = state
        self._changed[key] = json.dumps(state, sort_keys=True)

    def _commit(self, t: int) -> None:
        if not self._changed and not self._events:
            return
        events, self._events = self._events, []
        changed, self._changed = self._changed, {}
        changed["$watermark"] = str(t - 1)  # other contracts sample at this same instant after us
        self.on_change(events, changed)

    def _point(self, kind: str, contract: str, street: str, kpi: str, value: Fraction | None,
               threshold: Decimal, t: int) -> str | None:
        state = self.states.get(f"{kind}:{contract}:{street}:{kpi}", {"state": "ok"})["state"]
        fields: dict[str, Any] = {"firing": int(state in ("firing", "resolving")), "threshold": float(threshold)}
        if value is not None:
            fields["value"] = float(value)
        return line("alert", {"contract": contract, "street": street, "kpi": kpi, "kind": kind}, fields, t)
