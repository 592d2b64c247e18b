"""``ptmon demo``: the whole live pipeline on one machine, nothing installed beyond pip.

embedded broker (Mosquitto when installed, else amqtt: :mod:`.demo_broker`) ← simulator (a
subprocess, the generated district, the demo scenario: :mod:`.demo_scenario`) → collector
(this process: archive, engine, ledger, optional InfluxDB) → a live line every few seconds,
then the KPI table of the window, why each failing street fails, and the command that
recomputes the same CSV from the archive.

Simulator and collector share one simulated clock (a start instant, an anchor in wall time,
a speed), so receive times, online windows and samples are those of the simulated window.
The anchor is fixed only once the collector holds the warm-up (every device's last
heartbeat before the window, sent as fast as the broker takes it): until then the
collector's clock stands :data:`HOLD_S` before the window. Fixed in advance instead, a
broker slower than the warm-up's burst (amqtt, or any broker on a loaded machine) delivers
it after the window has begun, and the first samples count every camera offline.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import sys
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

from ptmon.collect import Collector
from ptmon.config import AlertsConfig, CollectorConfig, InfluxConfig, MqttConfig
from ptmon.errors import UsageError
from ptmon.registry import Registry, load_registry
from ptmon.replay import finish_results
from ptmon.results import Results
from ptmon.rules import DEFAULT_RULES_DIR, Rules, load_rules
from ptmon.tally import Tally
from ptmon.timebase import US_PER_S, SimulatedClock, format_instant, seconds_to_us

from .demo_broker import AMQTT_SCALE, broker_choice, resolve_broker, start_broker, stop_broker
from .demo_scenario import MIN_MINUTES, Event, explain_failures, live_window, scenario_events, write_scenario
from .district import write_registry
from .loopback import free_port
from .scenario import Plan, load_scenario

HOLD_S = 30  # simulated seconds before the window at which the collector's clock waits for the warm-up
TABLE_EVERY = 5.0  # wall seconds between live lines
READY_TIMEOUT = 600.0  # wall seconds for the simulator to load the registry, connect and send the warm-up
STALL_TIMEOUT = 60.0  # wall seconds without one more message before the demo stops waiting for the broker
SUBSCRIBE_TIMEOUT = 20.0


def say(text: str) -> None:
    print(f"demo: {text}", file=sys.stderr, flush=True)


def demo_registry(workdir: Path, rules: Rules, seed: int, scale: float) -> Path:
    """The district's registry for ``seed`` (generated once), thinned to ``scale`` of its communities."""
    full = workdir / f"registry-seed{seed}.csv"
    if not full.exists():
        say(f"generating the district registry → {full}")
        partial = full.with_suffix(".tmp")
        write_registry(partial, rules, seed)
        partial.replace(full)
    if scale >= 1:
        return full
    thinned = workdir / f"registry-seed{seed}-scale{scale:g}.csv"
    if not thinned.exists():
        _thin(full, thinned, Fraction(str(scale)))
    return thinned


def _thin(source: Path, target: Path, share: Fraction) -> None:
    """Keep ``share`` of each street's gateways (their 1st, and so on, evenly), with all their devices:
    fewer communities, each whole. Fewer gateways means fewer broker connections, which is what
    amqtt is slowest at (each gateway connects with a Will and announces a retained status)."""
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    columns = header.rstrip("\r\n").split(",")
    at_contract, at_street, at_gateway = columns.index("contract"), columns.index("street"), columns.index("gateway")
    rank: dict[str, int] = {}
    per_street: dict[tuple[str, str], int] = {}
    kept = [header]
    for row in rows:
        cells = row.split(",")  # generated ids, names and codes hold no comma
        street, gateway = (cells[at_contract], cells[at_street]), cells[at_gateway]
        if gateway not in rank:
            rank[gateway] = per_street.get(street, 0)
            per_street[street] = rank[gateway] + 1
        k = rank[gateway]
        if k == 0 or (k * share.numerator) // share.denominator > ((k - 1) * share.numerator) // share.denominator:
            kept.append(row)
    partial = target.with_suffix(".tmp")
    partial.write_text("".join(kept), encoding="utf-8")
    partial.replace(target)


def run_live_demo(workdir: Path, *, hours: float, speed: float, seed: int, influx_url: str | None,
                  broker: str | None = None, scale: float | None = None) -> int:
    minutes = round(hours * 60)
    if not MIN_MINUTES <= minutes <= 7 * 24 * 60:
        raise UsageError(f"--hours must be in [{MIN_MINUTES / 60:g}, 168] for the live demo "
                         f"(its scenario needs {MIN_MINUTES} minutes): {hours:g}")
    if not 1 <= speed <= 3600:
        raise UsageError(f"--speed must be in [1, 3600]: {speed:g}")
    choice = broker_choice(broker)
    name = resolve_broker(choice)
    if scale is None:
        scale = AMQTT_SCALE if name == "amqtt" else 1.0
    if not 0 < scale <= 1:
        raise UsageError(f"--scale must be in (0, 1]: {scale:g}")
    workdir.mkdir(parents=True, exist_ok=True)
    rules = load_rules(DEFAULT_RULES_DIR)
    registry_path = demo_registry(workdir, rules, seed, scale)
    registry = load_registry(registry_path, rules)
    start, end = live_window(seconds_to_us(time.time()), minutes)
    data = workdir / f"live-{time.strftime('%Y%m%dT%H%M%S')}"
    data.mkdir(parents=True)
    scenario = write_scenario(data / "scenario.yaml", minutes, registry)
    plan = load_scenario(scenario, registry, start, end, seed)
    _introduce(name, choice, registry, scale, start, end, speed, scenario)
    port = free_port()
    proc = start_broker(data, port, name)
    try:
        demo = LiveDemo(data=data, registry=registry, registry_path=registry_path, scenario=scenario, plan=plan,
                        port=port, start=start, end=end, speed=speed, seed=seed, influx_url=influx_url)
        return asyncio.run(demo.run())
    finally:
        stop_broker(proc)


def _introduce(name: str, choice: str, registry: Registry, scale: float, start: int, end: int, speed: float,
               scenario: Path) -> None:
    size = f"{len(registry):,} registry rows"
    if name == "amqtt":
        why = "Mosquitto is not installed" if choice == "auto" else "chosen by --broker or $PTMON_DEMO_BROKER"
        slow = ("amqtt takes about a minute to connect the district's 1,290 gateways (Mosquitto 4 s) and routes under "
                "half of Mosquitto's rate")
        if scale < 1:
            say(f"broker: amqtt (pure Python; {why}). {slow}, so the demo district is {scale:.0%} of Putuo ({size}: "
                "that share of every street's communities, each whole); for the whole district: apt-get install mosquitto")
        else:
            say(f"broker: amqtt (pure Python; {why}); the whole district as asked ({size}): {slow}")
    else:
        say(f"broker: {name}; the district: {size}" + ("" if scale >= 1 else f" ({scale:.0%} of every street's communities)"))
    minutes = (end - start) // (60 * US_PER_S)
    say(f"window {format_instant(start)} — {format_instant(end)} ({minutes} simulated minutes) at {speed:g}× "
        f"(about {minutes * 60 / speed:.0f} s after the warm-up); scenario {scenario}")


class LiveDemo:
    """One run: collector and simulator on a shared simulated clock, then the results."""

    def __init__(self, *, data: Path, registry: Registry, registry_path: Path, scenario: Path, plan: Plan, port: int,
                 start: int, end: int, speed: float, seed: int, influx_url: str | None) -> None:
        self.data, self.registry, self.registry_path, self.scenario = data, registry, registry_path, scenario
        self.plan, self.port, self.start, self.end, self.speed, self.seed = plan, port, start, end, speed, seed
        self.clock = SimulatedClock(start / US_PER_S, None, speed, hold_s=start / US_PER_S - HOLD_S)
        self.config = CollectorConfig(
            registry=registry_path, data_dir=data, metrics_listen="", checkpoint_interval=30.0,
            mqtt=MqttConfig(port=port, qos=0, persistent_session=False, client_id=f"ptmon-demo-{port}"),
            influx=replace(InfluxConfig(), url=influx_url or ""),
            alerts=AlertsConfig(enabled=True),
        )
        self.collector = Collector(self.config, registry=registry, clock=self.clock)
        self.collector.restore()  # the staged start-up's first part: the window's tally attaches to its engine
        self.period = Tally.attach(self.collector.engine, start, end)
        self.events = scenario_events(plan, registry, start, end)
        self.log = data / "simulate.log"
        self.sim: asyncio.subprocess.Process | None = None

    async def run(self) -> int:
        # Bad traffic is part of the scenario: the live line counts it and the table lists it by kind,
        # so the decoder's per-message warnings would only bury the live lines.
        logging.getLogger("ptmon.decode").setLevel(logging.ERROR)
        stop = asyncio.Event()
        collecting = asyncio.create_task(self.collector.run(stop))  # startup, main loop, shutdown
        try:
            status = await self._run_simulation()
        finally:
            stop.set()
            await collecting
            if self.sim is not None and self.sim.returncode is None:
                self.sim.terminate()
                await self.sim.wait()
        if status:
            return status
        return self._report(finish_results(self.period, self.collector.decoder))

    async def _run_simulation(self) -> int:
        if not await asyncio.to_thread(self.collector.source.subscribed.wait, SUBSCRIBE_TIMEOUT):
            return self._fail(f"the collector could not subscribe to the broker on port {self.port} within "
                              f"{SUBSCRIBE_TIMEOUT:.0f} s: {self.collector.source.last_error or 'no answer'}")
        self.sim = await self._start_simulator()
        assert self.sim.stdout is not None and self.sim.stdin is not None
        ready = await self._line("ready", READY_TIMEOUT, "connecting the gateways and sending the warm-up")
        if ready is None:
            return await self._simulator_failed("before the window began")
        say(f"warm-up: {ready:,} messages sent (every device's last heartbeat before the window, and the "
            "gateways' 'online'); waiting for the collector to have them all")
        if not await self._received(ready, "warm-up"):
            return 1
        self.clock.anchor = time.time() + 0.2
        self.sim.stdin.write(f"{self.clock.anchor!r}\n".encode())
        await self.sim.stdin.drain()
        say(f"window begins: {format_instant(self.start)}")
        done = await self._play()
        if done is None:
            return await self._simulator_failed("during the window")
        return 0 if await self._received(done, "window") else 1

    async def _start_simulator(self) -> asyncio.subprocess.Process:
        command = [sys.executable, "-m", "ptmon.cli", "simulate", "--registry", str(self.registry_path),
                   "--broker", f"mqtt://127.0.0.1:{self.port}", "--speed", f"{self.speed:g}",
                   "--scenario", str(self.scenario), "--seed", str(self.seed),
                   "--start", format_instant(self.start), "--duration", f"{(self.end - self.start) // US_PER_S}s",
                   "--warm-up", f"{HOLD_S}s", "--anchor", "-"]
        with self.log.open("wb") as log:
            return await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.PIPE,
                                                        stdout=asyncio.subprocess.PIPE, stderr=log)

    async def _line(self, word: str, timeout: float, doing: str | None) -> int | None:
        """The count of the simulator's next ``word N`` line (progress shown meanwhile when ``doing`` is
        given); None if it exited first or ``timeout`` passed."""
        assert self.sim is not None and self.sim.stdout is not None
        reading = asyncio.ensure_future(self.sim.stdout.readline())
        began = time.monotonic()
        while not reading.done():
            await asyncio.wait({reading}, timeout=TABLE_EVERY)
            if not reading.done():
                if time.monotonic() - began > timeout:
                    reading.cancel()
                    return None
                if doing:
                    say(f"simulator {doing}; the collector has {self.collector.source.received:,} messages")
        parts = reading.result().decode(errors="replace").split()
        return int(parts[1]) if len(parts) == 2 and parts[0] == word and parts[1].isdigit() else None

    async def _play(self) -> int | None:
        """Live lines while the window plays; the simulator's count of messages sent, None if it failed."""
        assert self.sim is not None
        told = 0
        done = asyncio.ensure_future(self._line("done", float("inf"), None))
        while True:
            await asyncio.wait({done}, timeout=TABLE_EVERY)
            if done.done():
                break
            told = self._tell_events(told)
            self._show_live()
        await self.sim.wait()
        return done.result() if self.sim.returncode == 0 else None

    def _tell_events(self, told: int) -> int:
        now = int(self.clock() * US_PER_S)
        names = {s.code: s.name for s in self.registry.rules.streets}
        while told < len(self.events) and self.events[told].at_us <= now:
            e: Event = self.events[told]
            say(f"scenario: {names[e.street]} [{e.contract}] {e.text}")
            told += 1
        return told

    def _show_live(self) -> None:
        results = self.period.results()
        rules = self.registry.rules
        names = {s.code: s.name for s in rules.streets}
        district = ", ".join(f"{c.code} {r.percent_text(1)}%" for c in rules.contracts
                             if (r := results.row(c.code, "district", "online")).denominator)
        failing: dict[tuple[str, str], list[str]] = {}
        for r in results.rows:
            if r.passed is False and r.street != "district":
                failing.setdefault((r.street, r.contract), []).append(f"{r.kpi} {r.percent_text(1)}%")
        offline = int((~self.collector.engine.gateway_online).sum())
        rejected = sum(self.collector.decoder.rejects.values())
        at = format_instant(int(self.clock() * US_PER_S))[11:19]
        say(f"[{at}] {self.collector.source.received:,} msgs ({rejected:,} rejected), {offline} gateways offline; "
            f"window so far: online {district}"
            + "".join(f" | {names[street]} {contract} {' '.join(kpis)}" for (street, contract), kpis in failing.items()))

    async def _received(self, sent: int, phase: str) -> bool:
        """Wait until the collector has ``sent`` messages (the broker may still be delivering); False
        (said why) when the broker stops delivering short of that."""
        source, last, since = self.collector.source, -1, time.monotonic()
        while source.received < sent:
            if source.received != last:
                last, since = source.received, time.monotonic()
            elif time.monotonic() - since > STALL_TIMEOUT:
                self._fail(f"{phase}: the broker delivered {source.received:,} of the {sent:,} messages sent and "
                           f"nothing more for {STALL_TIMEOUT:.0f} s (QoS 0: the rest are lost)")
                return False
            await asyncio.sleep(0.2)
        return True

    async def _simulator_failed(self, when: str) -> int:
        assert self.sim is not None
        if self.sim.returncode is None:
            self.sim.terminate()
        await self.sim.wait()
        tail = self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-8:]
        return self._fail(f"the simulator stopped {when} (exit status {self.sim.returncode}); the end of {self.log}:\n"
                          + "\n".join(f"    {line}" for line in tail))

    @staticmethod
    def _fail(message: str) -> int:
        say(f"error: {message}")
        return 1

    def _report(self, results: Results) -> int:
        rules = self.registry.rules
        archive = self.config.archive_path
        csv_path = self.data / "kpis.csv"
        with csv_path.open("w", encoding="utf-8", newline="") as out:
            results.write_csv(out)
        print(results.table(rules))
        never = round(self.plan.traffic.silent_fraction * len(self.registry)) + len(self.plan.traffic.never_report)
        why = explain_failures(results, self.events, self.registry, never)
        print()
        print("为什么未达标 (why these fail):" if why else "every street meets every threshold")
        for line in why:
            print(f"  {line}")
        print()
        check = ["ptmon", "replay", str(archive), "--start", format_instant(self.start), "--end",
                 format_instant(self.end), "--registry", str(self.registry_path), "--csv", "replay.csv"]
        print(f"archive: {archive} ({self.collector.archive.records:,} records); KPIs: {csv_path}")
        print(f"the same KPIs from the archive: {shlex.join(check)}")
        return 0
