"""Synthetic traffic: determinism, order, scenario effects, wire format, and a replay of it."""

from __future__ import annotations

from collections import Counter, defaultdict
from fractions import Fraction

import numpy as np
import orjson
import pytest

from ptmon.archive import ArchiveReader
from ptmon.decode import Decoder
from ptmon.replay import replay
from ptmon.rules import COUNTERS
from ptmon.simulators.demo import demo_scenario, demo_window, run_offline_demo
from ptmon.simulators.synthetic import (
    Degradation,
    Flapping,
    Outage,
    Scenario,
    Silence,
    SuccessWindow,
    decoded_batches,
    iter_records,
    write_archive,
)

from .conftest import T0, make_registry

US = 1_000_000
HOUR = 3600
STREETS = ("changzheng", "taopu", "wanli")
IOT_TYPES = ("elevator", "noise", "door", "ebike")  # periods 5 m, 10 m, 1 h, 15 m
CAM_TYPES = ("face_cam", "plate_cam", "hd_cam")


@pytest.fixture(scope="module")
def registry(rules):
    rows = [f"s-{street}-{t}-{n},iot,{t},{street}" for street in STREETS for t in IOT_TYPES for n in range(2)]
    rows += [f"c-{street}-{t},cam,{t},{street}" for street in STREETS for t in CAM_TYPES]
    return make_registry(rules, *rows)


def records(registry, hours=3.0, **scenario):
    return list(iter_records(registry, registry.rules, T0 * US, int((T0 + hours * HOUR) * US), Scenario(**scenario)))


def test_same_seed_gives_same_records(registry):
    """Test that the same registry, window and seed give identical records, and another seed others."""
    first = records(registry, seed=7, silent_fraction=0.1, loss=0.01)
    assert first == records(registry, seed=7, silent_fraction=0.1, loss=0.01)
    assert first != records(registry, seed=8, silent_fraction=0.1, loss=0.01)


@pytest.mark.parametrize("lead_in", [False, True], ids=["window-only", "lead-in"])
def test_records_are_in_time_order_inside_the_window(registry, lead_in):
    """Test that receive times never decrease and stay before the end (and after the start unless lead-in)."""
    times = [t for t, _, _ in records(registry, hours=2.5, lead_in=lead_in)]
    assert times == sorted(times)
    assert times[-1] < T0 + 2.5 * HOUR
    longest_period = max(t.heartbeat_period for t in registry.rules.types if t.code in IOT_TYPES + CAM_TYPES)
    assert times[0] >= (T0 - longest_period if lead_in else T0)
    assert (times[0] < T0) == lead_in


def test_outage_silences_only_its_street_and_contract(registry):
    """Test that an outage window has no record of its street and contract, and others keep reporting."""
    outage = Outage(street="changzheng", contract="iot", from_us=(T0 + HOUR) * US, to_us=(T0 + 2 * HOUR) * US)
    recs = records(registry, outages=(outage,))
    in_window = [topic for t, topic, _ in recs if T0 + HOUR <= t < T0 + 2 * HOUR]
    assert not [topic for topic in in_window if topic.startswith("putuo/iot/changzheng/")]
    assert any(topic.startswith("putuo/cam/changzheng/") for topic in in_window)
    assert any(topic.startswith("putuo/iot/taopu/") for topic in in_window)
    after = [topic for t, topic, _ in recs if t >= T0 + 2 * HOUR]
    assert any(topic.startswith("putuo/iot/changzheng/") for topic in after)


def test_messages_per_device_match_the_period(registry):
    """Test that each device sends duration / period messages (±1 at the window's edge)."""
    hours = 4.0
    counts = Counter(topic.split("/")[3] for _, topic, _ in records(registry, hours=hours))
    assert set(counts) == set(registry.ids)
    for i, device_id in enumerate(registry.ids):
        period = registry.rules.types[registry.type[i]].heartbeat_period
        assert abs(counts[device_id] - hours * HOUR / period) <= 1, device_id


def test_payloads_follow_the_wire_contract(registry):
    """Test that seq rises by one, counters are cumulative with ok <= tries, and keys match the device type."""
    last: dict[str, dict] = {}
    keys_by_type: dict[str, set] = defaultdict(set)
    for _, topic, payload in records(registry, hours=2.0):
        device_id = topic.split("/")[3]
        obj = orjson.loads(payload)
        keys_by_type[registry.rules.types[registry.type[registry.index[device_id]]].code].add(frozenset(obj))
        for tries, oks in (("reads", "read_ok"), ("face_try", "face_ok"), ("plate_try", "plate_ok")):
            if tries in obj:
                assert 0 <= obj[oks] <= obj[tries]
        if device_id in last:
            before = last[device_id]
            assert obj["seq"] == before["seq"] + 1 and obj["boot"] == before["boot"]
            assert all(obj[k] >= before[k] for k in COUNTERS if k in obj)
        last[device_id] = obj
    base = {"ts", "seq", "boot"}
    assert keys_by_type["elevator"] == {frozenset(base | {"bat", "rssi", "reads", "read_ok"})}
    assert keys_by_type["face_cam"] == {frozenset(base | {"face_try", "face_ok"})}
    assert keys_by_type["plate_cam"] == {frozenset(base | {"plate_try", "plate_ok"})}
    assert keys_by_type["hd_cam"] == {frozenset(base)}


def test_silent_devices_never_report(registry):
    """Test that silent_fraction picks that share of the devices and they send nothing."""
    recs = records(registry, silent_fraction=0.25)
    heard = {topic.split("/")[3] for _, topic, _ in recs}
    assert len(registry) - len(heard) == round(0.25 * len(registry))


def test_device_knobs_silence_flap_and_degrade_chosen_devices(registry):
    """Test that silences, flapping, never_report and success windows act on their devices only."""
    cam = {t: registry.index[f"c-taopu-{t}"] for t in CAM_TYPES}
    hours = 4.0
    recs = records(
        registry, hours=hours,
        silences=(Silence(devices=np.array([cam["hd_cam"]]), from_us=(T0 + HOUR) * US, to_us=(T0 + 3 * HOUR) * US),),
        flapping=(Flapping(devices=np.array([cam["plate_cam"]]), period_us=20 * 60 * US),),
        never_report=(registry.index["c-wanli-hd_cam"],),
        success_windows=(SuccessWindow(devices=np.array([cam["face_cam"]]), factor=0.5, from_us=0, to_us=2**62),),
    )
    by_device = defaultdict(list)
    for t, topic, payload in recs:
        by_device[topic.split("/")[3]].append((t, orjson.loads(payload)))
    hd = [t for t, _ in by_device["c-taopu-hd_cam"]]
    assert hd and not [t for t in hd if T0 + HOUR <= t < T0 + 3 * HOUR]
    assert all(t // 600 % 2 == 0 for t, _ in by_device["c-taopu-plate_cam"])  # silent in every second 10 minutes
    assert abs(len(by_device["c-taopu-plate_cam"]) - hours * 60 / 2) <= 2
    assert "c-wanli-hd_cam" not in by_device
    (_, first), (_, last) = by_device["c-taopu-face_cam"][0], by_device["c-taopu-face_cam"][-1]
    ratio = (last["face_ok"] - first["face_ok"]) / (last["face_try"] - first["face_try"])
    assert 0.3 < ratio < 0.6  # night success (about 0.9) × 0.5, from a Sunday night's hundred-odd attempts


def test_decoded_batches_equal_decoding_the_records(registry):
    """Test that the pre-decoded batches hold exactly what the decoder makes of the payloads."""
    scenario = Scenario(seed=3, lead_in=True, loss=0.05)
    start, end = T0 * US, (T0 + 2 * HOUR) * US
    decoder = Decoder(registry)
    expected = decoder.decode(list(iter_records(registry, registry.rules, start, end, scenario)))
    batches = list(decoded_batches(registry, registry.rules, start, end, scenario, batch_size=500))
    assert all(len(b) <= 500 for b in batches) and not decoder.rejects
    for name in ("t", "device", "seq", "has_seq", "boot", "has_boot", "counters", "has_counter", "ts", "bat", "rssi"):
        got = np.concatenate([getattr(b, name) for b in batches])
        np.testing.assert_array_equal(got, getattr(expected, name), err_msg=name)


def test_archive_bytes_do_not_depend_on_workers(registry, tmp_path):
    """Test that the archive is the same file whether chunks are compressed in-process or by workers."""
    args = (registry, registry.rules, T0 * US, (T0 + 3 * HOUR) * US, Scenario(seed=5))
    n0 = write_archive(tmp_path / "a.jsonl.gz", *args)
    n2 = write_archive(tmp_path / "b.jsonl.gz", *args, workers=2)
    assert n0 == n2 > 0
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    reader = ArchiveReader([tmp_path / "a.jsonl.gz"])
    read = list(reader)
    assert reader.bad_lines == 0 and len(read) == n0 + 2  # plus monitor up and down
    assert [r[2] for r in read if r[1].startswith("$ptmon/")] == ["up", "down"]
    assert [r[1:] for r in read[1:-1]] == [r[1:] for r in iter_records(*args)]


def test_archive_replays_with_the_outage_and_the_degraded_street(registry, tmp_path):
    """Test that a replay of the archive shows the outage street offline and the degraded street's captures lower."""
    start, end = (T0 + 8 * HOUR) * US, (T0 + 14 * HOUR) * US  # by day: night captures are worse
    scenario = Scenario(
        seed=2,
        lead_in=True,
        outages=(Outage(street="changzheng", contract="iot", from_us=start + 2 * HOUR * US, to_us=start + 5 * HOUR * US),),
        degraded=(Degradation(contract="cam", street="wanli", factor=0.9),),
    )
    path = tmp_path / "archive.jsonl.gz"
    write_archive(path, registry, registry.rules, start, end, scenario)
    results = replay([str(path)], registry, start, end)
    assert not results.rejects and not results.gaps
    assert not {k: v for k, v in results.engine_stats.items() if k in ("late", "duplicate", "stale", "outside_lease") and v}
    online = {s: results.row("iot", s, "online").value for s in STREETS}
    assert online["changzheng"] < Fraction(3, 4)
    assert online["taopu"] > Fraction(97, 100) and online["wanli"] > Fraction(97, 100)
    capture = {s: results.row("cam", s, "capture").value for s in STREETS}
    assert capture["wanli"] < Fraction(92, 100) < Fraction(95, 100) < capture["taopu"]
    sensing = results.row("iot", "district", "sensing").value
    assert Fraction(97, 100) < sensing < Fraction(996, 1000)


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"silent_fraction": 1.0}, "silent_fraction"),
        ({"loss": -0.1}, "loss"),
        ({"jitter": 0.9}, "jitter"),
        ({"outages": (Outage(street="taopu", from_us=2, to_us=1),)}, "to_us"),
        ({"degraded": (Degradation(contract="cam", street="taopu", factor=1.5),)}, "factor"),
    ],
    ids=["all-silent", "negative-loss", "jitter-over-half", "outage-backwards", "factor-over-one"],
)
def test_scenario_rejects_bad_knobs(knobs, message):
    """Test that an impossible scenario fails at construction, naming the knob."""
    with pytest.raises(ValueError, match=message):
        Scenario(**knobs)


def test_scenario_rejects_an_unknown_street(registry):
    """Test that a scenario naming a street not in the rules fails before generating anything."""
    with pytest.raises(ValueError, match="unknown street 'nowhere'"):
        records(registry, outages=(Outage(street="nowhere", from_us=0, to_us=1),))


def test_demo_window_starts_at_the_shanghai_midnight_before_now_minus_hours():
    """Test that the demo covers whole minutes from the Shanghai midnight of the day containing now - hours."""
    now = (T0 + 13 * HOUR) * US  # 2026-11-01 13:00 Shanghai
    assert demo_window(24, now) == ((T0 - 24 * HOUR) * US, T0 * US)
    assert demo_window(1.5, now) == (T0 * US, (T0 + 5400) * US)
    scenario = demo_scenario(T0 * US, (T0 + 24 * HOUR) * US, seed=1)
    assert (scenario.outages[0].from_us, scenario.outages[0].to_us) == ((T0 + 8 * HOUR) * US, (T0 + 14 * HOUR) * US)


def test_offline_demo_runs_end_to_end(tmp_path, capsys):
    """Test that a short demo writes the registry, archive and CSV and prints the KPI table."""
    assert run_offline_demo(tmp_path, hours=0.25, seed=1) == 0
    out = capsys.readouterr().out
    assert "长征镇" in out and "全区合计" in out
    assert {p.name for p in tmp_path.iterdir()} == {"registry.csv", "archive.jsonl.gz", "kpis.csv"}
    assert (tmp_path / "kpis.csv").read_text().startswith("contract,street,kpi,value")
