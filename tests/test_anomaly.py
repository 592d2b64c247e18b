"""Device health: faults injected by the traffic model are found, normal devices are not, and the
monitor reaches the same anomalies and state whatever the batching and across a checkpoint."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import numpy as np
import pytest

from ptmon.anomaly import Anomaly, DeviceHealth
from ptmon.anomaly.rules import load_anomaly_rules
from ptmon.checkpoint import load_checkpoint, save_checkpoint
from ptmon.decode import Decoder
from ptmon.engine import Engine
from ptmon.registry import Registry
from ptmon.replay import Feed
from ptmon.rules import DEFAULT_RULES_DIR
from ptmon.simulators.faults import DeviceFault
from ptmon.simulators.synthetic import Scenario, TrafficGenerator
from ptmon.timebase import US_PER_S

from .conftest import T0, make_registry

US = US_PER_S
DAY, HOUR = 86_400 * US, 3600 * US
START = (T0 - 9 * 86_400) * US  # 2026-10-23: nine days of history before the faults of 2026-11-01
FAULTS_FROM = T0 * US - 6 * HOUR  # 2026-10-31 18:00, so open anomalies cross the month's end
END = T0 * US + 2 * DAY
FAULTY = {"blind": "c-face0", "night": "c-face1", "degraded": "c-face2", "ok_stop": "s-lift0", "reads_stop": "s-door0"}


def registry_rows(extra: tuple[str, ...] = ()) -> list[str]:
    rows = [f"c-face{i},cam,face_cam,taopu" for i in range(10)]
    rows += [f"c-plate{i},cam,plate_cam,taopu" for i in range(5)]
    rows += ["c-hd0,cam,hd_cam,taopu", "c-late,cam,face_cam,taopu,2026-10-30"]  # no counters; too new to judge
    rows += [f"s-lift{i},iot,elevator,taopu" for i in range(12)] + [f"s-door{i},iot,door,taopu" for i in range(12)]
    return rows + list(extra)


def scenario(registry: Registry) -> Scenario:
    def fault(key: str, kind: str, **settings: object) -> DeviceFault:
        return DeviceFault(kind=kind, devices=np.array([registry.index[FAULTY[key]]]), from_us=FAULTS_FROM, to_us=END,
                           **settings)  # type: ignore[arg-type]

    return Scenario(seed=3, lead_in=True, faults=(
        fault("blind", "blind"), fault("night", "blind", night_only=True), fault("degraded", "degraded", points=0.3),
        fault("ok_stop", "stuck"), fault("reads_stop", "stuck", reads_stop=True)))


@dataclass
class Run:
    registry: Registry
    health: DeviceHealth
    found: list[Anomaly]


def feed(registry: Registry, records: list, *, batch: int, health: DeviceHealth | None = None,
         engine: Engine | None = None) -> Run:
    engine = engine or Engine(registry)
    found: list[Anomaly] = []
    health = health or DeviceHealth(engine, load_anomaly_rules(DEFAULT_RULES_DIR / "anomaly.yaml"), on_anomalies=found.extend)
    health.on_anomalies = found.extend
    f = Feed(engine, Decoder(registry))
    for i in range(0, len(records), batch):
        f.feed(records[i : i + batch])
    return Run(registry, health, found)


@pytest.fixture(scope="module")
def traffic(rules):
    registry = make_registry(rules, *registry_rows())
    records = list(TrafficGenerator(registry, rules, scenario(registry)).records(START, END))
    return registry, records


@pytest.fixture(scope="module")
def whole(traffic):
    registry, records = traffic
    run = feed(registry, records, batch=16_384)
    run.health.monitor.engine.finish()
    return run


def raised(found: list[Anomaly]) -> dict[str, list[Anomaly]]:
    out: dict[str, list[Anomaly]] = defaultdict(list)
    for a in found:
        if a.event == "raised":
            out[a.device].append(a)
    return out


def test_every_injected_fault_is_found_as_its_kind_and_nothing_else_is(whole):
    """Test that blind (always and night only), degraded and stuck (reads going on or frozen) devices are
    found after their fault began, and that no normal device is."""
    found = raised(whole.found)
    expected = {FAULTY["blind"]: "blind", FAULTY["night"]: "blind", FAULTY["degraded"]: "degraded",
                FAULTY["ok_stop"]: "stuck", FAULTY["reads_stop"]: "stuck"}
    assert {device: {a.kind for a in alarms} for device, alarms in found.items()} == {d: {k} for d, k in expected.items()}
    for alarms in found.values():
        assert alarms[0].detected >= FAULTS_FROM
    assert found[FAULTY["blind"]][0].detected - FAULTS_FROM <= 2 * HOUR
    assert found[FAULTY["degraded"]][0].detected - FAULTS_FROM <= 2 * HOUR
    night_starts = T0 * US - 4 * HOUR  # 20:00, the first night hour after the fault began
    assert night_starts <= found[FAULTY["night"]][0].detected <= night_starts + 3 * HOUR


def test_a_night_only_blind_camera_stays_blind_through_the_day(whole):
    """Test that the night-blind camera's anomaly is one, still open at the end, not one a night."""
    night = [a for a in whole.found if a.device == FAULTY["night"]]
    assert [a.event for a in night if a.event in ("raised", "cleared")] == ["raised"]
    assert (("blind", whole.registry.index[FAULTY["night"]]) in whole.health.monitor.open)


def test_devices_without_enough_history_or_counters_are_learning(whole):
    """Test that a camera accepted two days ago and a camera without counters are learning, not judged."""
    learning = whole.health.monitor.learning_mask()
    index = whole.registry.index
    assert learning[index["c-late"]] and learning[index["c-hd0"]]
    assert not learning[index["c-face5"]] and not learning[index["s-lift5"]]


def test_an_anomaly_open_at_a_months_end_has_a_row_for_each_month(whole):
    """Test that the blind camera's anomaly writes October's counts at the month's end and November's apart."""
    rows = [a for a in whole.found if a.device == FAULTY["blind"] and a.kind == "blind"]
    october = [a for a in rows if a.event == "month_end"]
    assert [a.month for a in october] == ["2026-10"]
    november = whole.health.monitor.open_anomalies()
    mine = next(a for a in november if a.device == FAULTY["blind"])
    assert mine.month == "2026-11" and mine.start == october[0].start
    assert october[0].expected_attempts > 10 * max(october[0].attempts, 1)
    assert mine.expected_attempts > 10 * max(mine.attempts, 1) and mine.missing_attempts > 0


def test_the_same_messages_in_other_batches_give_the_same_anomalies_and_state(traffic, whole):
    """Test that live batching (small, ragged batches) and replay batching reach identical anomalies and state arrays."""
    registry, records = traffic
    ragged = feed(registry, records, batch=97)
    ragged.health.monitor.engine.finish()
    assert [vars(a) for a in ragged.found] == [vars(a) for a in whole.found]
    mine, theirs = whole.health.state_arrays(), ragged.health.state_arrays()
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert np.array_equal(mine[name], theirs[name], equal_nan=mine[name].dtype.kind == "f"), name


def test_a_checkpoint_restores_the_monitor_by_device_id(traffic, whole, tmp_path: Path, rules):
    """Test that saving mid-run and restoring onto a registry with a device removed and one added continues
    with the same anomalies for the devices in both."""
    registry, records = traffic
    cut = next(i for i, r in enumerate(records) if r[0] * US >= FAULTS_FROM + 30 * 60 * US)
    first = feed(registry, records[:cut], batch=5000)
    engine = first.health.monitor.engine
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, engine=engine, tallies=[], decoder=Decoder(registry), extra={},
                    extensions=first.health.state_arrays())
    changed = make_registry(rules, *[r for r in registry_rows(("c-new,cam,face_cam,taopu",)) if not r.startswith("c-plate4,")])
    restored = load_checkpoint(path, changed)
    health = DeviceHealth(restored.engine, load_anomaly_rules(DEFAULT_RULES_DIR / "anomaly.yaml"),
                          saved=restored.extensions)
    assert any("1 new cameras start learning, 1 no longer in the registry dropped" in n for n in health.notes)
    kept = [r for r in records[cut:] if "/c-plate4/" not in r[1]]
    second = feed(changed, kept, batch=5000, health=health, engine=restored.engine)
    restored.engine.finish()
    expected = [vars(a) for a in whole.found if a.device != "c-plate4"]
    assert [vars(a) for a in first.found + second.found] == expected
    assert health.monitor.learning_mask()[changed.index["c-new"]]


def test_an_anomaly_standing_for_its_for_is_a_device_alert_grouped_per_recipient(rules):
    """Test that device anomalies become alerts of cause "device" after `devices.for`, one incident email per
    recipient listing every device (blind, degraded, stuck), with the device's figures and a dashboard link."""
    from ptmon.alerting.evaluate import AlertEvaluator
    from ptmon.alerting.message import compose
    from ptmon.alerting.model import Cause, Notice
    from ptmon.alerting.rules import load_alert_rules
    from ptmon.live import MonthTallies, SlaPoints

    registry = make_registry(rules, *registry_rows())
    engine = Engine(registry)
    months = MonthTallies(engine)
    health = DeviceHealth(engine, load_anomaly_rules(DEFAULT_RULES_DIR / "anomaly.yaml"))
    alert_rules = load_alert_rules(DEFAULT_RULES_DIR / "alerts.yaml", rules)
    sent: list = []
    AlertEvaluator(engine, months, SlaPoints(months, lambda lines: None), alert_rules, device_health=health.monitor,
                   on_change=lambda notifications, states: sent.extend(notifications))
    generator = TrafficGenerator(registry, rules, scenario(registry))
    for tr in generator.chunks(START, END):
        engine.apply(generator.decoded(tr))
    engine.finish()
    device = [n for n in sent if n.group is not None and n.group.cause is Cause.DEVICE]
    district = [n for n in device if n.recipient == "ops@ptcenter.example"]
    first = district[0]
    assert first.notice is Notice.FIRING
    assert {v.key.device for n in district for v in n.firing} == set(FAULTY.values())
    blind = next(v for v in first.firing if v.key.device == FAULTY["blind"])
    assert blind.key.kpi == "blind" and first.at - blind.since >= alert_rules.devices.for_ * US
    email = compose(first, rules, alert_rules, "ptmon@ptcenter.example")
    body = message_from_bytes(email["message"], policy=default).get_body(("plain",))
    text = body.get_content()
    assert email["kind"] == "device" and "设备失效" in email["subject"]
    assert "/d/ptmon-cameras?" in text and "失明" in text and FAULTY["blind"] in text
    # A degraded camera needs more evidence than a blind one: it joins the incident in a later email.
    joined = next(n for n in district if any(v.key.device == FAULTY["degraded"] for v in n.firing))
    later = compose(joined, rules, alert_rules, "ptmon@ptcenter.example")
    text = message_from_bytes(later["message"], policy=default).get_body(("plain",)).get_content()
    assert later["kind"] == "device" and "劣化" in text and FAULTY["degraded"] in text


def test_a_sensor_cleared_raised_and_cleared_within_one_slot_is_told_in_that_order(traffic):
    """Test that a stuck sensor whose heartbeats of one 5-minute slot clear, raise and clear its anomaly again (a
    burst of buffered heartbeats after an outage does this) is told cleared, raised, cleared, in that order, and is
    left closed: judging the slot's heartbeats used to note every raise before every clear, which left the monitor
    with no open anomaly for a detector that had one, and the next clear crashed the collector (KeyError)."""
    registry, records = traffic
    run = feed(registry, records, batch=16_384)
    device = FAULTY["ok_stop"]
    before = [a.event for a in run.found if a.device == device and a.kind == "stuck"]
    assert before == ["raised", "month_end"]  # stuck from 2026-10-31 18:00, across the month's end
    _, topic, payload = next(r for r in reversed(records) if f"/{device}/" in r[1])
    last = json.loads(payload)
    end_s = END // US
    burst = []  # reads (all failed unless ok) in heartbeats a minute apart, all in the slot after END
    for k, (reads, ok) in enumerate([(1, 1), (40, 0), (1, 1)]):
        last.update(seq=last["seq"] + 1, reads=last["reads"] + reads, read_ok=last["read_ok"] + ok, ts=end_s + 10 + 60 * k)
        burst.append((end_s + 11.0 + 60 * k, topic, json.dumps(last)))
    f = Feed(run.health.monitor.engine, Decoder(registry))
    f.feed(burst)
    run.health.monitor.settle()
    told = [a.event for a in run.found if a.device == device and a.kind == "stuck"]
    assert told == [*before, "cleared", "raised", "cleared"]
    assert not [a for a in run.health.monitor.open_anomalies() if a.device == device]
