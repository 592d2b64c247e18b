"""Loss in transit as alerts of the framework: a street's or the district's loss rate, the broker's drops.

Two causes, decided at every evaluated sample instant (rules/README.md "alerts.yaml"):

* ``loss`` — per street × contract, and for the whole district (the key without a street:
  everything through the broker). Over the trailing ``[loss] window`` of receive time
  (:class:`~ptmon.loss.LossWindow`), rate = net lost / (received + net lost), net lost being
  lost − recovered. Fires when the rate passes ``street_rate`` (``broker_rate`` for the
  district) over at least ``min_messages``; ok again at or below :data:`RESOLVE_FACTOR` of
  the level, or when the window holds no message.
* ``broker_drops`` — the broker's ``$SYS/broker/publish/messages/dropped`` grew: fires at once,
  ok once a whole window has passed without growth. Its email names the settings to raise.

What a window can be trusted with:

* **A monitoring gap.** Messages sent while the monitor could not see are counted lost when
  the devices are heard again (for a sensor, up to its heartbeat period after the gap): that
  is the gap's, not the pipe's. The engine counts such seq gaps (the device's previous
  heartbeat before the monitor last resumed) also as ``lost_across_gap``, and the loss window
  leaves them out, whenever they arrive. No window is judged until the monitor has watched a
  whole window since it last resumed; a firing alert holds meanwhile, so a restart neither
  resolves nor re-sends it.
* **A cause that explains it** inhibits a loss alert while that cause fires and for one window
  after it ended (the window still holds the gaps it left): the broker's drops and the
  district silence (``pipeline``) explain every loss; a street × contract silence or a dead
  gateway of the street explains that street's loss, and that street × contract is left out of
  the district's rate meanwhile. The district's own loss alert explains a street's while it
  fires and the loss is spread over the district (over half of the street × contracts that heard
  anything lose at least :data:`SPREAD` of their level: the uplink or the broker, nothing a
  street contact can act on), unless the street loses more than
  :data:`ALIKE` times the district's rate. An online breach explains nothing: a lossy pipe is a reason
  devices look offline, and the operator must see it.

Restart-safe: the states are the book's, and what must be remembered beside them (the broker's
count last accounted for, the drop incident's total, when explaining causes ended) is the
book's ``$transit`` row, committed in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..brokerstats import BrokerSnapshot
from ..config import LossConfig
from ..engine import Engine
from ..live import MonthTallies
from ..loss import LossWindow
from ..timebase import US_PER_S
from .book import AlertBook
from .machine import condition_step, level_step
from .model import AlertKey, Cause

RESOLVE_FACTOR = 0.8  # a firing loss alert is ok again at or below this share of its level
SPREAD = 0.5  # a district-wide loss: most streets lose at least this share of their level ...
ALIKE = 2  # ... and in a district-wide loss, a street losing up to this many times the district's rate loses alike
EXPLAINERS = (Cause.PIPELINE, Cause.BROKER_DROPS, Cause.STREET_SILENT, Cause.GATEWAY)
TRANSIT_CAUSES = (Cause.LOSS, Cause.BROKER_DROPS)
DROPS = AlertKey(cause=Cause.BROKER_DROPS)
DISTRICT_LOSS = AlertKey(cause=Cause.LOSS)


@dataclass(frozen=True, kw_only=True)
class LossReading:
    """A loss alert's window at one instant."""

    rate: float | None  # None: no message in the window
    lost: int  # net lost (lost − recovered)
    messages: int  # received + net lost
    level: float
    window: int  # seconds
    left_out: tuple[AlertKey, ...] = ()  # district: the silences whose street × contract is not counted

    @property
    def received(self) -> int:
        return self.messages - max(self.lost, 0)


def reading(lost: int, received: int, level: float, window: int, left_out: tuple[AlertKey, ...] = ()) -> LossReading:
    messages = max(lost, 0) + received
    return LossReading(rate=max(lost, 0) / messages if messages else None, lost=lost, messages=messages,
                       level=level, window=window, left_out=left_out)


class TransitAlerts:
    """The ``loss`` and ``broker_drops`` alerts, stepped on the book by the alert evaluator."""

    def __init__(self, engine: Engine, months: MonthTallies, window: LossWindow, config: LossConfig,
                 book: AlertBook) -> None:
        self.engine = engine
        self.months = months
        self.window = window
        self.config = config
        self.book = book
        rules = engine.registry.rules
        self.contracts = [c.code for c in rules.contracts]
        self.streets = rules.street_codes()
        self.readings: dict[AlertKey, LossReading] = {}
        self.explained: dict[AlertKey, AlertKey] = {}  # loss alert -> the cause that explains it now
        self.broker: BrokerSnapshot | None = None
        doc = book.transit
        self.counted: int | None = doc.get("counted")  # the broker's drop count last accounted for
        self.grew_at: int | None = doc.get("grew_at")  # when it last grew (µs)
        self.first_at: int | None = doc.get("first_at")  # the drop incident's first growth
        self.dropped = int(doc.get("dropped", 0))  # dropped in this incident
        self.ended = {AlertKey.from_doc(k): int(t) for k, t in doc.get("ended", [])}
        self.district_wide = {AlertKey.from_doc(k) for k in doc.get("district_wide", [])}  # loss alerts the district's explains
        self.active = self._explainers()

    @property
    def span(self) -> int:
        return self.config.window * US_PER_S

    # --- the broker, live -------------------------------------------------------------------

    def on_broker(self, snapshot: BrokerSnapshot, t: int) -> None:
        """The broker's ``$SYS`` values at ``t`` (µs, the collector's clock); judged at the next instant.

        The first count ever seen counts whole (drops since the broker started, which may be
        the collector's own queue while it was away); a lower count is a broker restart."""
        raw = snapshot.values.get("dropped_messages")
        if not self.config.broker_drops or raw is None:
            return
        self.broker = snapshot
        grown = raw if self.counted is None or raw < self.counted else raw - self.counted
        self.counted = raw
        if grown > 0:
            self.grew_at = t
            self.first_at = t if self.first_at is None else self.first_at
            self.dropped += grown
        self._save()

    # --- at each evaluated instant ----------------------------------------------------------

    def evaluate(self, t: int) -> dict[AlertKey, AlertKey]:
        """Step the drops and loss alerts at ``t``; returns each explained loss alert's cause."""
        self._drops(t)
        self._note_ended(t)
        causes = self.active | set(self.ended)
        district = next((k for k in (AlertKey(cause=Cause.PIPELINE), DROPS) if k in causes), None)
        by_street: dict[tuple[str, str], AlertKey] = {}
        for k in sorted(causes, key=lambda k: (k.cause is not Cause.STREET_SILENT, k)):  # a silence before a gateway
            if k.cause in (Cause.STREET_SILENT, Cause.GATEWAY):
                by_street.setdefault((k.contract, k.street), k)
        resume = self.engine.spans[-1][0] if self.engine.spans else t
        judged = t - resume >= self.span
        net, heard = self.window.sums(t)
        n = len(self.streets)
        places = [(ci, contract, si, street) for ci, contract in enumerate(self.contracts)
                  for si, street in enumerate(self.streets)]
        counted = np.array([(c, s) not in by_street for _, c, _, s in places], dtype=bool)
        self.readings, self.explained = {}, {}
        left_out = tuple(sorted(set(by_street.values())))
        whole = reading(int(net[counted].sum()), int(heard[counted].sum()), self.config.broker_rate,
                        self.config.window, left_out)
        self._step(DISTRICT_LOSS, whole, t, judged, district)
        streets = {(c, s): reading(int(net[ci * n + si]), int(heard[ci * n + si]), self.config.street_rate,
                                   self.config.window) for ci, c, si, s in places}
        widespread = self._widespread(whole, streets, counted, places)
        for _, contract, _, street in places:
            now = streets[contract, street]
            cause = district or by_street.get((contract, street))
            key = AlertKey(cause=Cause.LOSS, contract=contract, street=street)
            alike = widespread and now.rate is not None and now.rate <= ALIKE * (whole.rate or 0)
            if cause is None and (alike or key in self.district_wide):
                cause = DISTRICT_LOSS  # the district losing as a whole: the district's incident, not the street's
            self._step(key, now, t, judged, cause)
            state = self.book.alerts.get(key)
            # Part of the district's incident until it ends, though the district's alert may end first.
            if cause is DISTRICT_LOSS and state is not None and state.phase.active:
                self.district_wide.add(key)
            else:
                self.district_wide.discard(key)
        self._save()
        return self.explained

    def _widespread(self, whole: LossReading, streets: dict[tuple[str, str], LossReading], counted: np.ndarray,
                    places: list[tuple[int, str, int, str]]) -> bool:
        """The district's loss alert fires and most street × contracts that heard anything lose at
        least :data:`SPREAD` of their level: one cause upstream of the streets (the uplink, the
        broker), which their contacts cannot act on, rather than a few streets' own."""
        state = self.book.alerts.get(DISTRICT_LOSS)
        if state is None or not state.phase.active or whole.rate is None:
            return False
        heard = [streets[c, s] for (_, c, _, s), ok in zip(places, counted, strict=True) if ok and streets[c, s].messages]
        above = [r for r in heard if r.rate is not None and r.rate >= SPREAD * r.level]
        return bool(heard) and len(above) * 2 > len(heard)

    def _step(self, key: AlertKey, now: LossReading, t: int, judged: bool, cause: AlertKey | None) -> None:
        fires = now.rate is not None and now.rate > now.level and now.messages >= self.config.min_messages
        resolved = now.rate is None or now.rate <= now.level * RESOLVE_FACTOR
        self.book.set_alert(key, level_step(self.book.alerts.get(key), key, fires=fires if judged else None,
                                            resolved=resolved, t=t))
        self.readings[key] = now
        if cause is not None:
            self.explained[key] = cause

    def _drops(self, t: int) -> None:
        holds = self.config.broker_drops and self.grew_at is not None and self.dropped > 0 and t - self.grew_at < self.span
        state = condition_step(self.book.alerts.get(DROPS), DROPS, holds=holds, since=min(self.first_at or t, t), t=t)
        self.book.set_alert(DROPS, state)
        if state is None:
            self.first_at, self.dropped = None, 0

    def _explainers(self) -> set[AlertKey]:
        return {k for k, s in self.book.alerts.items() if k.cause in EXPLAINERS and s.phase.active}

    def _note_ended(self, t: int) -> None:
        """When explaining causes ended; forgotten a window later."""
        now = self._explainers()
        for key in self.active - now:
            self.ended[key] = t
        self.active = now
        self.ended = {k: end for k, end in self.ended.items() if k not in now and end > t - self.span}

    def _save(self) -> None:
        self.book.set_transit({"counted": self.counted, "grew_at": self.grew_at, "first_at": self.first_at,
                               "dropped": self.dropped, "ended": [[k.doc(), end] for k, end in sorted(self.ended.items())],
                               "district_wide": [k.doc() for k in sorted(self.district_wide)]})

    # --- what an email shows ----------------------------------------------------------------

    def details(self, key: AlertKey, t: int) -> dict[str, Any]:
        if key.cause is Cause.BROKER_DROPS:
            broker = self.broker.values if self.broker is not None else {}
            return {"drops": {"dropped": self.dropped, "first": self.first_at, "last": self.grew_at, "broker": broker},
                    "loss": self.readings.get(DISTRICT_LOSS)}
        return {"loss": self.readings.get(key), "month": self._month(key, t)}

    def _month(self, key: AlertKey, t: int) -> dict[str, int]:
        """Month-to-date lost, recovered and heartbeats of the alert's street × contract (or the district)."""
        tally = self.months.for_instant(t)
        n = len(self.streets)
        if key.street:
            g = self.contracts.index(key.contract) * n + self.streets.index(key.street)
            pick: slice | int = g
        else:
            pick = slice(0, len(self.contracts) * n)
        return {kind: int(np.sum(tally.counts[kind][pick])) if kind in tally.counts else 0
                for kind in ("lost", "recovered", "heartbeats")}
