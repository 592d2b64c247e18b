"""Hand-computed cases for the SLA engine: boundaries, leases, counters, gaps, methods."""

from __future__ import annotations

import numpy as np
import pytest

from ptmon.registry import Registry
from ptmon.replay import Replayer
from ptmon.rules import load_rules

from .conftest import T0, down, hb, make_registry, raw, run, tick, up

DAY = 86_400


class SampleLog:
    """Listener recording the online count of one contract × street at every sample."""

    def __init__(self, contract: int, street: int) -> None:
        self.contract, self.street = contract, street
        self.online: dict[int, int] = {}

    def on_sample(self, contract: int, t: int, online: np.ndarray, expected: np.ndarray) -> None:
        if contract == self.contract:
            self.online[t // 1_000_000 - T0] = int(online[self.street])

    def on_deltas(self, slot_start: int, sums: np.ndarray) -> None:
        pass

    def on_first_seen(self, day: int, counts: np.ndarray) -> None:
        pass


def online_offsets(registry: Registry, records: list, end: float) -> list[int]:
    """Sample offsets (seconds after T0) at which the taopu camera street had a device online."""
    replayer = Replayer(registry, T0 * 1_000_000, int(end * 1_000_000))
    log = SampleLog(contract=1, street=9)
    replayer.engine.listeners.append(log)
    replayer.feed(records)
    replayer.results()
    return [t for t, n in sorted(log.online.items()) if n]


@pytest.mark.parametrize(
    ("heartbeat_at", "online_at"),
    [
        (60, [60, 120, 180]),  # exactly at a sample instant: counts there; exactly 180 s old at 240: not online
        (59.999999, [60, 120, 180]),  # 1 µs before a sample: online through 180 (239.999999 + ... < 240)
        (60.000001, [120, 180, 240]),  # 1 µs after a sample: not yet at 60, still at 240
    ],
    ids=["at-sample-instant", "just-before", "just-after"],
)
def test_online_window_boundaries(rules, heartbeat_at, online_at):
    """Test that a device is online exactly while t - timeout < h <= t (timeout 180 s)."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    records = [up(T0), hb(T0 + heartbeat_at, "c1"), tick(T0 + 600)]
    assert online_offsets(registry, records, T0 + 600) == online_at
    row = run(registry, records, T0, T0 + 600).row("cam", "taopu", "online")
    assert (row.numerator, row.denominator, row.observed_seconds) == (3, 10, 600)


def test_month_edge_attributes_deltas_by_receive_time(rules):
    """Test that a delta received exactly at the month's first instant belongs to the new month."""
    registry = make_registry(rules, "s1,iot,door,changshou")
    records = [
        hb(T0 - 120, "s1", "iot", "changshou", reads=0, read_ok=0),
        hb(T0 - 1, "s1", "iot", "changshou", reads=5, read_ok=5),
        hb(T0, "s1", "iot", "changshou", reads=12, read_ok=11),
        tick(T0 + 3600),
    ]
    october = run(registry, records, T0 - 3600, T0).row("iot", "changshou", "sensing")
    november = run(registry, records, T0, T0 + 3600).row("iot", "changshou", "sensing")
    assert (october.numerator, october.denominator) == (5, 5)
    assert (november.numerator, november.denominator) == (6, 7)


def test_lease_window_accepted_and_retired_mid_period(rules):
    """Test that devices count only on the days they are under lease, online and counters alike."""
    registry = make_registry(
        rules,
        "b1,iot,door,changshou",
        "a1,iot,door,changshou,2026-11-02",  # accepted on day 2
        "r1,iot,door,changshou,2026-01-01,2026-11-02",  # retired on day 2 (last leased day: day 1)
    )
    records = [up(T0)]
    for k in range(96):  # every 30 min for two days
        for device in ("b1", "a1", "r1"):
            records.append(hb(T0 + k * 1800, device, "iot", "changshou", reads=2 * k, read_ok=2 * k))
    records.append(tick(T0 + 2 * DAY))
    results = run(registry, records, T0, T0 + 2 * DAY)
    online = results.row("iot", "changshou", "online")
    sensing = results.row("iot", "changshou", "sensing")
    assert (online.numerator, online.denominator) == (2880 + 1440 + 1440, 2880 + 1440 + 1440)
    assert (sensing.numerator, sensing.denominator) == (190 + 96 + 94, 190 + 96 + 94)
    assert results.engine_stats["outside_lease"] == 48 + 48


def test_counter_resets_by_boot_and_by_decrease(rules):
    """Test that a new boot or a decreasing counter is a reset whose new values are the delta."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    records = [
        hb(T0 + 10, "c1", boot="A", face_try=100, face_ok=90, plate_try=50, plate_ok=50),  # baseline only
        hb(T0 + 70, "c1", boot="A", face_try=110, face_ok=99),  # +10 / +9
        hb(T0 + 130, "c1", boot="B", face_try=5, face_ok=5),  # reset by boot: +5 / +5, plate restarts at 0
        hb(T0 + 190, "c1", boot="B", face_try=3, face_ok=2),  # reset by decrease: +3 / +2
        hb(T0 + 250, "c1", boot="B", face_try=10, face_ok=8, plate_try=4, plate_ok=4),  # +7 / +6, plate +4 / +4
        hb(T0 + 310, "c1", boot="C", face_try=40, face_ok=40),  # reset by boot with counters up: +40 / +40
        tick(T0 + 600),
    ]
    results = run(registry, records, T0, T0 + 600)
    assert [(r.kpi, r.numerator, r.denominator) for r in results.rows if r.street == "taopu" and r.contract == "cam"] == [
        ("online", 8, 9),  # observed from the first record (T0+10): samples 60..540; online until 310+180
        ("capture", 62 + 4, 65 + 4),
        ("face", 62, 65),
        ("plate", 4, 4),
    ]
    assert results.engine_stats["resets"] == 3


def test_duplicate_and_reordered_messages_count_once(rules):
    """Test that a repeated seq and a seq a little behind are ignored, and a far-behind seq restarts."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    records = [
        hb(T0 + 10, "c1", seq=1, face_try=10, face_ok=10),
        hb(T0 + 20, "c1", seq=2, face_try=20, face_ok=18),  # +10 / +8
        hb(T0 + 30, "c1", seq=2, face_try=20, face_ok=18),  # duplicate
        hb(T0 + 40, "c1", seq=1, face_try=10, face_ok=10),  # stale: would otherwise look like a reset
        hb(T0 + 50, "c1", seq=3, face_try=25, face_ok=23),  # +5 / +5
        hb(T0 + 60, "c1", seq=1000, face_try=30, face_ok=27),  # +5 / +4
        hb(T0 + 70, "c1", seq=3, face_try=2, face_ok=2),  # 997 behind: a restarted device, reset +2 / +2
        tick(T0 + 120),
    ]
    results = run(registry, records, T0, T0 + 120)
    face = results.row("cam", "taopu", "face")
    assert (face.numerator, face.denominator) == (8 + 5 + 4 + 2, 10 + 5 + 5 + 2)
    assert (results.engine_stats["duplicate"], results.engine_stats["stale"]) == (1, 1)


def test_duplicate_does_not_refresh_heartbeat(rules):
    """Test that a redelivered message (same seq) does not keep a silent device online."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    records = [up(T0), hb(T0 + 10, "c1", seq=5), hb(T0 + 200, "c1", seq=5), tick(T0 + 600)]
    assert online_offsets(registry, records, T0 + 600) == [60, 120, 180]


def test_rejected_messages_count_toward_nothing(rules):
    """Test that malformed, unknown and mismatched messages are counted by kind and change no KPI."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu", "s1,iot,door,changshou")
    good = [hb(T0 + 10, "c1", face_try=1, face_ok=1), hb(T0 + 70, "c1", face_try=5, face_ok=4), tick(T0 + 600)]
    bad = [
        raw(T0 + 20, "putuo/cam/taopu/c1/hb", "{not json"),
        raw(T0 + 21, "putuo/cam/taopu/c1/hb", "[1, 2]"),
        raw(T0 + 22, "putuo/cam/taopu/c1/hb", '{"face_try": 1e30, "face_ok": 0}'),
        raw(T0 + 23, "putuo/cam/taopu/c1/hb", '{"face_try": NaN}'),
        raw(T0 + 24, "putuo/cam/taopu/c1/hb", '{"face_try": 100000000000000000000000000}'),
        raw(T0 + 25, "putuo/cam/taopu/c1/hb", '{"face_try": true}'),
        raw(T0 + 26, "putuo/cam/taopu/c1/hb", '{"face_try": -1}'),
        raw(T0 + 27, "putuo/cam/taopu/c1/hb", '{"face_try": 100, "face_ok": 101}'),
        raw(T0 + 28, "putuo/cam/taopu/c1/hb", '{"bat": "full"}'),
        raw(T0 + 29, "putuo/cam/taopu/c1/hb", "{}" + " " * 5000),
        raw(T0 + 30, "putuo/cam/taopu/nobody/hb", "{}"),
        raw(T0 + 31, "putuo/cam/changshou/c1/hb", "{}"),
        raw(T0 + 32, "putuo/iot/taopu/c1/hb", "{}"),
        raw(T0 + 33, "putuo/cam/taopu/c1", "{}"),
        raw(T0 + 34, "elsewhere/x", "{}"),
        raw(T0 + 35, "putuo/gw/nogw/status", "offline"),
        raw(T0 + 36, "putuo/gw/gw-taopu/status", "sleepy"),
    ]
    clean = run(registry, good, T0, T0 + 600)
    dirty = run(registry, sorted(good + bad), T0, T0 + 600)
    assert dirty.csv_text() == clean.csv_text()
    assert dirty.rejects == {
        "bad_json": 2,
        "not_object": 1,
        "bad_value": 5,
        "counter_mismatch": 1,
        "oversize": 1,
        "unknown_device": 1,
        "street_mismatch": 1,
        "contract_mismatch": 1,
        "bad_topic": 2,
        "unknown_gateway": 1,
        "bad_gateway_status": 1,
    }
    assert dirty.unknown_topics == {"putuo/cam/taopu/nobody/hb": 1}


def test_clean_shutdown_gap_is_not_counted(rules):
    """Test that samples while the monitor is down are missing, reported as a gap, not as offline."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    records = [up(T0), *(hb(T0 + s, "c1") for s in range(0, 300, 60)), down(T0 + 250)]
    records += [up(T0 + 400), *(hb(T0 + s, "c1") for s in range(400, 600, 60)), tick(T0 + 600)]
    results = run(registry, records, T0, T0 + 600)
    row = results.row("cam", "taopu", "online")
    assert (row.numerator, row.denominator, row.observed_seconds) == (8, 8, 480)
    assert results.gaps == [((T0 + 300) * 10**6, (T0 + 420) * 10**6)]


def test_crash_gap_runs_from_last_record_to_restart(rules):
    """Test that an 'up' without a 'down' (a crash) makes a gap from the last record to the restart."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    records = [up(T0), hb(T0, "c1"), hb(T0 + 60, "c1"), hb(T0 + 120, "c1"), up(T0 + 400)]
    records += [hb(T0 + s, "c1") for s in (400, 460, 520, 580)] + [tick(T0 + 600)]
    results = run(registry, records, T0, T0 + 600)
    row = results.row("cam", "taopu", "online")
    assert (row.numerator, row.denominator, row.observed_seconds) == (6, 6, 360)
    assert results.gaps == [((T0 + 180) * 10**6, (T0 + 420) * 10**6)]
    assert results.engine_stats["restarts"] == 1


def test_archive_ending_early_is_a_gap_up_to_the_period_end(rules):
    """Test that a period longer than the archive shows the rest as a gap, not as offline devices."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    results = run(registry, [hb(T0 + s, "c1") for s in range(0, 300, 60)], T0, T0 + 600)
    row = results.row("cam", "taopu", "online")
    assert (row.numerator, row.denominator, row.observed_seconds) == (5, 5, 300)
    assert results.gaps == [((T0 + 300) * 10**6, (T0 + 600) * 10**6)]


def test_daily_method_counts_fully_observed_days(rules_dir):
    """Test that the daily method counts device-days, and skips a day with a monitoring gap."""
    contracts = rules_dir / "contracts.yaml"
    contracts.write_text(contracts.read_text().replace(
        "online_method: time_weighted\n  sample_interval: 60\n  kpis:\n    online:  {name: 监控点位在线率",
        "online_method: daily\n  sample_interval: 60\n  kpis:\n    online:  {name: 监控点位在线率"))
    rules = load_rules(rules_dir)
    assert rules.contract("cam").online_method == "daily"
    registry = make_registry(rules, "c1,cam,face_cam,taopu", "c2,cam,face_cam,taopu")
    records = [up(T0), hb(T0 + 3600, "c1"), hb(T0 + 3600, "c2"), hb(T0 + DAY + 3600, "c1"), tick(T0 + 2 * DAY)]
    full = run(registry, records, T0, T0 + 2 * DAY).row("cam", "taopu", "online")
    assert (full.numerator, full.denominator, full.expected_device_samples) == (3, 4, 4)
    gap = [down(T0 + DAY + 7200), up(T0 + DAY + 7300)]
    partial = run(registry, [*sorted(records[:-1] + gap), records[-1]], T0, T0 + 2 * DAY)
    row = partial.row("cam", "taopu", "online")
    assert (row.numerator, row.denominator) == (2, 2)
    assert partial.coverage["cam"]["complete_days"] == 1


def test_late_message_is_applied_at_engine_time(rules):
    """Test that a message stamped before the engine's clock is counted as late, not reordered."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu", "c2,cam,face_cam,taopu")
    records = [up(T0), hb(T0 + 100, "c1"), hb(T0 + 50, "c2"), tick(T0 + 300)]
    results = run(registry, records, T0, T0 + 300)
    assert results.engine_stats["late"] == 1
    row = results.row("cam", "taopu", "online")
    assert (row.numerator, row.denominator) == (3 + 3, 10)  # both online at 120, 180 and 240 only


def test_period_end_stops_the_replay(rules):
    """Test that records at or after the period's end are not applied."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    records = [hb(T0, "c1", face_try=0, face_ok=0), hb(T0 + 60, "c1", face_try=2, face_ok=2),
               hb(T0 + 120, "c1", face_try=9, face_ok=3)]
    face = run(registry, records, T0, T0 + 120).row("cam", "taopu", "face")
    assert (face.numerator, face.denominator, face.observed_seconds) == (2, 2, 120)


def test_engine_state_is_per_device_arrays(rules):
    """Test that engine state scales with devices (numpy arrays), not with messages."""
    registry = make_registry(rules, *(f"d{i},cam,face_cam,taopu" for i in range(100)))
    replayer = Replayer(registry, T0 * 10**6, (T0 + 600) * 10**6)
    before = replayer.engine.state_bytes()
    replayer.feed([hb(T0 + k, f"d{k % 100}", seq=k) for k in range(500)])
    assert replayer.engine.state_bytes() == before
    assert replayer.engine.stats["heartbeats"] == 500


def test_boot_ids_with_equal_crc32_are_different_boots(rules):
    """Test that two boot ids whose CRC-32 collide ("plumless", "buckeroo") still mark a reboot."""
    registry = make_registry(rules, "s1,iot,smoke,taopu")
    records = [
        hb(T0 + 10, "s1", "iot", boot="plumless", seq=50, reads=100, read_ok=90),
        hb(T0 + 20, "s1", "iot", boot="buckeroo", seq=1, reads=10, read_ok=9),
        hb(T0 + 30, "s1", "iot", boot="buckeroo", seq=2, reads=20, read_ok=19),
    ]
    results = run(registry, records, T0, T0 + 60)
    sensing = results.row("iot", "taopu", "sensing")
    assert (sensing.numerator, sensing.denominator) == (19, 20)
    assert results.engine_stats["resets"] == 1 and results.engine_stats["heartbeats"] == 3


def test_down_as_first_record_starts_observation(rules):
    """Test that a 'down' record opening an archive still shows the monitor observing at its time."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu")
    results = run(registry, [down(T0 + 60), hb(T0 + 120, "c1")], T0, T0 + 600)
    assert results.coverage["cam"]["samples"] == 2
    assert results.gaps[0] == (T0 * 10**6, (T0 + 60) * 10**6)
