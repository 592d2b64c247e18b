"""Loss in transit as the operator sees it (collector/loss.py, brokerstats.py): the window's rates,
when alerts fire and resolve, the InfluxDB points, and the broker's $SYS values."""

from __future__ import annotations

from ptmon.brokerstats import BrokerSnapshot, BrokerStats
from ptmon.config import LossConfig
from ptmon.decode import Decoder
from ptmon.engine import Engine
from ptmon.live import MonthTallies
from ptmon.loss import LossAlert, LossAlerts, LossPoints, LossWindow, broker_lines
from ptmon.replay import Feed

from .conftest import T0, hb, make_registry, tick, up

US = 1_000_000


def lossy_minutes(step_by_minute: list[int]) -> list[tuple[float, str, str]]:
    """One camera heartbeat a minute whose seq advances by the given steps (a step of 5 loses 4)."""
    records, seq = [up(T0)], 0
    for minute, step in enumerate(step_by_minute):
        seq += step
        records.append(hb(T0 + 60 * minute + 1, "c1", seq=seq))
    return records + [tick(T0 + 60 * len(step_by_minute) + 60)]


def watch(rules, records, config: LossConfig) -> tuple[list[LossAlert], LossWindow, list[str]]:
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    engine = Engine(registry)
    months = MonthTallies(engine)
    window = LossWindow(engine, config.window)
    lines: list[str] = []
    LossPoints(months, window, lines.extend)
    alerts: list[LossAlert] = []
    LossAlerts(window, config, alerts.extend)
    Feed(engine, Decoder(registry)).feed(records)
    return alerts, window, lines


def test_street_and_broker_alerts_fire_above_the_level_and_resolve_below(rules):
    """Test that a street losing 80 % of its messages fires once both alerts once enough messages are in the
    window, and that they resolve once the window's rate falls to 80 % of the level."""
    config = LossConfig(window=600, street_rate=0.1, broker_rate=0.1, min_messages=20)
    alerts, _, _ = watch(rules, lossy_minutes([1] * 10 + [5] * 5 + [1] * 20), config)
    events = [(a.kind, a.event, (a.t // US - T0) // 60, a.lost, a.messages) for a in alerts]
    # Heartbeats at minute m + 1 s count from the sample at m + 1. At minute 13 the 10-minute window holds
    # 9 messages received and the 3 gaps of minutes 10-12 (12 lost): 21 messages, the first time ≥ 20.
    # Minute 24 is the first whose window holds none of the lossy minutes (10-14).
    assert events == [("street_loss", "firing", 13, 12, 21), ("broker_loss", "firing", 13, 12, 21),
                      ("street_loss", "resolved", 24, 0, 9), ("broker_loss", "resolved", 24, 0, 9)]
    assert (alerts[0].contract, alerts[0].street, alerts[1].street) == ("cam", "taopu", "")


def test_no_alert_below_the_level_or_on_too_few_messages(rules):
    """Test that a loss below the level, or a high rate over fewer messages than min_messages, stays quiet."""
    alerts, window, _ = watch(rules, lossy_minutes([1] * 30 + [2]), LossConfig(window=3600, street_rate=0.05))
    assert alerts == []
    assert window.latest[("cam", "taopu")][1:] == (1, 32)  # 1 lost, 31 received
    alerts, _, _ = watch(rules, lossy_minutes([1, 5, 5]), LossConfig(window=3600, street_rate=0.05, min_messages=100))
    assert alerts == []


def test_loss_points_carry_month_counts_and_the_window_rate(rules):
    """Test that the loss measurement has, per street and for the district, the month's lost, recovered,
    missing and heartbeats and the window's rate."""
    _, _, lines = watch(rules, lossy_minutes([1, 1, 3, 1]), LossConfig(window=3600))
    last = [line for line in lines if line.startswith("loss,contract=cam,street=taopu ")][-1]
    assert last.split(" ")[1] == f"lost=2i,recovered=0i,missing=2i,heartbeats=4i,rate={2 / 6!r}"
    district = [line for line in lines if line.startswith("loss,contract=cam,street=district ")][-1]
    assert "lost=2i" in district
    quiet = [line for line in lines if line.startswith("loss,contract=iot,street=wanli ")][-1]
    assert "rate=" not in quiet and "heartbeats=0i" in quiet  # no message in the window: no rate


def test_broker_drops_alert_names_the_setting_and_resolves_after_a_quiet_window(rules):
    """Test that a growing $SYS drop count fires once (naming max_queued_messages), growth while firing
    sends nothing new, and a window without growth resolves it."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    alerts: list[LossAlert] = []
    watcher = LossAlerts(LossWindow(Engine(registry), 600), LossConfig(window=600), alerts.extend)
    for seconds, dropped in ((0, 0), (10, 0), (20, 7), (30, 9), (400, 9), (640, 9)):
        watcher.on_broker(BrokerSnapshot({"dropped_messages": dropped}, 1.0, dropped), (T0 + seconds) * US)
    assert [(a.event, a.t // US - T0, a.lost) for a in alerts] == [("firing", 20, 7), ("resolved", 640, 0)]
    assert "max_queued_messages" in alerts[0].text() and "max_queued_bytes" in alerts[0].text()


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
