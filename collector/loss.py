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
* the alerts (a street's or the whole broker's loss rate above the ``[loss]`` level, the broker
  reporting dropped messages) are the alert framework's causes ``loss`` and ``broker_drops``
  (:mod:`~ptmon.alerting.transit`), grouped, inhibited and emailed like the others.

A heartbeat lost in transit is still a missed heartbeat for the contract: the online rate sees
only heartbeats received. These numbers change no KPI; they say where missing heartbeats went.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import numpy as np

from .brokerstats import BrokerSnapshot
from .engine import Engine
from .live import MonthTallies
from .sinks.lineproto import line, series_prefix
from .timebase import US_PER_S

log = logging.getLogger(__name__)

DISTRICT = "district"


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
        # Seq gaps spanning a monitoring gap were sent while the monitor could not receive: the
        # gap's (or the broker's drops over it), not the pipe's, so not loss in transit here.
        lost = counts.get("lost", zero)[:-1] - counts.get("lost_across_gap", zero)[:-1]
        net = lost - counts.get("recovered", zero)[:-1]
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
