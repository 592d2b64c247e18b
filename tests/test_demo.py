"""`ptmon demo` on its embedded brokers: the KPIs the scenario implies, equal to a replay of its archive."""

from __future__ import annotations

import csv
import shlex
import subprocess
import sys
import time
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ptmon.cli import main
from ptmon.registry import load_registry
from ptmon.simulators import demo_broker
from ptmon.simulators.demo_scenario import TOUCHED_STREETS, dying_gateways, live_window, scenario_events, scenario_yaml
from ptmon.simulators.district import write_registry
from ptmon.simulators.live_demo import SimulatedClock, _thin
from ptmon.simulators.scenario import load_scenario
from ptmon.timebase import US_PER_S, format_instant, parse_instant

from .brokers import Subscriber
from .conftest import write_two_street_registry

SHANGHAI = ZoneInfo("Asia/Shanghai")
DEMO_TIMEOUT = 900  # wall seconds: generous, the demo's own waits are bounded


@pytest.fixture(scope="module")
def district(tmp_path_factory, rules):
    path = tmp_path_factory.mktemp("district") / "registry.csv"
    write_registry(path, rules, 1)
    return path


@pytest.mark.parametrize("hour", [0, 3, 9, 23])
def test_window_is_yesterday_morning_whatever_the_hour(hour):
    """Test that the live window starts at 09:00 Shanghai time of the day before, at any hour of the run."""
    now = datetime(2026, 11, 24, hour, 17, tzinfo=SHANGHAI)
    start, end = live_window(int(now.timestamp()) * US_PER_S, 30)
    assert format_instant(start) == "2026-11-23T09:00:00+08:00"
    assert end - start == 30 * 60 * US_PER_S


@pytest.mark.parametrize("minutes", [15, 30, 600])
def test_scenario_events_fall_inside_the_window(district, rules, minutes):
    """Test that the demo scenario's outage, gateway deaths and success drops all lie in the window, on the
    four touched streets only, and that a fifth of wanli's camera gateways die."""
    registry = load_registry(district, rules)
    start, end = parse_instant("2026-11-23T09:00"), parse_instant("2026-11-23T09:00") + minutes * 60 * US_PER_S
    path = district.parent / f"scenario-{minutes}.yaml"
    path.write_text(scenario_yaml(minutes, dying_gateways(registry)))
    plan = load_scenario(path, registry, start, end, 1)
    events = scenario_events(plan, registry, start, end)
    assert {e.street for e in events} == set(TOUCHED_STREETS)
    assert all(start <= e.at_us < end for e in events)
    (outage,) = plan.traffic.outages
    assert outage.to_us - outage.from_us >= 2 * 180 * US_PER_S  # twice the cameras' online timeout
    assert len(plan.gateway_deaths) == dying_gateways(registry) == 10  # of wanli's 52 camera gateways


def test_thinning_keeps_whole_communities_of_every_street(district, rules, tmp_path):
    """Test that a quarter district keeps every street and contract, each kept gateway with all its devices."""
    thin = tmp_path / "quarter.csv"
    _thin(district, thin, Fraction(1, 4))
    full, part = load_registry(district, rules), load_registry(thin, rules)
    assert 0.2 < len(part) / len(full) < 0.3
    assert 0.2 < len(part.gateways) / len(full.gateways) < 0.3
    assert set(part.street.tolist()) == set(full.street.tolist()) and set(part.contract.tolist()) == {0, 1}
    for g, name in enumerate(part.gateways):
        assert (part.gateway == g).sum() == (full.gateway == full.gateways.index(name)).sum()


def test_held_clock_waits_then_runs_and_never_goes_back():
    """Test that the shared clock stands at its hold instant until the anchor is known, then runs at speed."""
    clock = SimulatedClock(1000.0, None, 30.0, hold_s=970.0)
    assert clock() == 970.0
    clock.anchor = time.time() + 10  # the window starts 10 wall seconds from now: not before the hold instant
    assert clock() == 970.0
    clock.anchor = time.time() - 1
    assert 1029.0 < clock() < 1031.0 + 30


def test_without_any_broker_one_line_says_what_to_install(monkeypatch, tmp_path, capsys):
    """Test that with neither Mosquitto nor amqtt the demo exits 2 with one line naming both installs."""
    monkeypatch.delenv(demo_broker.BROKER_ENV, raising=False)
    monkeypatch.setattr(demo_broker, "find_mosquitto", lambda: None)
    monkeypatch.setattr(demo_broker, "amqtt_installed", lambda: False)
    assert main(["demo", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "pip install 'ptmon[demo]'" in err[0] and "apt-get install mosquitto" in err[0]
    assert not list(tmp_path.iterdir())  # nothing generated before the broker question is settled


def test_broker_choice_from_the_environment(monkeypatch):
    """Test that $PTMON_DEMO_BROKER chooses the broker unless --broker does, and a bad value is refused."""
    monkeypatch.setenv(demo_broker.BROKER_ENV, "amqtt")
    assert demo_broker.broker_choice(None) == "amqtt"
    assert demo_broker.broker_choice("mosquitto") == "mosquitto"
    monkeypatch.setenv(demo_broker.BROKER_ENV, "rabbit")
    with pytest.raises(Exception, match="PTMON_DEMO_BROKER='rabbit': must be one of auto, mosquitto, amqtt"):
        demo_broker.broker_choice(None)


def test_simulator_holds_the_window_until_told(rules, broker_port, tmp_path):
    """Test that `simulate --anchor -` sends the warm-up (one heartbeat per device, before the window), says
    how many messages it delivered, waits for the anchor on stdin, and says how many it sent in all."""
    registry_file = write_two_street_registry(tmp_path / "registry.csv")
    registry = load_registry(registry_file, rules)
    sub = Subscriber(broker_port, "putuo/#")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ptmon.cli", "simulate", "--registry", str(registry_file), "--broker",
         f"mqtt://127.0.0.1:{broker_port}", "--speed", "600", "--start", "2026-11-23T09:00", "--duration", "10m",
         "--warm-up", "30s", "--anchor", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    ready = proc.stdout.readline().split()
    assert ready[0] == "ready"
    got = sub.wait_for(int(ready[1]), timeout=30)
    time.sleep(1.0)
    assert len(sub.messages) == int(ready[1])  # nothing of the window before the anchor
    heartbeats = [m for m in got if m[0].endswith("/hb")]
    assert len(heartbeats) == len({m[0] for m in heartbeats})  # each device's last heartbeat, once
    assert 0.9 * len(registry) <= len(heartbeats) <= len(registry)  # a camera's may fall just after the start
    proc.stdin.write(f"{time.time()!r}\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    done = out.split()
    assert done[0] == "done" and int(done[1]) > int(ready[1])
    assert len(sub.wait_for(int(done[1]), timeout=30)) >= int(done[1])
    sub.close()


def _run_demo(tmp_path: Path, *options: str) -> tuple[str, Path]:
    out = subprocess.run([sys.executable, "-m", "ptmon.cli", "demo", "--hours", "0.25", "--speed", "30",
                          "--workdir", str(tmp_path), *options], capture_output=True, text=True, timeout=DEMO_TIMEOUT)
    assert out.returncode == 0, out.stderr[-4000:]
    (kpis,) = tmp_path.glob("live-*/kpis.csv")
    return out.stdout, kpis


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["amqtt", "mosquitto"])
def test_live_demo_gives_the_scenario_and_replays_to_the_same_csv(tmp_path, broker):
    """Test that `ptmon demo` on an embedded broker ends with the KPIs the scenario implies (the untouched
    streets pass everything, each touched street fails what its event hits, explained), and that
    `ptmon replay` of its own archive gives its KPI CSV byte for byte."""
    stdout, kpis = _run_demo(tmp_path, "--broker", broker)
    command = next(line for line in stdout.splitlines() if "ptmon replay" in line)
    args = shlex.split(command[command.index("ptmon replay"):])[1:]
    replayed = tmp_path / "replay.csv"
    args[args.index("--csv") + 1] = str(replayed)
    assert main([*args, "--quiet"]) == 0
    assert replayed.read_bytes() == kpis.read_bytes()

    rows = {(r["contract"], r["street"], r["kpi"]): r for r in csv.DictReader(kpis.open(encoding="utf-8"))}
    for (contract, street, kpi), row in rows.items():
        if street not in (*TOUCHED_STREETS, "district"):
            assert row["pass"] == "true", (contract, street, kpi, row["value"])
    failing = {key for key, row in rows.items() if row["pass"] == "false" and key[1] != "district"}
    assert failing == {("cam", "changzheng", "online"), ("cam", "wanli", "online"), ("iot", "yichuan", "sensing"),
                       ("cam", "taopu", "capture"), ("cam", "taopu", "face"), ("cam", "taopu", "plate")}
    online = rows["iot", "district", "online"]
    assert int(online["observed_seconds"]) == 15 * 60  # every sample of the window observed
    assert "为什么未达标" in stdout and "power cut" in stdout and "gateways died" in stdout
