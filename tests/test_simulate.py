"""The MQTT simulator against a real Mosquitto: what is sent arrives, scenarios show."""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ptmon.archive import ArchiveReader
from ptmon.errors import ConfigError
from ptmon.registry import load_registry
from ptmon.replay import replay
from ptmon.simulators.link import BrokerAddress
from ptmon.simulators.scenario import load_scenario
from ptmon.simulators.simulate import Options, Simulator
from ptmon.timebase import US_PER_S

from .brokers import Subscriber
from .conftest import T0, TWO_STREETS, write_two_street_registry

STREETS = TWO_STREETS


@pytest.fixture(scope="module")
def registry_file(tmp_path_factory):
    return write_two_street_registry(tmp_path_factory.mktemp("reg") / "registry.csv")


def simulate(rules, registry_file, port, tmp_path, scenario_text=None, *, hours=2.0, seed=1, speed=0.0):
    registry = load_registry(registry_file, rules)
    scenario = None
    if scenario_text is not None:
        scenario = tmp_path / "scenario.yaml"
        scenario.write_text(scenario_text)
    end = T0 * US_PER_S + int(hours * 3600) * US_PER_S
    plan = load_scenario(scenario, registry, T0 * US_PER_S, end, seed)
    record = tmp_path / f"record-{seed}-{time.monotonic_ns()}.jsonl.gz"
    options = Options(broker=BrokerAddress.parse(f"mqtt://127.0.0.1:{port}"), start_us=T0 * US_PER_S,
                      duration_us=int(hours * 3600) * US_PER_S, speed=speed, record=record,
                      client_prefix=f"t{time.monotonic_ns()}")
    summary = asyncio.run(Simulator(registry, plan, options).run())
    return summary, record, registry


def records(path: Path) -> list[tuple[float, str, str]]:
    return list(ArchiveReader([path]))


def test_subscriber_receives_what_was_sent(rules, registry_file, broker_port, tmp_path):
    """Test that every heartbeat sent reaches a subscriber, per device, at each type's period."""
    sub = Subscriber(broker_port, "putuo/+/+/+/hb")
    summary, record, _ = simulate(rules, registry_file, broker_port, tmp_path, hours=2)
    sent = [r for r in records(record) if r[1].endswith("/hb")]
    got = sub.wait_for(len(sent))
    sub.close()
    assert summary.sent["heartbeat"] == len(sent) == len(got)
    assert Counter(t for t, _, _ in got) == Counter(r[1] for r in sent)
    per_device = Counter(r[1] for r in sent)
    cams = [n for topic, n in per_device.items() if "/cam/" in topic]
    lifts = [n for topic, n in per_device.items() if "/iot/" in topic]
    assert len(cams) == len(lifts) == 24
    assert all(119 <= n <= 120 for n in cams)  # 2 h at 60 s
    assert all(23 <= n <= 24 for n in lifts)  # 2 h at 5 min
    payload = json.loads(sent[0][2])
    assert {"ts", "seq", "boot"} <= set(payload)


def test_gateway_death_fires_last_will_and_silences_its_devices(rules, registry_file, broker_port, tmp_path):
    """Test that a dying gateway's Will reaches subscribers and its devices go silent until revived."""
    sub = Subscriber(broker_port, "putuo/gw/+/status")
    _, record, _ = simulate(rules, registry_file, broker_port, tmp_path,
                            "events:\n  - gateway_death: {gateway: gw-taopu-cam-0, at: 30m, revive: 60m}\n", hours=1.5)
    statuses = [(t, p) for t, p, retained in sub.quiet(0.5) if t == "putuo/gw/gw-taopu-cam-0/status" and not retained]
    sub.close()
    assert [p for _, p in statuses] == [b"online", b"offline", b"online", b"offline"]  # up, Will, revived, clean stop
    times = [r[0] for r in records(record)]
    assert times == sorted(times)  # kill and revive records sit in time order among the messages
    dead = [r for r in records(record) if "/taopu/" in r[1] and "/cam/" in r[1]]
    silent_devices = {f"taopu-cam{i}" for i in range(0, 12, 2)}
    in_window = [r for r in dead if T0 + 1800 <= r[0] < T0 + 3600 and r[1].split("/")[3] in silent_devices]
    assert in_window == []
    assert any(r[0] >= T0 + 3600 and r[1].split("/")[3] in silent_devices for r in dead)


def test_street_outage_replays_to_the_expected_online_rate(rules, registry_file, broker_port, tmp_path):
    """Test that a 6-hour outage in a simulated day replays to ~75 % online for that street's cameras."""
    _summary, record, registry = simulate(rules, registry_file, broker_port, tmp_path,
                                         "events:\n  - street_outage: {street: changzheng, from: 6h, to: 12h}\n", hours=24)
    street_records = [r for r in records(record) if "/changzheng/" in r[1]]
    assert not [r for r in street_records if T0 + 6 * 3600 <= r[0] < T0 + 12 * 3600]
    assert [r for r in street_records if T0 + 12 * 3600 <= r[0] < T0 + 12 * 3600 + 120]  # back right after
    results = replay([str(record)], registry, T0 * US_PER_S, (T0 + 86_400) * US_PER_S)
    outage = results.row("cam", "changzheng", "online").value
    normal = results.row("cam", "taopu", "online").value
    assert 0.74 < outage < 0.76, float(outage)
    assert normal > 0.99
    assert results.coverage["cam"]["observed_seconds"] == 86_400
    assert results.rejects == {}


def test_same_seed_same_run_and_bad_traffic_counts_for_nothing(rules, registry_file, broker_port, tmp_path):
    """Test that a scenario replays identically for a seed, and its bad traffic is rejected, not counted."""
    scenario = (
        "events:\n  - unknown_devices: {per_minute: 3}\n  - malformed: {per_minute: 2}\n"
        "  - duplicates: {fraction: 0.02}\n  - reorder: {fraction: 0.01, delay: 5s}\n"
        "  - churn: {per_hour: 0.05, mean_repair: 20m}\n"
    )
    first, rec1, registry = simulate(rules, registry_file, broker_port, tmp_path, scenario, hours=1, seed=7)
    second, rec2, _ = simulate(rules, registry_file, broker_port, tmp_path, scenario, hours=1, seed=7)
    assert gzip.decompress(rec1.read_bytes()) == gzip.decompress(rec2.read_bytes())
    assert first.sent == second.sent and first.sent["malformed"] > 0 and first.sent["duplicate"] > 0
    results = replay([str(rec1)], registry, T0 * US_PER_S, (T0 + 3600) * US_PER_S)
    assert results.rejects["unknown_device"] == first.sent["unknown_device"]
    rejected = sum(v for k, v in results.rejects.items() if k != "unknown_device")
    assert rejected == first.sent["malformed"]
    assert results.engine_stats["duplicate"] + results.engine_stats["stale"] >= first.sent["duplicate"]


def test_bad_scenario_file_names_the_event_and_key(rules, registry_file, tmp_path):
    """Test that a scenario with a bad key fails with the file, event and key."""
    registry = load_registry(registry_file, rules)
    path = tmp_path / "bad.yaml"
    path.write_text("events:\n  - street_outage: {street: nowhere, from: 1h, to: 2h}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: events\[0\].street_outage.street must be a street code"):
        load_scenario(path, registry, 0, 3600 * US_PER_S, 1)
    path.write_text("events:\n  - meteor: {}\n")
    with pytest.raises(ConfigError, match=r"events\[0\] must be one of street_outage"):
        load_scenario(path, registry, 0, 3600 * US_PER_S, 1)


def test_shipped_scenarios_load(rules, tmp_path):
    """Test that every scenario in simulators/scenarios/ loads against the generated district."""
    from ptmon.simulators.district import write_registry

    district = tmp_path / "district.csv"
    write_registry(district, rules, 1)
    registry = load_registry(district, rules)
    files = sorted(Path("simulators/scenarios").glob("*.yaml"))
    assert len(files) >= 3
    for path in files:
        plan = load_scenario(path, registry, T0 * US_PER_S, (T0 + 86_400) * US_PER_S, 1)
        assert plan.summary


def test_sigint_stops_cleanly_with_a_summary(registry_file, broker_port, tmp_path):
    """Test that SIGINT stops `ptmon simulate`, closes the recording and prints the summary."""
    record = tmp_path / "sig.jsonl.gz"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ptmon.cli", "simulate", "--registry", str(registry_file), "--broker",
         f"mqtt://127.0.0.1:{broker_port}", "--speed", "600", "--record", str(record)],
        stderr=subprocess.PIPE, text=True,
    )
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "sent" in err
    rows = records(record)
    assert rows[0][1] == rows[-1][1] == "$ptmon/monitor" and rows[-1][2] == "down"
    assert any(r[1].endswith("/hb") for r in rows)


def test_a_recording_without_room_is_told_as_such_not_as_the_broker(registry_file, broker_port, tmp_path, capsys):
    """Test that `ptmon simulate --record` onto a full filesystem ends in one line naming the
    recording and the reason, not as a broker it could not reach."""
    from ptmon.cli import main

    from .storage import Filler, small_filesystem

    disk = tmp_path / "disk"
    with small_filesystem(disk, 1):
        Filler(disk).fill()
        record = disk / "s.jsonl.gz"
        code = main(["simulate", "--registry", str(registry_file), "--broker", f"mqtt://127.0.0.1:{broker_port}",
                     "--duration", "2h", "--speed", "0", "--record", str(record)])
        err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("ptmon: error:")]
    assert line.startswith(f"ptmon: error: --record {record}: cannot write the recording: No space left on device")
    assert "broker" not in line


def test_a_ca_file_that_cannot_be_used_is_named_not_the_broker(registry_file, tmp_path, capsys):
    """Test that `simulate --ca` naming a missing file or one that is no PEM certificate is refused
    in one line naming the file, not told as a broker out of reach; and --ca with a plain mqtt://
    broker is refused, not ignored (TLS was meant)."""
    from ptmon.cli import main

    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    for ca, reason in ((tmp_path / "missing.pem", "No such file or directory"), (not_pem, "NO_CERTIFICATE_OR_CRL_FOUND")):
        code = main(["simulate", "--registry", str(registry_file), "--broker", "mqtts://127.0.0.1:1", "--ca", str(ca),
                     "--duration", "1s", "--speed", "0"])
        (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("ptmon: error:")]
        assert code == 2 and line.startswith(f"ptmon: error: --ca {ca}: cannot be used: ") and reason in line, line
    code = main(["simulate", "--registry", str(registry_file), "--broker", "mqtt://u:secret@127.0.0.1:1", "--ca",
                 str(not_pem), "--duration", "1s", "--speed", "0"])  # meant TLS: not sent in clear
    err = capsys.readouterr().err
    assert code == 2 and "ptmon: error: --ca is for a TLS broker" in err and "secret" not in err, err
