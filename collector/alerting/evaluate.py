"""Alerts evaluated on the engine's samples: causes, breaches, month at risk, incidents, digest.

An engine listener registered after the month tallies and the ledger writer. Every instant is
engine time (the receive times of the messages), so a replay, a simulation at speed and the
live collector raise the same alerts at the same instants. At each sample instant:

1. :class:`~ptmon.alerting.observe.Observations` takes the street counts it needs (always,
   also while the archive tail is replayed after a restart);
2. after the ``watermark`` (the last instant evaluated before a restart), every alert's state
   machine steps (:mod:`~ptmon.alerting.machine`): district silence (pipeline), street
   silences, gateways, breaches per street × KPI, the broker's drops and loss in transit
   (:mod:`~ptmon.alerting.transit`), the month at risk on whole hours;
3. the alerts become incidents per recipient, inhibited by their causes and grouped
   (:mod:`~ptmon.alerting.group`), and the emails owed now become :class:`Notification`\\ s;
4. the daily digest is owed once a day after its hour;
5. every change, with the emails, goes to ``on_change`` (the ledger stores them in one
   transaction): the evaluator keeps no state the ledger does not have.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ..anomaly.monitor import AnomalyMonitor
from ..brokerstats import BrokerSnapshot
from ..config import LossConfig
from ..engine import Engine
from ..live import MonthTallies, SlaPoints, month_of
from ..loss import LossWindow
from ..results import Results
from ..sinks.lineproto import line
from ..timebase import US_PER_S, UTC_OFFSET_US, day_of, day_start, day_to_date
from . import details as dv
from .book import AlertBook
from .group import Causes, plan
from .machine import breach_step, condition_step
from .model import AlertKey, AlertState, AlertView, Cause, Notice, Notification, Notified
from .observe import Observations, Quiet, WindowRate
from .risk import RECENT_WINDOW, MonthRisk, month_risks, recent_levels
from .rules import AlertRule, AlertRules
from .transit import TRANSIT_CAUSES, TransitAlerts

LAST_WILL_GRACE = 120  # seconds: Last Wills this close before a monitoring gap are the broker's shutdown
log = logging.getLogger(__name__)

OnChange = Callable[[list[Notification], dict[str, str | None]], None]
MonthToDate = Callable[[int, int], Results | None]  # the ledger's KPIs of [start, end)
DataQuality = Callable[[], dict[str, int]]  # cumulative reject, duplicate and stale counts


@dataclass(frozen=True, kw_only=True)
class DigestRequest:
    """A daily digest owed: the collector fills it from the ledger."""

    day: int  # the Shanghai day it reports (yesterday)
    at: int
    street: str  # "" for the whole district
    since: int | None  # the previous digest: data-quality counts are those since
    quality: dict[str, int]
    open: tuple[AlertView, ...]


class AlertEvaluator:
    def __init__(self, engine: Engine, months: MonthTallies, sla: SlaPoints, rules: AlertRules, *,
                 on_change: OnChange, emit_points: Callable[[list[str]], None] | None = None,
                 states: dict[str, str] | None = None, month_to_date: MonthToDate | None = None,
                 data_quality: DataQuality | None = None, restored: dict[str, Any] | None = None,
                 loss_window: LossWindow | None = None, loss: LossConfig | None = None,
                 device_health: AnomalyMonitor | None = None) -> None:
        self.engine = engine
        self.months = months
        self.sla = sla
        self.alert_rules = rules
        self.on_change = on_change
        self.emit_points = emit_points
        self.month_to_date = month_to_date
        self.data_quality = data_quality
        self.device_health = device_health  # open anomalies become device alerts (cause "device")
        registry = engine.registry
        self.streets = registry.rules.street_codes()
        self.contracts = [c.code for c in registry.rules.contracts]
        self.by_contract: dict[int, list[AlertRule]] = {}
        for r in rules.rules:
            self.by_contract.setdefault(self.contracts.index(r.contract), []).append(r)
        self.observations = Observations(engine, rules)
        self.restored = bool(restored) and self.observations.restore(restored or {})
        self.book = AlertBook(states)
        self.gateway_place = self._gateway_places()
        adopted = self.book.adopt_legacy(rules, lambda g: self.gateway_place.get(g))
        if adopted:
            log.info("%d alert states of an earlier version adopted", adopted)
        self.transit = (TransitAlerts(engine, months, loss_window, loss, self.book)
                        if loss_window is not None and loss is not None and loss.enabled else None)
        if self.transit is None:  # loss alerts turned off: those of an earlier run end (resolved if sent)
            for key in [k for k in self.book.alerts if k.cause in TRANSIT_CAUSES]:
                self.book.set_alert(key, None)
        self.explained: dict[AlertKey, AlertKey] = {}
        self.risks: dict[AlertKey, MonthRisk] = {}
        self._notifications: list[Notification] = []
        engine.listeners.append(self)
        engine.device_listeners.append(self)

    @property
    def watermark(self) -> int:
        return self.book.watermark

    def _gateway_places(self) -> dict[str, tuple[str, str]]:
        registry = self.engine.registry
        first: dict[int, int] = {}
        for row, g in enumerate(registry.gateway.tolist()):
            first.setdefault(g, row)
        return {registry.gateways[g]: (self.contracts[int(registry.contract[row])],
                                       self.streets[int(registry.street[row])]) for g, row in first.items()}

    # --- engine listener -------------------------------------------------------------------

    def on_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        pass  # evaluated in on_device_sample, which the engine calls after every on_sample

    def on_deltas(self, slot_start: int, sums: np.ndarray) -> None:
        self.observations.on_deltas(slot_start, sums)

    def on_first_seen(self, day: int, counts: np.ndarray) -> None:
        pass

    def on_device_sample(self, contract: int, t: int, online_mask: np.ndarray, expected_mask: np.ndarray) -> None:
        obs = self.observations
        obs.sample(contract, t, online_mask, expected_mask)
        for si in range(len(self.streets)):
            holds, quiet = self._street_silent(contract, si, t)
            obs.mark(obs.street_spans.setdefault((contract, si), []), holds, quiet, t)
        last = self._last_contract(t) == contract
        if last:
            obs.mark(obs.district_spans, self._district_silent(t), obs.district_quiet, t)
        if t <= self.book.watermark:
            return  # evaluated before a restart: the windows refill, nothing is sent again
        points = self._contract(contract, t)
        if last:
            self._instant(t)
        if self.emit_points is not None and points:
            self.emit_points([p for p in points if p])

    def _last_contract(self, t: int) -> int:
        due = [ci for ci, interval in enumerate(self.engine.sample_interval) if (t + UTC_OFFSET_US) % interval == 0]
        return max(due)

    def on_broker(self, snapshot: BrokerSnapshot, t: int) -> None:
        """The broker's ``$SYS`` statistics as the collector's main loop last read them (live only)."""
        if self.transit is not None:
            self.transit.on_broker(snapshot, t)

    def checkpoint_doc(self) -> dict[str, Any]:
        """The windows to save with the collector's checkpoint (see Observations.restore)."""
        return self.observations.doc()

    def checkpoint_states(self) -> dict[str, str | None]:
        """The watermark to persist with a checkpoint: evaluation up to here is done."""
        return self.book.take(max(self.book.watermark, self.engine.next_tick - 1))

    # --- per contract ----------------------------------------------------------------------

    def _contract(self, ci: int, t: int) -> list[str]:
        points = []
        for rule in self.by_contract.get(ci, []):
            for si, street in enumerate(self.streets):
                rate = self._rule_rate(ci, si, rule, t)
                key = AlertKey(cause=Cause.BREACH, contract=rule.contract, street=street, kpi=rule.kpi)
                value = rate.value if rate is not None else None
                below = None if value is None else value < rule.threshold
                recovered = value is not None and value >= rule.threshold + rule.hysteresis
                state = breach_step(self.book.alerts.get(key), key, rule, below=below, recovered=recovered, t=t)
                self.book.set_alert(key, state)
                if self.emit_points is not None:
                    points.append(self._point(key, state, value, rule, t))
        for si, street in enumerate(self.streets):
            holds, quiet = self._street_silent(ci, si, t)
            key = AlertKey(cause=Cause.STREET_SILENT, contract=self.contracts[ci], street=street)
            self._silence(key, holds, quiet, t)
        return points

    def _silence(self, key: AlertKey, holds: bool, quiet: Quiet | None, t: int) -> None:
        """A silence ends when a device is heard again, not when a restart makes it look short."""
        state = self.book.alerts.get(key)
        if state is not None and not holds and quiet is not None and quiet.devices and quiet.last_heard <= state.since:
            holds = True
        since = quiet.since if quiet is not None else t
        self.book.set_alert(key, condition_step(state, key, holds=holds, since=since, t=t))

    def _rule_rate(self, ci: int, si: int, rule: AlertRule, t: int) -> WindowRate | None:
        obs = self.observations
        rate = (obs.online_rate(ci, si, rule.window, t) if rule.kpi == "online"
                else obs.success_rate(ci, si, rule.kpi, rule.window, t))
        if rate is None or rate.coverage < self.alert_rules.min_coverage:
            return None
        return rate

    def _street_silent(self, ci: int, si: int, t: int) -> tuple[bool, Quiet]:
        """Every reporting device of the street × contract (behind a live gateway) silent."""
        quiet = self.observations.street_quiet[ci, si]
        rule = self.alert_rules.street_silent
        holds = quiet.devices > 0 and quiet.due >= rule.min_messages and t - quiet.since >= rule.for_ * US_PER_S
        return holds, quiet

    def _district_silent(self, t: int) -> bool:
        """No device of the district heard for pipeline.for though many heartbeats were due."""
        quiet = self.observations.district_quiet
        rule = self.alert_rules.pipeline
        return (quiet is not None and quiet.devices > 0 and quiet.due >= rule.min_messages
                and t - quiet.since >= rule.for_ * US_PER_S)

    # --- per instant -----------------------------------------------------------------------

    def _instant(self, t: int) -> None:
        self._silence(AlertKey(cause=Cause.PIPELINE), self._district_silent(t), self.observations.district_quiet, t)
        self._monitor_gap(t)
        self._gateways(t)
        self._devices(t)
        if self.transit is not None:
            self.explained = self.transit.evaluate(t)
        self._month_risk(t)
        self._group(t)
        self._digest(t)
        self._commit(t)

    def last_gap(self) -> tuple[int, int | None] | None:
        """The monitoring gap now (last instant seen, None) or before the monitor last resumed
        (last instant seen, resumed at)."""
        spans, engine = self.engine.spans, self.engine
        if not engine.up and engine.down_at is not None:
            return engine.down_at, None
        return (spans[-2][1], spans[-1][0]) if len(spans) >= 2 else None

    def monitor_down(self, t: int) -> None:
        """The collector's main loop while the monitor cannot see (the broker connection down), on
        its own clock: no sample instant fires then, so the monitoring-gap incident is stepped and
        emailed from here, during the outage rather than after it."""
        engine = self.engine
        if engine.up or engine.down_at is None or t <= self.book.watermark:
            return
        key = AlertKey(cause=Cause.MONITOR_GAP)
        if t - engine.down_at >= self.alert_rules.monitor_gap_for * US_PER_S:
            self.book.set_alert(key, condition_step(self.book.alerts.get(key), key, holds=True, since=engine.down_at, t=t))
        elif key not in self.book.alerts:
            return
        self._group(t)
        self._commit(t)

    def _monitor_gap(self, t: int) -> None:
        """A monitoring gap of at least ``monitor_gap.for`` (the collector down, the broker
        unreachable) is one district incident from the gap's start. Nothing is evaluated while the
        monitor cannot see, so it fires when the monitor resumes, and is over once the monitor has
        watched ``monitor_gap.for`` again (then its resolved email)."""
        key = AlertKey(cause=Cause.MONITOR_GAP)
        need = self.alert_rules.monitor_gap_for * US_PER_S
        gap = self.last_gap()
        holds = gap is not None and gap[1] is not None and gap[1] - gap[0] >= need and t - gap[1] < need
        self.book.set_alert(key, condition_step(self.book.alerts.get(key), key, holds=holds,
                                                since=gap[0] if gap is not None else t, t=t))

    def _gateways(self, t: int) -> None:
        engine, registry = self.engine, self.engine.registry
        due = self.alert_rules.gateway_for * US_PER_S
        # Only gateways serving a device here: in a partition, another partition's gateway is its owner's
        # to alert on (a state an earlier version took from its status, restored, resolves here).
        down = {name: int(engine.gateway_since[g]) for g in np.flatnonzero(~engine.gateway_online)
                if (name := registry.gateways[int(g)]) in self.gateway_place}
        known = {k.gateway for k in self.book.alerts if k.cause is Cause.GATEWAY}
        for gateway in sorted(set(down) | known):
            contract, street = self.gateway_place.get(gateway, ("", ""))
            key = AlertKey(cause=Cause.GATEWAY, contract=contract, street=street, gateway=gateway)
            since = down.get(gateway)
            state = self.book.alerts.get(key)
            holds = since is not None and self._observed_offline(since, t) >= due
            if state is not None and since is None and gateway in self.gateway_place:
                # Back only once its "online" status is seen: after a start without a checkpoint the
                # engine has heard nothing yet (the retained Last Will may still be on its way).
                holds = int(engine.gateway_since[registry.gateways.index(gateway)]) < state.since
            self.book.set_alert(key, condition_step(state, key, holds=holds, since=since or t, t=t))

    def _observed_offline(self, since: int, t: int) -> int:
        """How long a gateway offline since ``since`` was seen so by the monitor: the time of a
        monitoring gap does not count, and a Last Will that came within ``LAST_WILL_GRACE`` before a
        gap began counts from the gap's end (a broker shutting down publishes every client's Last
        Will, seconds before the collector loses it)."""
        grace = LAST_WILL_GRACE * US_PER_S
        spans = self.engine.spans
        counted = 0
        for i in range(len(spans) - 1, -1, -1):
            start, end = spans[i][0], (t if i == len(spans) - 1 else spans[i][1])
            if end < since:
                break
            if i < len(spans) - 1 and end - grace <= since:
                break  # the Last Will came with the gap's start: only what follows the gap counts
            counted += max(0, end - max(start, since))
        return counted

    def _devices(self, t: int) -> None:
        """An anomaly open for ``devices.for`` is an alert of its device; it resolves when the anomaly clears."""
        rule, monitor = self.alert_rules.devices, self.device_health
        registry = self.engine.registry
        standing: dict[AlertKey, int] = {}
        if rule.enabled and monitor is not None:
            for (kind, row), opened in monitor.open.items():
                if kind in rule.kinds and t - opened.detected >= rule.for_ * US_PER_S:
                    key = AlertKey(cause=Cause.DEVICE, contract=self.contracts[int(registry.contract[row])],
                                   street=self.streets[int(registry.street[row])], kpi=kind, device=registry.ids[row])
                    standing[key] = opened.since
        known = [k for k in self.book.alerts if k.cause is Cause.DEVICE]
        for key in sorted(set(standing) | set(known)):
            self.book.set_alert(key, condition_step(self.book.alerts.get(key), key, holds=key in standing,
                                                    since=standing.get(key, t), t=t))

    def _month_risk(self, t: int) -> None:
        setting = self.alert_rules.month_risk
        start, end = month_of(t)
        if not setting.enabled or self.month_to_date is None or t == start or (t - start) % (setting.every * US_PER_S):
            return
        month = day_to_date(day_of(start)).strftime("%Y-%m")
        for key in [k for k in self.book.alerts if k.cause is Cause.MONTH_RISK and k.month != month]:
            self.book.set_alert(key, None)  # a month that has ended is no longer at risk
        so_far = self.month_to_date(start, t)
        if so_far is None:
            return
        expected = {(self.contracts[ci], street): dv.expected_now(self.engine, ci, si, t)
                    for ci in range(len(self.contracts)) for si, street in enumerate(self.streets)}
        last_day = self.month_to_date(t - RECENT_WINDOW * US_PER_S, t) if t - start >= RECENT_WINDOW * US_PER_S else None
        recent = recent_levels(last_day)
        causes = Causes.of(self.book.alerts)
        for risk in month_risks(so_far, self.engine.registry.rules, setting, as_of=t, month_end=end,
                                expected_now=expected, recent=recent):
            key = AlertKey(cause=Cause.MONTH_RISK, contract=risk.contract, street=risk.street, kpi=risk.kpi, month=month)
            self.risks[key] = risk
            if causes.inhibitor(key) is not None:
                continue  # a wider cause covers the street: its dip says nothing new about the month
            self.book.set_alert(key, condition_step(self.book.alerts.get(key), key, holds=risk.level > 0, since=t, t=t,
                                                    level=risk.level))

    def _group(self, t: int) -> None:
        changed, owed = plan(self.book.alerts, self.book.groups, self.alert_rules, t, self.explained)
        for gk, state in changed.items():
            self.book.set_group(gk, state)
        views: dict[AlertKey, AlertView] = {}
        for p in owed:
            firing = tuple(self._view(n, t, views) for n in p.firing)
            resolved = tuple(self._view(n, t, views, resolved=True) for n in p.resolved)
            every = [*p.firing, *p.resolved]
            self._notifications.append(Notification(
                recipient=p.group.recipient, group=p.group, notice=p.notice, at=t, opened=p.state.opened,
                first_seen=min((n.since for n in every), default=p.state.opened), last_change=p.state.changed,
                seq=p.state.sent, firing=firing, resolved=resolved))

    def _digest(self, t: int) -> None:
        setting = self.alert_rules.digest
        today = day_of(t)
        if not setting.enabled:
            return
        due = t >= day_start(today) + setting.at * US_PER_S
        if "day" not in self.book.digest:
            # The first digest is the first one due after alerting began: none was owed before.
            self.book.set_digest({"day": today - 1 if due else today - 2, "at": t,
                                  "counts": dict(self.data_quality()) if self.data_quality is not None else {}})
            return
        if not due or self.book.digest["day"] >= today - 1:
            return
        quality = dict(self.data_quality()) if self.data_quality is not None else {}
        before = self.book.digest.get("counts", {})
        since = {k: v - before.get(k, 0) if v >= before.get(k, 0) else v for k, v in quality.items()}
        views: dict[AlertKey, AlertView] = {}
        open_alerts = tuple(self._view(Notified.of(s), t, views)
                            for s in sorted(self.book.alerts.values(), key=lambda s: s.key) if s.phase.active)
        for recipient, street in self.alert_rules.digest_recipients():
            mine = tuple(v for v in open_alerts if not street or v.key.street == street)
            request = DigestRequest(day=today - 1, at=t, street=street, since=self.book.digest.get("at"),
                                    quality=since, open=mine)
            self._notifications.append(Notification(recipient=recipient, notice=Notice.DIGEST, at=t, digest=request))
        self.book.set_digest({"day": today - 1, "at": t, "counts": quality})

    def _commit(self, t: int) -> None:
        if not self.book.dirty and not self._notifications:
            return
        notifications, self._notifications = self._notifications, []
        self.on_change(notifications, self.book.take(t))

    # --- what an email shows ---------------------------------------------------------------

    def _view(self, n: Notified, t: int, cache: dict[AlertKey, AlertView], *, resolved: bool = False) -> AlertView:
        if n.key in cache and not resolved:
            return cache[n.key]
        state = self.book.alerts.get(n.key)
        causes = Causes.of(self.book.alerts, self.explained)
        details = {"inhibited_by": causes.inhibitor(n.key)} if resolved else self._details(n.key, t, causes)
        if resolved and n.key.cause in TRANSIT_CAUSES and self.transit is not None:
            details.update(self.transit.details(n.key, t))  # the window as it is now
        view = AlertView(key=n.key, phase=state.phase if state is not None else None, since=n.since,
                         fired=state.fired if state is not None else None, level=n.level, details=details)
        if not resolved:
            cache[n.key] = view
        return view

    def _details(self, key: AlertKey, t: int, causes: Causes) -> dict[str, Any]:
        engine, obs = self.engine, self.observations
        d: dict[str, Any] = {"inhibited_by": causes.inhibitor(key)}
        if key.cause in (Cause.PIPELINE, Cause.STREET_SILENT, Cause.GATEWAY, Cause.BROKER_DROPS):
            explained = [k for k in self.book.alerts if self.book.alerts[k].phase.active and causes.inhibitor(k) == key]
            d["explains"] = sorted(explained)
        if key.cause in TRANSIT_CAUSES and self.transit is not None:
            d.update(self.transit.details(key, t))
        if key.cause is Cause.PIPELINE and obs.district_quiet is not None:
            q = obs.district_quiet
            d.update(last_heard=q.last_heard, due=q.due, devices=q.devices)
        elif key.cause is Cause.STREET_SILENT:
            ci, si = self.contracts.index(key.contract), self.streets.index(key.street)
            q = obs.street_quiet[ci, si]
            d.update(last_heard=q.last_heard, due=q.due, devices=q.devices, table=dv.silent_devices(engine, ci, si, t))
        elif key.cause is Cause.GATEWAY:
            registry = engine.registry
            g = registry.gateways.index(key.gateway) if key.gateway in registry.gateways else -1
            rows = np.flatnonzero(registry.gateway == g) if g >= 0 else np.zeros(0, dtype=np.int64)
            d.update(table=dv.device_rows(engine, rows, t), online=bool(g >= 0 and engine.gateway_online[g]))
        elif key.cause is Cause.BREACH:
            d.update(self._breach_details(key, t))
        elif key.cause is Cause.MONTH_RISK:
            d["risk"] = self.risks.get(key)
        elif key.cause is Cause.MONITOR_GAP:
            d["gap"] = self.last_gap()
        elif key.cause is Cause.DEVICE:
            d.update(dv.anomaly_details(self.engine, self.device_health, key))
        return d

    def _breach_details(self, key: AlertKey, t: int) -> dict[str, Any]:
        ci, si = self.contracts.index(key.contract), self.streets.index(key.street)
        rule = next(r for r in self.by_contract[ci] if r.kpi == key.kpi)
        rate = self._rule_rate(ci, si, rule, t)
        d: dict[str, Any] = {"window": rule.window, "threshold": rule.threshold, "rate": rate,
                             "month": self._month_value(key)}
        if key.kpi == "online":
            d["table"] = dv.offline_devices(self.engine, ci, si, t, exclude_dead_gateways=True)
        else:
            d["window_from"], d["table"] = dv.worst_success(self.engine, self.observations, ci, si, key.kpi, rule.window, t)
        return d

    def _month_value(self, key: AlertKey) -> Fraction | None:
        results = self.sla.latest
        if results is None:
            return None
        try:
            return results.row(key.contract, key.street, key.kpi).value
        except StopIteration:
            return None

    def _point(self, key: AlertKey, state: AlertState | None, value: Fraction | None, rule: AlertRule, t: int) -> str:
        fields: dict[str, Any] = {"firing": int(state is not None and state.phase.active), "threshold": float(rule.threshold)}
        if value is not None:
            fields["value"] = float(value)
        return line("alert", {"contract": key.contract, "street": key.street, "kpi": key.kpi, "kind": key.cause.value},
                    fields, t) or ""

