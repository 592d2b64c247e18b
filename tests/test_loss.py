"""Loss in transit as the operator sees it (collector/loss.py, brokerstats.py, alerting/transit.py): the
window's rates, when the loss and broker-drop alerts fire and resolve, the InfluxDB points, and the
broker's $SYS values."""

from __future__ import annotations

import numpy as np

from ptmon.alerting.book import AlertBook
from ptmon.alerting.model import AlertKey, Cause, Phase
from ptmon.alerting.transit import DISTRICT_LOSS, DROPS, TransitAlerts
from ptmon.brokerstats import BrokerSnapshot, BrokerStats
from ptmon.config import LossConfig
from ptmon.decode import Decoder
from ptmon.engine import Engine
from ptmon.live import MonthTallies
from ptmon.loss import LossPoints, LossWindow, broker_lines
from ptmon.replay import Feed

from .conftest import T0, down, hb, make_registry, tick, up

US = 1_000_000
STREET = AlertKey(cause=Cause.LOSS, contract="cam", street="taopu")


def lossy_minutes(step_by_minute: list[int], first: int = 0) -> list[tuple[float, str, str]]:
    """One camera heartbeat a minute whose seq advances by the given steps (a step of 5 loses 4)."""
    records, seq = [up(T0 + 60 * first)], 0
    for minute, step in enumerate(step_by_minute, start=first):
        seq += step
        records.append(hb(T0 + 60 * minute + 1, "c1", seq=seq))
    return [*records, tick(T0 + 60 * (first + len(step_by_minute)) + 60)]


class Watch:
    """The loss window and the transit alerts on a book, stepped at every sample instant as the
    alert evaluator steps them; ``events`` are the alerts' changes (key, firing or resolved, minute)."""

    def __init__(self, rules, config: LossConfig, book: AlertBook | None = None) -> None:
        self.registry = make_registry(rules, "c1,cam,face_cam,taopu")
        self.engine = Engine(self.registry)
        self.months = MonthTallies(self.engine)
        self.window = LossWindow(self.engine, config.window)
        self.lines: list[str] = []
        LossPoints(self.months, self.window, self.lines.extend)
        self.book = book or AlertBook()
        self.transit = TransitAlerts(self.engine, self.months, self.window, config, self.book)
        self.events: list[tuple[str, str, int]] = []
        self._at: int | None = None
        self.engine.listeners.append(self)

    def on_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        if t == self._at:
            return
        self._at = t
        before = {k: s.phase for k, s in self.book.alerts.items()}
        self.transit.evaluate(t)
        after = {k: s.phase for k, s in self.book.alerts.items()}
        for key in sorted(set(before) | set(after)):
            if (key in before) != (key in after):
                name = key.street or "district"
                self.events.append((name, "firing" if key in after else "resolved", (t // US - T0) // 60))

    def on_deltas(self, slot_start: int, sums: np.ndarray) -> None:
        pass

    def on_first_seen(self, day: int, counts: np.ndarray) -> None:
        pass

    def feed(self, records) -> Watch:
        Feed(self.engine, Decoder(self.registry)).feed(records)
        return self


def test_street_and_district_alerts_fire_above_the_level_and_resolve_below(rules):
    """Test that a street losing 80 % of its messages fires its loss alert and the district's once enough
    messages are in the window, with the window's figures, and that both resolve once the window's rate
    falls to 80 % of the level."""
    config = LossConfig(window=600, street_rate=0.1, broker_rate=0.1, min_messages=20)
    watch = Watch(rules, config).feed(lossy_minutes([1] * 10 + [5] * 5 + [1] * 20))
    # Heartbeats at minute m + 1 s count from the sample at m + 1. At minute 13 the 10-minute window holds
    # 9 messages received and the 3 gaps of minutes 10-12 (12 lost): 21 messages, the first time ≥ 20.
    # Minute 24 is the first whose window holds none of the lossy minutes (10-14).
    assert watch.events == [("district", "firing", 13), ("taopu", "firing", 13),
                            ("district", "resolved", 24), ("taopu", "resolved", 24)]
    assert watch.book.alerts == {} and watch.transit.readings[STREET].messages == 9  # 9 received, none lost


def test_a_window_is_judged_only_once_the_monitor_watched_all_of_it(rules):
    """Test that loss counted within a window of the monitor resuming (the messages sent while it could not
    see) raises nothing, and that the same loss once a whole window has been watched does."""
    config = LossConfig(window=600, street_rate=0.1, broker_rate=0.1, min_messages=5)
    before, after = lossy_minutes([1] * 10), lossy_minutes([21] + [1] * 20, first=20)[1:]  # seq 21 after 10: 10 lost
    watched = Watch(rules, config).feed([*before[:-1], down(T0 + 600), up(T0 + 1200), *after])
    assert watched.engine.stats["lost"] == 10 and watched.events == []
    unwatched = Watch(rules, config).feed([*before[:-1], *after])  # the same gap while the monitor watched
    assert unwatched.events[:2] == [("district", "firing", 21), ("taopu", "firing", 21)]


def test_no_alert_below_the_level_or_on_too_few_messages(rules):
    """Test that a loss below the level, or a high rate over fewer messages than min_messages, stays quiet."""
    watch = Watch(rules, LossConfig(window=600, street_rate=0.05)).feed(lossy_minutes([1] * 30 + [2]))
    assert watch.events == []
    assert watch.window.latest[("cam", "taopu")][1:] == (1, 10)  # 1 lost, 9 received
    watch = Watch(rules, LossConfig(window=600, street_rate=0.05, min_messages=100)).feed(lossy_minutes([1] * 12 + [5, 5]))
    assert watch.events == []


def test_loss_points_carry_month_counts_and_the_window_rate(rules):
    """Test that the loss measurement has, per street and for the district, the month's lost, recovered,
    missing and heartbeats and the window's rate."""
    lines = Watch(rules, LossConfig(window=3600)).feed(lossy_minutes([1, 1, 3, 1])).lines
    last = [line for line in lines if line.startswith("loss,contract=cam,street=taopu ")][-1]
    assert last.split(" ")[1] == f"lost=2i,recovered=0i,missing=2i,heartbeats=4i,rate={2 / 6!r}"
    district = [line for line in lines if line.startswith("loss,contract=cam,street=district ")][-1]
    assert "lost=2i" in district
    quiet = [line for line in lines if line.startswith("loss,contract=iot,street=wanli ")][-1]
    assert "rate=" not in quiet and "heartbeats=0i" in quiet  # no message in the window: no rate


def drops(watch: Watch, *steps: tuple[int, int]) -> None:
    """$SYS drop counts (seconds after T0, count), each evaluated at the next minute's instant."""
    for seconds, dropped in steps:
        watch.transit.on_broker(BrokerSnapshot({"dropped_messages": dropped}, 1.0, 0), (T0 + seconds) * US)
        watch.transit.evaluate((T0 + (seconds // 60 + 1) * 60) * US)


def test_broker_drops_fire_once_and_resolve_after_a_quiet_window(rules):
    """Test that a growing $SYS drop count fires once, growth while firing adds to the incident's count and
    changes nothing else, and a window without growth resolves it; drops explain every loss alert."""
    watch = Watch(rules, LossConfig(window=600))
    drops(watch, (0, 0), (10, 0), (20, 7))
    state = watch.book.alerts[DROPS]
    assert (state.phase, state.since, watch.transit.dropped) == (Phase.FIRING, (T0 + 20) * US, 7)
    assert watch.transit.explained[STREET] == watch.transit.explained[DISTRICT_LOSS] == DROPS
    drops(watch, (130, 9), (700, 9))
    assert watch.book.alerts[DROPS] == state and watch.transit.dropped == 9
    drops(watch, (731, 9))  # the instant at 780 s: a whole window (600 s) since the last growth (130 s)
    assert DROPS not in watch.book.alerts and watch.transit.dropped == 0
    assert watch.transit.explained[STREET] == DROPS  # for one window after it ended
    drops(watch, (1400, 9))
    assert watch.transit.explained == {} and watch.book.alerts == {}


def test_broker_drops_are_counted_once_across_a_collector_restart(rules):
    """Test that a collector restarted from the ledger's alert state does not count the broker's drops it
    had already accounted for, and that a broker restart (its count going down) counts what it reports."""
    first = Watch(rules, LossConfig(window=600))
    drops(first, (0, 500))
    assert first.book.alerts[DROPS].phase is Phase.FIRING
    rows = {k: v for k, v in first.book.take(0).items() if v is not None}
    restarted = Watch(rules, LossConfig(window=600), AlertBook(rows))
    drops(restarted, (700, 500), (720, 500))  # the same count, a window after the last growth
    assert DROPS not in restarted.book.alerts and restarted.transit.dropped == 0
    drops(restarted, (800, 3))  # the broker restarted and dropped 3
    assert restarted.book.alerts[DROPS].phase is Phase.FIRING and restarted.transit.dropped == 3


def test_broker_stats_parse_sys_values_and_count_drops_across_restarts():
    """Test that $SYS values are kept as integers (uptime in seconds too), others ignored, and that drops are
    summed across a broker restart (its counter going back to zero)."""
    stats = BrokerStats()
    assert not stats.update("$SYS/broker/load/messages/received/1min", "3.50", 1.0)
    assert not stats.update("$SYS/broker/store/messages/count", "many", 1.0) and stats.malformed == 1
    stats.update("$SYS/broker/uptime", "123 seconds", 2.0)
    for value in ("4", "5", "12", "3", "4"):  # restarted after 12
        stats.update("$SYS/broker/publish/messages/dropped", value, 3.0)
    snapshot = stats.snapshot()
    assert snapshot.values == {"uptime_seconds": 123, "dropped_messages": 4}
    assert (snapshot.dropped_seen, snapshot.updated) == (4 + 1 + 7 + 3 + 1, 3.0)
    [point] = broker_lines(snapshot, 5_000_000, instance="c 1")
    assert point == "broker,instance=c\\ 1 uptime_seconds=123i,dropped_messages=4i,dropped_seen=16i 5000000"
    assert broker_lines(BrokerStats().snapshot(), 5_000_000) == []


def test_what_explains_a_loss_while_it_lasts_and_for_a_window_after(rules):
    """Test that a street's silence or a dead gateway of it explains that street's loss (and is left out of
    the district's rate) while it fires and for one loss window after it ended; the district silence and the
    broker's drops explain every loss, and nothing holds back the broker's drops."""
    from ptmon.alerting.group import Causes
    from ptmon.alerting.model import AlertState

    watch = Watch(rules, LossConfig(window=600)).feed(lossy_minutes([1] * 12))
    silent = AlertKey(cause=Cause.STREET_SILENT, contract="cam", street="taopu")
    gateway = AlertKey(cause=Cause.GATEWAY, contract="cam", street="taopu", gateway="gw-taopu")
    pipeline = AlertKey(cause=Cause.PIPELINE)

    def at(minute: int, *firing: AlertKey) -> dict[AlertKey, AlertKey]:
        t = (T0 + 60 * minute) * US
        for key in [k for k in watch.book.alerts if k.cause is not Cause.LOSS]:
            watch.book.set_alert(key, None)
        for key in firing:
            watch.book.set_alert(key, AlertState(key=key, phase=Phase.FIRING, since=t, changed=t, fired=t))
        return watch.transit.evaluate(t)

    assert at(20, gateway) == {STREET: gateway}
    assert watch.transit.readings[DISTRICT_LOSS].left_out == (gateway,)
    assert at(21) == {STREET: gateway}  # ended at 21: explains until 31
    assert at(25, silent) == {STREET: silent}  # a silence before a gateway
    assert at(30) == {STREET: silent}  # ended now; the gateway's end (21) explains too
    assert at(36) == {STREET: silent}  # the gateway ended 15 minutes ago, the silence 6
    assert at(40) == {}  # a whole window (10 min) after the silence ended
    explained = at(50, pipeline)
    assert explained[STREET] == explained[DISTRICT_LOSS] == pipeline and len(explained) == 21
    causes = Causes.of(watch.book.alerts | {DROPS: watch.book.alerts[pipeline]}, explained)
    assert causes.inhibitor(STREET) == pipeline and causes.inhibitor(DROPS) is None
