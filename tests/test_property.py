"""Property tests: the engine's KPIs equal those of the slow reference (tests/reference.py).

Random small registries and random message streams (heartbeats with duplicated, stale and
restarted ``seq``, boot changes, counter resets, absent counters, malformed payloads, wrong
topics, unknown devices, monitor down/up and crashes) are replayed through
:class:`ptmon.replay.Replayer` and through ``reference_kpis``; every KPI row must agree
on numerator, denominator, expected device-samples and observed seconds.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptmon.registry import parse_registry
from ptmon.replay import Replayer
from ptmon.rules import DEFAULT_RULES_DIR, Rules, load_rules

from .reference import COUNTED_KINDS, COUNTERS, EPOCH, day_of, reference_kpis, to_us

T0 = 1_793_462_400  # 2026-11-01T00:00:00+08:00
H = 3600
STREETS = ("taopu", "wanli")
TYPES = {"iot": ("s_fast", "s_slow"), "cam": ("c_fast", "c_slow")}
PAIRS = {"iot": (("reads", "read_ok"),), "cam": (("face_try", "face_ok"), ("plate_try", "plate_ok"))}
# Streams where observation ends and restarts at one instant, rejected records that start or
# extend observation, and multi-byte padding around the 4,096-byte limit are all generated.
AVOID_SAME_INSTANT_RESTART = False
REJECTED_RECORDS_OBSERVED = True
PAD_CHARS = ["x", "é", "中"]
# Boot ids the devices send. The engine compares boots as text (7 and "7" are the same boot),
# the reference as JSON values; the spec does not say, so a pool mixing them is avoided.
BOOTS = ["A", "B", 7, 0]
HEADER = "device_id,contract,type,street,scenario,community,gateway,accepted_on,retired_on"

# Plausibility limits tight enough that random streams cross them: s_fast may add one attempt
# per 20 s, c_slow reset twice a day; 3 is 333 ms an attempt (the cost is rounded down).
TYPES_YAML = """\
s_fast: {contract: iot, name: 快传感器, heartbeat_period: 60, online_timeout: 120, max_attempt_rate: 0.05}
s_slow: {contract: iot, name: 慢传感器, heartbeat_period: 120, online_timeout: 300, max_resets_per_day: 3}
c_fast: {contract: cam, name: 快相机, heartbeat_period: 60, online_timeout: 120, max_attempt_rate: 3}
c_slow: {contract: cam, name: 慢相机, heartbeat_period: 300, online_timeout: 300, max_resets_per_day: 2}
"""
CONTRACTS_YAML = """\
iot:
  name: 物联
  online_method: {iot_method}
  sample_interval: {iot_interval}
  kpis:
    online:  {{name: 上线率, threshold: 0.90}}
    sensing: {{name: 感知成功率, threshold: 0.95}}
cam:
  name: 安防
  online_method: time_weighted
  sample_interval: {cam_interval}
  kpis:
    online:  {{name: 在线率, threshold: 0.95}}
    capture: {{name: 抓拍成功率, threshold: 0.95}}
    face:    {{name: 人脸, threshold: 0.95, informational: true}}
    plate:   {{name: 车辆, threshold: 0.95, informational: true}}
"""
# time_weighted: both contracts sampled every minute / two minutes (a shared tick grid);
# daily: iot online rate by device-days, hourly grid, over ~3 days.
VARIANTS = {
    "tw": {"iot_method": "time_weighted", "iot_interval": 60, "cam_interval": 120},
    "daily": {"iot_method": "daily", "iot_interval": 3600, "cam_interval": 1800},
}


def write_rules(target: Path, variant: str) -> Rules:
    target.mkdir(parents=True)
    shutil.copy(DEFAULT_RULES_DIR / "streets.yaml", target / "streets.yaml")
    (target / "types.yaml").write_text(TYPES_YAML, encoding="utf-8")
    (target / "contracts.yaml").write_text(CONTRACTS_YAML.format(**VARIANTS[variant]), encoding="utf-8")
    return load_rules(target)


@pytest.fixture(scope="module")
def rules_tw(tmp_path_factory: pytest.TempPathFactory) -> Rules:
    return write_rules(tmp_path_factory.mktemp("rules") / "tw", "tw")


@pytest.fixture(scope="module")
def rules_daily(tmp_path_factory: pytest.TempPathFactory) -> Rules:
    return write_rules(tmp_path_factory.mktemp("rules") / "daily", "daily")


# --- running both sides ------------------------------------------------------------------------


def registry_csv(rows: list[dict]) -> str:
    lines = [HEADER]
    for r in rows:
        lines.append(
            f"{r['device_id']},{r['contract']},{r['type']},{r['street']},scn,{r['street']}-c1,,"
            f"{r['accepted_on']},{r['retired_on']}"
        )
    return "\n".join(lines) + "\n"


def engine_kpis(rules: Rules, rows: list[dict], records: list, start_us: int, end_us: int) -> tuple[dict, dict]:
    """The KPI rows and the counts of the kinds the reference follows."""
    replayer = Replayer(parse_registry(registry_csv(rows), rules), start_us, end_us)
    replayer.feed(list(records))
    res = replayer.results()
    kpis = {
        (r.contract, r.street, r.kpi): (r.numerator, r.denominator, r.expected_device_samples, r.observed_seconds)
        for r in res.rows
    }
    every = {**res.rejects, **res.engine_stats}
    return kpis, {kind: every[kind] for kind in COUNTED_KINDS if every.get(kind)}


def assert_same(
    rules: Rules, rows: list[dict], records: list, start_us: int, end_us: int,
    rejected_records_observed: bool = REJECTED_RECORDS_OBSERVED,
) -> None:
    got, got_counts = engine_kpis(rules, rows, records, start_us, end_us)
    counts: dict[str, int] = {}
    want = reference_kpis(rules, rows, records, start_us, end_us, rejected_records_observed=rejected_records_observed,
                          counts=counts)
    diffs = [
        f"  {'/'.join(key)}: engine={got.get(key)} reference={want.get(key)}"
        for key in sorted(set(got) | set(want))
        if got.get(key) != want.get(key)
    ]
    assert not diffs, (
        "engine and reference disagree on (numerator, denominator, expected_device_samples, "
        "observed_seconds):\n" + "\n".join(diffs)
    )
    assert got_counts == counts, "engine and reference disagree on the messages counted by kind"


# --- strategies ---------------------------------------------------------------------------------

WEIRD = {
    "counter": [
        "-1", "true", "false", "1.0", "1e2", '"5"', "1099511627776", "1099511627777",
        "100000000000000000000000000000", "18446744073709551616", "NaN", "Infinity", "-Infinity",
        "null", "[]", "{}", "0",
    ],
    "seq": [
        "-1", "9007199254740992", "9007199254740993", "1.5", "2.0", "true", '"3"', "null",
        "100000000000000000000000000000",
    ],
    "bat": ["100", "100.0", "101", "-0.5", "0", "99.5", "true", "1e400", '"50"', "null"],
    "rssi": ["-200", "-201", "50", "50.5", "-80.25", "true", "-1e309"],
    "ts": [
        "0", "-1", "8589934592", "8589934593", "1e300", "1793462400.5", "-0.0", "true", '"x"',
        "1e400", "null",
    ],
    "boot": [
        '"' + "x" * 64 + '"', '"' + "x" * 65 + '"', '"' + "é" * 64 + '"', "9223372036854775807",
        "-9223372036854775807", "-9223372036854775808", "9223372036854775808", "1.5", "true", "[]",
        "{}", '"\\ud800"', '""',
    ],
}
# Valid values at the edges of their ranges (the ones just outside are in WEIRD).
EDGE = {
    "counter": ["1099511627776", "0"],
    "seq": ["9007199254740992", "0"],
    "bat": ["0", "100", "100.0", "0.5"],
    "rssi": ["-200", "50", "-200.0"],
    "ts": ["0", "8589934592", "-0.0", "8589934591.5"],
    "boot": ['"' + "x" * 64 + '"', '"' + "中" * 64 + '"', '""', "9223372036854775807", "-9223372036854775807"],
}
BAD_PAYLOADS = [
    "", "not json", "[1, 2]", '"str"', "42", "null", "{", '{"reads": NaN}', "{'seq': 1}",
    '\ufeff{"seq": 1}', '{"seq": 1} x', '{"boot": "\ud800"}', '{"seq": 1,}', "{}",
    '{"seq": null, "reads": null}', '{"unknown": [1, {"a": 10000000000000000000000000}]}',
]


def _num_text(value: object) -> str:
    return json.dumps(value)


@st.composite
def event_time(draw, lo: float, hi: float, grids: tuple[int, ...] = (60,)) -> float:
    """A receive time in [lo, hi]: often exactly on (or 1 µs around) a grid boundary."""
    how = draw(st.sampled_from(["grid", "grid", "grid", "near", "any"]))
    if how == "any":
        return lo + draw(st.integers(0, int((hi - lo) * 1000))) / 1000
    step = draw(st.sampled_from(grids))
    k = draw(st.integers(int((lo - T0) // step) + 1, int((hi - T0) // step)))
    t = T0 + step * k
    if how == "near":
        t += draw(st.sampled_from([1e-6, -1e-6, 0.5, 30, 5e-7, -5e-7, 4.999e-7, 1.5e-6]))
    return t


class _Sim:
    """What a device has sent so far, to make plausible (and implausible) next messages."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.boot: object = None
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.clock = T0  # the device's ts


@st.composite
def heartbeat_fields(draw, sim: _Sim, contract: str) -> dict[str, str]:
    """Payload fields as raw JSON text, keyed by name."""
    fields: dict[str, str] = {}
    op = draw(st.sampled_from(["next", "next", "next", "absent", "same", "back", "back64", "back65", "far", "jump",
                               "skip", "skip", "restart", "huge"]))
    if op != "absent":
        sim.seq = {
            "next": sim.seq + 1,
            "same": sim.seq,
            "back": max(0, sim.seq - draw(st.integers(1, 3))),
            "back64": max(0, sim.seq - 64),
            "back65": max(0, sim.seq - 65),
            "far": max(0, sim.seq - 1000),
            "jump": sim.seq + draw(st.integers(2, 200)),
            "skip": sim.seq + draw(st.integers(2, 4)),  # a few lost; "back" may bring them late
            "restart": draw(st.integers(0, 3)),  # rebooted without a boot id
            "huge": sim.seq + draw(st.sampled_from([65_537, 65_538, 10**9])),  # a seq_jump (65,537: the largest loss)
        }[op]
        fields["seq"] = str(sim.seq)
    bop = draw(st.sampled_from(["keep"] * 6 + ["absent", "absent", "change"]))
    if bop == "change":
        sim.boot = draw(st.sampled_from(BOOTS))
    if bop != "absent" and sim.boot is not None:
        fields["boot"] = _num_text(sim.boot)
    pairs = list(PAIRS[contract])
    if draw(st.integers(0, 9)) == 0:  # a counter of the other contract
        pairs += list(PAIRS["cam" if contract == "iot" else "iot"])
    for tries, oks in pairs:
        cop = draw(st.sampled_from(["inc"] * 6 + ["absent", "ok_absent", "try_absent", "lower", "zero", "same",
                                                 "burst", "catch_up"]))
        c = sim.counters
        if cop == "inc":
            step = draw(st.integers(0, 6))
            c[tries] += step
            c[oks] = min(c[tries], c[oks] + draw(st.integers(0, step)))
        elif cop == "burst":  # beyond any attempt allowance, or just within it
            c[tries] += draw(st.sampled_from([50, 1000, 2**39]))
        elif cop == "catch_up":  # successes of earlier attempts: plausible up to the unmatched ones
            c[oks] = c[tries]
        elif cop == "lower":
            c[tries] = max(0, c[tries] - draw(st.integers(1, 5)))
            c[oks] = min(c[oks], c[tries])
        elif cop == "zero":
            c[tries] = c[oks] = 0
        if cop != "absent":
            if cop != "try_absent":
                fields[tries] = str(c[tries])
            if cop != "ok_absent":
                fields[oks] = str(c[oks])
    if draw(st.integers(0, 3)) == 0:
        fields["bat"] = str(draw(st.integers(0, 100)))
        fields["rssi"] = str(draw(st.integers(-120, -40)))
    clock = draw(st.sampled_from(["none", "none", "on", "on", "on", "random", "fraction"]))
    if clock == "on":  # the device's clock, going forward (a restart with a later ts is one)
        sim.clock += draw(st.sampled_from([0, 1, 30, 300]))
        fields["ts"] = str(sim.clock)
    elif clock == "random":
        fields["ts"] = str(T0 + draw(st.integers(-100, 100)))
    elif clock == "fraction":  # the same whole second
        fields["ts"] = str(sim.clock + draw(st.sampled_from([0.25, 0.75])))
    if draw(st.integers(0, 7)) == 0:
        fields[draw(st.sampled_from(["seq", "reads", "face_ok", "bat"]))] = "null"
    if draw(st.integers(0, 7)) == 0:
        fields["fw"] = '"1.2.3"'
    return fields


def render(fields: dict[str, str]) -> str:
    return "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"


def padded(fields: dict[str, str], target_bytes: int, char: str) -> str:
    """The payload with a "pad" key making it exactly ``target_bytes`` UTF-8 bytes long."""
    base = len(render({**fields, "pad": '""'}).encode())
    room = target_bytes - base
    width = len(char.encode())
    pad = char * (room // width) + "x" * (room % width)
    return render({**fields, "pad": json.dumps(pad, ensure_ascii=False)})


@st.composite
def scenario(draw, variant: str):
    """(registry rows, records, start_us, end_us); the period is on the tick grid (the engine requires it)."""
    if variant == "tw":
        start = T0 + draw(st.sampled_from([0, 22 * H])) + draw(st.sampled_from([0, 0, 0, 60, 120, 180]))
        end = start + draw(st.integers(1, 4)) * H + draw(st.sampled_from([0, 0, 60, 3540]))
        lo, hi = start - 1800, end + 600
        n_events = draw(st.integers(0, 70))
        grids, hb_weight = (60,), 12
    else:
        start = T0 + draw(st.sampled_from([0, 0, -6 * H, 3 * H]))
        end = start + draw(st.sampled_from([72 * H, 72 * H, 67 * H, 79 * H + 1800, 48 * H + 1800]))
        # whole Shanghai days around the period, so that days cut by its ends can be observed
        lo = T0 + ((start - T0) // (24 * H)) * 24 * H - draw(st.sampled_from([H, 0, -H]))
        hi = T0 + -((T0 - end) // (24 * H)) * 24 * H + H
        n_events = draw(st.integers(0, 90))
        grids, hb_weight = (60, 3600, 86_400), 40
    start_us, end_us = to_us(start), to_us(end)

    first_day, last_day = day_of(start_us) - 1, day_of(end_us) + 1
    days = list(range(first_day, last_day + 1))
    rows = []
    for i in range(draw(st.integers(1, 6))):
        contract = draw(st.sampled_from(["iot", "cam"]))
        accepted = draw(st.sampled_from(days))
        retired = draw(st.one_of(st.just(None), st.integers(accepted + 1, last_day + 1)))
        rows.append(
            {
                "device_id": f"d{i}",
                "contract": contract,
                "type": draw(st.sampled_from(TYPES[contract])),
                "street": draw(st.sampled_from(STREETS)),
                "accepted_on": _date(accepted),
                "retired_on": "" if retired is None else _date(retired),
            }
        )

    times = sorted(draw(event_time(lo, hi, grids)) for _ in range(n_events))
    records: list[tuple[float, str, str]] = []
    for record in _messages(draw, rows, times, hb_weight):
        same = [r for r in records if to_us(r[0]) == to_us(record[0])]
        if AVOID_SAME_INSTANT_RESTART and same and (any(_monitor(r) == "down" for r in same) or _monitor(record) == "up"):
            continue  # observation would end and restart at one instant (see AVOID_SAME_INSTANT_RESTART)
        records.append(record)
    return rows, records, start_us, end_us


def _monitor(record: tuple[float, str, str]) -> str | None:
    return record[2].strip().strip('"') if record[1] == "$ptmon/monitor" else None


OTHER_KINDS = [
    "weird", "weird", "edge", "edge", "bad_payload", "oversize", "mismatch", "street", "contract",
    "unknown", "bad_topic", "down", "up", "control", "retained", "ok_only",
]
CONTROLS = [("$ptmon/tick", ""), ("$ptmon/tick", ""), ("$ptmon/monitor", "restart"), ("$ptmon/other", "up")]


def _messages(draw, rows: list[dict], times: list[float], hb_weight: int) -> list[tuple[float, str, str]]:
    sims = {r["device_id"]: _Sim(draw(st.integers(0, 200))) for r in rows}
    records = []
    for t in times:
        kind = draw(st.sampled_from(["hb"] * hb_weight + OTHER_KINDS))
        if kind in ("down", "up"):
            records.append((t, "$ptmon/monitor", draw(st.sampled_from([kind, kind, kind, f' "{kind}"\n']))))
            continue
        if kind == "control":
            records.append((t, *draw(st.sampled_from(CONTROLS))))
            continue
        row = draw(st.sampled_from(rows))
        fields = draw(heartbeat_fields(sims[row["device_id"]], row["contract"]))
        contract, street, device = row["contract"], row["street"], row["device_id"]
        payload = render(fields)
        if kind == "weird":
            key = draw(st.sampled_from(["counter", "seq", "bat", "rssi", "ts", "boot"]))
            name = draw(st.sampled_from(COUNTERS)) if key == "counter" else key
            fields[name] = draw(st.sampled_from(WEIRD[key]))
            payload = render(fields)
        elif kind == "edge":  # a value at the edge of its valid range: accepted
            key = draw(st.sampled_from(sorted(EDGE)))
            name = draw(st.sampled_from(COUNTERS)) if key == "counter" else key
            fields[name] = draw(st.sampled_from(EDGE[key]))
            payload = render(fields)
        elif kind == "mismatch":  # a success counter above its attempts counter
            tries, oks = draw(st.sampled_from(PAIRS[row["contract"]]))
            fields[tries] = str(sims[device].counters[tries])
            fields[oks] = str(sims[device].counters[tries] + draw(st.integers(1, 3)))
            payload = render(fields)
        elif kind == "ok_only":  # successes alone, often with a new boot: never more than the attempts
            if draw(st.booleans()):
                sims[device].boot = draw(st.sampled_from(BOOTS))
                fields["boot"] = _num_text(sims[device].boot)
            tries, oks = draw(st.sampled_from(PAIRS[row["contract"]]))
            fields.pop(tries, None)
            fields[oks] = str(draw(st.sampled_from([sims[device].counters[oks], 1000])))
            payload = render(fields)
        elif kind == "retained":  # the broker's stored copy, as the collector archives it
            records.append((t, "$ptmon/retained", json.dumps({"topic": f"putuo/{contract}/{street}/{device}/hb",
                                                              "payload": payload})))
            continue
        elif kind == "bad_payload":
            payload = draw(st.sampled_from(BAD_PAYLOADS))
        elif kind == "oversize":
            payload = padded(fields, draw(st.sampled_from([4095, 4096, 4097])), draw(st.sampled_from(PAD_CHARS)))
        elif kind == "street":
            street = STREETS[1 - STREETS.index(street)]
        elif kind == "contract":
            contract = "cam" if contract == "iot" else "iot"
        elif kind == "unknown":
            device = "zz9"
        elif kind == "bad_topic":
            level = f"{contract}/{street}/{device}"
            topic = draw(st.sampled_from([f"putuo/{level}", f"putuo/{level}/status", f"iot/{level}/hb", f"putuo/{level}/hb/x"]))
            records.append((t, topic, payload))
            continue
        records.append((t, f"putuo/{contract}/{street}/{device}/hb", payload))
    return records


def _date(day: int) -> str:
    return (EPOCH + timedelta(days=day)).isoformat()


# --- the properties -----------------------------------------------------------------------------

HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]


@pytest.mark.slow
@settings(max_examples=450, deadline=None, suppress_health_check=HEALTH)
@given(case=scenario("tw"))
def test_time_weighted_kpis_match_reference(rules_tw: Rules, case) -> None:
    """Test that time_weighted online rates and success rates equal the reference's."""
    assert_same(rules_tw, *case)


@pytest.mark.slow
@settings(max_examples=180, deadline=None, suppress_health_check=HEALTH)
@given(case=scenario("daily"))
def test_daily_kpis_match_reference(rules_daily: Rules, case) -> None:
    """Test that daily online rates (over days wholly observed) equal the reference's."""
    assert_same(rules_daily, *case)


# --- hand-built examples ------------------------------------------------------------------------


def _row(device_id: str, contract: str, type_code: str, street: str, accepted: str = "2026-10-01", retired: str = "") -> dict:
    return {
        "device_id": device_id, "contract": contract, "type": type_code, "street": street,
        "accepted_on": accepted, "retired_on": retired,
    }


def _hb(t: float, row: dict, **payload: object) -> tuple[float, str, str]:
    return (t, f"putuo/{row['contract']}/{row['street']}/{row['device_id']}/hb", json.dumps(payload))


def test_boundaries_and_counters_example(rules_tw: Rules) -> None:
    """Test that a hand-built case of timeout boundaries, a duplicate and a reset agrees."""
    cam = _row("c1", "cam", "c_fast", "taopu")
    iot = _row("s1", "iot", "s_slow", "wanli")
    records = [
        _hb(T0 - 60, cam, seq=1, boot="A", face_try=10, face_ok=9, plate_try=5, plate_ok=5),
        _hb(T0 - 30, iot, seq=7, reads=100, read_ok=99),
        _hb(T0 + 120, cam, seq=2, boot="A", face_try=14, face_ok=12, plate_try=5, plate_ok=5),  # at a sample
        _hb(T0 + 120, cam, seq=2, boot="A", face_try=99, face_ok=99),  # duplicate: ignored
        _hb(T0 + 240, iot, seq=8, reads=110, read_ok=104),
        _hb(T0 + 360, cam, seq=3, boot="B", face_try=3, face_ok=3),  # new boot: full values, plate from 0
        _hb(T0 + 600, iot, seq=9, reads=4, read_ok=4),  # counter went down: reset
        (T0 + 900, "putuo/cam/taopu/c1/hb", '{"seq": 4, "face_try": 1, "face_ok": 2}'),  # counter_mismatch
        _hb(T0 + 1200, cam, seq=5, boot="B", face_try=6, face_ok=5, plate_try=2, plate_ok=1),
    ]
    assert_same(rules_tw, [cam, iot], records, to_us(T0), to_us(T0 + 1800))


def test_monitor_gaps_example(rules_tw: Rules) -> None:
    """Test that a down/up gap and a crash (up while up) leave the same observed samples."""
    cam = _row("c1", "cam", "c_slow", "taopu")
    records = [_hb(T0 + 60 * k, cam, seq=k) for k in range(10)]
    records += [(T0 + 600, "$ptmon/monitor", "down"), (T0 + 900, "$ptmon/monitor", "up")]
    records += [_hb(T0 + 960, cam, seq=20), (T0 + 1500, "$ptmon/monitor", "up"), _hb(T0 + 1560, cam, seq=21)]
    records += [_hb(T0 + 3700, cam, seq=22)]  # past the end: observation reaches the end
    assert_same(rules_tw, [cam], records, to_us(T0), to_us(T0 + 3600))


def test_daily_lease_and_partial_days_example(rules_daily: Rules) -> None:
    """Test that daily device-days skip a partly observed day and follow the lease dates."""
    a = _row("s1", "iot", "s_fast", "taopu", accepted="2026-11-02")
    b = _row("s2", "iot", "s_slow", "wanli", retired="2026-11-03")
    records = [_hb(T0 + 10, b, seq=1), _hb(T0 + 5 * H, b, seq=2)]
    records += [_hb(T0 + 26 * H, a, seq=1), (T0 + 30 * H, "$ptmon/monitor", "down")]
    records += [(T0 + 32 * H, "$ptmon/monitor", "up")]  # 2026-11-02 is partly observed
    records += [_hb(T0 + 50 * H, a, seq=2), _hb(T0 + 51 * H, b, seq=3), _hb(T0 + 72 * H + 60, a, seq=3)]
    assert_same(rules_daily, [a, b], records, to_us(T0), to_us(T0 + 72 * H))
    # a period cut inside days at both ends: only the wholly included, wholly observed day counts
    early = [_hb(T0 - 24 * H, b, seq=0), _hb(T0 - 20 * H, b, seq=1), *records[1:]]
    assert_same(rules_daily, [a, b], early, to_us(T0 - 6 * H), to_us(T0 + 48 * H + 1800))


def test_restart_at_the_instant_observation_ended(rules_tw: Rules) -> None:
    """Test that a sample instant where observation ends and restarts is counted once."""
    iot = _row("d0", "iot", "s_fast", "taopu")
    records = [_hb(T0, iot, seq=1), _hb(T0 + 300, iot, seq=2), (T0 + 300, "$ptmon/monitor", "up")]
    records += [_hb(T0 + 360, iot, seq=3)]  # the crash leaves (300, 300]: nothing; 300 is counted twice
    assert_same(rules_tw, [iot], records, to_us(T0), to_us(T0 + H))


def test_oversize_is_measured_in_bytes(rules_tw: Rules) -> None:
    """Test that a payload of 4,097 UTF-8 bytes (2,067 characters) is rejected as oversize."""
    iot = _row("d0", "iot", "s_fast", "taopu")
    big = padded({"reads": "5", "read_ok": "4"}, 4097, "é")
    records = [_hb(T0, iot, reads=0, read_ok=0), (T0 + 60, "putuo/iot/taopu/d0/hb", big), _hb(T0 + 120, iot)]
    assert_same(rules_tw, [iot], records, to_us(T0), to_us(T0 + H))


def test_rejected_message_extends_observation(rules_tw: Rules) -> None:
    """Test that observation ends at the last archive record even when it was rejected."""
    iot = _row("d0", "iot", "s_fast", "taopu")
    records = [_hb(T0, iot, seq=1), (T0 + 300, "putuo/iot/taopu/unknown/hb", "{}")]
    assert_same(rules_tw, [iot], records, to_us(T0), to_us(T0 + H), rejected_records_observed=True)
