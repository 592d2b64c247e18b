"""Loss in transit: how many heartbeats never reached the collector, per contract × street.

The engine counts, from the gaps in each device's ``seq`` (rules/README.md "Loss in
transit"), ``lost`` messages when a gap opens and ``recovered`` when a late message fills one;
lost − recovered is what never arrived. This module turns those counts into what the operator
needs to tell a lossy pipe from a silent device:

* :class:`LossWindow` — the loss rate over a trailing window of receive time, per contract ×
  street and for the district: net lost / (heartbeats received + net lost);
* :class:`LossPoints` — the InfluxDB measurement ``loss`` at every sample instant (tags
  ``contract``, ``street``, ``street=district`` for the contract's total; month-to-date fields
  ``lost``, ``recovered``, ``missing`` = lost − recovered, ``heartbeats``; ``rate`` over the
  window when the window saw a message) and ``broker`` (the broker's ``$SYS`` statistics);
* :class:`LossAlerts` — alerts when a street's or the whole broker's loss rate passes the
  ``[loss]`` level, and when the broker reports dropped messages (naming the setting to raise).

A heartbeat lost in transit is still a missed heartbeat for the contract: the online rate sees
only heartbeats received. These numbers change no KPI; they say where missing heartbeats went.

Alerting is being reworked elsewhere; this module only decides *when* (firing / resolved) and
hands :class:`LossAlert` events to one callback — the hook collect.py marks ``HOOK(loss alerts)``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .brokerstats import QUEUE_SETTINGS, BrokerSnapshot
from .config import LossConfig
from .engine import Engine
from .live import MonthTallies
from .sinks.lineproto import line, series_prefix
from .timebase import US_PER_S, format_instant

log = logging.getLogger(__name__)

DISTRICT = "district"
RESOLVE_FACTOR = 0.8  # a firing loss alert resolves once the rate is at or below this share of its level


Rates = dict[tuple[str, str], tuple[float | None, int, int]]  # (contract, street) → (rate, net lost, messages)


class LossWindow:
    """Net lost messages and heartbeats over the trailing ``window`` of receive time, per group.

    A count listener of the engine (each tick slot's counts arrive in time order) and an engine
    listener: at every sample instant ``t`` it takes the rates over ``(t − window, t]`` into
    :attr:`latest`, which other threads (the /metrics server) may read.
    """

    def __init__(self, engine: Engine, window_s: int) -> None:
        self.engine = engine
        self.window = window_s * US_PER_S
        self.n_groups = engine.n_groups
        self.slots: deque[tuple[int, np.ndarray, np.ndarray]] = deque()  # (slot start, net lost, heartbeats)
        self.latest: Rates = {}
        self.latest_t: int | None = None
        engine.count_listeners.append(self)
        engine.listeners.append(self)

    def on_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        if t != self.latest_t:
            self.latest, self.latest_t = self.rates(t), t

    def on_deltas(self, slot_start: int, sums: np.ndarray) -> None:
        pass

    def on_first_seen(self, day: int, counts: np.ndarray) -> None:
        pass

    def on_counts(self, slot_start: int, counts: dict[str, np.ndarray], unknown: dict[str, int]) -> None:
        zero = np.zeros(self.n_groups + 1, dtype=np.int64)  # counts have a last entry for no device
        net = counts.get("lost", zero)[:-1] - counts.get("recovered", zero)[:-1]
        heard = counts.get("heartbeats", zero)[:-1]
        if self.slots and self.slots[-1][0] == slot_start:
            _, old_net, old_heard = self.slots[-1]
            self.slots[-1] = (slot_start, old_net + net, old_heard + heard)
        else:
            self.slots.append((slot_start, net.copy(), heard.copy()))

    def sums(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(net lost, heartbeats) per group over ``(t − window, t]``."""
        while self.slots and self.slots[0][0] <= t - self.window:
            self.slots.popleft()
        net = np.zeros(self.n_groups, dtype=np.int64)
        heard = np.zeros(self.n_groups, dtype=np.int64)
        for start, slot_net, slot_heard in self.slots:
            if start <= t:
                net += slot_net
                heard += slot_heard
        return net, heard

    def rates(self, t: int) -> Rates:
        """(rate, net lost, messages) per (contract, street) and (contract, district) and
        (``district``, ``district``) for everything; rate None when no message was in the window."""
        net, heard = self.sums(t)
        rules = self.engine.registry.rules
        streets = rules.street_codes()
        n_streets = len(streets)
        out: Rates = {}

        def put(key: tuple[str, str], lost: int, received: int) -> None:
            messages = max(lost, 0) + received
            out[key] = (max(lost, 0) / messages if messages else None, lost, messages)

        for ci, contract in enumerate(rules.contracts):
            for si, street in enumerate(streets):
                g = ci * n_streets + si
                put((contract.code, street), int(net[g]), int(heard[g]))
            groups = slice(ci * n_streets, (ci + 1) * n_streets)
            put((contract.code, DISTRICT), int(net[groups].sum()), int(heard[groups].sum()))
        put((DISTRICT, DISTRICT), int(net.sum()), int(heard.sum()))
        return out


@dataclass(frozen=True)
class LossAlert:
    """A loss alert firing or resolved. ``kind``: ``street_loss`` (a contract × street),
    ``broker_loss`` (the whole district) or ``broker_drops`` (the broker's own count)."""

    kind: str
    event: str  # "firing" or "resolved"
    t: int  # µs
    contract: str = ""
    street: str = ""
    rate: float | None = None
    lost: int = 0  # net lost in the window; for broker_drops, messages the broker dropped
    messages: int = 0  # received + lost in the window
    level: float = 0.0

    def text(self) -> str:
        """One line for the log and the email subject and body."""
        at = format_instant(self.t)
        if self.kind == "broker_drops":
            if self.event == "resolved":
                return f"{at} 代理不再丢弃消息 (broker drops stopped)"
            return (f"{at} MQTT 代理丢弃了 {self.lost} 条消息 (broker dropped {self.lost} messages: a client's queue was "
                    f"full). Raise {QUEUE_SETTINGS} in mosquitto.conf (0 = no count limit, bound memory with "
                    "max_queued_bytes) and check that the collector keeps up.")
        where = "全区 (district)" if self.kind == "broker_loss" else f"{self.contract} {self.street}"
        rate = "—" if self.rate is None else f"{self.rate:.2%}"
        if self.event == "resolved":
            return f"{at} {where} 传输丢失已恢复 (loss in transit back to {rate})"
        return (f"{at} {where} 传输丢失率 {rate} > {self.level:.2%} (loss in transit: {self.lost} of {self.messages} "
                "messages in the window never arrived). Lost heartbeats still count as missed for the contract; "
                "the devices are sending, the pipe (network, gateway, broker queue) is losing them.")


class LossAlerts:
    """Decides when loss alerts fire and resolve; evaluated at each sample instant and broker update."""

    def __init__(self, window: LossWindow, config: LossConfig, on_alert: Callable[[list[LossAlert]], None]) -> None:
        self.window = window
        self.config = config
        self.on_alert = on_alert
        self.firing: dict[tuple[str, str, str], LossAlert] = {}  # (kind, contract, street) → the firing alert
        self._evaluated: int | None = None
        self._dropped = 0
        self._dropped_at: int | None = None  # when the broker's drop count last grew
        window.engine.listeners.append(self)

    def on_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        if t != self._evaluated:
            self._evaluated = t
            self.evaluate(t)

    def on_deltas(self, slot_start: int, sums: np.ndarray) -> None:
        pass

    def on_first_seen(self, day: int, counts: np.ndarray) -> None:
        pass

    def evaluate(self, t: int) -> None:
        events = []
        for (contract, street), (rate, lost, messages) in self.window.latest.items():
            if street == DISTRICT and contract != DISTRICT:
                continue  # a contract's total: shown, not alerted (the streets and the broker are)
            broker = contract == DISTRICT
            kind = "broker_loss" if broker else "street_loss"
            level = self.config.broker_rate if broker else self.config.street_rate
            key = (kind, "" if broker else contract, "" if broker else street)
            alert = LossAlert(kind, "firing", t, key[1], key[2], rate, lost, messages, level)
            if key not in self.firing:
                if rate is not None and rate > level and messages >= self.config.min_messages:
                    self.firing[key] = alert
                    events.append(alert)
            elif rate is None or rate <= level * RESOLVE_FACTOR:
                del self.firing[key]
                events.append(LossAlert(kind, "resolved", t, key[1], key[2], rate, lost, messages, level))
        self._emit(events)

    def on_broker(self, snapshot: BrokerSnapshot, t: int) -> None:
        """The broker's statistics at ``t`` (µs): a drop count that grew fires, none for a window resolves."""
        if not self.config.broker_drops:
            return
        key = ("broker_drops", "", "")
        grown = snapshot.dropped_seen - self._dropped
        if grown > 0:
            self._dropped, self._dropped_at = snapshot.dropped_seen, t
            alert = LossAlert("broker_drops", "firing", t, lost=grown)
            if key not in self.firing:
                self.firing[key] = alert
                self._emit([alert])
        elif key in self.firing and self._dropped_at is not None and t - self._dropped_at >= self.window.window:
            del self.firing[key]
            self._emit([LossAlert("broker_drops", "resolved", t)])

    def _emit(self, events: list[LossAlert]) -> None:
        if events:
            self.on_alert(events)


class LossPoints:
    """InfluxDB points ``loss`` at every sample instant and ``broker`` when asked (see the module doc)."""

    def __init__(self, months: MonthTallies, window: LossWindow, emit: Callable[[list[str]], None]) -> None:
        self.months = months
        self.window = window
        self.emit = emit
        rules = months.engine.registry.rules
        self.contracts = [c.code for c in rules.contracts]
        self.streets = rules.street_codes()
        self.prefix = {(c, s): series_prefix("loss", {"contract": c, "street": s})
                       for c in self.contracts for s in [*self.streets, DISTRICT]}
        months.engine.listeners.append(self)

    def on_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        tally = self.months.for_instant(t)
        code, n = self.contracts[contract], len(self.streets)
        groups = slice(contract * n, (contract + 1) * n)
        zero = np.zeros(len(self.streets) * len(self.contracts) + 1, dtype=np.int64)
        month = {kind: tally.counts.get(kind, zero)[groups] for kind in ("lost", "recovered", "heartbeats")}
        rates = self.window.latest
        lines = []
        for si, street in enumerate([*self.streets, DISTRICT]):
            pick = slice(None) if street == DISTRICT else slice(si, si + 1)
            lost, recovered, heard = (int(month[k][pick].sum()) for k in ("lost", "recovered", "heartbeats"))
            rate = rates[(code, street)][0]
            fields = f"lost={lost}i,recovered={recovered}i,missing={lost - recovered}i,heartbeats={heard}i"
            lines.append(f"{self.prefix[code, street]}{fields}{'' if rate is None else f',rate={rate!r}'} {t}")
        self.emit(lines)

    def on_deltas(self, slot_start: int, sums: np.ndarray) -> None:
        pass

    def on_first_seen(self, day: int, counts: np.ndarray) -> None:
        pass


def broker_lines(snapshot: BrokerSnapshot, t_us: int, *, instance: str = "") -> list[str]:
    """The ``broker`` point: the broker's last ``$SYS`` values and ``dropped_seen``; none before any arrived."""
    if not snapshot.updated:
        return []
    fields = {**snapshot.values, "dropped_seen": snapshot.dropped_seen}
    text = line("broker", {"instance": instance} if instance else {}, fields, t_us)
    return [text] if text is not None else []
