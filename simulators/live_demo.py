"""``ptmon demo``: the whole live pipeline on one machine, nothing installed beyond pip.

embedded broker (Debian's Mosquitto when present, else the pure-Python amqtt) ← simulator
(a subprocess, the generated district, a street outage) → collector (this process:
archive, engine, optional InfluxDB) → a live per-street table, and at the end the KPI
table of the simulated period.

Simulated time runs ``speed`` times faster than the wall clock. Simulator and collector share
one simulated clock (an anchor instant and the speed), so receive times, online windows and
samples are those of the simulated hours.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from ptmon.collect import Collector
from ptmon.config import CollectorConfig, InfluxConfig, MqttConfig
from ptmon.errors import UsageError
from ptmon.registry import load_registry
from ptmon.results import Results
from ptmon.rules import DEFAULT_RULES_DIR, load_rules
from ptmon.tally import Tally
from ptmon.timebase import US_PER_S, SimulatedClock, format_instant

from .district import write_registry
from .loopback import free_port, wait_for_port

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "street-outage.yaml"
STARTUP_ALLOWANCE = 10.0  # wall seconds for the simulator to load the registry and connect its gateways
TABLE_EVERY = 5.0
AMQTT_SPEED, AMQTT_WARM_UP_WALL = 10.0, 40.0  # amqtt routes ~5,000 msg/s here (MEASURED.md)
WARM_UP_WALL = 8.0  # wall seconds before the period in which every device first reports, as if running all along


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or (path if os.access(path := "/usr/sbin/mosquitto", os.X_OK) else None)


def start_broker(workdir: Path, port: int, choice: str = "auto") -> tuple[subprocess.Popen[bytes], str]:
    """Mosquitto if installed (queues sized: its default drops silently), else amqtt."""
    log = (workdir / "broker.log").open("wb")
    mosquitto = find_mosquitto() if choice != "amqtt" else None
    if choice == "mosquitto" and mosquitto is None:
        raise UsageError("--broker mosquitto: Mosquitto is not installed (apt-get install mosquitto)")
    if mosquitto:
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "max_queued_messages 0\nmax_inflight_messages 0\n")
        return subprocess.Popen([mosquitto, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT), "mosquitto"
    conf = workdir / "amqtt.yaml"
    conf.write_text(f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\nplugins:\n"
                    "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n")
    code = "from amqtt.scripts.broker_script import main; main()"
    return subprocess.Popen([sys.executable, "-c", code, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT), "amqtt"


def _wait_for_broker(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    try:
        wait_for_port(port, timeout, alive=lambda: proc.poll() is None)
    except RuntimeError:
        raise UsageError(f"the embedded broker exited with status {proc.returncode}; see its log") from None
    except TimeoutError:
        raise UsageError(f"the embedded broker did not listen on port {port} within {timeout:.0f} s") from None


def run_live_demo(workdir: Path, *, hours: float, speed: float, seed: int, influx_url: str | None,
                  broker: str = "auto") -> int:
    if not 0 < hours <= 24 * 7:
        raise UsageError(f"--hours must be in (0, 168]: {hours}")
    if not 1 <= speed <= 3600:
        raise UsageError(f"--speed must be in [1, 3600]: {speed}")
    workdir.mkdir(parents=True, exist_ok=True)
    rules = load_rules(DEFAULT_RULES_DIR)
    registry_path = workdir / "registry.csv"
    if not registry_path.exists():
        print(f"demo: generating the district registry → {registry_path}", file=sys.stderr)
        write_registry(registry_path, rules, seed)
    registry = load_registry(registry_path, rules)
    port = free_port()
    broker_proc, broker_name = start_broker(workdir, port, broker)
    try:
        _wait_for_broker(port, broker_proc)
        print(f"demo: {broker_name} broker on 127.0.0.1:{port}", file=sys.stderr)
        if broker_name == "amqtt" and speed > AMQTT_SPEED:
            print(f"demo: amqtt is slower than Mosquitto: speed {speed:g} → {AMQTT_SPEED:g}", file=sys.stderr)
            speed = AMQTT_SPEED
        return asyncio.run(_run(workdir, registry, registry_path, port, broker_name, hours, speed, seed, influx_url))
    finally:
        broker_proc.terminate()
        try:
            broker_proc.wait(5)
        except subprocess.TimeoutExpired:
            broker_proc.kill()


async def _run(workdir: Path, registry, registry_path: Path, port: int, broker_name: str,  # type: ignore[no-untyped-def]
               hours: float, speed: float, seed: int, influx_url: str | None) -> int:
    start_s = float(int(time.time() - hours * 3600) // 60 * 60)
    end_s = start_s + round(hours * 60) * 60
    warm_up_wall = WARM_UP_WALL if broker_name == "mosquitto" else AMQTT_WARM_UP_WALL
    warm_up_s = round(warm_up_wall * speed)  # the whole district once: ~114k messages
    clock = SimulatedClock(start_s, time.time() + STARTUP_ALLOWANCE + warm_up_wall, speed)
    data = workdir / f"live-{time.strftime('%Y%m%dT%H%M%S')}"
    config = CollectorConfig(
        registry=registry_path, data_dir=data, metrics_listen="", checkpoint_interval=30.0,
        mqtt=MqttConfig(port=port, qos=0, persistent_session=False, protocol="5" if broker_name == "mosquitto" else "3.1.1",
                        client_id=f"ptmon-demo-{os.getpid()}"),
        influx=replace(InfluxConfig(), url=influx_url or ""),
    )
    collector = Collector(config, registry=registry, clock=clock)
    period = Tally.attach(collector.engine, int(start_s) * US_PER_S, int(end_s) * US_PER_S)
    simulator = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ptmon.cli", "simulate", "--registry", str(registry_path),
        "--broker", f"mqtt://127.0.0.1:{port}", "--speed", str(speed), "--scenario", str(SCENARIO),
        "--start", format_instant(int(start_s) * US_PER_S), "--duration", f"{round(hours * 60)}m",
        "--anchor", str(clock.anchor), "--warm-up", f"{warm_up_s}s", "--seed", str(seed), stderr=asyncio.subprocess.DEVNULL)
    print(f"demo: simulating {format_instant(int(start_s) * US_PER_S)} — {format_instant(int(end_s) * US_PER_S)} "
          f"at {speed:g}× ({hours * 3600 / speed:.0f} s), scenario {SCENARIO.name}", file=sys.stderr)
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    try:
        while simulator.returncode is None:
            try:
                await asyncio.wait_for(simulator.wait(), TABLE_EVERY)
            except asyncio.TimeoutError:
                _show_live(collector, clock)
    finally:
        await asyncio.sleep(1.0)
        stop.set()
        await task
        if simulator.returncode is None:
            simulator.terminate()
    from ptmon.replay import finish_results

    results = finish_results(period, collector.decoder)
    print(results.table(collector.registry.rules))
    csv_path = data / "kpis.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as out:
        results.write_csv(out)
    print(f"demo: {collector.archive.records:,} messages archived in {config.archive_path}; KPIs in {csv_path}", file=sys.stderr)
    return 0 if simulator.returncode == 0 else 1


def _show_live(collector: Collector, clock: SimulatedClock) -> None:
    latest: Results | None = collector.sla.latest
    if latest is None:
        print(f"demo: waiting for the first sample (simulated {format_instant(int(clock() * US_PER_S))})", file=sys.stderr)
        return
    rules = collector.registry.rules
    names = {s.code: s.name for s in rules.streets} | {"district": "全区"}
    cells = []
    for street in [*names]:
        iot, cam = latest.row("iot", street, "online"), latest.row("cam", street, "online")
        cells.append(f"{names[street]} 物联{iot.percent_text(1)}% 视频{cam.percent_text(1)}%")
    print(f"[{format_instant(int(clock() * US_PER_S))}] 本月在线率 " + " | ".join(cells), file=sys.stderr, flush=True)
