"""Soak: the whole pipeline for a set time with things going wrong, then what must still hold.

    python bench/soak.py [--minutes 10] [--speed 60] [--registry FILE] [--workdir DIR] [--rss-limit-mb N]
                         [--disk-full SECONDS] [--ledger-lock SECONDS] [--data-fs-mb N]

Separate processes on this machine: Mosquitto (persistent, queues sized for the collector's
outage), InfluxDB 1.6.7, ``ptmon collect`` (a generated config, ``--kpi-csv``) and ``ptmon
simulate --qos 1 --record`` on the registry (default: the whole generated district) with a
scenario of street outage, gateway deaths, device churn, flapping, duplicates, unknown and
malformed messages. Injected while it runs: broker restarts (SIGTERM; Mosquitto saves its
sessions), an InfluxDB outage, one collector SIGKILL and restart, another process holding
``BEGIN EXCLUSIVE`` on the collector's ledger (``--ledger-lock``), and a full disk: the collector's
data directory lives on a size-limited tmpfs (else a loop-mounted image; as root), filled to the
last byte for ``--disk-full`` seconds. Then it waits until the collector has drained the broker
and InfluxDB has every point, stops the collector and checks:

1. **messages**: the archive holds every heartbeat-topic message the simulator recorded as
   sent (acknowledged by the broker, QoS 1), as a multiset of (topic, payload), and nothing it
   did not send; extra copies are redeliveries (at-least-once) and are counted, not failures.
   Gateway statuses: every recorded one archived (extras are retained copies the broker sends at
   each re-subscribe).
2. **points**: InfluxDB ``count(seq) FROM heartbeat`` = heartbeats the engine accepts replaying
   the archive = distinct (device, boot, seq) heartbeats in the archive. A redelivered copy has
   the same key, is a duplicate to the engine and writes no point. (The scenario has no
   ``reorder``: a message arriving behind a newer one of its device is stale, a distinct key
   that is never accepted, and the last equality would not hold.)
3. **KPIs**: ``ptmon replay --month`` of the archive gives byte for byte the collector's live
   month-to-date CSV, and the ledger's month gives the same.
4. **memory**: the collector's RSS (VmRSS, sampled twice a second, every process) stays under
   ``--rss-limit-mb``.
5. **storage faults**: the collector reported each injected one (the archive held while the disk was
   full, the ledger waited while locked) and resumed from it by itself, never exiting.

Prints a summary table (check, expected, got, PASS/FAIL) and exits 1 when a check fails.
Everything it ran and wrote stays in ``--workdir`` (logs, archive, recording, configs; the
collector's data is copied off its small filesystem before that is unmounted).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ptmon.archive import CONTROL_PREFIX, ArchiveReader
from ptmon.ledger.read import ledger_results
from ptmon.ledger.store import Ledger
from ptmon.live import month_of
from ptmon.registry import Registry, load_registry
from ptmon.replay import replay
from ptmon.rules import load_rules
from ptmon.simulators.loopback import free_port, wait_for_port
from ptmon.sinks.archive import archive_files
from ptmon.timebase import format_instant, seconds_to_us
from tests.programs import program
from tests.servers import InfluxServer, influx_rows, influxql
from tests.storage import Filler, lock_ledger, mount_small_filesystem, unmount

PTMON = [sys.executable, "-m", "ptmon.cli"]
DATABASE = "ptmon_soak"
STARTUP_ALLOWANCE = 120.0  # seconds a collector may take to come back (registry, checkpoint, archive tail)


@dataclass(frozen=True, kw_only=True)
class SoakOptions:
    """What to run, how fast, for how long, and what to break."""

    workdir: Path
    minutes: float = 10.0  # wall time of the simulation (simulated: minutes × speed)
    speed: float = 60.0  # the full district at 60: ~6,100 msg/s (README)
    registry: Path | None = None  # None: generate the full district (seed) into the workdir
    seed: int = 1
    rss_limit_mb: float = 500.0  # the district measured ~200 MB here (its InfluxDB outage included)
    broker_restarts: int = 2
    broker_down: float = 5.0  # seconds each broker restart keeps it away
    influx_outage: float = 25.0  # seconds; 0: none
    collector_kill: bool = True  # one SIGKILL and restart of the collector
    collector_down: float = 5.0
    ledger_lock: float = 45.0  # seconds another process holds BEGIN EXCLUSIVE on the ledger (busy timeout: 30 s); 0: none
    disk_full: float = 30.0  # seconds the collector's data filesystem stays full; 0: none (and no small filesystem)
    data_fs_mb: int = 2048  # size of that filesystem: the district's archive, ledger, checkpoint and spool fit
    checkpoint_interval: float = 10.0
    drain_timeout: float = 600.0
    progress: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))


@dataclass
class Check:
    name: str
    expected: str
    got: str
    passed: bool
    note: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    info: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def table(self) -> str:
        rows = [("check", "expected", "got", "result")] + [
            (c.name, c.expected, c.got, "PASS" if c.passed else "FAIL") for c in self.checks]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        notes = [f"  {c.name}: {c.note}" for c in self.checks if c.note]
        return "\n".join(lines + (["", "notes:", *notes] if notes else []) + (["", *self.info] if self.info else []))


# --- the processes ------------------------------------------------------------------------


class Broker:
    """Mosquitto keeping sessions across restarts, its queues sized so a collector outage loses nothing."""

    def __init__(self, workdir: Path, max_queued: int) -> None:
        self.port, self.max_queued = free_port(), max_queued
        store = workdir / "mosquitto-store"
        store.mkdir(parents=True, exist_ok=True)
        # Started as root, Mosquitto drops to its own user, which may not reach the workdir: its save
        # at shutdown would fail (logged only) and a restart would lose every session. Stay root there.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{user}"
            f"persistence true\npersistence_location {store}/\nautosave_interval 0\n"  # saved at each clean stop
            f"max_queued_messages {max_queued}\nmax_queued_bytes 0\n"  # the default 1000 drops the rest silently
            # as deploy/mosquitto: what a collector that cannot archive holds is bounded by this window
            "max_inflight_messages 20000\nlog_dest stderr\nlog_type error\nlog_type warning\n")
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([program("mosquitto"), "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.port, 60, alive=lambda: self.proc is not None and self.proc.poll() is None)

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves sessions and queued messages before it exits."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(120)
            self.proc = None


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Collector:
    """``ptmon collect`` as a subprocess; its RSS sampled in a thread across restarts."""

    def __init__(self, config: Path, kpi_csv: Path, log: Path) -> None:
        self.config, self.kpi_csv, self.log = config, kpi_csv, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.rss: list[tuple[float, int, float]] = []  # (monotonic, pid, MB)
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        subscribed = self.log.read_text(errors="replace").count("subscribed to") if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([*PTMON, "-v", "collect", "--config", str(self.config), "--kpi-csv", str(self.kpi_csv)],
                                         stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        if not self._sampler.is_alive():
            self._sampler.start()
        wait_until(lambda: self.log.read_text(errors="replace").count("subscribed to") > subscribed, STARTUP_ALLOWANCE,
                   "the collector to subscribe", alive=self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(120)
        self._stop.set()
        return code

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            proc = self.proc
            if proc is not None and proc.poll() is None and (mb := rss_mb(proc.pid)) is not None:
                self.rss.append((time.monotonic(), proc.pid, mb))


def metrics(port: int) -> dict[str, float]:
    """The collector's /metrics, summed over labels: {name: value}; empty when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            base = name.split("{", 1)[0]
            out[base] = out.get(base, 0.0) + float(value)
    return out


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, alive: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"waiting for {what}: the process exited with status {alive.returncode}")
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


# --- the files it runs on -----------------------------------------------------------------


def message_rate(registry: Registry, speed: float) -> float:
    """Heartbeats per wall second the registry sends at ``speed`` (each device once per its type's period)."""
    periods = np.array([t.heartbeat_period for t in registry.rules.types], dtype=float)
    return float((speed / periods[registry.type]).sum())


def write_scenario(path: Path, registry: Registry, window_s: int) -> Path:
    """Street outage, gateway deaths, churn, flapping and bad traffic, at fractions of the simulated window."""
    streets = [code for i, code in enumerate(registry.rules.street_codes()) if (registry.street == i).any()]
    many = len(registry) > 1000

    def at(fraction: float) -> str:
        return f"{int(window_s * fraction)}s"

    path.write_text(
        "name: soak\nevents:\n"
        f"  - street_outage: {{street: {streets[-1]}, from: {at(0.1)}, to: {at(0.3)}}}\n"
        f"  - gateway_death: {{count: 2, contract: iot, at: {at(0.4)}, revive: {at(0.6)}}}\n"
        f"  - churn: {{per_hour: {0.002 if many else 0.05}, mean_repair: {at(0.1)}}}\n"
        f"  - flapping: {{count: {min(50, len(registry) // 10)}, period: {at(0.05)}}}\n"
        "  - unknown_devices: {per_minute: 2}\n  - malformed: {per_minute: 1}\n  - duplicates: {fraction: 0.005}\n")
    return path


def write_collector_config(path: Path, *, registry: Path, data: Path, broker_port: int, influx_url: str,
                           metrics_port: int, checkpoint_interval: float) -> Path:
    path.write_text(
        f'registry = "{registry}"\ndata_dir = "{data}"\ncheckpoint_interval = {checkpoint_interval}\n'
        f'metrics_listen = "127.0.0.1:{metrics_port}"\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{broker_port}"\nclient_id = "ptmon-soak"\nqos = 1\n'
        'reconnect_min = 0.2\nreconnect_max = 2\n'
        f'[influx]\nurl = "{influx_url}"\ndatabase = "{DATABASE}"\nflush_interval = 1\nretry_max = 2\n'
        '[storage]\nretry_max = 5\n')
    return path


# --- the run ------------------------------------------------------------------------------


@dataclass
class Run:
    """What the run left behind for the checks."""

    registry: Registry
    recording: Path
    archives: list[Path]
    live_csv: Path
    influx_url: str
    rss: list[tuple[float, int, float]]
    info: list[str]
    ledger: Path
    collector_log: Path
    faults: list[str] = field(default_factory=list)  # the storage faults injected ("archive", "ledger")


class DataFilesystem:
    """The collector's data directory on a small filesystem of its own, to fill (the real disk is shared)."""

    def __init__(self, directory: Path, size_mb: int) -> None:
        self.directory = directory
        self.kind = mount_small_filesystem(directory, size_mb)
        self.filler = Filler(directory)

    def close(self) -> None:
        """Copy the data off, unmount, and put the copy where the data was."""
        if self.kind is None:
            return
        self.filler.release()
        keep = self.directory.with_name(self.directory.name + ".copy")
        shutil.copytree(self.directory, keep, symlinks=True)
        unmount(self.directory)
        shutil.copytree(keep, self.directory, symlinks=True, dirs_exist_ok=True)
        shutil.rmtree(keep)


def run(options: SoakOptions) -> Report:
    """Everything: the processes, the injections, the drain, and the checks."""
    options.workdir.mkdir(parents=True, exist_ok=True)
    fs = DataFilesystem(options.workdir / "collector", options.data_fs_mb) if options.disk_full > 0 else None
    influx = InfluxServer(options.workdir)
    try:
        influx.start()
        return check(_run_processes(options, influx, fs), options)
    finally:
        influx.stop()
        if fs is not None:
            fs.close()


def _events(options: SoakOptions, duration: float, disk_full: bool) -> list[tuple[float, str]]:
    events: list[tuple[float, str]] = []
    if options.ledger_lock > 0:
        events.append((0.3 * duration, "ledger lock"))
    if disk_full:
        events += [(0.85 * duration, "disk full"), (0.85 * duration + options.disk_full, "disk freed")]
    n = options.broker_restarts
    events += [((0.2 + 0.55 * i / max(n - 1, 1)) * duration, "broker restart") for i in range(n)]
    if options.influx_outage > 0:
        events += [(0.35 * duration, "influx stop"), (0.35 * duration + options.influx_outage, "influx start")]
    if options.collector_kill:
        events += [(0.55 * duration, "collector SIGKILL"), (0.55 * duration + options.collector_down, "collector start")]
    return sorted(events)


def _run_processes(options: SoakOptions, influx: InfluxServer, fs: DataFilesystem | None) -> Run:
    w, say = options.workdir, options.progress
    registry_path = options.registry or w / "registry.csv"
    if not registry_path.exists():
        say(f"soak: generating the district registry → {registry_path}")
        subprocess.run([*PTMON, "registry", "generate", "--seed", str(options.seed), "--out", str(registry_path)],
                       check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
    registry = load_registry(registry_path, load_rules())
    rate = message_rate(registry, options.speed)
    window = int(options.minutes * 60 * options.speed)
    # The broker must hold everything the collector misses while it is dead and starting again, twice over.
    max_queued = max(100_000, int(rate * (options.collector_down + STARTUP_ALLOWANCE) * 2))
    broker = Broker(w, max_queued)
    broker.start()
    influxql(influx.url, "", f"CREATE DATABASE {DATABASE}")
    data, recording = w / "collector", w / "sent.jsonl.gz"
    metrics_port = free_port()
    config = write_collector_config(w / "collector.toml", registry=registry_path.resolve(), data=data.resolve(),
                                    broker_port=broker.port, influx_url=influx.url, metrics_port=metrics_port,
                                    checkpoint_interval=options.checkpoint_interval)
    collector = Collector(config, w / "kpis-live.csv", w / "collector.log")
    info = [(f"registry {len(registry):,} devices; speed {options.speed:g} → ~{rate:,.0f} heartbeats/s; "
             f"{options.minutes:g} min wall = {window / 3600:.1f} simulated h"),
            (f"mosquitto: persistence on, max_queued_messages {max_queued:,} "
             f"(≈ {max_queued / max(rate, 1):.0f} s of traffic), max_queued_bytes 0, max_inflight_messages 20,000")]
    sim_log = w / "simulate.log"
    try:
        collector.start()
        say(f"soak: broker :{broker.port}, InfluxDB {influx.url}, collector up; starting the simulator")
        with sim_log.open("wb") as out:
            simulator = subprocess.Popen(
                [*PTMON, "simulate", "--registry", str(registry_path), "--broker", f"mqtt://127.0.0.1:{broker.port}",
                 "--speed", str(options.speed), "--duration", f"{window}s", "--qos", "1", "--seed", str(options.seed),
                 "--scenario", str(write_scenario(w / "scenario.yaml", registry, window)), "--record", str(recording)],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_until(lambda: "simulate: at" in sim_log.read_text(errors="replace"), STARTUP_ALLOWANCE,
                   "the simulator to start sending", alive=simulator)
        if fs is not None:
            info.append(f"collector data on {fs.kind}" if fs.kind else
                        "no disk-full window: neither a tmpfs nor a loop device could be mounted here")
        faults, lines = _inject(options, broker, influx, collector, simulator, metrics_port, sim_log, fs, data)
        info += lines
        if simulator.wait() != 0:
            raise RuntimeError(f"the simulator exited with {simulator.returncode}: see {sim_log}")
        info += [line for line in sim_log.read_text(errors="replace").splitlines()
                 if line.startswith(("sent ", "  by kind", "links:", "scenario", "  "))][-12:]
        _drain(options, metrics_port, collector)
        code = collector.stop()
        if code != 0:
            raise RuntimeError(f"the collector exited with {code}: see {collector.log}")
    finally:
        for proc in (collector.proc,):
            if proc is not None and proc.poll() is None:
                proc.kill()
        broker.stop()
    spool = [p for p in (data / "spool").rglob("*") if p.is_file()] if (data / "spool").exists() else []
    info.append(f"InfluxDB spool left after shutdown: {len(spool)} files")
    return Run(registry, recording, archive_files(data / "archive"), collector.kpi_csv, influx.url, collector.rss, info,
               data / "ledger.sqlite", collector.log, faults)


def _inject(options: SoakOptions, broker: Broker, influx: InfluxServer, collector: Collector,
            simulator: subprocess.Popen[bytes], metrics_port: int, sim_log: Path, fs: DataFilesystem | None,
            data: Path) -> tuple[list[str], list[str]]:
    """The scheduled breakages while the simulator runs; returns (storage faults injected, report lines)
    when it has exited."""
    began = time.monotonic()
    disk_full = fs is not None and fs.kind is not None
    events, done, last_progress = _events(options, options.minutes * 60, disk_full), [], began
    lockers: list[subprocess.Popen[str]] = []
    faults: list[str] = []
    while simulator.poll() is None:
        elapsed = time.monotonic() - began
        while events and events[0][0] <= elapsed:
            _, what = events.pop(0)
            t0 = time.monotonic()
            if what == "broker restart":
                broker.stop()
                time.sleep(options.broker_down)
                broker.start()
            elif what == "influx stop":
                influx.stop()
            elif what == "influx start":
                influx.start()
            elif what == "collector SIGKILL":
                collector.kill()
            elif what == "collector start":
                collector.start()
            elif what == "ledger lock":
                lockers.append(lock_ledger(data / "ledger.sqlite", options.ledger_lock))
                faults.append("ledger")
                what += f" for {options.ledger_lock:g} s"
            elif what == "disk full" and fs is not None:
                what += f" ({fs.filler.fill() / 2**20:,.0f} MB filler)"
                faults.append("archive")
            elif what == "disk freed" and fs is not None:
                fs.filler.release()
            line = f"{elapsed:6.1f} s  {what} ({time.monotonic() - t0:.1f} s)"
            done.append(line)
            options.progress(f"soak: {line}")
        if time.monotonic() - last_progress >= 15:
            last_progress = time.monotonic()
            sim = [line for line in sim_log.read_text(errors="replace").splitlines() if line.startswith("simulate: at")]
            m = metrics(metrics_port)
            rss = collector.rss[-1][2] if collector.rss else 0.0
            options.progress(f"soak: {elapsed:5.0f} s | {sim[-1][10:] if sim else '-'} | collector "
                             f"{m.get('ptmon_archive_records_total', 0):,.0f} archived since start, RSS {rss:.0f} MB, "
                             f"InfluxDB buffer {m.get('ptmon_influx_buffered_points', 0):,.0f} points, "
                             f"held {m.get('ptmon_collector_held_messages', 0):,.0f}, waiting on storage "
                             f"{m.get('ptmon_storage_waiting_seconds', 0):.0f} s")
        if collector.proc is not None and collector.proc.poll() not in (None, -signal.SIGKILL):
            raise RuntimeError(f"the collector died with {collector.proc.returncode}: see {collector.log}")
        time.sleep(0.5)
    if fs is not None:
        fs.filler.release()
    for locker in lockers:
        locker.wait(options.ledger_lock + 30)
    return faults, ["injected (seconds after the simulator began sending):"] + [f"  {line}" for line in done] + \
        [f"  not reached before the simulator ended: {what}" for _, what in events]


def _drain(options: SoakOptions, port: int, collector: Collector) -> None:
    """Wait until the collector takes no more messages (the broker's queue is empty) and InfluxDB has every point."""
    last, steady_since, deadline = -1.0, time.monotonic(), time.monotonic() + options.drain_timeout
    while time.monotonic() < deadline:
        m = metrics(port)
        taken = m.get("ptmon_mqtt_messages_total", -1.0)
        if taken != last:
            last, steady_since = taken, time.monotonic()
        empty = m.get("ptmon_influx_buffered_points", 1) == 0 and m.get("ptmon_influx_spilled_bytes", 1) == 0
        if m and empty and time.monotonic() - steady_since >= 5:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the collector did not drain within {options.drain_timeout:.0f} s")


# --- the checks ---------------------------------------------------------------------------


def message_keys(paths: Iterable[Path], registry_topics: dict[str, int],
                 truncated: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hashes of (topic, payload) of heartbeat-topic and of gateway-status records, and of the (device, boot, seq)
    of every heartbeat of a registry device that carries an integer seq; control records left out."""
    heartbeats, statuses, keys = [], [], []
    loads = orjson.loads
    for path in paths:
        reader = ArchiveReader([path])
        for _, topic, payload in reader:
            if topic.startswith(CONTROL_PREFIX):
                continue
            if not topic.endswith("/hb"):
                statuses.append(hash((topic, payload)))
                continue
            heartbeats.append(hash((topic, payload)))
            device = registry_topics.get(topic)
            if device is None:
                continue
            try:
                obj = loads(payload)
            except orjson.JSONDecodeError:
                continue
            if type(obj) is dict and type(obj.get("seq")) is int:
                keys.append(hash((device, obj.get("boot"), obj["seq"])))
        if truncated is not None:
            truncated += reader.truncated
    return tuple(np.array(a, dtype=np.int64) for a in (heartbeats, statuses, keys))  # type: ignore[return-value]


def multiset_difference(sent: np.ndarray, archived: np.ndarray) -> tuple[int, int, int, np.ndarray]:
    """(missing, redelivered copies, never sent, the hashes that are missing or never sent)."""
    s_keys, s_counts = np.unique(sent, return_counts=True)
    a_keys, a_counts = np.unique(archived, return_counts=True)
    a_for_s = np.zeros(len(s_keys), dtype=np.int64)
    found = np.isin(s_keys, a_keys)
    a_for_s[found] = a_counts[np.searchsorted(a_keys, s_keys[found])]
    missing = int(np.maximum(s_counts - a_for_s, 0).sum())
    redelivered = int(np.maximum(a_for_s - s_counts, 0).sum())
    foreign = ~np.isin(a_keys, s_keys)
    bad = np.concatenate([s_keys[a_for_s < s_counts], a_keys[foreign]])
    return missing, redelivered, int(a_counts[foreign].sum()), bad


def devices_of(paths: Iterable[Path], hashes: np.ndarray, limit: int = 10) -> list[str]:
    """The topics of records whose (topic, payload) hash is among ``hashes`` (for the report)."""
    wanted, topics = set(hashes.tolist()), []
    for path in paths:
        for _, topic, payload in ArchiveReader([path]):
            if hash((topic, payload)) in wanted and topic not in topics:
                topics.append(topic)
                if len(topics) >= limit:
                    return topics
    return topics


def check(result: Run, options: SoakOptions) -> Report:
    """The four checks, in the table's order."""
    report = Report(info=list(result.info))
    rules = result.registry.rules
    contracts, streets = [c.code for c in rules.contracts], rules.street_codes()
    topics = {f"putuo/{contracts[c]}/{streets[s]}/{d}/hb": i for i, (c, s, d) in enumerate(
        zip(result.registry.contract.tolist(), result.registry.street.tolist(), result.registry.ids))}
    distinct_keys = check_messages(report, result, topics)
    start, end = month_of(seconds_to_us(time.time()))
    check_points(report, result, distinct_keys, start, end)
    check_kpis(report, result, options, format_instant(start)[:7])
    check_ledger(report, result, start, end)
    check_rss(report, result.rss, options.rss_limit_mb)
    check_faults(report, result)
    return report


def check_messages(report: Report, result: Run, topics: dict[str, int]) -> np.ndarray:
    """(1) the archive against the recording; returns the archive's (device, boot, seq) key hashes for (2)."""
    sent_hb, sent_status, _ = message_keys([result.recording], topics)
    cut: list[str] = []
    got_hb, got_status, distinct_keys = message_keys(result.archives, topics, cut)
    report.info += [f"archive part cut short by the SIGKILL (read up to the cut): {Path(p).name}" for p in cut]
    missing, redelivered, foreign, bad = multiset_difference(sent_hb, got_hb)
    note = (f"archived {len(got_hb):,} = sent {len(sent_hb):,} + {redelivered:,} redelivered copies; "
            f"missing {missing:,}, never sent {foreign:,}")
    if len(bad):
        note += "; e.g. " + ", ".join(devices_of([result.recording, *result.archives], bad))
    report.checks.append(Check("1 heartbeat-topic messages archived = sent (QoS 1 acked)", f"{len(sent_hb):,}",
                               f"{len(got_hb) - redelivered:,}", missing == 0 and foreign == 0, note))
    s_missing, s_extra, s_foreign, _ = multiset_difference(sent_status, got_status)
    report.checks.append(Check("1 gateway statuses: every recorded one archived", f"{len(sent_status):,}",
                               f"{len(sent_status) - s_missing:,}", s_missing == 0,
                               f"recorded: sent (acked) and the Wills of killed gateways; archived {len(got_status):,}, "
                               f"the {s_extra + s_foreign:,} more being retained copies the broker sends at every subscribe"))
    return distinct_keys


def check_points(report: Report, result: Run, distinct_keys: np.ndarray, start: int, end: int) -> None:
    """(2) InfluxDB points = heartbeats the engine accepts replaying the archive = distinct heartbeat keys."""
    distinct = len(np.unique(distinct_keys))
    replayed = replay([str(p) for p in result.archives], result.registry, start, end)
    accepted = int(replayed.engine_stats["heartbeats"])
    points = influx_count(result.influx_url)
    stats = {k: int(v) for k, v in replayed.engine_stats.items() if k in ("duplicate", "stale", "restarts", "late")}
    report.checks.append(Check("2 InfluxDB heartbeat points = accepted heartbeats", f"{accepted:,}", f"{points:,}",
                               points == accepted, f"engine on replay: {stats}; rejects {dict(replayed.rejects)}"))
    report.checks.append(Check("2 accepted = distinct (device, boot, seq) archived", f"{distinct:,}", f"{accepted:,}",
                               accepted == distinct, f"{len(distinct_keys):,} heartbeats with a seq archived, "
                               f"{len(distinct_keys) - distinct:,} of them repeats (redelivered or duplicated)"))


def check_kpis(report: Report, result: Run, options: SoakOptions, month: str) -> None:
    """(3) ``ptmon replay --month`` of the archive, byte for byte the collector's live month-to-date CSV."""
    replay_csv = options.workdir / "kpis-replay.csv"
    with (options.workdir / "replay.log").open("wb") as log:
        subprocess.run([*PTMON, "replay", *map(str, result.archives), "--month", month, "--registry",
                        str(options.registry or options.workdir / "registry.csv"), "--csv", str(replay_csv), "--quiet"],
                       check=True, cwd=ROOT, stderr=log)
    live, again = result.live_csv.read_text(), replay_csv.read_text()
    differing = [f"{a!r} ≠ {b!r}" for a, b in zip(live.splitlines(), again.splitlines()) if a != b][:3]
    report.checks.append(Check(f"3 ptmon replay --month {month} CSV = live CSV", f"{len(live.splitlines())} lines identical",
                               "identical" if live == again else f"{len(differing)}+ lines differ", live == again,
                               "; ".join(differing)))


def check_ledger(report: Report, result: Run, start: int, end: int) -> None:
    """(3) the ledger's month (hours written through the lock, the full disk and the SIGKILL) = the replay."""
    replayed = replay([str(p) for p in result.archives], result.registry, start, end).csv_text()
    with Ledger(result.ledger, readonly=True) as ledger:
        integrity = ledger.integrity_check()
        ledger_csv = ledger_results(ledger, result.registry, start, end).csv_text()
    report.checks.append(Check("3 ledger month = replay", f"{len(replayed.splitlines())} lines identical",
                               "identical" if ledger_csv == replayed else "differs", ledger_csv == replayed
                               and integrity == "ok", f"integrity_check: {integrity}"))


def check_faults(report: Report, result: Run) -> None:
    """(5) each injected storage fault was reported and ended by itself (the collector never exited on it)."""
    log = result.collector_log.read_text(errors="replace")
    stages = {"archive": "the archive to take messages", "ledger": "the ledger to take its writes"}
    got, ok = [], True
    for stage in result.faults:
        began = log.count(f"storage fault: waiting for {stages[stage]}")
        ended = [float(m) for m in re.findall(rf"storage fault over: {stages[stage]} after ([0-9.]+) s", log)]
        ok = ok and began >= 1 and len(ended) >= 1  # a SIGKILL in the middle of one leaves it unended: it recurs
        got.append(f"{stage} {began}× (longest {max(ended, default=0):.0f} s)")
    others = sorted(set(re.findall(r"storage fault: waiting for (the [a-z ]+?) to", log)) - {"the archive", "the ledger"})
    note = "also waited for: " + ", ".join(others) if others else ""
    report.checks.append(Check("5 storage faults reported and resumed by itself", ", ".join(result.faults) or "none",
                               "; ".join(got) or "none injected", ok, note))


def check_rss(report: Report, samples: list[tuple[float, int, float]], limit_mb: float) -> None:
    """(4) the collector's resident memory over the run, every process (the restart is a new pid)."""
    peak = max((mb for _, _, mb in samples), default=0.0)
    per = []
    for pid in sorted({pid for _, pid, _ in samples}):
        mine = [mb for _, p, mb in samples if p == pid]
        per.append(f"pid {pid}: first {mine[0]:.0f}, max {max(mine):.0f}, last {mine[-1]:.0f} MB")
    report.checks.append(Check("4 collector RSS (VmRSS, max)", f"≤ {limit_mb:.0f} MB", f"{peak:.0f} MB",
                               0 < peak <= limit_mb, f"{len(samples)} samples; " + "; ".join(per)))


def influx_count(url: str) -> int:
    rows = influx_rows(url, DATABASE, "SELECT count(seq) FROM heartbeat")
    return int(rows[0][1]) if rows else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="wall minutes of simulation (default 10)")
    parser.add_argument("--speed", type=float, default=60.0,
                        help="simulated time runs K× faster (default 60: ~6,100 msg/s for the district)")
    parser.add_argument("--registry", type=Path, help="registry CSV (default: generate the full district into the workdir)")
    parser.add_argument("--seed", type=int, default=1, help="registry and scenario seed (default 1)")
    parser.add_argument("--workdir", type=Path, default=Path("ptmon-soak"),
                        help="where everything goes (default ./ptmon-soak; must be new or empty)")
    parser.add_argument("--rss-limit-mb", type=float, default=SoakOptions.rss_limit_mb,
                        help="bound on the collector's RSS (default %(default)s)")
    parser.add_argument("--broker-restarts", type=int, default=2, help="Mosquitto restarts (default 2)")
    parser.add_argument("--influx-outage", type=float, default=25.0, help="seconds InfluxDB is stopped (default 25; 0: none)")
    parser.add_argument("--no-collector-kill", action="store_true", help="do not SIGKILL and restart the collector")
    parser.add_argument("--ledger-lock", type=float, default=45.0,
                        help="seconds another process holds BEGIN EXCLUSIVE on the ledger (default 45; 0: none)")
    parser.add_argument("--disk-full", type=float, default=30.0,
                        help="seconds the collector's data filesystem is kept full (default 30; 0: none, and the data "
                        "stays on the workdir's disk)")
    parser.add_argument("--data-fs-mb", type=int, default=2048,
                        help="size of the tmpfs (else loop image) the collector's data lives on (default 2048)")
    args = parser.parse_args(argv)
    if args.workdir.exists() and any(p.name != "registry.csv" for p in args.workdir.iterdir()):
        parser.error(f"--workdir {args.workdir} is not empty (a registry.csv alone may stay)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    # The replay of the checks logs every rejected message of the scenario's bad traffic: to a file.
    logging.basicConfig(level=logging.WARNING, filename=str(args.workdir / "checks.log"),
                        format="%(levelname)s %(name)s: %(message)s")
    options = SoakOptions(workdir=args.workdir.resolve(), minutes=args.minutes, speed=args.speed,
                          registry=args.registry.resolve() if args.registry else None, seed=args.seed,
                          rss_limit_mb=args.rss_limit_mb, broker_restarts=args.broker_restarts,
                          influx_outage=args.influx_outage, collector_kill=not args.no_collector_kill,
                          ledger_lock=args.ledger_lock, disk_full=args.disk_full, data_fs_mb=args.data_fs_mb)
    began = time.monotonic()
    report = run(options)
    report.info.append(f"soak took {time.monotonic() - began:.0f} s wall; files in {options.workdir}")
    print(report.table())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
