"""Where device health shows: rule files, rollup points, the ledger, alerts, the report, Prometheus,
and the simulator's fault events."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ptmon.anomaly import Anomaly, DeviceHealth
from ptmon.anomaly.ledger import forget_raised_since, read_anomalies, write_anomalies
from ptmon.anomaly.metrics import AnomalyCollector
from ptmon.anomaly.rules import load_anomaly_rules
from ptmon.engine import Engine
from ptmon.errors import ConfigError
from ptmon.exemptions import ExemptionMask
from ptmon.ledger.records import Exemption
from ptmon.ledger.store import Ledger
from ptmon.report.health import street_health
from ptmon.rules import COUNTERS, DEFAULT_RULES_DIR
from ptmon.simulators.scenario import load_scenario
from ptmon.simulators.synthetic import Scenario, TrafficGenerator
from ptmon.tally import Tally
from ptmon.timebase import US_PER_S

from .conftest import T0, make_registry

US = US_PER_S
SHIPPED = DEFAULT_RULES_DIR / "anomaly.yaml"


# --- rules/anomaly.yaml -----------------------------------------------------------------------


def test_the_shipped_anomaly_rules_load_with_their_documented_values():
    """Test that rules/anomaly.yaml loads with the values rules/README.md documents."""
    r = load_anomaly_rules(SHIPPED)
    assert (r.window_days, r.min_days, r.night_from, r.night_to, r.rollup_interval) == (28, 7, 72_000, 21_600, 300)
    assert (r.blind.ratio, r.blind.evidence, r.blind.min_rate, r.blind.max_spread, r.blind.dispersion) == (0.1, 12, 2, 0.5, 2)
    assert (r.degraded.drop, r.degraded.evidence, r.stuck.evidence) == (0.15, 16, 12)
    assert r.night_hours() == [h >= 20 or h < 6 for h in range(24)]


@pytest.mark.parametrize(("text", "message"), [
    ("blind: {ratio: 0.9}", "blind.ratio must be a number in [0.001, 0.5]: 0.9"),
    ("blind: {ratio: true}", "blind.ratio must be a number in [0.001, 0.5]: True"),
    ("degraded: {drop: 15}", "degraded.drop must be a number in [0.01, 0.9]: 15"),
    ("stuck: {evidence: 1}", "stuck.evidence must be a number in [2, 100]: 1"),
    ("learning: {window: 3d}", "learning.window must be whole days from 7d to 90d: '3d'"),
    ("learning: {min_days: 2.5}", "learning.min_days must be a whole number in [1, 28]: 2.5"),
    ("night: {from: '20:30'}", "night.to must be a whole hour other than night.from"),
    ("night: {to: 6}", "night.to must be a Shanghai time of day \"HH:MM\": 6"),
    ("rollup: {interval: 7m}", "rollup.interval must be whole minutes dividing an hour (1m, 5m, 15m, 1h): '7m'"),
    ("blind: {ratios: 0.1}", "blind.ratios is not a known key"),
    ("stuck: [1]", "stuck must be a mapping"),
], ids=["ratio", "bool", "percent", "evidence", "window", "min_days", "half-hour", "clock", "interval", "typo", "list"])
def test_bad_anomaly_rules_name_the_file_the_key_and_the_value(tmp_path: Path, text: str, message: str):
    """Test that a mistake in anomaly.yaml stops with the file, the key and the value."""
    path = tmp_path / "anomaly.yaml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_anomaly_rules(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


# --- rollups ----------------------------------------------------------------------------------


def rollup_run(rules, *, exempt: bool):
    registry = make_registry(rules, *[f"c{i},cam,face_cam,taopu" for i in range(6)], "p0,cam,plate_cam,wanli",
                             *[f"s{i},iot,elevator,taopu" for i in range(5)], "d0,iot,door,wanli",
                             "late,iot,elevator,taopu,2026-11-01")
    engine = Engine(registry)
    start, end = (T0 - 3600) * US, (T0 + 3 * 3600) * US
    if exempt:
        engine.exemptions = ExemptionMask(registry)
        engine.exemptions.load([Exemption(id=1, scope="device", target="c2", start=T0 * US, end=(T0 + 5400) * US,
                                          reason="test", approver="t", created_at=0)])
    tally = Tally.attach(engine, T0 * US, end)
    lines: list[str] = []
    DeviceHealth(engine, load_anomaly_rules(SHIPPED), emit_points=lines.extend)
    generator = TrafficGenerator(registry, rules, Scenario(seed=5, loss=0.05))
    for tr in generator.chunks(start, end):
        engine.apply(generator.decoded(tr))
    engine.advance_to(end)
    engine.finish()
    return registry, tally.results(), lines


def parse(line: str) -> tuple[str, dict[str, str], dict[str, int], int]:
    head, fields, stamp = line.rsplit(" ", 2)
    measurement, *tags = head.split(",")
    values = {k: int(v[:-1]) for k, v in (f.split("=") for f in fields.split(",")) if v.endswith("i")}
    return measurement, dict(t.split("=") for t in tags), values, int(stamp)


@pytest.mark.parametrize("exempt", [False, True], ids=["plain", "exemption"])
def test_rollups_sum_to_the_streets_kpi_figures(rules, exempt):
    """Test that sla_type and sla_community points over a period sum to the sla figures of each contract × street
    (online and expected device-samples, counter deltas), with and without an exemption in force."""
    _registry, results, lines = rollup_run(rules, exempt=exempt)
    sums: dict[tuple[str, str, str], dict[str, int]] = {}
    for line in lines:
        measurement, tags, values, stamp = parse(line)
        if measurement not in ("sla_type", "sla_community") or stamp < T0 * US:
            continue
        bucket = sums.setdefault((measurement, tags["contract"], tags["street"]), {})
        for k, v in values.items():
            bucket[k] = bucket.get(k, 0) + v
    checked = 0
    for row in results.rows:
        if row.street == "district" or not row.denominator:
            continue
        for measurement in ("sla_type", "sla_community") if row.contract == "cam" else ("sla_type",):
            got = sums[measurement, row.contract, row.street]
            if row.kpi == "online":
                assert (got["online"], got["expected"]) == (row.numerator, row.denominator), (measurement, row)
            elif row.kpi in ("sensing", "face", "plate"):
                ok, tries = {"sensing": ("read_ok", "reads"), "face": ("face_ok", "face_try"),
                             "plate": ("plate_ok", "plate_try")}[row.kpi]
                assert (got[ok], got[tries]) == (row.numerator, row.denominator), (measurement, row)
            checked += 1
    assert checked >= 12
    if exempt:
        online = results.row("cam", "taopu", "online")
        assert online.denominator < 6 * 180  # c2 was out of the denominator for 90 minutes


# --- ledger, report, metrics ------------------------------------------------------------------


def anomaly(kind: str = "blind", **changes: object) -> Anomaly:
    base = dict(device="c1", kind=kind, contract="cam", street="taopu", type="face_cam", community="taopu-c1",
                gateway="gw", start=T0 * US, detected=(T0 + 600) * US, end=None, month="2026-11", attempts=3.0,
                successes=3.0, expected_attempts=400.0, expected_successes=390.0)
    return Anomaly(**{**base, **changes})  # type: ignore[arg-type]


def test_anomaly_rows_are_written_again_not_twice(tmp_path: Path):
    """Test that writing an anomaly's row again (a checkpoint, the replayed tail) replaces it, keyed by
    device, kind, start and month, and that a ledger without the table reads as none."""
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        assert read_anomalies(ledger, "2026-11") == []
        write_anomalies(ledger, [anomaly(), anomaly(kind="degraded", detected=(T0 + 900) * US)])
        write_anomalies(ledger, [anomaly(attempts=5.0, expected_attempts=800.0, end=(T0 + 7200) * US)])
        write_anomalies(ledger, [anomaly(month="2026-12", attempts=1.0)])
        rows = read_anomalies(ledger, "2026-11")
    assert [(a.kind, a.attempts, a.expected_attempts, a.end) for a in rows] == [
        ("blind", 5.0, 800.0, (T0 + 7200) * US), ("degraded", 3.0, 400.0, None)]


def test_a_restart_drops_the_rows_raised_after_its_state_but_those_open_in_it(tmp_path: Path):
    """Test that the rows of anomalies detected at or after the restored state's instant go (in every month),
    except those of anomalies open in it, and rows detected before it stay."""
    restored_at = (T0 + 3600) * US
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        assert forget_raised_since(ledger, restored_at, set()) == 0  # a ledger without the table
        write_anomalies(ledger, [
            anomaly(),  # detected before: stays
            anomaly(device="c2", start=(T0 + 3000) * US, detected=restored_at),  # open in the restored state
            anomaly(device="c2", start=(T0 + 3000) * US, detected=restored_at, month="2026-12"),
            anomaly(device="c3", start=(T0 + 3300) * US, detected=restored_at),  # raised after it: goes
            anomaly(device="c3", start=(T0 + 3300) * US, detected=restored_at, month="2026-12")])
        assert forget_raised_since(ledger, restored_at, {("c2", "blind", (T0 + 3000) * US)}) == 2
        rows = read_anomalies(ledger, "2026-11") + read_anomalies(ledger, "2026-12")
    assert [(a.device, a.month) for a in rows] == [("c1", "2026-11"), ("c2", "2026-11"), ("c2", "2026-12")]


def test_the_report_section_shows_what_the_anomalies_cost_the_street(rules):
    """Test that a street's capture rate is shown as measured and as if its anomalous devices had worked as
    their baselines: (ok + missing successes) / (tries + missing attempts)."""
    _registry, results, _ = rollup_run(rules, exempt=False)
    row = results.row("cam", "taopu", "capture")
    blind = anomaly(attempts=10.0, successes=9.0, expected_attempts=1010.0, expected_successes=989.0)
    degraded = anomaly(device="c2", kind="degraded", attempts=500.0, successes=340.0, expected_attempts=500.0,
                       expected_successes=490.0)
    [health] = street_health([blind, degraded], results, rules.contract("cam"), rules.street_codes())
    assert (health.count("blind"), health.count("degraded"), health.count("stuck")) == (1, 1, 0)
    assert health.measured == Fraction(row.numerator, row.denominator)
    assert health.at_baseline == Fraction(row.numerator + 980 + 150, row.denominator + 1000)


def test_prometheus_counts_open_anomalies_per_street_and_kind(rules):
    """Test that ptmon_anomaly_devices counts open anomalies per contract × street × kind and devices learning."""
    registry = make_registry(rules, "c1,cam,face_cam,taopu", "c2,cam,face_cam,taopu", "s1,iot,smoke,wanli")
    health = DeviceHealth(Engine(registry), load_anomaly_rules(SHIPPED))
    from ptmon.anomaly.monitor import Opened

    health.monitor.open["blind", registry.index["c2"]] = Opened(T0 * US, (T0 + 60) * US)
    health.monitor.detections["blind"] = 1
    prom = CollectorRegistry()
    prom.register(AnomalyCollector(health.monitor))
    text = generate_latest(prom).decode()
    assert 'ptmon_anomaly_devices{contract="cam",kind="blind",street="taopu"} 1.0' in text
    assert 'ptmon_anomaly_devices{contract="cam",kind="learning",street="taopu"} 2.0' in text
    assert 'ptmon_anomaly_devices{contract="iot",kind="learning",street="wanli"} 1.0' in text
    assert 'ptmon_anomaly_detections_total{kind="blind"} 1.0' in text


# --- the simulator's faults -------------------------------------------------------------------


def test_scenario_fault_events_choose_distinct_devices_and_spread_their_starts(rules, tmp_path: Path):
    """Test that blind, degraded and stuck events pick their count of devices, never one device twice, starting
    within [from, from + spread)."""
    registry = make_registry(rules, *[f"c{i},cam,face_cam,taopu" for i in range(8)],
                             *[f"s{i},iot,elevator,taopu" for i in range(8)])
    path = tmp_path / "faults.yaml"
    path.write_text("events:\n  - blind: {count: 3, contract: cam, from: 1h, spread: 2h, night_only: true}\n"
                    "  - degraded: {count: 3, contract: cam, from: 1h, points: 0.3}\n"
                    "  - stuck: {count: 2, contract: iot, from: 30m, to: 5h, reads_stop: true}\n", encoding="utf-8")
    plan = load_scenario(path, registry, T0 * US, (T0 + 6 * 3600) * US, seed=1)
    faults = plan.traffic.faults
    devices = [int(f.devices[0]) for f in faults]
    assert len(devices) == len(set(devices)) == 8
    blind = [f for f in faults if f.kind == "blind"]
    assert all(f.night_only and (T0 + 3600) * US <= f.from_us < (T0 + 3 * 3600) * US for f in blind)
    assert {f.to_us for f in faults if f.kind == "stuck"} == {(T0 + 5 * 3600) * US}
    path.write_text("events:\n  - stuck: {count: 1, reads_stop: 1}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"events\[0\]\.stuck\.reads_stop must be true or false"):
        load_scenario(path, registry, T0 * US, (T0 + 3600) * US, seed=1)


def test_fault_traffic_keeps_heartbeats_and_stops_only_the_job(rules):
    """Test that a blind camera and a stuck sensor keep their heartbeats while their counters stop moving."""
    from ptmon.simulators.faults import DeviceFault

    registry = make_registry(rules, "c0,cam,face_cam,taopu", "c1,cam,face_cam,taopu", "s0,iot,elevator,taopu")
    faults = (DeviceFault(kind="blind", devices=np.array([0]), from_us=T0 * US, to_us=(T0 + 7200) * US),
              DeviceFault(kind="stuck", devices=np.array([2]), from_us=T0 * US, to_us=(T0 + 7200) * US, reads_stop=True))
    generator = TrafficGenerator(registry, rules, Scenario(faults=faults))
    tr = next(generator.chunks(T0 * US, (T0 + 3600) * US))
    per_device = {d: tr.counters[tr.device == d] for d in range(3)}
    assert all(len(per_device[d]) >= 10 for d in range(3))  # everyone heartbeats
    face_try = COUNTERS.index("face_try")
    assert np.ptp(per_device[0][:, face_try]) == 0 < np.ptp(per_device[1][:, face_try])
    assert np.ptp(per_device[2][:, COUNTERS.index("reads")]) == 0
